"""The GIANT navigation loop as a LangGraph graph: overview → decide → zoom → … → answer.

State holds only control data (step, counts, visited regions, the pending action), typed so a
node dispatches on what the model asked for; the conversation and step records live in the run
log (see ``_trajectory``), so checkpoints stay small while the graph can still resume after a
kill. The nodes are module functions of the run's ``RunContext`` (bound with ``partial``).

Over a CT/MR volume the same graph runs: the overview is a labelled montage, a ``slice`` action
moves to a slice (the state's ``at``), and zooms look into the slice the model is on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Literal, TypedDict

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, ConfigDict, Field

from medagent._trace import traced_step
from medagent.agents.base import image_words, render_long_side
from medagent.agents.giant._actions import (
    AnswerAction,
    FinalAnswer,
    GiantAction,
    LookAction,
    RandomAction,
    SliceAction,
    ZoomAction,
    decoding_schema,
    volume_schemas,
)
from medagent.agents.giant._asking import Asked, ask, unwrap
from medagent.agents.giant._config import GiantConfig
from medagent.agents.giant._prompts import options_text, system_prompt, view_scale
from medagent.agents.giant._trajectory import RunLog, Status, StepRecord
from medagent.agents.giant._volume import (
    SliceAt,
    counts,
    montage_text,
    slice_info,
    view_bound,
    volume_info,
    volume_system_prompt,
)
from medagent.errors import MedagentError, RegionError
from medagent.imaging import Region, Slide, TissueMask, Volume, VolumeView, tissue_mask
from medagent.models import ChatModel, Message, prune_images, watch_budget
from medagent.prompts import load_template
from medagent.tools import (
    ToolContext,
    ToolFailure,
    ZeroShotOutput,
    montage,
    overview,
    zero_shot,
    zoom,
)

__all__ = [
    "GiantEvent",
    "GiantState",
    "NavigationMethod",
    "Pending",
    "RunContext",
    "Visit",
    "Visits",
    "add_visits",
    "build_graph",
    "checkpoint_serde",
]


NavigationMethod = Literal["giant", "random-region"]
"""The methods that run the navigation graph (the baselines do not)."""


class Visit(BaseModel):
    """A region shown to the model, and the turn it was shown on (for the revisit nudge)."""

    model_config = ConfigDict(frozen=True)

    region: Region
    step: int


class Visits(BaseModel):
    """Every region shown so far, in order (the state's ``visited``; ``add_visits`` merges).

    Stored as one compact row per visit, ``(x, y, width, height, step)``, inside a single
    object: LangGraph re-stores the whole list in every checkpoint and writes each object with
    its class path, so a list of ``Visit`` objects would cost ~100 bytes per visit per step.
    """

    model_config = ConfigDict(frozen=True)

    rows: tuple[tuple[int, int, int, int, int], ...] = ()

    @classmethod
    def of(cls, *visits: Visit) -> Visits:
        return cls(rows=tuple((*v.region.as_tuple(), v.step) for v in visits))

    def visits(self) -> list[Visit]:
        return [
            Visit(region=Region(x=x, y=y, width=w, height=h), step=step)
            for x, y, w, h, step in self.rows
        ]


def add_visits(earlier: Visits | None, new: Visits | None) -> Visits:
    """The reducer of ``visited``: visits accumulate, in the order they happened."""
    rows = (earlier.rows if earlier else ()) + (new.rows if new else ())
    return Visits(rows=rows)


class Pending(BaseModel):
    """A look the model asked for on turn ``step``, waiting for the ``look`` node.

    How it was asked (every reply, error and token count) goes to the run log, not here:
    checkpoints re-store the state at every step and stay control data only.
    """

    model_config = ConfigDict(frozen=True)

    action: Annotated[ZoomAction | LookAction | SliceAction, Field(discriminator="action")]
    step: int

    def asked(self, log: RunLog) -> Asked:
        """How this look was asked for, as the decide node logged it."""
        return Asked.model_validate(log.asked[self.step])


class GiantState(TypedDict, total=False):
    """Control state, checkpointed after every node."""

    step: int  # turns completed
    message_count: int  # conversation length in the run log
    visited: Annotated[Visits, add_visits]  # every region shown, in order
    pending: Pending | None  # a parsed look waiting to be carried out
    at: SliceAt | None  # a volume: the slice the model is on (None: still on the montage)
    answer: str | None
    status: Status
    error: str | None


def checkpoint_serde() -> JsonPlusSerializer:
    """LangGraph's serializer, told that the state's own types may be revived from a
    checkpoint (else each is revived with a warning, and later versions would refuse it)."""
    return JsonPlusSerializer(allowed_msgpack_modules=[Visits, Pending, SliceAt])


class GiantEvent(BaseModel):
    """What the CLI and the web page show as a run goes: a step, a region, an image, the end."""

    kind: Literal[
        "overview", "where_to_look", "thinking", "zoom", "rejected", "invalid", "answer", "done"
    ]
    step: int
    text: str = ""
    region: Region | None = None
    artifact_id: str | None = None
    slice: str | None = None  # a volume: the slice a view shows, e.g. "axial slice 12 of 0-39"


@dataclass
class RunContext:
    """Everything a node needs besides the state; built by the navigator per run."""

    model: ChatModel
    tools: ToolContext
    log: RunLog
    config: GiantConfig
    question: str
    options: list[str] | None
    method: NavigationMethod = "giant"
    on_event: Callable[[GiantEvent], None] = lambda event: None
    system_prompt: str | None = None  # as sent (else the template, filled for the slide)
    example_turns: list[Message] = dataclasses.field(default_factory=list)  # a program's demos
    _tissue: TissueMask | None = None
    _view: tuple[SliceAt, VolumeView, ToolContext] | None = None

    @property
    def slide(self) -> Slide:
        return self.tools.require_slide()

    @property
    def volume(self) -> Volume | None:
        """The CT/MR volume navigated (``None`` for a slide)."""
        return self.tools.volume

    def slice_view(self, at: SliceAt) -> tuple[VolumeView, ToolContext]:
        """The slice ``at`` as a 2-D view, and tools whose image is that slice (kept for the
        next turn: zooms look into the slice the model is on)."""
        if self._view is None or self._view[0] != at:
            volume = self.volume
            assert volume is not None, "slices exist only in a volume"
            view = volume.view(at.axis, at.index, at.window)
            tools = dataclasses.replace(
                self.tools,
                slide=view.slide,
                guides=self.tools.guides if self.config.guides_on_crops else None,
                _renderer=None,
            )
            self._view = (at, view, tools)
        return self._view[1], self._view[2]

    @property
    def long_side(self) -> int:
        """The long side views are rendered at: the configured one, within the model's cap."""
        return render_long_side(self.model, self.config.long_side)

    def emit(self, event: GiantEvent) -> None:
        self.on_event(event)

    def crop_tools(self) -> ToolContext:
        """The tools with crop guides as configured, sharing the overview's renderer cache."""
        if self.config.guides_on_crops:
            return self.tools
        self.tools.renderer  # noqa: B018 - create it now so the copy shares it
        return dataclasses.replace(self.tools, guides=None)

    def tissue(self) -> TissueMask:
        if self._tissue is None:
            self._tissue = tissue_mask(self.tools.renderer)
        return self._tissue


def _iou(a: Region, b: Region) -> float:
    inter = a.intersect(b)
    if inter is None:
        return 0.0
    return inter.area / (a.area + b.area - inter.area)


def _summary(log: RunLog) -> str:
    lines = []
    for record in log.steps:
        if record.region is not None:
            where = f"{record.slice.label()}, " if record.slice is not None else ""
            lines.append(f"- step {record.step}: {where}{record.region}: {record.reasoning[:200]}")
    return "\n".join(lines) or "- only the overview"


def _turns_left(config: GiantConfig, step: int) -> str:
    return f"You have {config.max_steps - step} turns left, including the answer."


async def start(run: RunContext, state: GiantState) -> GiantState:
    """The system prompt, any worked examples, then the question with the overview."""
    if state.get("message_count"):
        return {}
    config = run.config
    if run.volume is not None:
        volume = run.volume
        grid = montage(run.tools)
        system = run.system_prompt or volume_system_prompt(volume, config)
        question = load_template("giant/question_volume").render(
            question=run.question,
            options=options_text(run.options),
            volume=volume_info(volume).to_text(),
            montage=montage_text(grid, volume.unit),
            steps_left=config.max_steps,
        )
        artifact, text = grid.artifact, grid.to_text()
    else:
        slide = run.slide
        view = await asyncio.to_thread(overview, run.tools, long_side=run.long_side)
        system = run.system_prompt or system_prompt(slide, config, run.method)
        words = image_words(slide)
        question = load_template("giant/question").render(
            question=run.question,
            options=options_text(run.options),
            whole=words["whole"],
            width=slide.dimensions.width,
            height=slide.dimensions.height,
            spacing=words["spacing"],
            steps_left=config.max_steps,
        )
        artifact, text = view.artifact, view.to_text()
    run.log.add_message(Message.system(system))
    for turn in run.example_turns:
        run.log.add_message(turn)
    hint = where_to_look(run)
    if isinstance(hint, ZeroShotOutput):
        run.log.add_message(Message.user(question, artifact, hint.to_text(), hint.artifact))
        run.log.set_meta(
            where_to_look={
                "artifact": hint.artifact.model_dump(mode="json"),
                "text": hint.to_text(),
                "top": [hit.model_dump(mode="json") for hit in hint.top],
            }
        )
    else:
        run.log.add_message(Message.user(question, artifact))
    run.log.set_meta(overview=artifact.model_dump(mode="json"))
    run.emit(GiantEvent(kind="overview", step=0, artifact_id=artifact.id, text=text))
    if hint is not None:
        shown = hint.artifact.id if isinstance(hint, ZeroShotOutput) else None
        run.emit(GiantEvent(kind="where_to_look", step=0, artifact_id=shown, text=hint.to_text()))
    return {"message_count": len(run.log.messages), "step": 0, "status": "running"}


def where_to_look(run: RunContext) -> ZeroShotOutput | ToolFailure | None:
    """The zero-shot map of ``config.look_for`` over the tissue, shown with the overview.

    A hint, not an instruction: the prompt says so, and a failure (no tissue, a model error)
    is logged and the run goes on without it.
    """
    prompts = run.config.look_for
    if not prompts:
        return None
    result = zero_shot.run(run.tools, {"prompts": prompts, "k": 5, "region": None})
    if isinstance(result, ToolFailure):
        run.log.set_meta(where_to_look_failed=result.message)
    return result


async def decide(run: RunContext, state: GiantState) -> GiantState:
    """One turn: ask for an action (a final answer on the last turn) and record it."""
    config = run.config
    step = state["step"] + 1
    final = step >= config.max_steps
    schema, request_schema = _schemas(run, state, final)
    history = list(run.log.messages)
    if final:
        history.append(Message.user(load_template("giant/final").render(summary=_summary(run.log))))
    run.emit(GiantEvent(kind="thinking", step=step))
    with watch_budget() as refused:
        value, asked = await ask(
            run.model,
            prune_images(history, config.max_images_in_context),
            schema,
            step=step,
            config=config,
            artifacts=run.tools.artifacts,
            # Constrained decoders get the image's bounds; replies are validated loosely.
            request_schema=request_schema,
        )
    if refused:
        # Not a finished state: the checkpoint keeps the last step, so a rerun with a higher
        # budget resumes from it (the navigator reports ``budget_exhausted``).
        raise refused[-1]
    if asked.model_error is not None:
        run.log.add_step(StepRecord(kind="invalid", **asked.step_fields()))
        return {"step": step, "status": "model_error", "error": asked.model_error}
    if value is None:
        run.log.add_step(StepRecord(kind="invalid", **asked.step_fields()))
        run.emit(GiantEvent(kind="invalid", step=step, text=asked.errors[-1]))
        if final:
            return {
                "step": step,
                "status": "no_answer",
                "error": f"no valid answer on the last turn: {asked.errors[-1]}",
            }
        run.log.add_message(Message.assistant(asked.outputs[-1]))
        run.log.add_message(
            Message.user(
                f"Your reply could not be used ({asked.errors[-1]}); that turn is spent. "
                + _turns_left(config, step)
            )
        )
        return {"step": step, "message_count": len(run.log.messages), "pending": None}
    action = _plain(unwrap(value))
    run.log.add_message(Message.assistant(asked.outputs[-1]))
    if isinstance(action, ZoomAction | LookAction | SliceAction):
        run.log.add_asked(step, asked.model_dump(mode="json"))
        pending = Pending(action=action, step=step)
        return {"step": step, "message_count": len(run.log.messages), "pending": pending}
    assert isinstance(action, AnswerAction | FinalAnswer)
    run.log.add_step(
        StepRecord(
            kind="final" if final else "answer", action=action.model_dump(), **asked.step_fields()
        )
    )
    run.emit(GiantEvent(kind="answer", step=step, text=action.answer))
    return {
        "step": step,
        "message_count": len(run.log.messages),
        "pending": None,
        "answer": action.answer,
        "status": "answered_at_limit" if final else "answered",
    }


def _schemas(
    run: RunContext, state: GiantState, final: bool
) -> tuple[type[BaseModel], type[BaseModel] | None]:
    """What this turn's reply is validated against, and what a constrained decoder is sent
    (bounded by the image; ``None``: the same)."""
    if final:
        return FinalAnswer, None
    volume = run.volume
    if volume is not None:
        at = state.get("at")
        on = None
        if at is not None:
            dims = run.slice_view(at)[0].slide.dimensions
            on = (dims.width, dims.height)
        return volume_schemas(counts(volume), view_bound(volume), hu=volume.hu, on=on)
    fixed = run.config.fixed_steps
    if run.method == "random-region":
        return (LookAction if fixed else RandomAction), None
    dims = run.slide.dimensions
    if fixed:
        return ZoomAction, decoding_schema(dims.width, dims.height, zoom_only=True)
    return GiantAction, decoding_schema(dims.width, dims.height)


def _plain(action: BaseModel) -> BaseModel:
    """A volume's checked action as the plain model the state stores (the checked classes are
    built per volume, so a checkpoint could not revive them)."""
    for plain in (SliceAction, ZoomAction):
        if isinstance(action, plain) and type(action) is not plain:
            return plain.model_validate(action.model_dump())
    return action


def random_region(run: RunContext, step: int) -> Region:
    """A random square of at least the minimum side holding enough tissue.

    Seeded by (seed, step), so a resumed run shows the same regions it would have.
    """
    config, dims = run.config, run.slide.dimensions
    rng = random.Random((config.seed or 0) * 100_003 + step)
    mask = run.tissue()
    side = max(config.random_region_min_px, min(dims.width, dims.height) // 8)
    side = min(side, dims.width, dims.height)

    def square_at(cx: float, cy: float) -> Region:
        x = int(min(max(0, cx - side / 2), dims.width - side))
        y = int(min(max(0, cy - side / 2), dims.height - side))
        return Region(x=x, y=y, width=side, height=side)

    # Centre squares on random tissue pixels: with little tissue, uniform sampling of
    # positions would almost never land on it.
    rows, cols = mask.mask.nonzero()
    for _ in range(200):
        if len(rows):
            pick = rng.randrange(len(rows))
            jitter = rng.uniform(-0.4, 0.4) * side
            candidate = square_at(
                mask.region.x + (cols[pick] + 0.5) * mask.scale + jitter,
                mask.region.y + (rows[pick] + 0.5) * mask.scale + rng.uniform(-0.4, 0.4) * side,
            )
        else:
            candidate = square_at(rng.uniform(0, dims.width), rng.uniform(0, dims.height))
        if mask.fraction(candidate) >= config.random_region_min_tissue:
            return candidate
    return candidate  # no square reaches the tissue share: the last one is as good


def _reject(
    run: RunContext, pending: Pending, requested: Region | None, problem: str, message: str
) -> GiantState:
    run.log.add_step(
        StepRecord(
            kind="rejected",
            action=pending.action.model_dump(),
            requested=requested,
            notes=[problem],
            **pending.asked(run.log).step_fields(),
        )
    )
    run.log.add_message(Message.user(message))
    return {"message_count": len(run.log.messages), "pending": None}


def _problem(
    config: GiantConfig, requested: Region, inside: Region | None, slide: Slide, name: str
) -> str:
    """Why a region cannot be shown ("" when it can); ``name``: "slide", or "slice"."""
    dims = slide.dimensions
    if inside is None:
        return (
            f"region {requested} lies entirely outside the {name} "
            f"(0..{dims.width} x 0..{dims.height})"
        )
    if inside != requested and config.strict_regions:
        return (
            f"region {requested} extends beyond the {name} (0..{dims.width} x "
            f"0..{dims.height}); give a region inside it"
        )
    return ""


@dataclass(frozen=True)
class _Target:
    """What a look shows its region of: the slide, or a volume's slice (``at``, ``view``)."""

    slide: Slide
    tools: ToolContext
    at: SliceAt | None = None
    view: VolumeView | None = None


async def look(run: RunContext, state: GiantState) -> GiantState:
    """Show the region the pending action asked for (or a random one), with its scale."""
    pending = state.get("pending")
    assert pending is not None, "look runs only after decide left an action"
    action = pending.action
    if run.volume is not None:
        return await _look_in_volume(run, state, pending)
    if isinstance(action, ZoomAction):
        requested = Region(x=action.x, y=action.y, width=action.width, height=action.height)
    else:
        requested = random_region(run, pending.step)
    return await _show(run, state, pending, requested, _Target(run.slide, run.crop_tools()))


async def _look_in_volume(run: RunContext, state: GiantState, pending: Pending) -> GiantState:
    """A volume's look: go to the slice asked for (or stay on the current one for a zoom)."""
    action, current = pending.action, state.get("at")
    if isinstance(action, SliceAction):
        # A window left out keeps the current one: scrolling stays in the window chosen.
        window = action.window or (current.window if current is not None else None)
        at: SliceAt | None = SliceAt(axis=action.axis, index=action.index, window=window)
        region = action.region
    else:
        assert isinstance(action, ZoomAction), "a volume has no random looks"
        at = current
        region = Region(x=action.x, y=action.y, width=action.width, height=action.height)
    spent = f"That turn is spent. {_turns_left(run.config, pending.step)}"
    if at is None:  # decide refuses zooms on the montage; a resumed older state might not
        problem = "you are on the montage, not on a slice: go to a slice first"
        return _reject(run, pending, region, problem, f"{problem}. {spent}")
    try:
        view, tools = run.slice_view(at)
    except MedagentError as exc:  # e.g. a reformat across missing slices
        run.emit(GiantEvent(kind="rejected", step=pending.step, text=str(exc)))
        return _reject(run, pending, region, str(exc), f"That slice cannot be shown: {exc} {spent}")
    requested = region or Region.whole(view.slide.dimensions)
    return await _show(run, state, pending, requested, _Target(view.slide, tools, at, view))


async def _show(
    run: RunContext, state: GiantState, pending: Pending, requested: Region, target: _Target
) -> GiantState:
    """Clamp ``requested`` to the target image, render it, tell the model what it sees.

    The render runs in a worker thread: reading and encoding a region is most of the agent's
    CPU per step and releases the GIL, so many questions in flight render on many cores
    instead of taking turns on the event loop's.
    """
    config, slide, at = run.config, target.slide, target.at
    dims, step, action = slide.dimensions, pending.step, pending.action
    name = "slide" if at is None else "slice"
    started = time.perf_counter()
    inside = requested.clamp(dims)
    problem = _problem(config, requested, inside, slide, name)
    if problem or inside is None:
        run.emit(GiantEvent(kind="rejected", step=step, text=problem, region=requested))
        spent = f"That turn is spent. {_turns_left(config, step)}"
        message = f"That region was rejected: {problem}. {spent}"
        return _reject(run, pending, requested, problem, message)
    try:
        view = await asyncio.to_thread(
            zoom,
            target.tools,
            x=inside.x,
            y=inside.y,
            width=inside.width,
            height=inside.height,
            long_side=run.long_side,
        )
    except RegionError as exc:  # e.g. over the read budget: tell the model, spend the turn
        return _reject(run, pending, requested, str(exc), f"That region could not be shown: {exc}")
    notes: list[str] = []
    if inside != requested:
        notes.append(f" Your region {requested} was clamped to the {name}.")
    for earlier in _comparable_visits(run, state, at):
        if _iou(inside, earlier.region) >= config.loop_overlap:
            seen = earlier.region
            nudge = load_template("giant/nudge").render(
                x=seen.x, y=seen.y, w=seen.width, h=seen.height, step=earlier.step
            )
            notes.append(" " + nudge.strip())
            break
    scale = view_scale(slide, view.region.width, view.artifact.width, view.mpp)
    volume = run.volume
    shown = slice_info(target.view, volume.unit) if target.view and volume else None
    if shown is None:
        text = load_template("giant/after_zoom").render(
            x=inside.x,
            y=inside.y,
            w=inside.width,
            h=inside.height,
            whole=image_words(slide)["whole"],
            slide_width=dims.width,
            slide_height=dims.height,
            scale=scale,
            notes="".join(notes),
            steps_left=config.max_steps - step,
        )
    else:
        whole = Region.whole(dims)
        text = load_template("giant/after_slice").render(
            where=f"{shown.label()}, {shown.window}",
            shown=(
                f"the whole slice ({dims.width} x {dims.height} pixels)"
                if inside == whole
                else f"region x={inside.x}, y={inside.y}, width={inside.width}, "
                f"height={inside.height} of its {dims.width} x {dims.height} pixels"
            ),
            scale=scale,
            notes="".join(notes),
            steps_left=config.max_steps - step,
        )
    run.log.add_message(Message.user(view.artifact, text))
    kind: Literal["look", "slice", "zoom"] = (
        "look"
        if isinstance(action, LookAction)
        else ("slice" if isinstance(action, SliceAction) else "zoom")
    )
    run.log.add_step(
        StepRecord(
            kind=kind,
            action=action.model_dump(),
            requested=requested,
            region=view.region,
            clamped=inside != requested,
            level=view.level,
            mpp=view.mpp,
            artifact=view.artifact,
            slice=shown,
            notes=[n.strip() for n in notes],
            tool_s=time.perf_counter() - started,
            **pending.asked(run.log).step_fields(),
        )
    )
    run.emit(
        GiantEvent(
            kind="zoom",
            step=step,
            region=view.region,
            artifact_id=view.artifact.id,
            text=action.reasoning,
            slice=shown.label() if shown is not None else None,
        )
    )
    update: GiantState = {
        "message_count": len(run.log.messages),
        "pending": None,
        "visited": Visits.of(Visit(region=inside, step=step)),
    }
    if at is not None:
        update["at"] = at
    return update


def _comparable_visits(run: RunContext, state: GiantState, at: SliceAt | None) -> list[Visit]:
    """Earlier visits a new one may repeat: all of a slide's; a volume's on the same slice."""
    visits = state.get("visited", Visits()).visits()
    if at is None:
        return visits
    same = {
        r.step
        for r in run.log.steps
        if r.slice is not None and (r.slice.axis, r.slice.index) == (at.axis, at.index)
    }
    return [v for v in visits if v.step in same]


def after_decide(state: GiantState) -> str:
    if state.get("status") != "running":
        return END
    return "look" if state.get("pending") else "decide"


def build_graph(run: RunContext) -> StateGraph[GiantState]:
    """The navigation graph for one run (compile it with a checkpointer)."""
    graph: StateGraph[GiantState] = StateGraph(GiantState)
    graph.add_node("start", traced_step("giant", "start", partial(start, run)))
    graph.add_node("decide", traced_step("giant", "decide", partial(decide, run)))
    graph.add_node("look", traced_step("giant", "look", partial(look, run)))
    graph.add_edge(START, "start")
    graph.add_edge("start", "decide")
    graph.add_conditional_edges("decide", after_decide, ["look", "decide", END])
    graph.add_edge("look", "decide")
    return graph
