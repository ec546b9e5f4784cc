"""The GIANT navigation loop as a LangGraph graph: overview → decide → zoom → … → answer.

State holds only control data (step, counts, visited regions, the pending action); the
conversation and step records live in the run log (see ``_trajectory``), so checkpoints stay
small while the graph can still resume after a kill.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from medagent.agents.giant._actions import (
    FinalAnswer,
    GiantAction,
    RandomAction,
    decoding_schema,
)
from medagent.agents.giant._config import GiantConfig
from medagent.agents.giant._trajectory import RunLog, StepRecord
from medagent.errors import ModelError, RegionError
from medagent.imaging import Region, TissueMask, tissue_mask
from medagent.models import ChatModel, GenerateParams, Message, prune_images
from medagent.models._structured import parse_structured
from medagent.prompts import load_template
from medagent.tools import ToolContext, overview, zoom

__all__ = ["GiantEvent", "GiantState", "RunContext", "build_graph"]


class GiantState(TypedDict, total=False):
    """Control state, checkpointed after every node."""

    step: int  # turns completed
    message_count: int  # conversation length in the run log
    visited: list[list[int]]  # [x, y, width, height, step] per zoom
    pending: dict[str, Any] | None  # a parsed action waiting to be carried out
    answer: str | None
    status: str
    error: str | None


class GiantEvent(BaseModel):
    """What the CLI and the web page show as a run goes: a step, a region, an image, the end."""

    kind: Literal["overview", "thinking", "zoom", "rejected", "invalid", "answer", "done"]
    step: int
    text: str = ""
    region: Region | None = None
    artifact_id: str | None = None


@dataclass
class RunContext:
    """Everything a node needs besides the state; built by the navigator per run."""

    model: ChatModel
    tools: ToolContext
    log: RunLog
    config: GiantConfig
    question: str
    options: list[str] | None
    method: Literal["giant", "random-region"] = "giant"
    on_event: Callable[[GiantEvent], None] = lambda event: None
    system_prompt: str | None = None  # a compiled program's instructions (else the template)
    example_turns: list[Message] = dataclasses.field(default_factory=list)  # its demos
    _tissue: TissueMask | None = None

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


def _options_text(options: list[str] | None) -> str:
    if not options:
        return ""
    lines = "\n".join(f"{i}. {option}" for i, option in enumerate(options, start=1))
    return f"Options:\n{lines}\nAnswer with the number of the correct option.\n"


def _iou(a: Region, b: Region) -> float:
    inter = a.intersect(b)
    if inter is None:
        return 0.0
    return inter.area / (a.area + b.area - inter.area)


def _summary(log: RunLog) -> str:
    lines = []
    for record in log.steps:
        if record.region is not None:
            lines.append(f"- step {record.step}: {record.region}: {record.reasoning[:200]}")
    return "\n".join(lines) or "- only the overview"


def build_graph(run: RunContext) -> StateGraph[GiantState]:
    """The navigation graph for one run (compile it with a checkpointer)."""
    config = run.config
    slide = run.tools.require_slide()
    dims = slide.dimensions
    spacing = (
        f"{slide.mpp_x:.3g} µm per pixel" if slide.mpp_x is not None else "pixel spacing unknown"
    )

    def params() -> GenerateParams:
        return GenerateParams(
            max_tokens=config.max_tokens, temperature=config.temperature, seed=config.seed
        )

    async def start(state: GiantState) -> GiantState:
        if state.get("message_count"):
            return {}
        view = overview(run.tools, long_side=config.long_side)
        system = run.system_prompt or load_template("giant/system").render(steps=config.max_steps)
        if run.method == "random-region":
            system += (
                "\nIn this setting you cannot choose where to look: answer "
                '{"reasoning": "...", "action": "look"} to be shown another tissue region '
                "picked at random.\n"
            )
        run.log.add_message(Message.system(system))
        for turn in run.example_turns:
            run.log.add_message(turn)
        question = load_template("giant/question").render(
            question=run.question,
            options=_options_text(run.options),
            width=dims.width,
            height=dims.height,
            spacing=spacing,
            steps_left=config.max_steps,
        )
        run.log.add_message(Message.user(question, view.artifact))
        run.log.set_meta(overview=view.artifact.model_dump(mode="json"))
        run.emit(
            GiantEvent(kind="overview", step=0, artifact_id=view.artifact.id, text=view.to_text())
        )
        return {
            "message_count": len(run.log.messages),
            "step": 0,
            "visited": [],
            "status": "running",
        }

    async def decide(state: GiantState) -> GiantState:
        step = state["step"] + 1
        final = step >= config.max_steps
        schema: type[BaseModel] = (
            FinalAnswer
            if final
            else (RandomAction if run.method == "random-region" else GiantAction)
        )
        # Constrained decoders get the slide's bounds; replies are validated loosely (schema).
        request_schema = (
            decoding_schema(dims.width, dims.height) if schema is GiantAction else schema
        )
        history = list(run.log.messages)
        if final:
            history.append(
                Message.user(load_template("giant/final").render(summary=_summary(run.log)))
            )
        sent = prune_images(history, config.max_images_in_context)
        images = [p.artifact.id for m in sent for p in m.images if p.artifact is not None]
        outputs: list[str] = []
        errors: list[str] = []
        extra: list[Message] = []
        parsed: BaseModel | None = None
        tokens = [0, 0]
        started = time.perf_counter()
        run.emit(GiantEvent(kind="thinking", step=step))
        for _ in range(config.max_corrections + 1):
            try:
                reply = await run.model.generate(
                    sent + extra,
                    schema=request_schema,
                    params=params(),
                    artifacts=run.tools.artifacts,
                )
            except ModelError as exc:
                run.log.add_step(
                    StepRecord(
                        step=step,
                        kind="invalid",
                        sent_messages=len(sent),
                        images_sent=images,
                        outputs=outputs,
                        errors=[*errors, str(exc)],
                        model_s=time.perf_counter() - started,
                    )
                )
                return {"step": step, "status": "model_error", "error": str(exc)}
            tokens[0] += reply.usage.prompt_tokens
            tokens[1] += reply.usage.completion_tokens
            outputs.append(reply.text)
            value, error = (
                (reply.parsed, None)
                if reply.parsed is not None
                else (parse_structured(reply.text, schema))
            )
            if value is not None:
                parsed = value
                break
            errors.append(error or "the answer did not match the schema")
            extra = [
                Message.assistant(reply.text),
                Message.user(load_template("giant/correction").render(error=errors[-1])),
            ]
        model_s = time.perf_counter() - started
        common = {
            "step": step,
            "sent_messages": len(sent),
            "images_sent": images,
            "outputs": outputs,
            "errors": errors,
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "model_s": model_s,
        }
        if parsed is None:
            run.log.add_step(StepRecord(kind="invalid", **common))
            run.emit(GiantEvent(kind="invalid", step=step, text=errors[-1]))
            if final:
                return {
                    "step": step,
                    "status": "no_answer",
                    "error": f"no valid answer on the last turn: {errors[-1]}",
                }
            run.log.add_message(Message.assistant(outputs[-1]))
            run.log.add_message(
                Message.user(
                    f"Your reply could not be used ({errors[-1]}); that turn is spent. "
                    f"You have {config.max_steps - step} turns left, including the answer."
                )
            )
            return {"step": step, "message_count": len(run.log.messages), "pending": None}
        action = parsed.root if hasattr(parsed, "root") else parsed
        data = action.model_dump()
        run.log.add_message(Message.assistant(outputs[-1]))
        if final or data.get("action") == "answer":
            run.log.add_step(StepRecord(kind="final" if final else "answer", action=data, **common))
            run.emit(GiantEvent(kind="answer", step=step, text=data["answer"]))
            return {
                "step": step,
                "message_count": len(run.log.messages),
                "pending": None,
                "answer": data["answer"],
                "status": "answered_at_limit" if final else "answered",
            }
        return {
            "step": step,
            "message_count": len(run.log.messages),
            "pending": {"action": data, "record": common},
        }

    def _random_region(step: int) -> Region:
        """A random square of at least the minimum side holding enough tissue.

        Seeded by (seed, step), so a resumed run shows the same regions it would have.
        """
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

    async def look(state: GiantState) -> GiantState:
        pending = state["pending"] or {}
        data, common = pending["action"], pending["record"]
        step = common["step"]
        notes: list[str] = []
        if data["action"] == "look":
            requested = _random_region(step)
        else:
            requested = Region(x=data["x"], y=data["y"], width=data["width"], height=data["height"])
        started = time.perf_counter()
        inside = requested.clamp(dims)
        problem = None
        if inside is None:
            problem = (
                f"region {requested} lies entirely outside the slide "
                f"(0..{dims.width} x 0..{dims.height})"
            )
        elif inside != requested and config.strict_regions:
            problem = (
                f"region {requested} extends beyond the slide (0..{dims.width} x "
                f"0..{dims.height}); give a region inside it"
            )
        if problem is not None:
            run.log.add_step(
                StepRecord(
                    kind="rejected", action=data, requested=requested, notes=[problem], **common
                )
            )
            run.log.add_message(
                Message.user(
                    f"That region was rejected: {problem}. That turn is spent. You have "
                    f"{config.max_steps - step} turns left, including the answer."
                )
            )
            run.emit(GiantEvent(kind="rejected", step=step, text=problem, region=requested))
            return {"message_count": len(run.log.messages), "pending": None}
        assert inside is not None
        crop_tools = run.crop_tools()
        try:
            view = zoom(
                crop_tools,
                x=inside.x,
                y=inside.y,
                width=inside.width,
                height=inside.height,
                long_side=config.long_side,
            )
        except RegionError as exc:  # e.g. over the read budget: tell the model, spend the turn
            run.log.add_step(
                StepRecord(
                    kind="rejected", action=data, requested=requested, notes=[str(exc)], **common
                )
            )
            run.log.add_message(Message.user(f"That region could not be shown: {exc}"))
            return {"message_count": len(run.log.messages), "pending": None}
        if inside != requested:
            notes.append(f" Your region {requested} was clamped to the slide.")
        for x, y, w, h, earlier in state.get("visited", []):
            if _iou(inside, Region(x=x, y=y, width=w, height=h)) >= config.loop_overlap:
                notes.append(
                    " "
                    + load_template("giant/nudge").render(x=x, y=y, w=w, h=h, step=earlier).strip()
                )
                break
        scale = (
            f"{view.mpp:.3g} µm per pixel"
            if view.mpp is not None
            else (f"{view.region.width / view.artifact.width:.3g} level-0 pixels per image pixel")
        )
        text = load_template("giant/after_zoom").render(
            x=inside.x,
            y=inside.y,
            w=inside.width,
            h=inside.height,
            slide_width=dims.width,
            slide_height=dims.height,
            scale=scale,
            notes="".join(notes),
            steps_left=config.max_steps - step,
        )
        run.log.add_message(Message.user(view.artifact, text))
        run.log.add_step(
            StepRecord(
                kind="look" if data["action"] == "look" else "zoom",
                action=data,
                requested=requested,
                region=view.region,
                clamped=inside != requested,
                level=view.level,
                mpp=view.mpp,
                artifact=view.artifact,
                notes=[n.strip() for n in notes],
                tool_s=time.perf_counter() - started,
                **common,
            )
        )
        run.emit(
            GiantEvent(
                kind="zoom",
                step=step,
                region=view.region,
                artifact_id=view.artifact.id,
                text=str(data.get("reasoning", "")),
            )
        )
        visited = [*state.get("visited", []), [*inside.as_tuple(), step]]
        return {"message_count": len(run.log.messages), "pending": None, "visited": visited}

    def after_decide(state: GiantState) -> str:
        if state.get("status") != "running":
            return END
        return "look" if state.get("pending") else "decide"

    graph: StateGraph[GiantState] = StateGraph(GiantState)
    graph.add_node("start", start)
    graph.add_node("decide", decide)
    graph.add_node("look", look)
    graph.add_edge(START, "start")
    graph.add_edge("start", "decide")
    graph.add_conditional_edges("decide", after_decide, ["look", "decide", END])
    graph.add_edge("look", "decide")
    return graph
