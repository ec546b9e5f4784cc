"""``medagent insight``: MedInsightAgent from the command line."""

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
from medagent.errors import ConfigError


def _print_event(event: Any) -> None:
    """One line per step of the run, as it happens."""
    where = f"b{event.branch}-d{event.depth}" if event.branch is not None else "     "
    text = " ".join(event.text.split())
    if event.kind == "roots":
        console.print(f"[bold]roots[/bold]   {text}", highlight=False)
    elif event.kind == "question":
        console.print(f"{where}  [bold]?[/bold] {text}", highlight=False)
    elif event.kind == "tool":
        console.print(f"{where}    [dim]{text[:140]}[/dim]", highlight=False)
    elif event.kind == "insight":
        console.print(f"{where}  [green]insight[/green] {text}", highlight=False)
    elif event.kind == "failed":
        console.print(f"{where}  [yellow]no answer[/yellow]: {text}", highlight=False)
    elif event.kind == "followup":
        console.print(f"{where}  [cyan]follow-up[/cyan] {text}", highlight=False)
    elif event.kind == "stop":
        console.print(f"{where}  [dim]branch ends: {text}[/dim]", highlight=False)


def _report(report: Any, as_json: bool) -> None:
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        table = Table(show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for insight in report.insights[:10]:
            table.add_row(
                f"#{insight.rank}",
                f"{insight.text} [dim]({insight.confidence:.0%}, {len(insight.evidence)} "
                f"evidence, {insight.id})[/dim]",
            )
        if len(report.insights) > 10:
            table.add_row("…", f"{len(report.insights) - 10} more in the report")
        if report.summary:
            table.add_row("summary", report.summary)
        colour = {"completed": "green", "partial": "yellow"}.get(report.status, "red")
        table.add_row("status", f"[{colour}]{report.status}[/{colour}]")
        if report.error:
            table.add_row("error", report.error)
        table.add_row(
            "work",
            f"{len(report.questions)} questions, {len(report.trace)} model calls in "
            f"{report.elapsed_s:.1f} s, {report.prompt_tokens}+{report.completion_tokens} tokens",
        )
        table.add_row("report", f"{report.html_path}\n{report.json_path}")
        console.print(table)
    if report.status == "budget_exhausted":
        err_console.print(
            "the budget ended the run (what was found is in the report); rerun with a higher "
            "--budget-usd to go further",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(3)
    if report.status not in ("completed", "partial"):
        raise typer.Exit(1)


@app.command("insight")
def insight(
    paths: Annotated[
        list[Path],
        typer.Argument(help="A slide, or one or more images (PNG, JPEG, DICOM, …) of one case."),
    ],
    goal: Annotated[
        str,
        typer.Option(
            help="The analysis goal, in quotes: what the analysis is for.", show_default=False
        ),
    ],
    roots: Annotated[int | None, typer.Option(help="Root questions (branches). [3]")] = None,
    depth: Annotated[
        int | None, typer.Option(help="Questions per branch, the root included. [4]")
    ] = None,
    adaptive: Annotated[
        bool, typer.Option(help="End a branch early when the composer finds nothing new.")
    ] = False,
    steps: Annotated[
        int | None, typer.Option(help="Model turns per question, the answer included. [6]")
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(
            help="An index of similar cases (medagent index build): adds search and reports."
        ),
    ] = None,
    long_side: Annotated[
        int | None, typer.Option(help="Long side of every image sent, px. [1000]")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature. [0]")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed. [0]")] = None,
    run_timeout: Annotated[
        float | None, typer.Option(help="Seconds before the run is given up. [1800]")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder. [runs/TIMESTAMP-ID]", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    prompts: Annotated[
        Path | None,
        typer.Option(help="Compiled prompts (an 'insight' program) for the agent's modules."),
    ] = None,
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
    zero_shot: ZeroShotOpt = None,
    zero_shot_model: ZeroShotModelOpt = None,
    trace: TraceOpt = None,
    trace_content: TraceContentOpt = None,
) -> None:
    """Discover insights in a slide or images for an analysis goal (MedInsightAgent).

      medagent insight slide.svs --goal "Characterize the tumour" --model M

      medagent insight cxr.png --goal "Assess the lungs" --roots 2 --depth 3 \\
          --adaptive --index idx/vqa-rad --model M

    A root finder lists salient findings and poses --roots questions; for each, an agent
    gathers evidence with tools (zoom, tissue, segment, measure; similar cases and their
    reports with --index; zero_shot, where on a slide's tissue each text prompt fits, with
    --zero-shot) and states an insight; a composer asks a follow-up per branch
    (descriptive, diagnostic, predictive or prescriptive) until --depth questions per branch.
    Prints each step as it happens, then the ranked insights. The run folder holds
    insights.html (each insight with its evidence crops and measurements), insights.json,
    events.jsonl and manifest.json. Exits 0 when insights were found, 1 when not, 2 on a
    usage error, 3 when --budget-usd stopped it.
    """
    from medagent.agents.insight import InsightAgent, insight_program
    from medagent.cli._optimize import load_prompts
    from medagent.imaging import open_image
    from medagent.models import SpendCap, build_model
    from medagent.tools import SamSegmenter

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
    from medagent.agents.insight import InsightConfig

    config = config_from_flags(
        InsightConfig,
        flag_names={"max_steps": "--steps", "timeout_s": "--run-timeout"},
        roots=roots,
        depth=depth,
        adaptive=adaptive,
        max_steps=steps,
        long_side=long_side,
        temperature=temperature,
        seed=seed,
        timeout_s=run_timeout,
    )
    if not goal.strip():
        raise ConfigError("--goal is empty; say what the analysis is for")
    from medagent.prompts import resolve_program

    # A wrong file or another agent's program fails here, before a model is loaded.
    program = resolve_program(load_prompts(prompts), insight_program(), "the insight agent")
    opened = [open_image(path) for path in paths]  # bad paths fail here, before any model call
    searcher = None
    if index is not None:
        from medagent.retrieval import open_index

        searcher = open_index(index)
    scorer = build_scorer(zero_shot, zero_shot_model)  # a scorer without text fails here
    _, spend = spend_for(settings, budget_usd, price_in, price_out)
    chat_model = build_model(settings)
    if spend is not None:
        chat_model = SpendCap(chat_model, spend)
    agent = InsightAgent(
        chat_model,
        config,
        searcher=searcher,
        on_event=None if as_json else _print_event,
        segmenter=SamSegmenter.optional(settings.sam_model),
        prompts=program,
        scorer=scorer,
    )

    async def _run() -> Any:
        try:
            return await agent.arun(opened, goal, run_dir=out)
        finally:
            await chat_model.aclose()

    try:
        with traced(settings):
            report = asyncio.run(_run())
    finally:
        for slide in opened:
            slide.close()
    _report(report, as_json)
