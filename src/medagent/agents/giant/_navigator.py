"""``GiantNavigator``: ask a question about a slide or a CT/MR volume; get an answer, a status
and a trajectory.

Each run gets a directory: ``artifacts/`` (every image shown), ``events.jsonl`` (the log as it
happens), ``checkpoints.sqlite`` (LangGraph's, one thread per run, for resuming),
``manifest.json``, ``trajectory.json`` and ``trajectory.html``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

from medagent._trace import agent_run
from medagent.agents.base import (
    ProgramRef,
    RunManifest,
    majority_vote,
    new_run_dir,
    normalize_answer,
    render_long_side,
    run_sync,
)
from medagent.agents.giant._actions import AnswerAction
from medagent.agents.giant._config import GiantConfig, Method
from medagent.agents.giant._graph import (
    GiantEvent,
    GiantState,
    NavigationMethod,
    RunContext,
    build_graph,
    checkpoint_serde,
)
from medagent.agents.giant._prompts import system_prompt
from medagent.agents.giant._trajectory import RunLog, Status, Trajectory, WhereToLook
from medagent.agents.giant._volume import (
    VOLUME_TEMPLATES,
    check_volume_run,
    volume_info,
    volume_system_prompt,
)
from medagent.artifacts import ArtifactRef, ArtifactStore
from medagent.errors import BudgetExhaustedError, ConfigError
from medagent.imaging import (
    RenderPolicy,
    Slide,
    Volume,
    holds_volume,
    is_dicomweb_ref,
    open_image,
    open_volume,
)
from medagent.models import ChatModel, Message, watch_budget
from medagent.prompts import (
    CompiledProgram,
    InputField,
    Predict,
    Program,
    Signature,
    demo_turns,
    load_template,
    resolve_program,
)
from medagent.tools import Segmenter, TextImageScorer, ToolContext, slide_facts

__all__ = [
    "TEMPLATES",
    "GiantNavigator",
    "GiantResult",
    "Source",
    "giant_program",
    "open_source",
    "prompt_hashes",
]

Source = Slide | Volume
"""What GIANT navigates: a slide (or any 2-D image) or a CT/MR volume."""

TEMPLATES = [
    "giant/thumbnail",
    "giant/patch",
    "giant/system",
    "giant/question",
    "giant/after_zoom",
    "giant/final",
    "giant/correction",
    "giant/nudge",
]


class GiantResult(BaseModel):
    """The outcome of one question."""

    run_id: str
    run_dir: Path
    method: str
    status: Status
    answer: str | None
    prediction: str | None = None
    votes: dict[str, int] | None = None
    steps: int
    error: str | None = None
    elapsed_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    trajectory_path: Path
    html_path: Path | None = None


def prompt_hashes(*, volume: bool = False) -> dict[str, str]:
    """Content hashes of every prompt template GIANT and its baselines use (with ``volume``,
    also those of a volume's navigation)."""
    names = TEMPLATES + VOLUME_TEMPLATES if volume else TEMPLATES
    return {name: load_template(name).sha256 for name in names}


def open_source(source: Source | str | Path) -> Source:
    """``source`` opened: a CT/MR series folder or enhanced file as a ``Volume``, anything else
    (a slide, an image, a ``dicomweb+`` reference) through ``open_image``."""
    if isinstance(source, Slide | Volume):
        return source
    if isinstance(source, str) and is_dicomweb_ref(source):
        return open_image(source)
    if holds_volume(Path(source)):
        return open_volume(Path(source))
    return open_image(source)


def giant_program() -> Program:
    """GIANT's tunable prompt, as a program with one predictor, ``navigate``.

    Its instructions are the system prompt template, its slots filled at run time (``$steps``
    with the turn limit; ``$reader``, ``$a_image``, ``$whole`` with what the image is); its
    demos are worked questions (overview, question, options → answer) shown before the real
    one. Save a tuned copy with ``program.save(path)`` and pass it as ``prompts``.
    """
    signature = Signature(
        name="giant.navigate",
        instructions=load_template("giant/system").text.strip(),
        inputs=(
            InputField(name="overview", kind="image", optional=True, description="the whole image"),
            InputField(name="question", description="the question about the slide"),
            InputField(
                name="options",
                kind="list",
                optional=True,
                description="the choices; answer with the number of the correct option",
            ),
        ),
        output=AnswerAction,
        description="navigate a large image by zooming, then answer the question",
    )
    return Program(
        "giant",
        {"navigate": Predict(signature)},
        description="An expert's navigation of a gigapixel image (a slide, a radiograph): look "
        "at an overview, zoom into regions, answer a question about the image.",
    )


class GiantNavigator:
    """Navigates a slide with a VLM, GIANT-style (or runs one of its baselines).

    ``model`` is any ``ChatModel``; ``on_event`` receives progress events (for a CLI or UI);
    ``prompts`` (a compiled ``giant`` program, see ``giant_program``) replaces the system prompt
    and adds its demos as worked examples before the question. ``scorer`` (an image-text model
    of the CLIP family) turns on ``config.look_for``: a zero-shot map of where each prompt fits
    best, shown with the overview as a hint where to look.
    """

    def __init__(
        self,
        model: ChatModel,
        config: GiantConfig | None = None,
        *,
        method: Method = "giant",
        runs_dir: str | Path = "runs",
        on_event: Callable[[GiantEvent], None] | None = None,
        segmenter: Segmenter | None = None,
        votes: int = 1,
        prompts: CompiledProgram | Program | None = None,
        scorer: TextImageScorer | None = None,
    ) -> None:
        if votes < 1:
            raise ConfigError(f"votes must be at least 1, not {votes}")
        if prompts is not None and method not in ("giant", "random-region"):
            raise ConfigError(
                f"compiled prompts apply to the giant and random-region methods, not {method}"
            )
        self.votes = votes
        self.prompts = resolve_program(prompts, giant_program(), "GIANT")
        self.model = model
        self.config = config or GiantConfig()
        self.method = method
        self.runs_dir = Path(runs_dir)
        self.on_event = on_event or (lambda event: None)
        self.segmenter = segmenter
        self.scorer = scorer
        if self.config.look_for and scorer is None:
            raise ConfigError(
                "look_for needs an image-text model to score the tissue: pass scorer= "
                "(e.g. medagent.retrieval.make_embedder('plip')), or --zero-shot on the CLI"
            )

    # -- public API ---------------------------------------------------------------------------
    @staticmethod
    def prompt_program() -> Program:
        """GIANT's tunable prompt (``navigate``): tune or edit it, ``save`` it, pass it back as
        ``prompts``."""
        return giant_program()

    def run(
        self,
        slide: Source | str | Path,
        question: str,
        *,
        options: list[str] | None = None,
        run_dir: str | Path | None = None,
    ) -> GiantResult:
        """Blocking form of ``arun`` (works inside notebooks too)."""
        return run_sync(self.arun(slide, question, options=options, run_dir=run_dir))

    async def arun(
        self,
        slide: Source | str | Path,
        question: str,
        *,
        options: list[str] | None = None,
        run_dir: str | Path | None = None,
    ) -> GiantResult:
        """Answer ``question`` about ``slide`` (a slide, an image or a CT/MR ``Volume``; a path
        to a series folder opens as a volume); resumes when ``run_dir`` holds an unfinished run.
        """
        if not question.strip():
            raise ConfigError("the question is empty")
        opened = await asyncio.to_thread(open_source, slide)  # opening reads; keep the loop free
        if isinstance(opened, Volume):
            check_volume_run(
                self.method,
                prompts=self.prompts is not None,
                look_for=bool(self.config.look_for),
                fixed_steps=self.config.fixed_steps,
            )
        directory = Path(run_dir) if run_dir else new_run_dir(self.runs_dir)
        if self.votes > 1:
            return await self._vote(opened, question, options, directory)
        return await self._run(opened, question, options, directory)

    async def _vote(
        self, slide: Source, question: str, options: list[str] | None, directory: Path
    ) -> GiantResult:
        """GIANT xk: k independent runs (seeds seed, seed+1, ...), majority over predictions."""
        results = []
        base_seed = self.config.seed or 0
        for index in range(self.votes):
            single = GiantNavigator(
                self.model,
                self.config.model_copy(update={"seed": base_seed + index}),
                method=self.method,
                on_event=self.on_event,
                segmenter=self.segmenter,
                prompts=self.prompts,
            )
            results.append(
                await single._run(slide, question, options, directory / f"vote-{index + 1}")
            )
        winner, counts = majority_vote([r.prediction for r in results])
        chosen = next((r for r in results if winner and r.prediction == winner), results[0])
        summary = {
            "winner": winner,
            "votes": counts,
            "runs": [
                {
                    "run_dir": str(r.run_dir),
                    "status": r.status,
                    "answer": r.answer,
                    "prediction": r.prediction,
                }
                for r in results
            ],
        }
        (directory / "votes.json").write_text(json.dumps(summary, indent=2))
        answered = [r for r in results if r.status in ("answered", "answered_at_limit")]
        return chosen.model_copy(
            update={
                "run_dir": directory,
                "votes": counts,
                "prediction": winner,
                "answer": chosen.answer if winner else None,
                "status": chosen.status if answered else results[-1].status,
                "steps": sum(r.steps for r in results),
                "elapsed_s": sum(r.elapsed_s for r in results),
                "prompt_tokens": sum(r.prompt_tokens for r in results),
                "completion_tokens": sum(r.completion_tokens for r in results),
            }
        )

    async def aresume(self, run_dir: str | Path) -> GiantResult:
        """Continue a run that was killed, from its last completed step."""
        directory = Path(run_dir)
        manifest = RunManifest.read(directory)
        inputs = manifest.inputs
        slide: Source = (
            open_volume(Path(inputs["slide_path"]))
            if inputs.get("volume")
            else open_image(inputs["slide_path"], modality=inputs.get("modality"))
        )
        return await self._run(slide, inputs["question"], inputs.get("options"), directory)

    # -- internals ----------------------------------------------------------------------------
    @property
    def long_side(self) -> int:
        """The long side the images of this method are rendered at, within the model's cap."""
        wanted = {"thumbnail": self.config.thumbnail_long_side, "patches": self.config.patch_px}
        return render_long_side(self.model, wanted.get(self.method, self.config.long_side))

    def _system_prompt(self, slide: Source) -> str | None:
        """The system prompt as sent (navigating methods; the baselines have none)."""
        if self.method not in ("giant", "random-region"):
            return None
        if isinstance(slide, Volume):
            return volume_system_prompt(slide, self.config)
        navigate = self.prompts.predictor("navigate") if self.prompts is not None else None
        method: NavigationMethod = "random-region" if self.method == "random-region" else "giant"
        return system_prompt(slide, self.config, method, navigate)

    def _manifest(
        self, slide: Source, question: str, options: list[str] | None, system: str | None
    ) -> RunManifest:
        inputs: dict[str, Any] = {
            "question": question,
            "options": options,
            "modality": slide.modality.kind,
        }
        if isinstance(slide, Volume):
            info = volume_info(slide)
            inputs.update(slide_path=info.path, volume=info.model_dump(mode="json"))
        else:
            inputs["slide_path"] = slide.source
        manifest = RunManifest.for_model(
            self.model,
            agent="giant",
            method=self.method,
            inputs=inputs,
            config=self.config.model_dump(mode="json"),
            prompts=prompt_hashes(volume=isinstance(slide, Volume)),
            prompt_program=ProgramRef.of(self.prompts),
            image_long_side=self.long_side,
            seed=self.config.seed,
        )
        return manifest.with_rendered(system=system) if system is not None else manifest

    async def _run(
        self, slide: Source, question: str, options: list[str] | None, directory: Path
    ) -> GiantResult:
        system = self._system_prompt(slide)
        manifest = RunManifest.find(directory)  # none yet, or cut short by a crash: write anew
        if manifest is not None:
            if manifest.inputs.get("question") != question or manifest.method != self.method:
                raise ConfigError(
                    f"{directory} holds a different run ({manifest.method}: "
                    f"{manifest.inputs.get('question')!r}); use a new --out folder"
                )
        else:
            manifest = self._manifest(slide, question, options, system)
            manifest.write(directory)
        tools = ToolContext(
            artifacts=ArtifactStore(directory / "artifacts"),
            slide=slide if isinstance(slide, Slide) else None,
            volume=slide if isinstance(slide, Volume) else None,
            policy=RenderPolicy(long_side=self.long_side),
            segmenter=self.segmenter,
            scorer=self.scorer,
        )
        log = RunLog(directory / "events.jsonl")
        started = time.perf_counter()
        with agent_run("giant", manifest.run_id, {"medagent.method": self.method}) as span:
            if self.method == "giant" or self.method == "random-region":
                state = await self._navigate(
                    question, options, tools, log, manifest.run_id, directory, system
                )
            else:
                from medagent.agents.giant._baselines import run_baseline

                with watch_budget() as refused:
                    state = await run_baseline(
                        self.method,
                        self.model,
                        self.config,
                        tools,
                        log,
                        question,
                        options,
                        on_event=self.on_event,
                    )
                if refused and state.get("status") == "model_error":
                    state.update(status="budget_exhausted", error=str(refused[-1]))
            span.set_attributes(
                {
                    "medagent.run.status": str(state.get("status")),
                    "medagent.run.steps": len(log.steps),
                }
            )
        return await self._finish(
            slide, question, options, manifest, log, state, directory, time.perf_counter() - started
        )

    async def _navigate(
        self,
        question: str,
        options: list[str] | None,
        tools: ToolContext,
        log: RunLog,
        run_id: str,
        directory: Path,
        system: str | None,
    ) -> dict[str, Any]:
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        run = RunContext(
            model=self.model,
            tools=tools,
            log=log,
            config=self.config,
            question=question,
            options=options,
            method="random-region" if self.method == "random-region" else "giant",
            on_event=self.on_event,
            system_prompt=system,
            example_turns=self._demo_turns(tools.artifacts),
        )
        graph = build_graph(run)
        settings: RunnableConfig = {
            "configurable": {"thread_id": run_id},
            "recursion_limit": 4 * self.config.max_steps + 20,
        }
        async with aiosqlite.connect(str(directory / "checkpoints.sqlite")) as connection:
            saver = AsyncSqliteSaver(connection, serde=checkpoint_serde())
            app = graph.compile(checkpointer=saver)
            snapshot = await app.aget_state(settings)
            values = dict(snapshot.values or {})
            if values.get("status") not in (None, "running"):
                return values  # already finished: report it again
            if values:
                log.truncate(values.get("message_count", 0), values.get("step", 0))
            try:
                result = await asyncio.wait_for(
                    app.ainvoke(None if values else GiantState(), settings),
                    timeout=self.config.timeout_s,
                )
                return dict(result)
            except TimeoutError:
                latest = dict((await app.aget_state(settings)).values or {})
                latest.update(
                    status="timeout",
                    error=f"no answer within the {self.config.timeout_s:g} s limit",
                )
                return latest
            except BudgetExhaustedError as exc:
                # The checkpoint holds the last finished step, still running: a rerun resumes.
                latest = dict((await app.aget_state(settings)).values or {})
                latest.update(status="budget_exhausted", error=str(exc))
                return latest

    def _demo_turns(self, artifacts: ArtifactStore) -> list[Message]:
        """A compiled program's demo turns, their images moved into the run's store
        (trajectories hold artifact ids, never pixels)."""
        if self.prompts is None:
            return []
        return demo_turns(self.prompts.predictor("navigate"), artifacts)

    async def _finish(
        self,
        slide: Source,
        question: str,
        options: list[str] | None,
        manifest: RunManifest,
        log: RunLog,
        state: dict[str, Any],
        directory: Path,
        elapsed: float,
    ) -> GiantResult:
        status = state.get("status") or "running"
        answer = state.get("answer")
        overview = log.meta.get("overview")
        hint = log.meta.get("where_to_look")
        # A volume's image facts are its first axial slice's (size, mm spacing, modality).
        image = slide.slice("axial", 0) if isinstance(slide, Volume) else slide
        trajectory = Trajectory(
            run_id=manifest.run_id,
            method=self.method,
            question=question,
            options=options,
            slide_path=str(slide.path),
            slide=slide_facts(
                ToolContext(artifacts=ArtifactStore(directory / "artifacts"), slide=image)
            ),
            volume=volume_info(slide) if isinstance(slide, Volume) else None,
            model=self.model.name,
            config=self.config.model_dump(),
            overview=ArtifactRef.model_validate(overview) if overview else None,
            where_to_look=WhereToLook.model_validate(hint) if hint else None,
            messages=log.messages,
            steps=log.steps,
            status=status,
            answer=answer,
            prediction=normalize_answer(answer, options) if answer else None,
            votes=state.get("votes"),
            error=state.get("error"),
            started_at=manifest.created_at,
            finished_at=datetime.now(UTC).isoformat(),
            elapsed_s=elapsed,
        )
        trajectory_path = directory / "trajectory.json"
        # Writing the page decodes and re-encodes every view: off the event loop, where other
        # questions in flight are waiting to send their requests.
        await asyncio.to_thread(trajectory_path.write_text, trajectory.model_dump_json(indent=2))
        html_path = await asyncio.to_thread(self._write_html, trajectory, directory)
        self.on_event(GiantEvent(kind="done", step=len(log.steps), text=status))
        return GiantResult(
            run_id=trajectory.run_id,
            run_dir=directory,
            method=self.method,
            status=status,
            answer=answer,
            prediction=trajectory.prediction,
            votes=trajectory.votes,
            steps=len(log.steps),
            error=trajectory.error,
            elapsed_s=elapsed,
            prompt_tokens=trajectory.prompt_tokens,
            completion_tokens=trajectory.completion_tokens,
            trajectory_path=trajectory_path,
            html_path=html_path,
        )

    @staticmethod
    def _write_html(trajectory: Trajectory, directory: Path) -> Path:
        from medagent.agents.giant._html import render_trajectory_html

        path = directory / "trajectory.html"
        path.write_text(
            render_trajectory_html(trajectory, ArtifactStore(directory / "artifacts")),
            encoding="utf-8",
        )
        return path
