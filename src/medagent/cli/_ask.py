"""``medagent ask`` and ``medagent demo``: the GIANT navigator from the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medagent._trace import traced
from medagent.cli._app import (
    BackendOpt,
    BaseUrlOpt,
    DeviceOpt,
    ModelOpt,
    PresetOpt,
    ReasoningEffortOpt,
    RequestsPerEndpointOpt,
    RetriesOpt,
    ScriptOpt,
    TimeoutOpt,
    TraceContentOpt,
    TraceOpt,
    ZeroShotModelOpt,
    ZeroShotOpt,
    app,
    build_scorer,
    build_settings,
    config_from_flags,
    console,
    err_console,
)
from medagent.cli._eval import BudgetOpt, PriceInOpt, PriceOutOpt, spend_for
from medagent.errors import ConfigError, MedagentError
from medagent.settings import Settings


def _print_event(event: Any) -> None:
    """One line per navigation event, as the run goes."""
    if event.kind == "overview":
        console.print(f"[dim]overview ready[/dim]  {event.text}")
    elif event.kind == "where_to_look":
        console.print(f"[dim]where to look[/dim]  {event.text.splitlines()[0]}")
    elif event.kind == "zoom":
        reasoning = " ".join(event.text.split())[:100]
        where = f"{event.slice}, {event.region}" if event.slice else str(event.region)
        console.print(f"step {event.step:>2}  zoom {where}  [dim]{reasoning}[/dim]")
    elif event.kind in ("rejected", "invalid"):
        console.print(f"step {event.step:>2}  [yellow]{event.kind}[/yellow]: {event.text}")
    elif event.kind == "answer":
        console.print(f"step {event.step:>2}  [green]answer[/green]: {event.text}")


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
    if result.status == "budget_exhausted":
        err_console.print(
            f"the budget ended the run; rerun with a higher --budget-usd and --out "
            f"{result.run_dir} to resume it",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(3)
    if not result.status.startswith("answered"):
        raise typer.Exit(1)


MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="giant (navigate by zooming), thumbnail (one look at 1024 px, the paper's "
        "setting), patches (30 random tissue patches, majority vote), random-region (zooms "
        "chosen at random).",
    ),
]


@app.command("ask")
def ask(
    slide: Annotated[
        str,
        typer.Argument(
            help="Slide or image to examine, a CT/MR series folder (a volume), or a DICOMweb "
            "series (dicomweb+https://HOST/ROOT/studies/UID/series/UID)."
        ),
    ],
    question: Annotated[str, typer.Argument(help="The question, in quotes.")],
    options: Annotated[
        str | None,
        typer.Option(help='Answer options separated by ";", e.g. "lung;breast;colon".'),
    ] = None,
    method: MethodOpt = "giant",
    modality: Annotated[
        str | None,
        typer.Option(
            help="What a plain image (PNG, JPEG, TIFF) shows: radiograph, mammogram, ct, mr, "
            "ultrasound, photo. Slides and DICOM files say it themselves."
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Turns in all, the answer included. [20]")
    ] = None,
    votes: Annotated[int, typer.Option(help="giant: majority over this many runs.")] = 1,
    long_side: Annotated[
        int | None,
        typer.Option(
            help="Long side of the overview and every zoom, px (at most the model's cap). [1000]"
        ),
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
    prompts: Annotated[
        Path | None,
        typer.Option(help="Compiled prompts (a 'giant' program) for giant or random-region."),
    ] = None,
    look_for: Annotated[
        list[str] | None,
        typer.Option(
            "--look-for",
            help="giant: before the first turn, an image-text model (--zero-shot) maps where "
            "this fits on the tissue, shown with the overview as a hint; repeat for more "
            "prompts to compare (the first is mapped), e.g. --look-for tumour --look-for normal.",
            show_default=False,
        ),
    ] = None,
    zero_shot: ZeroShotOpt = None,
    zero_shot_model: ZeroShotModelOpt = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    requests_per_endpoint: RequestsPerEndpointOpt = None,
    script: ScriptOpt = None,
    timeout: TimeoutOpt = None,
    max_retries: RetriesOpt = None,
    device: DeviceOpt = None,
    reasoning_effort: ReasoningEffortOpt = None,
    preset: PresetOpt = None,
    budget_usd: BudgetOpt = None,
    price_in: PriceInOpt = None,
    price_out: PriceOutOpt = None,
    trace: TraceOpt = None,
    trace_content: TraceContentOpt = None,
) -> None:
    """Ask a question about a slide or a CT/MR volume; the agent looks, zooms, and answers.

      medagent ask slide.svs "Which organ is this tissue from?" --options "lung;liver;colon"

      medagent ask ct_series/ "Is there a bone-dense lesion?" --options "yes;no"

    A CT/MR series folder is navigated from a montage of its slices: the agent goes to
    slices and zooms into them (giant only).

    Prints each step as it happens, then the answer, the status and the trajectory
    (trajectory.html in the run folder: the overview with every zoom, each crop and the
    model's reasoning). Exits 0 when answered, 1 when not, 2 on a usage error, 3 when
    --budget-usd stopped it (rerun with a higher budget and the same --out to resume).
    """
    from medagent.agents.giant import GiantNavigator, check_volume_run
    from medagent.cli._optimize import load_prompts
    from medagent.imaging import (
        Slide,
        Volume,
        holds_volume,
        is_dicomweb_ref,
        open_image,
        open_volume,
    )
    from medagent.imaging import modality as modality_of
    from medagent.models import SpendCap, build_model
    from medagent.tools import SamSegmenter

    if method not in ("giant", "thumbnail", "patches", "random-region"):
        raise ConfigError(f"--method {method!r}: choose giant, thumbnail, patches or random-region")
    settings = build_settings(
        backend=backend,
        model=model,
        base_url=base_url,
        requests_per_endpoint=requests_per_endpoint,
        script=script,
        timeout_s=timeout,
        max_retries=max_retries,
        device=device,
        reasoning_effort=reasoning_effort,
        preset=preset,
        trace=trace,
        trace_content=trace_content,
    )
    from medagent.agents.giant import GiantConfig

    config = config_from_flags(
        GiantConfig,
        flag_names={
            "max_steps": "--steps",
            "max_images_in_context": "--max-images",
            "guides_on_crops": "--crop-guides",
            "timeout_s": "--item-timeout",
        },
        max_steps=steps,
        long_side=long_side,
        max_images_in_context=max_images,
        strict_regions=strict_regions,
        guides_on_crops=crop_guides,
        temperature=temperature,
        seed=seed,
        timeout_s=item_timeout,
        look_for=look_for or None,
    )
    if config.look_for and zero_shot is None:
        raise ConfigError("--look-for needs --zero-shot EMBEDDER (an image-text model, e.g. plip)")
    if zero_shot is not None and not config.look_for:
        raise ConfigError("--zero-shot maps what --look-for names; add --look-for PROMPT")
    choices = [o.strip() for o in options.split(";") if o.strip()] if options else None
    kind = None
    if modality is not None:
        try:
            kind = modality_of(modality).kind
        except ValueError as exc:
            raise ConfigError(f"--modality: {exc}") from None
    _, spend = spend_for(settings, budget_usd, price_in, price_out)
    opened: Slide | Volume
    if not is_dicomweb_ref(slide) and holds_volume(Path(slide)):  # a CT/MR series: a volume
        check_volume_run(method, prompts=prompts is not None, look_for=bool(config.look_for))
        opened = open_volume(Path(slide))
    else:
        opened = open_image(slide, modality=kind)
    chat_model = build_model(settings)
    if spend is not None:
        chat_model = SpendCap(chat_model, spend)
    navigator = GiantNavigator(
        chat_model,
        config,
        method=method,  # type: ignore[arg-type]  # checked against the choices above
        votes=votes,
        on_event=None if as_json else _print_event,
        segmenter=SamSegmenter.optional(settings.sam_model),
        prompts=load_prompts(prompts),
        scorer=build_scorer(zero_shot, zero_shot_model) if config.look_for else None,
    )

    async def _run() -> Any:
        try:
            return await navigator.arun(opened, question, options=choices, run_dir=out)
        finally:
            await chat_model.aclose()

    with traced(settings):
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

    from medagent.imaging import build_demo_slide

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
        return _traced_if_on(candidate, settings)
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
    return _traced_if_on(TransformersBackend(folder, device=settings.device), settings)


def _traced_if_on(model: Any, settings: Settings) -> Any:
    """A model built here rather than by ``build_model``, spanned as ``build_model``'s are."""
    if not settings.trace:
        return model
    from medagent.models import TracedModel

    return TracedModel(model, provider=settings.backend)


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
    trace: TraceOpt = None,
    trace_content: TraceContentOpt = None,
) -> None:
    """Run the GIANT navigator on a built-in gigapixel slide, offline.

      medagent demo

      medagent demo --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct

    The slide (60,000 x 50,000 px at 0.5 µm/px, real IHC tissue shipped with scikit-image)
    is built once into the cache folder. With no backend configured, the demo uses
    Qwen2.5-VL-3B-Instruct if it is in the local Hugging Face cache, else a tiny test model
    whose answers are random. Open the printed trajectory.html to see every step.
    """
    from medagent.agents.giant import GiantConfig, GiantNavigator
    from medagent.imaging import open_image

    settings = build_settings(
        backend=backend,
        model=model,
        base_url=base_url,
        timeout_s=timeout,
        device=device,
        trace=trace,
        trace_content=trace_content,
    )
    config = config_from_flags(GiantConfig, flag_names={"max_steps": "--steps"}, max_steps=steps)
    path = _demo_slide(settings.cache_dir, rebuild)
    chat_model = _demo_model(settings)
    console.print(f"question: {DEMO_QUESTION}")
    navigator = GiantNavigator(chat_model, config, on_event=_print_event)

    async def _run() -> Any:
        try:
            return await navigator.arun(
                open_image(path), DEMO_QUESTION, options=DEMO_OPTIONS, run_dir=out
            )
        finally:
            await chat_model.aclose()

    with traced(settings):
        result = asyncio.run(_run())
    _report(result, as_json=False)
