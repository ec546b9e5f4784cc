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
