"""``medagent optimize``: tune the VQA prompt program on a dataset, save it as compiled JSON."""

from __future__ import annotations

import asyncio
import random
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from medagent.cli._app import (
    BackendOpt,
    BaseUrlOpt,
    DeviceOpt,
    ModelOpt,
    RetriesOpt,
    ScriptOpt,
    TimeoutOpt,
    app,
    build_settings,
    console,
    err_console,
)
from medagent.errors import ConfigError

if TYPE_CHECKING:
    from medagent.prompts import CompiledProgram, OptimizationResult, ProgressEvent

__all__ = ["load_prompts", "optimize"]

OPTIMIZERS = ("bootstrap", "random-search", "instruction-search")
TASKS = ("vqa-rad", "jsonl")


def load_prompts(path: Path | None) -> CompiledProgram | None:
    """A compiled program for ``--prompts``; version warnings are printed as one line each."""
    if path is None:
        return None
    from medagent.prompts import load_compiled

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = load_compiled(path)
    for warning in caught:
        err_console.print(f"warning: {warning.message}", markup=False, highlight=False)
    return compiled


def _progress_reporter(progress: Progress) -> Any:
    """One bar per phase; the description carries calls spent and the best full score."""
    bars: dict[str, TaskID] = {}

    def report(event: ProgressEvent) -> None:
        if event.phase not in bars:
            bars[event.phase] = progress.add_task(event.phase, total=event.total, info="")
        budget = f"/{event.budget}" if event.budget else ""
        best = f", best {event.best:.3f}" if event.best is not None else ""
        progress.update(
            bars[event.phase],
            completed=event.done,
            total=event.total,
            info=f"{event.calls}{budget} calls{best}",
        )

    return report


def _summary_table(result: OptimizationResult) -> Table:
    table = Table(title=f"{result.optimizer}: every candidate")
    for column in ("#", "candidate", "score", "examples", "demos", "calls"):
        table.add_column(column, justify="right" if column != "candidate" else "left")
    for c in result.candidates:
        score = "—" if c.score is None else f"{c.score:.3f}"
        table.add_row(
            str(c.index),
            c.label,
            score if c.full else f"{score} (minibatch)",
            str(c.examples),
            ", ".join(f"{n}: {k}" for n, k in c.demos.items()),
            str(c.calls),
        )
    return table


