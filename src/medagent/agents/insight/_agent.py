"""``InsightAgent``: an analysis goal over a slide or images in, an ``InsightReport`` out.

Each run gets a folder: ``artifacts/`` (every image shown or produced by a tool),
``events.jsonl`` (each model call and progress event as it happens), ``manifest.json``,
``insights.json`` (the report) and ``insights.html`` (the same, as a self-contained page).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from medagent._trace import agent_run
from medagent.agents.base import (
    ProgramRef,
    RunManifest,
    new_run_dir,
    render_long_side,
    run_sync,
)
from medagent.agents.insight._config import InsightConfig
from medagent.agents.insight._context import RunContext, Source, role_prompt
from medagent.agents.insight._graph import InsightState, build_graph
from medagent.agents.insight._modules import rank_insights
from medagent.agents.insight._outputs import MAX_IMAGES
from medagent.agents.insight._prompts import insight_program
from medagent.agents.insight._report import InsightEvent, InsightReport, Status
from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError
from medagent.imaging import RenderPolicy, Slide, open_image
from medagent.models import ChatModel, watch_budget
from medagent.prompts import CompiledProgram, Program, load_template, resolve_program
from medagent.tools import ImageSearcher, Segmenter, TextImageScorer, ToolContext

__all__ = ["TEMPLATES", "InsightAgent", "ImagesArg", "prompt_hashes"]

TEMPLATES = [
    "insight/role",
    "insight/roots",
    "insight/agent",
    "insight/tools",
    "insight/tool_result",
    "insight/final",
    "insight/compose",
    "insight/summary",
    "insight/reports",
]

ImagesArg = str | Path | Slide | Sequence[str | Path | Slide]


def prompt_hashes() -> dict[str, str]:
    """Content hashes of every prompt template the insight agent uses."""
    return {name: load_template(name).sha256 for name in TEMPLATES}


def _as_list(images: ImagesArg) -> list[str | Path | Slide]:
    if isinstance(images, str | Path | Slide):
        return [images]
    return list(images)


class InsightAgent:
    """Discovers multi-step insights in medical images for an analysis goal (MedInsightAgent).

    ``model`` is any ``ChatModel``. ``searcher`` (e.g. ``medagent.retrieval.open_index(DIR)``)
    adds similar-case search and report retrieval to the tools. ``scorer`` (an image-text model
    of the CLIP family, e.g. ``medagent.retrieval.make_embedder("plip")``) adds ``zero_shot``,
    where on a slide's tissue each text prompt fits. ``on_event`` receives progress.
    ``prompts`` (an ``insight`` program, see ``insight_program``, or its compiled JSON) replaces
    each module's prompt with its predictor's instructions and adds its demos as worked examples
    before the module's request.
    """

    def __init__(
        self,
        model: ChatModel,
        config: InsightConfig | None = None,
        *,
        searcher: ImageSearcher | None = None,
        runs_dir: str | Path = "runs",
        on_event: Callable[[InsightEvent], None] | None = None,
        segmenter: Segmenter | None = None,
        prompts: CompiledProgram | Program | None = None,
        scorer: TextImageScorer | None = None,
    ) -> None:
        self.prompts = resolve_program(prompts, insight_program(), "the insight agent")
        self.model = model
        self.config = config or InsightConfig()
        self.searcher = searcher
        self.runs_dir = Path(runs_dir)
        self.on_event = on_event or (lambda event: None)
        self.segmenter = segmenter
        self.scorer = scorer

    def run(
        self, images: ImagesArg, goal: str, *, run_dir: str | Path | None = None
    ) -> InsightReport:
        """Blocking form of ``arun`` (works inside notebooks too)."""
        return run_sync(self.arun(images, goal, run_dir=run_dir))

    async def arun(
        self, images: ImagesArg, goal: str, *, run_dir: str | Path | None = None
    ) -> InsightReport:
        """Analyse ``images`` (one slide, or one or more images) for ``goal``."""
        if not goal.strip():
            raise ConfigError("the analysis goal is empty; say what the analysis is for")
        given = _as_list(images)
        if not given:
            raise ConfigError("no image given; pass a slide or at least one image")
        if len(given) > MAX_IMAGES:
            raise ConfigError(f"{len(given)} images given; at most {MAX_IMAGES} per run")
        opened = [item if isinstance(item, Slide) else open_image(item) for item in given]
        directory = Path(run_dir) if run_dir else new_run_dir(self.runs_dir)
        try:
            return await self._run(opened, goal.strip(), directory)
        finally:
            for item, slide in zip(given, opened, strict=True):
                if not isinstance(item, Slide):
                    slide.close()

    # -- internals ----------------------------------------------------------------------------
    def _manifest(self, slides: list[Slide], goal: str, long_side: int) -> RunManifest:
        """What this run is; the role as sent names the images' kinds, so it is hashed too."""
        return RunManifest.for_model(
            self.model,
            agent="insight",
            method="insight",
            inputs={
                "goal": goal,
                "images": [s.source for s in slides],
                "index": self.searcher is not None,
                "zero_shot": self.scorer.name if self.scorer is not None else None,
            },
            config=self.config.model_dump(mode="json"),
            prompts=prompt_hashes(),
            prompt_program=ProgramRef.of(self.prompts),
            image_long_side=long_side,
            seed=self.config.seed,
        ).with_rendered(system=role_prompt(slides))

    def run_context(self, slides: list[Slide], goal: str, directory: Path) -> RunContext:
        """What the graph's nodes share for one run in ``directory`` (for ``build_graph``):
        each image with its tools, rendering at the long side the model will receive."""
        artifacts = ArtifactStore(directory / "artifacts")
        long_side = render_long_side(self.model, self.config.long_side)
        sources = [
            Source(
                number=number,
                slide=slide,
                tools=ToolContext(
                    artifacts=artifacts,
                    slide=slide,
                    policy=RenderPolicy(long_side=long_side),
                    segmenter=self.segmenter,
                    searcher=self.searcher,
                    scorer=self.scorer,
                ),
            )
            for number, slide in enumerate(slides, start=1)
        ]
        return RunContext(
            model=self.model,
            config=self.config,
            goal=goal,
            sources=sources,
            artifacts=artifacts,
            events_path=directory / "events.jsonl",
            searcher=self.searcher,
            scorer=self.scorer,
            on_event=self.on_event,
            prompts=self.prompts,
        )

    async def _run(self, slides: list[Slide], goal: str, directory: Path) -> InsightReport:
        manifest = self._manifest(slides, goal, render_long_side(self.model, self.config.long_side))
        manifest.write(directory)
        run = self.run_context(slides, goal, directory)
        run.events_path.write_text("")  # a rerun in the same folder starts its log afresh
        started = time.perf_counter()
        app = build_graph(run).compile()
        state: InsightState
        try:
            with watch_budget() as refused, agent_run("insight", manifest.run_id):
                final = await asyncio.wait_for(
                    app.ainvoke(InsightState(), {"recursion_limit": 4 * self.config.depth + 10}),
                    timeout=self.config.timeout_s,
                )
            state = InsightState(status=final.get("status", "running"), error=final.get("error"))
            if refused and state.get("status") == "model_error":
                # The spend cap, not the server, stopped it; what was found is kept.
                state = {"status": "budget_exhausted", "error": str(refused[-1])}
        except TimeoutError:
            state = {
                "status": "timeout",
                "error": f"the run did not finish within the {self.config.timeout_s:g} s limit",
            }
            for record in run.questions:
                if record.status == "pending":
                    record.status = "timeout"
            run.ranked = rank_insights(run.insights)
        status, error = self._status(run, state)
        report = InsightReport(
            run_id=manifest.run_id,
            run_dir=str(directory),
            goal=goal,
            status=status,
            error=error,
            summary=run.summary,
            insights=run.ranked,
            findings=run.findings,
            questions=run.questions,
            sources=[s.record() for s in run.sources],
            trace=run.trace,
            model=self.model.name,
            config=self.config.model_dump(mode="json"),
            started_at=manifest.created_at,
            finished_at=datetime.now(UTC).isoformat(),
            elapsed_s=time.perf_counter() - started,
        )
        self._write(report, run.artifacts)
        self.on_event(InsightEvent(kind="done", text=status))
        return report

    @staticmethod
    def _status(run: RunContext, state: InsightState) -> tuple[Status, str | None]:
        """The run's status and, when it is not ``completed``, why."""
        error = state.get("error")
        if state.get("status") == "timeout":
            return "timeout", error
        if state.get("status") == "model_error":
            return "model_error", error
        if state.get("status") == "budget_exhausted":
            return "budget_exhausted", error
        if not run.ranked:
            return "failed", error or "no question gave a valid answer (see the trace)"
        refused = [c for c in run.trace if c.status != "ok"]
        if refused:
            unanswered = [q.id for q in run.questions if q.status != "answered"]
            parts = [f"{len(refused)} model call(s) gave no valid output"]
            if unanswered:
                parts.append(f"unanswered: {', '.join(unanswered)}")
            return "partial", "; ".join(parts)
        return "completed", None

    @staticmethod
    def _write(report: InsightReport, artifacts: ArtifactStore) -> None:
        from medagent.agents.insight._html import render_insight_html

        report.json_path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
        report.html_path.write_text(render_insight_html(report, artifacts), encoding="utf-8")
