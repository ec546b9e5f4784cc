"""The ``medagent`` command line.

Every command builds one ``Settings`` (defaults < ``MEDAGENT_*`` env vars < flags) and passes
it down. Errors medagent expects are printed as one line with exit code 2; ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from medagent._version import __version__
from medagent.errors import ConfigError, MedagentError
from medagent.settings import BackendName, Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="medagent",
    help=(
        "Agents that read medical images with vision-language models.\n\n"
        "Start by checking that a model answers:\n\n"
        "  medagent model check --backend openai --base-url http://127.0.0.1:8000/v1 "
        "--model MODEL\n\n"
        "No server yet? Build a tiny test model and check it in-process:\n\n"
        "  medagent model build-tiny-vlm .medagent/tiny-vlm\n\n"
        "  medagent model check --backend transformers --model .medagent/tiny-vlm\n\n"
        "Settings come from flags, else MEDAGENT_* environment variables "
        "(MEDAGENT_BACKEND, MEDAGENT_MODEL, MEDAGENT_BASE_URL, ...)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
model_app = typer.Typer(
    help="Talk to model backends: check one, build a tiny test model.",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")
slide_app = typer.Typer(
    help="Look at slides and images: facts, and views as a model would see them.",
    no_args_is_help=True,
)
app.add_typer(slide_app, name="slide")

console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"medagent {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors.")
    ] = False,
) -> None:
    """Agents that read medical images with vision-language models."""


# Backend flags shared by every command that talks to a model. None means "not given", so
# the environment and defaults still apply.
BackendOpt = Annotated[
    BackendName | None,
    typer.Option(
        "--backend",
        "-b",
        help="openai (any OpenAI-compatible server: vLLM, SGLang, Ollama), vllm (in-process), "
        "transformers (in-process), scripted (test double replaying --script). "
        "[env: MEDAGENT_BACKEND; default: openai]",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Served model name (openai) or model folder / hub id (vllm, transformers). "
        "[env: MEDAGENT_MODEL]",
        show_default=False,
    ),
]
BaseUrlOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--base-url",
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; repeat to spread "
        "requests over several servers. [env: MEDAGENT_BASE_URL, comma-separated]",
        show_default=False,
    ),
]
ScriptOpt = Annotated[
    Path | None,
    typer.Option(
        "--script",
        help="JSONL replies for the scripted backend (a test double).",
        show_default=False,
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", help="Seconds per request. [default: 120]", show_default=False),
]
RetriesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-retries",
        help="Retries on connection errors, timeouts, 429, 5xx. [default: 4]",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="transformers: auto, cpu, cuda, cuda:1, mps. [default: auto]",
        show_default=False,
    ),
]


def build_settings(**flags: Any) -> Settings:
    """Settings from the environment, with the flags that were given laid over them."""
    given = {key: value for key, value in flags.items() if value is not None}
    if "script" in given:
        given["script"] = str(given["script"])
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None


@model_app.command("check")
def model_check(
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    script: ScriptOpt = None,
    timeout: TimeoutOpt = None,
    max_retries: RetriesOpt = None,
    device: DeviceOpt = None,
    max_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 32,
) -> None:
    """Send a text, an image and a structured-output request; print a table.

    Exits 0 when all three succeed, 1 when any fails, 2 when the backend cannot be set up.
    Run it first against a new server:

      medagent model check --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct
    """
    from medagent.models import build_model
    from medagent.models._check import run_checks

    settings = build_settings(
        backend=backend,
        model=model,
        base_url=base_url,
        script=script,
        timeout_s=timeout,
        max_retries=max_retries,
        device=device,
    )
    chat_model = build_model(settings)

    async def _run() -> list[Any]:
        try:
            return await run_checks(chat_model, max_tokens=max_tokens)
        finally:
            await chat_model.aclose()

    where = ", ".join(settings.base_url) if settings.backend == "openai" else "in-process"
    load = getattr(chat_model, "load", None)
    if callable(load):  # in-process backends: keep loading time out of the first check
        started = time.perf_counter()
        with console.status(f"loading {chat_model.name} …"):
            load()
        console.print(f"loaded {chat_model.name} in {time.perf_counter() - started:.1f} s")
    with console.status(f"checking {settings.backend} backend ({where}) …"):
        results = asyncio.run(_run())
    table = Table(title=f"{settings.backend} · {chat_model.name} · {where}")
    for column in ("capability", "result", "latency", "tokens in/out", "detail"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(
            r.capability,
            "[green]ok[/green]" if r.ok else "[red]fail[/red]",
            f"{r.latency_s * 1000:.0f} ms",
            f"{r.prompt_tokens}/{r.completion_tokens}",
            r.detail,
        )
    console.print(table)
    failed = [r.capability for r in results if not r.ok]
    if failed:
        err_console.print(f"failed: {', '.join(failed)}")
        raise typer.Exit(1)


@model_app.command("build-tiny-vlm")
def model_build_tiny_vlm(
    path: Annotated[Path, typer.Argument(help="Folder to write the model into.")],
    seed: Annotated[int, typer.Option(help="Seed for the random weights.")] = 0,
) -> None:
    """Build a tiny random-weight VLM of a real architecture, offline (a test double).

    Its answers are noise; it exists so the transformers and vLLM code paths can be run
    without downloading weights. Needs the [hf] extra.
    """
    from medagent.testing import build_tiny_vlm

    out = build_tiny_vlm(path, seed=seed)
    console.print(f"tiny VLM written to {out}")


@slide_app.command("info")
def slide_info(
    path: Annotated[
        Path, typer.Argument(help="Slide or image: SVS, NDPI, MRXS, TIFF, PNG, DICOM…")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Format, dimensions, pyramid levels, pixel spacing, vendor, associated image names.

    Associated images (label, macro) are listed by name only: they can show patient
    identifiers, so their content is never printed.
    """
    from medagent.imaging import open_image

    with open_image(path) as slide:
        info = slide.info
    if as_json:
        console.print_json(info.model_dump_json())
        return
    table = Table(title=str(path), show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    spacing = (
        f"{info.mpp_x:.4g} x {info.mpp_y:.4g} µm/px"
        if info.mpp_x is not None and info.mpp_y is not None
        else "unknown (no physical units)"
    )
    rows = [
        ("format", info.format),
        ("vendor", info.vendor or "—"),
        ("dimensions", f"{info.dimensions.width} x {info.dimensions.height} px (level 0)"),
        ("pixel spacing", spacing),
        ("objective", f"{info.objective_power:g}x" if info.objective_power else "—"),
        ("associated images", ", ".join(info.associated_images) or "—"),
    ]
    for level, (size, downsample) in enumerate(
        zip(info.level_dimensions, info.level_downsamples, strict=True)
    ):
        rows.append((f"level {level}", f"{size.width} x {size.height} (downsample {downsample:g})"))
    for field, value in rows:
        table.add_row(field, value)
    console.print(table)


@slide_app.command("render")
def slide_render(
    path: Annotated[Path, typer.Argument(help="Slide or image to render.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Image file to write (.jpg, .png).")],
    region: Annotated[
        str | None,
        typer.Option(help="X,Y,W,H in level-0 pixels; the whole image when omitted."),
    ] = None,
    size: Annotated[int, typer.Option(help="Long side of the output in pixels.")] = 1000,
    guides: Annotated[
        bool, typer.Option("--guides/--no-guides", help="Draw labelled level-0 axis guides.")
    ] = True,
) -> None:
    """Render a region as the agents see it: best pyramid level, Lanczos, guides, scale bar.

    medagent slide render slide.svs --region 1000,2000,4000,3000 --size 1000 --out view.jpg
    """
    from medagent.imaging import (
        Region,
        Renderer,
        RenderPolicy,
        draw_guides,
        draw_scale_bar,
        open_image,
    )

    try:
        wanted = Region.parse(region) if region else None
    except ValueError as exc:
        raise ConfigError(f"--region: {exc}") from None
    if size < 16:
        raise ConfigError(f"--size must be at least 16 pixels, not {size}")
    if out.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        raise ConfigError(f"--out {out}: use a .jpg or .png file name")
    with open_image(path) as slide:
        renderer = Renderer(slide, RenderPolicy(long_side=size))
        view = renderer.render(wanted) if wanted else renderer.overview()
        image = draw_guides(view.image, view.region) if guides else view.image
        if view.mpp is not None:
            image = draw_scale_bar(image, view.mpp)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None
    console.print(f"{view.note()} → {out}")


def _print_event(event: Any) -> None:
    """One line per navigation event, as the run goes."""
    if event.kind == "overview":
        console.print(f"[dim]overview ready[/dim]  {event.text}")
    elif event.kind == "zoom":
        reasoning = " ".join(event.text.split())[:100]
        console.print(f"step {event.step:>2}  zoom {event.region}  [dim]{reasoning}[/dim]")
    elif event.kind in ("rejected", "invalid"):
        console.print(f"step {event.step:>2}  [yellow]{event.kind}[/yellow]: {event.text}")
    elif event.kind == "answer":
        console.print(f"step {event.step:>2}  [green]answer[/green]: {event.text}")


def _giant_config(**flags: Any) -> Any:
    from medagent.agents.giant import GiantConfig

    given = {key: value for key, value in flags.items() if value is not None}
    try:
        return GiantConfig(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"invalid option {first['loc'][0]}: {first['msg']}") from None


def _report(result: Any, as_json: bool) -> None:
    if as_json:
        console.print_json(result.model_dump_json())
    else:
        colour = "green" if result.status.startswith("answered") else "red"
        table = Table(show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        table.add_row("answer", result.answer or "—")
        if result.prediction and result.prediction != result.answer:
            table.add_row("prediction", result.prediction)
        if result.votes:
            table.add_row("votes", ", ".join(f"{k}: {v}" for k, v in result.votes.items()))
        table.add_row("status", f"[{colour}]{result.status}[/{colour}]")
        if result.error:
            table.add_row("error", result.error)
        table.add_row(
            "steps",
            f"{result.steps} in {result.elapsed_s:.1f} s, "
            f"{result.prompt_tokens}+{result.completion_tokens} tokens",
        )
        table.add_row("trajectory", str(result.html_path or result.trajectory_path))
        console.print(table)
    if not result.status.startswith("answered"):
        raise typer.Exit(1)


MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="giant (navigate by zooming), thumbnail (one look at 1024 px), patches (30 random "
        "tissue patches, majority vote), random-region (zooms chosen at random).",
    ),
]