@app.command("optimize")
def optimize(
    data: Annotated[Path, typer.Option(help="The dataset folder (vqa-rad) or .jsonl file.")],
    out: Annotated[
        Path, typer.Option(help="Where to write the compiled JSON (images go to OUT.images/).")
    ],
    optimizer: Annotated[
        str,
        typer.Option(
            help="bootstrap (demos from the model's own right answers), random-search (several "
            "demo sets, the best on validation), instruction-search (model-proposed "
            "instructions x demo sets, TPE; needs medagent[optimize])."
        ),
    ] = "bootstrap",
    task: Annotated[
        str, typer.Option(help="vqa-rad, or jsonl (your items with images and a question).")
    ] = "vqa-rad",
    split: Annotated[str, typer.Option(help="vqa-rad: the split to draw from.")] = "train",
    train: Annotated[int, typer.Option(help="Training examples (demos come from these).")] = 50,
    val: Annotated[
        int, typer.Option(help="Validation examples (candidates are scored on these).")
    ] = 50,
    budget: Annotated[
        int | None, typer.Option(help="At most this many model calls in all. [no limit]")
    ] = None,
    module: Annotated[
        str, typer.Option(help="predict (answer only) or cot (reasoning, then the answer).")
    ] = "predict",
    demos: Annotated[int, typer.Option(help="Bootstrapped demos per predictor, at most.")] = 4,
    labeled: Annotated[
        int, typer.Option(help="Demos in all (labeled ones fill up), at most.")
    ] = 16,
    rounds: Annotated[int, typer.Option(help="bootstrap: attempts per training example.")] = 1,
    candidates: Annotated[int, typer.Option(help="random-search: programs tried.")] = 10,
    instructions: Annotated[
        int, typer.Option(help="instruction-search: instruction candidates per predictor.")
    ] = 5,
    demo_sets: Annotated[int, typer.Option(help="instruction-search: demo sets.")] = 5,
    trials: Annotated[int, typer.Option(help="instruction-search: TPE trials.")] = 20,
    minibatch: Annotated[
        int, typer.Option(help="instruction-search: validation examples per trial.")
    ] = 25,
    full_eval_every: Annotated[
        int, typer.Option(help="instruction-search: full validation every N trials.")
    ] = 5,
    concurrency: Annotated[int, typer.Option(help="Model calls in flight at once.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed for the split, sampling and the search.")] = 0,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    script: ScriptOpt = None,
    timeout: TimeoutOpt = None,
    max_retries: RetriesOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Tune the VQA prompt program (instructions, demos) for a model; save it as JSON.

    \b
      medagent optimize --task vqa-rad --data vqa-rad/ --train 50 --val 50 \\
          --optimizer random-search --budget 2000 --out prompts/vqa-rad.json \\
          --base-url http://127.0.0.1:8000/v1 --model M
      medagent eval run --method vqa --prompts prompts/vqa-rad.json \\
          --dataset vqa-rad --data vqa-rad/ --out runs/tuned --base-url ... --model M

    The examples are shuffled with --seed, then split: --train examples give demos, --val
    examples score each candidate by the dataset's own metric (yes/no, option number or
    normalized exact match). The zero-shot program is scored first; a table lists every
    candidate and its score. --budget caps the model calls of the whole search: it stops there
    and keeps the best program scored so far. Use the same backend and model to evaluate.
    """
    from medagent.evals import load_dataset, vqa_example, vqa_metric
    from medagent.evals.datasets import DatasetKind
    from medagent.models import GenerateParams, build_model
    from medagent.prompts import (
        BootstrapConfig,
        BootstrapFewShot,
        InstructionSearch,
        InstructionSearchConfig,
        RandomSearch,
        RandomSearchConfig,
        vqa_program,
    )

    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer {optimizer!r}: choose {', '.join(OPTIMIZERS)}")
    if task not in TASKS:
        raise ConfigError(f"--task {task!r}: choose {', '.join(TASKS)}")
    if module not in ("predict", "cot"):
        raise ConfigError(f"--module {module!r}: choose predict or cot")
    if train < 1 or val < 0:
        raise ConfigError("--train must be at least 1 and --val 0 or more")
    if val == 0 and optimizer != "bootstrap":
        raise ConfigError(f"--optimizer {optimizer} scores candidates on --val examples; give some")
    settings = build_settings(
        backend=backend,
        model=model,
        base_url=base_url,
        script=script,
        timeout_s=timeout,
        max_retries=max_retries,
        device=device,
        seed=seed,
    )
    options: dict[str, Any] = {"split": split} if task == "vqa-rad" else {}
    kind: DatasetKind = "vqa-rad" if task == "vqa-rad" else "jsonl"
    items = [i for i in load_dataset(kind, data, **options).items if i.images and i.answer]
    if len(items) < train + val:
        raise ConfigError(
            f"{data} has {len(items)} usable items (with images and an answer); --train {train} "
            f"--val {val} needs {train + val}"
        )
    random.Random(seed).shuffle(items)
    trainset = [vqa_example(i) for i in items[:train]]
    valset = [vqa_example(i) for i in items[train : train + val]]
    program = vqa_program(
        "cot" if module == "cot" else "predict",
        params=GenerateParams(max_tokens=512, temperature=0.0, seed=seed),
    )
    common: dict[str, Any] = {"budget": budget, "seed": seed, "concurrency": concurrency}
    chat_model = build_model(settings)

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    ) as progress:
        on_progress = _progress_reporter(progress)

        async def run() -> OptimizationResult:
            try:
                if optimizer == "bootstrap":
                    bootstrap = BootstrapConfig(
                        max_bootstrapped_demos=demos,
                        max_labeled_demos=labeled,
                        max_rounds=rounds,
                        **common,
                    )
                    return await BootstrapFewShot(
                        vqa_metric, bootstrap, on_progress=on_progress
                    ).compile(program, model=chat_model, trainset=trainset, valset=valset)
                if optimizer == "random-search":
                    search = RandomSearchConfig(
                        num_candidates=candidates,
                        max_bootstrapped_demos=demos,
                        max_labeled_demos=labeled,
                        max_rounds=rounds,
                        **common,
                    )
                    return await RandomSearch(vqa_metric, search, on_progress=on_progress).compile(
                        program, model=chat_model, trainset=trainset, valset=valset
                    )
                instruction_search = InstructionSearchConfig(
                    num_instructions=instructions,
                    num_demo_sets=demo_sets,
                    num_trials=trials,
                    minibatch_size=minibatch,
                    full_eval_every=full_eval_every,
                    max_bootstrapped_demos=demos,
                    max_labeled_demos=labeled,
                    **common,
                )
                return await InstructionSearch(
                    vqa_metric, instruction_search, on_progress=on_progress
                ).compile(program, model=chat_model, trainset=trainset, valset=valset)
            finally:
                await chat_model.aclose()

        result = asyncio.run(run())
    console.print(_summary_table(result))
    compiled = result.save(out, model=settings.model or settings.script)
    zero = "—" if result.baseline_score is None else f"{result.baseline_score:.3f}"
    best = "—" if result.best_score is None else f"{result.best_score:.3f}"
    if result.stopped:
        err_console.print(
            f"stopped early: the budget of {result.budget} model calls ran out", markup=False
        )
    console.print(
        f"zero-shot {zero} → optimized {best} on {len(valset)} validation examples, "
        f"{result.calls} model calls; prompts {compiled.sha256} written to {out}"
    )
    console.print(f"use them with: medagent eval run --method vqa --prompts {out} ...")
