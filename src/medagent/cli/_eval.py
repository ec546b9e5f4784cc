"""``medagent eval``: run a method over a dataset (resumable), and report on runs."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
    app,
    build_settings,
    console,
    err_console,
)
from medagent.errors import ConfigError, InputError
from medagent.settings import Settings

__all__ = ["BudgetOpt", "PriceInOpt", "PriceOutOpt", "eval_app", "spend_for"]

BudgetOpt = Annotated[
    float | None,
    typer.Option(
        "--budget-usd",
        help="Stop before the model call that could take this run's spend over this many USD; "
        "a rerun with a higher budget resumes.",
        min=0.0,
        show_default=False,
    ),
]
PriceInOpt = Annotated[
    float | None,
    typer.Option(
        help="USD per million prompt tokens (default: the price table's, 0 for local backends).",
        min=0.0,
        show_default=False,
    ),
]
PriceOutOpt = Annotated[
    float | None,
    typer.Option(
        help="USD per million completion tokens (default: the price table's).",
        min=0.0,
        show_default=False,
    ),
]


def spend_for(
    settings: Settings,
    budget_usd: float | None,
    price_in: float | None,
    price_out: float | None,
) -> tuple[Any, Any]:
    """The model's prices (``None``: unknown) and, with a budget, the ``Spend`` that keeps it.

    An unpriced model with a budget is a ``ConfigError`` naming --price-in/--price-out.
    """
    from medagent.models import Spend, resolve_prices

    prices = resolve_prices(
        settings.model or settings.script or "",
        settings.backend,
        price_in=price_in,
        price_out=price_out,
        budget_usd=budget_usd,
    )
    if budget_usd is None or prices is None:
        return prices, None
    return prices, Spend(prices, budget_usd)


eval_app = typer.Typer(
    help="Batch evaluation: run a method over a dataset, then report.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


def _model_factory(settings: Settings, cache: Path | None, spend: Any = None) -> Any:
    """A picklable factory (Ray workers call it) for the configured, maybe cached, model;
    with a ``Spend`` (local executor only), capped by it."""
    return functools.partial(_build, settings, cache, spend)


def _build(settings: Settings, cache: Path | None, spend: Any = None) -> Any:
    from medagent.models import CachedModel, SpendCap, build_model

    model = build_model(settings)
    if spend is not None:
        model = SpendCap(model, spend)  # inside the cache: a cached reply costs nothing
    return CachedModel(model, cache) if cache else model


def _loader_options(
    dataset: str,
    *,
    tasks: str | None,
    split: str | None,
    slides: list[Path] | None,
    image_dir: Path | None,
) -> dict[str, Any]:
    """The flags a dataset's loader takes, as its keywords; a flag it cannot use is an error
    (``--slides`` on an image benchmark would otherwise be silently ignored)."""
    from medagent.evals.datasets import loader_options

    accepted = loader_options(dataset)
    options: dict[str, Any] = {}
    # Tasks are chosen before --limit counts, by the loaders that know tasks.
    if "tasks" in accepted:
        options["tasks"] = tasks.split(",") if tasks else None
    given = {"--split": split, "--slides": slides, "--image-dir": image_dir}
    for flag, keyword in (
        ("--split", "split"),
        ("--slides", "slide_roots"),
        ("--image-dir", "image_dir"),
    ):
        value = given[flag]
        if keyword in accepted:
            if value is not None:
                options[keyword] = value
        elif value:
            raise ConfigError(f"{flag}: --dataset {dataset} does not use it")
    return options


@eval_app.command("run")
def eval_run(
    dataset: Annotated[
        str,
        typer.Option(
            help="multipathqa, vqa-rad, pathvqa, slake, pmc-vqa, medxpertqa, slidebench, "
            "wsi-vqa, jsonl or insight (`medagent eval datasets` says what each reads).",
            show_default=False,
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="The dataset file or folder, as its authors publish it.", show_default=False
        ),
    ],
    out: Annotated[Path, typer.Option(help="Run folder; rerun the command to resume it.")],
    method: Annotated[
        str,
        typer.Option(help="giant, thumbnail, patches, random-region, vqa, rag or insight."),
    ] = "giant",
    index: Annotated[
        Path | None,
        typer.Option(help="rag, insight: the index of similar cases (with reports)."),
    ] = None,
    roots: Annotated[int, typer.Option(help="insight: root questions, one branch each.")] = 3,
    depth: Annotated[int, typer.Option(help="insight: questions per branch.")] = 4,
    adaptive: Annotated[
        bool, typer.Option(help="insight: end a branch when nothing new is found.")
    ] = False,
    matcher: Annotated[
        str,
        typer.Option(
            help="insight: match insights to references with the run's model as judge "
            "(score > 5 of 10) or by ROUGE-L > 0.5 (rouge; no model calls)."
        ),
    ] = "judge",
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="giant, random-region, vqa, insight, rag: compiled prompts (medagent "
            "optimize, or a program's save())."
        ),
    ] = None,
    slides: Annotated[
        list[Path] | None, typer.Option(help="Folder holding the slides; repeatable.")
    ] = None,
    tasks: Annotated[str | None, typer.Option(help="Only these tasks, comma-separated.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N items.")] = None,
    split: Annotated[
        str | None,
        typer.Option(help="The split to run (default: test); vqa-rad also takes all."),
    ] = None,
    image_dir: Annotated[
        Path | None,
        typer.Option(
            help="Tables with images inside (Parquet, HF save_to_disk): where the images are "
            "written, once each (default: CACHE_DIR/dataset-images).",
        ),
    ] = None,
    skip_missing: Annotated[
        bool, typer.Option(help="Leave out items whose slide or image is missing.")
    ] = False,
    concurrency: Annotated[
        int,
        typer.Option(help="Items in flight at once; --requests-per-endpoint caps each server."),
    ] = 4,
    item_timeout: Annotated[float, typer.Option(help="Seconds per item.", min=1.0)] = 900.0,
    steps: Annotated[int, typer.Option(help="giant: turns per item.", min=1)] = 20,
    votes: Annotated[int, typer.Option(help="giant: majority over k runs.")] = 1,
    cache: Annotated[
        bool, typer.Option(help="Reuse identical model replies (RUN_DIR/cache.sqlite).")
    ] = False,
    rerun_failed: Annotated[bool, typer.Option(help="Run only items that failed.")] = False,
    new_run: Annotated[
        bool, typer.Option(help="Start over in --out even if its configuration differs.")
    ] = False,
    executor: Annotated[str, typer.Option(help="local or ray.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: a local instance).")
    ] = None,
    ray_item_max_mib: Annotated[
        int,
        typer.Option(
            help="--executor ray: the largest item folder a worker ships back (MiB); a bigger "
            "one is not kept and the item's result says so.",
            min=1,
        ),
    ] = 512,
    budget_usd: BudgetOpt = None,
    price_in: PriceInOpt = None,
    price_out: PriceOutOpt = None,
    annotations: Annotated[
        Path | None,
        typer.Option(
            help="Folder of pathologists' QuPath GeoJSON files named after the slides "
            "(SLIDE_STEM.geojson): each result records how the agent's views met them.",
            show_default=False,
        ),
    ] = None,
    annotation_max_downsample: Annotated[
        float,
        typer.Option(
            help="--annotations: a view counts as seen closely at or below this many level-0 "
            "pixels per pixel shown.",
            min=0.01,
        ),
    ] = 4.0,
    seed: Annotated[int, typer.Option(help="Seed for sampling and baselines.")] = 0,
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
    trace: TraceOpt = None,
    trace_content: TraceContentOpt = None,
) -> None:
    """Run a method over a dataset; finished items are never run twice.

      medagent eval run --dataset multipathqa --data MultiPathQA.csv --slides /data/slides \\
          --tasks tcga --method giant --base-url http://127.0.0.1:8000/v1 --model M --out runs/e1

    Results go to OUT/results.jsonl as items finish (one line each, synced to disk). Rerunning
    the command resumes; --rerun-failed retries failures only. Ctrl-C stops cleanly.

    --budget-usd stops the run before the model call that could take this invocation's spend
    over it: finished items are kept, the rest are left for a rerun (with a higher budget),
    and the exit code is 3. Exit codes: 0 all ok, 1 some items failed, 2 an error, 3 the
    budget ended the run, 130 interrupted.
    """
    from medagent.agents.giant import GiantConfig
    from medagent.evals import EvalRunner, RunConfig, load_dataset, make_method
    from medagent.evals.datasets import DatasetKind

    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor {executor!r}: choose local or ray")
    if annotations is not None:
        from medagent.evals import check_annotations_folder

        check_annotations_folder(annotations)
    settings = build_settings(
        backend=backend,
        model=model,
        base_url=base_url,
        requests_per_endpoint=requests_per_endpoint,
        script=script,
        timeout_s=timeout,
        max_retries=max_retries,
        device=device,
        seed=seed,
        reasoning_effort=reasoning_effort,
        preset=preset,
        trace=trace,
        trace_content=trace_content,
    )
    if settings.trace and executor == "ray":
        raise ConfigError(
            "--trace records items run by the local executor; Ray workers send no spans: "
            "drop --trace or use --executor local"
        )
    options = _loader_options(dataset, tasks=tasks, split=split, slides=slides, image_dir=image_dir)
    options.update(limit=limit, skip_missing=skip_missing)
    loaded = load_dataset(cast(DatasetKind, dataset), data, **options)
    items = loaded.items
    if tasks and dataset == "insight":
        wanted = set(tasks.split(","))
        items = [i for i in items if i.task in wanted]
    giant = GiantConfig(max_steps=steps, seed=seed, timeout_s=item_timeout)
    from medagent.cli._optimize import load_prompts

    if matcher not in ("judge", "rouge"):
        raise ConfigError(f"--matcher {matcher!r}: choose judge or rouge")
    from medagent.agents.insight import InsightConfig

    try:
        insight = InsightConfig(roots=roots, depth=depth, adaptive=adaptive)
    except ValidationError as error:
        raise ConfigError(f"--roots/--depth: {error.errors()[0]['msg']}") from None
    item_method = make_method(
        method,
        giant=giant,
        votes=votes,
        index=index,
        prompts=load_prompts(prompts),
        insight=insight,
        matcher="rouge" if matcher == "rouge" else "judge",
    )
    config = RunConfig(
        dataset=dataset,
        data_path=str(data),
        dataset_sha256=loaded.source_sha256,
        tasks=tasks.split(",") if tasks else None,
        limit=limit,
        method=method,
        method_params=item_method.params(),
        backend=settings.backend,
        model=settings.model or settings.script or "",
        seed=seed,
        cache=cache,
    )
    prices, spend = spend_for(settings, budget_usd, price_in, price_out)
    if getattr(loaded, "missing", None):
        err_console.print(f"{len(loaded.missing)} items left out: their slide or image is missing")
    for reason, count in getattr(loaded, "left_out", {}).items():
        err_console.print(f"{count} questions left out: {reason}")
    scores = {"correct": 0, "scored": 0}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[score]}"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task(f"{method} on {dataset}", total=None, score="")

        def on_result(result: Any, done: int, total: int) -> None:
            if result.correct is not None:
                scores["scored"] += 1
                scores["correct"] += int(result.correct)
            running = (
                f"accuracy {scores['correct'] / scores['scored']:.1%}" if scores["scored"] else ""
            )
            progress.update(bar, completed=done, total=total, score=running)

        runner = EvalRunner(
            _model_factory(settings, out / "cache.sqlite" if cache else None, spend),
            item_method,
            config,
            out,
            concurrency=concurrency,
            item_timeout_s=item_timeout,
            rerun_failed=rerun_failed,
            new_run=new_run,
            prices=prices,
            spend=spend,
            executor="ray" if executor == "ray" else "local",
            ray_address=ray_address,
            ray_item_max_bytes=ray_item_max_mib * 2**20,
            on_result=on_result,
        )
        try:
            with traced(settings):
                outcome = asyncio.run(runner.run(items))
        except KeyboardInterrupt:
            err_console.print(
                f"interrupted: finished items are saved in {out / 'results.jsonl'}; rerun the "
                "same command to resume",
                markup=False,
            )
            raise typer.Exit(130) from None
    if annotations is not None:
        from medagent.evals import annotate_run

        outcome.notes.extend(
            annotate_run(out, annotations, max_downsample=annotation_max_downsample)
        )
    for note in outcome.notes:  # the budget's line among them, when it ended the run
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"{outcome.ran} items run ({outcome.ok} ok, {outcome.failed} failed), "
        f"{outcome.skipped} already done, in {outcome.elapsed_s:.1f} s → {out / 'results.jsonl'}"
    )
    console.print(f"report: medagent eval report {out}")
    if outcome.stopped_by_budget:
        raise typer.Exit(3)
    if outcome.failed:
        raise typer.Exit(1)


@eval_app.command("report")
def eval_report(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders; the first is the baseline each later one is paired with."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Also write the report here: a self-contained HTML page, or markdown when the "
            "name ends in .md."
        ),
    ] = None,
    replicates: Annotated[
        int, typer.Option(help="Bootstrap replicates (scores and paired differences).", min=1)
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Scores per task (mean ± std over bootstrap replicates), steps, tokens, latency, cost.

      medagent eval report runs/giant --out report.html

      medagent eval report runs/thumbnail runs/giant --out report.md

    Several runs are shown side by side, then in the paper's layout (runs as rows, tasks as
    columns) above GIANT's published numbers, which are marked "published" and enter no mean.
    Each task also gets tokens, dollars (when prices were recorded) and seconds per correct
    answer.

    Is B better than A? With two or more runs, each later run is paired with the first on
    the items both have: per task, the difference in the main metric (later − first, in
    points) with a paired bootstrap 95% CI (both runs scored on the same resamples), and for
    accuracy-type tasks the exact McNemar p over the items only one run got right. Items
    only one run has are listed, never silently dropped. Failed items count as wrong answers.
    """
    from medagent.evals import load_run, render_html, render_markdown

    reports = [load_run(run, replicates=replicates, seed=seed) for run in runs]
    for report in reports:
        for note in report.notes:
            err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    markdown = render_markdown(reports)
    console.print(markdown, markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        page = markdown if out.suffix.lower() == ".md" else render_html(reports)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(page, encoding="utf-8")
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise InputError(f"cannot write {out}: {reason}", path=str(out)) from None
        console.print(f"report written to {out}")


@eval_app.command("datasets")
def eval_datasets() -> None:
    """List the benchmarks `eval run --dataset` reads, what files each expects, its options.

    medagent eval datasets
    """
    from rich.table import Table

    from medagent.evals.datasets import DATASETS, loader_options

    flags = {"split": "--split", "tasks": "--tasks", "slide_roots": "--slides"}
    flags["image_dir"] = "--image-dir"
    table = Table("--dataset", "reads", "options")
    for name, info in DATASETS.items():
        options = [flags[o] for o in loader_options(name) if o in flags]
        table.add_row(name, info.reads, " ".join(options))
    console.print(table)