@app.command("ask")
def ask(
    slide: Annotated[Path, typer.Argument(help="Slide or image to examine.")],
    question: Annotated[str, typer.Argument(help="The question, in quotes.")],
    options: Annotated[
        str | None,
        typer.Option(help='Answer options separated by ";", e.g. "lung;breast;colon".'),
    ] = None,
    method: MethodOpt = "giant",
    steps: Annotated[
        int | None, typer.Option(help="Turns in all, the answer included. [20]")
    ] = None,
    votes: Annotated[int, typer.Option(help="giant: majority over this many runs.")] = 1,
    long_side: Annotated[
        int | None, typer.Option(help="Long side of every image sent, px. [1000]")
    ] = None,
    max_images: Annotated[
        int | None, typer.Option(help="Keep the overview and the latest N-1 crops as images.")
    ] = None,
    strict_regions: Annotated[
        bool, typer.Option(help="Reject regions partly outside the slide instead of clamping.")
    ] = False,
    crop_guides: Annotated[
        bool, typer.Option("--crop-guides/--no-crop-guides", help="Guides on zoomed crops.")
    ] = True,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature. [0]")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling and baselines. [0]")] = None,
    item_timeout: Annotated[
        float | None, typer.Option(help="Seconds before the question is given up. [900]")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Run folder (resumes an unfinished run there). [runs/TIMESTAMP-ID]"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    script: ScriptOpt = None,
    timeout: TimeoutOpt = None,
    max_retries: RetriesOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Ask a question about a slide; the agent looks, zooms, and answers.

      medagent ask slide.svs "Which organ is this tissue from?" --options "lung;liver;colon"

    Prints each step as it happens, then the answer, the status and the trajectory
    (trajectory.html in the run folder: the overview with every zoom, each crop and the
    model's reasoning). Exits 0 when answered, 1 when not, 2 on a usage error.
    """
    from medagent.agents.giant import GiantNavigator
    from medagent.imaging import open_image
    from medagent.models import build_model

    if method not in ("giant", "thumbnail", "patches", "random-region"):
        raise ConfigError(f"--method {method!r}: choose giant, thumbnail, patches or random-region")
    settings = build_settings(
        backend=backend,
        model=model,
        base_url=base_url,
        script=script,
        timeout_s=timeout,
        max_retries=max_retries,
        device=device,
    )
    config = _giant_config(
        max_steps=steps,
        long_side=long_side,
        max_images_in_context=max_images,
        strict_regions=strict_regions,
        guides_on_crops=crop_guides,
        temperature=temperature,
        seed=seed,
        timeout_s=item_timeout,
    )
    choices = [o.strip() for o in options.split(";") if o.strip()] if options else None
    opened = open_image(slide)
    chat_model = build_model(settings)
    navigator = GiantNavigator(
        chat_model,
        config,
        method=method,  # type: ignore[arg-type]  # checked against the choices above
        votes=votes,
        on_event=None if as_json else _print_event,
        sam_model=settings.sam_model,
    )

    async def _run() -> Any:
        try:
            return await navigator.arun(opened, question, options=choices, run_dir=out)
        finally:
            await chat_model.aclose()

    result = asyncio.run(_run())
    _report(result, as_json)


#: Used by `medagent demo` when no backend is configured, if it is in the local HF cache.
DEMO_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
DEMO_QUESTION = "Which kind of staining was used on this slide?"
TINY_DEMO_SEED = 4
DEMO_OPTIONS = [
    "haematoxylin and eosin (H&E)",
    "immunohistochemistry (DAB brown with haematoxylin counterstain)",
    "special stain (e.g. trichrome)",
]


def _demo_slide(cache: Path, rebuild: bool) -> Path:
    from rich.progress import Progress

    from medagent.imaging._demo_slide import build_demo_slide

    path = cache / "demo" / "demo-slide.tif"
    if path.exists() and not rebuild:
        return path
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("building the demo slide (once)", total=None)
        build_demo_slide(
            path, progress=lambda done, total: progress.update(task, completed=done, total=total)
        )
    console.print(f"demo slide written to {path}")
    return path


def _demo_model(settings: Settings) -> Any:
    """The configured backend; else the default VLM if it loads offline; else the tiny one."""
    from medagent.models import build_model

    if "backend" in settings.model_fields_set or settings.model:
        return build_model(settings)
    from medagent.models import TransformersBackend

    candidate = TransformersBackend(DEMO_MODEL, device=settings.device)
    try:
        with console.status(f"looking for {DEMO_MODEL} in the local cache …"):
            candidate.load()
        return candidate
    except MedagentError:
        pass
    from medagent.testing import build_tiny_vlm

    # Random weights: whether the model zooms or answers at once depends on the seed. Seed 4
    # zooms five times, then answers on the last turn, so the demo shows the whole loop.
    folder = settings.cache_dir / "tiny-vlm-demo"
    if not (folder / "config.json").exists():
        build_tiny_vlm(folder, seed=TINY_DEMO_SEED)
    err_console.print(
        f"No VLM is configured and {DEMO_MODEL} is not available offline, so the demo uses "
        "the tiny random-weight test model: the navigation is real, its answers are random. "
        "Point it at a real VLM with: medagent demo --base-url http://HOST:8000/v1 --model NAME",
        markup=False,
    )
    return TransformersBackend(folder, device=settings.device)


@app.command("demo")
def demo(
    steps: Annotated[int, typer.Option(help="Turns in all, the answer included.")] = 6,
    out: Annotated[Path | None, typer.Option(help="Run folder. [runs/TIMESTAMP-ID]")] = None,
    rebuild: Annotated[bool, typer.Option(help="Build the demo slide again.")] = False,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    timeout: TimeoutOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Run the GIANT navigator on a built-in gigapixel slide, offline.

    The slide (60,000 x 50,000 px at 0.5 µm/px, real IHC tissue shipped with scikit-image)
    is built once into the cache folder. With no backend configured, the demo uses
    Qwen2.5-VL-3B-Instruct if it is in the local Hugging Face cache, else a tiny test model
    whose answers are random. Open the printed trajectory.html to see every step.
    """
    from medagent.agents.giant import GiantConfig, GiantNavigator
    from medagent.imaging import open_image

    settings = build_settings(
        backend=backend, model=model, base_url=base_url, timeout_s=timeout, device=device
    )
    path = _demo_slide(settings.cache_dir, rebuild)
    chat_model = _demo_model(settings)
    console.print(f"question: {DEMO_QUESTION}")
    navigator = GiantNavigator(chat_model, GiantConfig(max_steps=steps), on_event=_print_event)

    async def _run() -> Any:
        try:
            return await navigator.arun(
                open_image(path), DEMO_QUESTION, options=DEMO_OPTIONS, run_dir=out
            )
        finally:
            await chat_model.aclose()

    _report(asyncio.run(_run()), as_json=False)


def main() -> None:
    """Entry point of the ``medagent`` console script."""
    debug = "--debug" in sys.argv[1:]
    try:
        app()
    except MedagentError as exc:
        if debug:
            raise
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)
