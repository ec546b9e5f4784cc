"""The chat as a LangGraph graph: listen → think ⇄ act → finish → listen → …

One thread is one conversation. Between turns the graph waits in ``listen`` on a LangGraph
``interrupt``; a user message (with an optional region the user points at) resumes it, so a
region can be injected at any point of the conversation and the thread's whole state — the
messages as artifact ids, every event — lives in the checkpointer.

Events are written to LangGraph's custom stream as they happen and kept in the state, so a
thread's history can be replayed after a restart. ``ChatAgent`` writes each user message ahead
(``accept_turn``: its turn number and ``turn_start`` stored before any node runs), so a process
killed mid-turn loses neither the message nor its number.
"""

from __future__ import annotations

import asyncio
import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import START, StateGraph
from langgraph.types import interrupt
from pydantic import BaseModel, ValidationError

from medagent._trace import traced_step
from medagent.agents.base import render_long_side
from medagent.agents.chat._actions import Decision, action_schema, read_action, read_native
from medagent.agents.chat._config import ChatConfig, ChatEvent, ChatEventType
from medagent.agents.chat._prompts import overview_prompt, system_prompt
from medagent.artifacts import ArtifactRef, ArtifactStore
from medagent.errors import ConfigError, MedagentError, ModelResponseError
from medagent.imaging import Region, RenderPolicy, Slide, open_image
from medagent.models import (
    ChatModel,
    GenerateParams,
    Message,
    Reply,
    StreamingChatModel,
    ToolCall,
    ToolSpec,
    ask_with_corrections,
    prune_images,
)
from medagent.prompts import load_template
from medagent.tools import (
    DEFAULT_TOOLS,
    ImageSearcher,
    SamSegmenter,
    SearchOutput,
    Segmenter,
    TextImageScorer,
    Tool,
    ToolContext,
    ToolFailure,
    overview,
    search_similar,
    zero_shot,
    zoom,
)

__all__ = [
    "ChatRuntime",
    "ChatState",
    "UserTurn",
    "accept_turn",
    "build_graph",
    "slide_key",
    "unfinished_turn",
]

T = TypeVar("T")

_TOOLS: dict[str, Tool[Any, Any]] = {t.name: t for t in DEFAULT_TOOLS}
# Status codes with which servers refuse tool calling (vLLM without --enable-auto-tool-choice,
# Ollama for models without tools): the JSON action schema still works there.
_TOOLS_REFUSED = {400, 404, 422, 501}


def slide_key(slide: Slide) -> str:
    """How a thread names its slide: the path as given, or a remote slide's reference (which
    ``open_image`` opens again)."""
    return slide.remote_source or str(slide.path)


class UserTurn(BaseModel):
    """What resumes a waiting thread: the user's message and the region pointed at, if any."""

    message: str
    region: Region | None = None


class ChatState(TypedDict, total=False):
    """A thread's state: control values, and the conversation and events as plain JSON."""

    slide: str | None  # path of the image (set with the first message)
    inbox: dict[str, Any] | None  # a UserTurn given as input instead of through the interrupt
    accepted: bool  # the inbox was written ahead: its turn number and turn_start are stored
    messages: Annotated[list[dict[str, Any]], operator.add]
    events: Annotated[list[dict[str, Any]], operator.add]
    turn: int
    seq: int  # next event number in the turn
    calls: int  # tool calls made in the turn
    boxes: int  # numbered views in the thread
    pending: dict[str, Any] | None  # tool calls waiting to run, and the words before them
    mode: Literal["native", "schema"] | None  # how tools are called, once decided
    route: str


@dataclass
class ChatRuntime:
    """What the nodes need besides the state; shared by every thread of one agent.

    ``slide`` is fixed for an agent; without it (a graph loaded by LangGraph's CLI) each thread
    opens the path given as ``slide`` in its first input. ``model`` may be a factory so that a
    graph can be built before a backend is configured.
    """

    model: ChatModel | Callable[[], ChatModel]
    artifacts: ArtifactStore
    config: ChatConfig = field(default_factory=ChatConfig)
    slide: Slide | None = None
    searcher: ImageSearcher | None = None
    #: An image-text model (CLIP family) for the zero_shot tool.
    scorer: TextImageScorer | None = None
    #: SAM for segment(method="sam"); built from ``config.sam_model`` when not given.
    segmenter: Segmenter | None = None
    _built: ChatModel | None = field(default=None, repr=False)
    _contexts: dict[str, ToolContext] = field(default_factory=dict, repr=False)
    # Tools render with one shared renderer cache; threads of one agent take turns at it.
    _tool_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def sam(self) -> Segmenter | None:
        """One segmenter for every thread (a SAM model is loaded once, on first use)."""
        if self.segmenter is None and self.config.sam_model:
            self.segmenter = SamSegmenter(self.config.sam_model)
        return self.segmenter

    def chat_model(self) -> ChatModel:
        if self._built is None:
            self._built = self.model() if callable(self.model) else self.model
        return self._built

    def long_side(self) -> int:
        """The long side views are rendered at: the configured one, or the backend's image cap
        when that is smaller, so the model gets the pixels the prompt describes."""
        return render_long_side(self.chat_model(), self.config.image_long_side)

    def tools(self) -> list[Tool[Any, Any]]:
        """The tools offered; ``search_similar`` only when there is an index to search and
        ``zero_shot`` only with an image-text model."""
        missing = {search_similar.name: self.searcher is None, zero_shot.name: self.scorer is None}
        return [_TOOLS[name] for name in self.config.tools if not missing.get(name, False)]

    def context(self, slide_path: str | None) -> ToolContext:
        slide = self.slide
        key = slide_key(slide) if slide is not None else (slide_path or "")
        if key not in self._contexts:
            if slide is None:
                if not slide_path:
                    raise ConfigError(
                        "no image to chat about: give 'slide' (a path) with the first message"
                    )
                slide = open_image(slide_path)
            self._contexts[key] = ToolContext(
                artifacts=self.artifacts,
                slide=slide,
                policy=RenderPolicy(
                    long_side=self.long_side(), cache_entries=self.config.view_cache
                ),
                segmenter=self.sam(),
                searcher=self.searcher,
                scorer=self.scorer,
                # a model asking for a bigger view gets no more than its backend will send
                max_long_side=render_long_side(self.chat_model(), 4096),
            )
        return self._contexts[key]

    async def run_tool(self, ctx: ToolContext, call: ToolCall) -> BaseModel:
        tool = _TOOLS.get(call.name)
        if tool is None or tool not in self.tools():
            names = ", ".join(t.name for t in self.tools())
            return ToolFailure(
                tool=call.name or "?",
                kind="invalid_arguments",
                message=f"there is no tool named {call.name!r}; the tools are: {names}",
            )
        arguments: dict[str, Any] | str = (
            call.arguments if call.arguments is not None else call.raw_arguments
        )

        return await self.in_thread(lambda: tool.run(ctx, arguments))

    async def in_thread(self, work: Callable[[], T]) -> T:
        """Run image work off the event loop: reading and rendering a region takes long enough
        to stall every other stream."""

        def locked() -> T:
            with self._tool_lock:
                return work()

        return await asyncio.to_thread(locked)


class _Emitter:
    """Numbers events, writes them to the stream at once, and keeps them for the state."""

    def __init__(
        self,
        state: ChatState,
        config: RunnableConfig,
        *,
        turn: int | None = None,
        seq: int | None = None,
    ) -> None:
        self.thread_id = str((config.get("configurable") or {}).get("thread_id", ""))
        self.turn = state.get("turn", 0) if turn is None else turn
        self.seq = state.get("seq", 0) if seq is None else seq
        self.boxes = state.get("boxes", 0)
        self.events: list[dict[str, Any]] = []
        self._write = get_stream_writer()

    def __call__(self, kind: ChatEventType, **fields: Any) -> None:
        event = ChatEvent(
            type=kind, thread_id=self.thread_id, turn=self.turn, seq=self.seq, **fields
        )
        self.seq += 1
        data = event.model_dump(mode="json")
        self._write(data)
        self.events.append(data)

    def crop(self, ref: ArtifactRef, whole: Region) -> None:
        box = None
        if ref.region is not None and ref.region != whole:
            self.boxes += 1
            box = self.boxes
        self("crop", region=ref.region, box=box, artifact_id=ref.id)

    def update(self, **values: Any) -> ChatState:
        """The node's state update: its events and counters, and ``values``."""
        state = ChatState(events=self.events, seq=self.seq, boxes=self.boxes)
        state.update(values)  # type: ignore[typeddict-item]
        return state


def _load(messages: list[dict[str, Any]]) -> list[Message]:
    return [Message.model_validate(m) for m in messages]


def _dump(*messages: Message) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in messages]


def _views(result: BaseModel) -> list[ArtifactRef]:
    """The images a tool result shows the model: its view, or a search's neighbours."""
    if isinstance(result, SearchOutput):
        return [case.thumbnail for case in result.cases if case.thumbnail is not None]
    artifact = getattr(result, "artifact", None)
    return [artifact] if isinstance(artifact, ArtifactRef) else []


def _text(result: BaseModel) -> str:
    to_text = getattr(result, "to_text", None)
    return str(to_text()) if callable(to_text) else result.model_dump_json()


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(x) for x in first["loc"]) or "message"
    return f"{where}: {first['msg']}; send {{'message': TEXT, 'region': {{x, y, width, height}}}}"


def _heard(turn: int) -> dict[str, Any]:
    """What ``listen`` resets once a message is taken: the inbox and the turn's counters."""
    return {"inbox": None, "accepted": False, "turn": turn, "calls": 0, "pending": None}


def accept_turn(
    values: Mapping[str, Any], thread_id: str, user: UserTurn, *, slide: str | None = None
) -> tuple[ChatEvent, ChatState]:
    """The ``turn_start`` of ``user``'s message and the state update that stores it ahead of
    the turn (the inbox, the next turn number, the event): a process killed before the turn
    ends keeps the message, and the number is never handed out again."""
    number = values.get("turn", 0) + 1
    start = ChatEvent(
        type="turn_start",
        thread_id=thread_id,
        turn=number,
        seq=0,
        text=user.message,
        region=user.region,
    )
    update = ChatState(
        inbox=user.model_dump(mode="json"),
        accepted=True,
        turn=number,
        seq=1,
        events=[start.model_dump(mode="json")],
        calls=0,
        pending=None,
    )
    if slide is not None and values.get("slide") is None:
        update["slide"] = slide
    return start, update


def unfinished_turn(values: Mapping[str, Any]) -> list[ChatEvent]:
    """The stored events of the thread's last turn when it has not ended (a process stopped
    it), from its ``turn_start``; empty when every turn ended."""
    events = values.get("events", [])
    if not events or events[-1].get("type") == "turn_end":
        return []
    number = values.get("turn", 0)
    return [ChatEvent.model_validate(e) for e in events if e.get("turn") == number]


def close_turn(
    values: Mapping[str, Any], thread_id: str, reason: str
) -> tuple[list[ChatEvent], ChatState]:
    """The events and state update that end the thread's open turn as failed: an ``error``
    naming ``reason``, then ``turn_end``. For a turn that fails again when it is resumed (a
    bug, not a killed process): the thread must stay usable, and the next message kept."""
    thread_turn, seq = values.get("turn", 0), values.get("seq", 0)
    events = [
        ChatEvent(
            type="error",
            thread_id=thread_id,
            turn=thread_turn,
            seq=seq,
            text=f"this turn could not be finished and was closed ({reason})",
        ),
        ChatEvent(type="turn_end", thread_id=thread_id, turn=thread_turn, seq=seq + 1),
    ]
    update = ChatState(
        events=[e.model_dump(mode="json") for e in events],
        seq=seq + 2,
        inbox=None,
        accepted=False,
        pending=None,
        route="listen",
    )
    return events, update


def _schema_prompt(tools: Sequence[ToolSpec]) -> str:
    import json

    listing = "\n".join(
        f"- {t.name}: {t.description}\n  arguments: {json.dumps(t.parameters)}" for t in tools
    )
    return load_template("chat/schema").render(tools=listing or "(none left for this message)")


def build_graph(rt: ChatRuntime) -> StateGraph[ChatState]:
    """The chat graph over ``rt`` (compile it with a checkpointer: the interrupt needs one)."""
    cfg = rt.config

    def params() -> GenerateParams:
        return GenerateParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed)

    async def listen(state: ChatState, config: RunnableConfig) -> ChatState:
        ahead = bool(state.get("accepted") and state.get("inbox"))
        raw: Any = None
        if not ahead:
            # Waiting for the next message is not a step: the interrupt stays outside its span.
            raw = state.get("inbox") or interrupt(
                {"waiting_for": "message", "turn": state.get("turn", 0) + 1}
            )
        return await hear(state, config, ahead, raw)

    async def heard(state: ChatState, config: RunnableConfig, ahead: bool, raw: Any) -> ChatState:
        if ahead:
            # Written ahead (accept_turn): the number and turn_start are already in the state.
            emit = _Emitter(state, config)
            user = UserTurn.model_validate(state.get("inbox"))
        else:
            emit = _Emitter(state, config, turn=state.get("turn", 0) + 1, seq=0)
            try:
                user = UserTurn.model_validate(raw)
            except ValidationError as exc:
                emit("turn_start", text=str(raw)[:200])
                emit("error", text=f"the message could not be read: {_first_error(exc)}")
                return emit.update(**_heard(emit.turn), route="finish")
            emit("turn_start", text=user.message, region=user.region)
        try:
            ctx = rt.context(state.get("slide"))
            whole = Region.whole(ctx.require_slide().dimensions)
            added: list[Message] = []
            parts: list[str | ArtifactRef] = [user.message]
            if not state.get("messages"):
                slide = ctx.require_slide()
                added.append(Message.system(system_prompt(slide, cfg)))
                if cfg.overview_first:
                    view = await rt.in_thread(lambda: overview(ctx))
                    emit.crop(view.artifact, whole)
                    parts += [overview_prompt(slide), view.artifact]
            if user.region is not None:
                r = user.region
                crop = await rt.in_thread(
                    lambda: zoom(ctx, x=r.x, y=r.y, width=r.width, height=r.height)
                )
                emit.crop(crop.artifact, whole)
                parts += [
                    load_template("chat/region").render(
                        x=r.x, y=r.y, width=r.width, height=r.height
                    ),
                    crop.artifact,
                ]
            added.append(Message.user(*parts))
        except MedagentError as exc:
            emit("error", text=str(exc))
            return emit.update(**_heard(emit.turn), route="finish")
        return emit.update(**_heard(emit.turn), route="think", messages=_dump(*added))

    hear = traced_step("chat", "listen", heard)

    async def generate(
        emit: _Emitter, sent: list[Message], tools: list[ToolSpec], mode: str
    ) -> Reply:
        model = rt.chat_model()
        if mode == "schema":
            return await model.generate(
                sent, schema=action_schema(tools), params=params(), artifacts=rt.artifacts
            )
        if isinstance(model, StreamingChatModel):
            reply: Reply | None = None
            async for piece in model.generate_stream(
                sent, tools=tools or None, params=params(), artifacts=rt.artifacts
            ):
                if isinstance(piece, Reply):
                    reply = piece
                elif piece:
                    emit("token", text=piece)
            if reply is None:
                raise ModelResponseError("the model's stream ended without a reply")
            return reply
        return await model.generate(
            sent, tools=tools or None, params=params(), artifacts=rt.artifacts
        )

    def request(
        history: list[Message], tools: list[ToolSpec], mode: str, spent: bool
    ) -> list[Message]:
        messages = list(history)
        if mode == "schema" and messages and messages[0].role == "system":
            messages[0] = Message.system(messages[0].text + "\n" + _schema_prompt(tools))
        if spent:
            messages.append(
                Message.user(load_template("chat/limit").render(max_tool_calls=cfg.max_tool_calls))
            )
        return prune_images(messages, cfg.max_images_in_context)

    async def think(state: ChatState, config: RunnableConfig) -> ChatState:
        emit = _Emitter(state, config)
        history = _load(state.get("messages", []))
        offered = [t.spec() for t in rt.tools()]
        spent = bool(offered) and state.get("calls", 0) >= cfg.max_tool_calls
        tools = [] if spent else offered
        mode = state.get("mode") or ("schema" if cfg.tool_mode == "schema" else "native")
        call_prefix = f"t{emit.turn}c{state.get('calls', 0)}"

        async def send(messages: list[Message]) -> Reply:
            # The conversation so far, then any refused replies and their corrections.
            nonlocal mode
            refused = messages[len(history) :]
            try:
                sent = request(history, tools, mode, spent) + refused
                return await generate(emit, sent, tools, mode)
            except ModelResponseError as exc:
                if not (
                    mode == "native"
                    and cfg.tool_mode == "auto"
                    and exc.status_code in _TOOLS_REFUSED
                ):
                    raise
            # The server refuses tools: ask for JSON actions instead (not a correction).
            mode = "schema"
            sent = request(history, tools, mode, spent) + refused
            return await generate(emit, sent, tools, mode)

        def read(reply: Reply) -> tuple[tuple[Reply, Decision] | None, str | None]:
            if mode == "schema":
                decision = read_action(reply, tools, call_prefix)
            else:
                decision = read_native(reply, tools)
            if decision.kind == "invalid":
                return None, decision.error or "the reply could not be used"
            return (reply, decision), None

        def correction(error: str) -> Message:
            if mode == "schema":
                return Message.user(load_template("chat/correction_schema").render(error=error))
            return Message.user(
                load_template("chat/correction_native").render(
                    error=error, or_call="" if spent else ", or call a tool"
                )
            )

        done = await ask_with_corrections(
            send, history, read, correction, max_retries=cfg.max_corrections
        )
        if done.model_error is not None:
            emit("error", text=done.model_error)
            return emit.update(route="finish", mode=mode)
        if done.value is None:
            emit(
                "error",
                text=f"the model's reply could not be used after {len(done.replies)} tries: "
                f"{done.errors[-1]}",
            )
            return emit.update(route="finish", mode=mode)
        reply, decision = done.value
        if decision.kind == "answer":
            emit("answer", text=decision.text)
            stored = Message.assistant(reply.text if mode == "schema" else decision.text)
            return emit.update(route="finish", mode=mode, messages=_dump(stored))
        if mode == "native" and reply.tool_calls:
            stored = reply.as_message()
        elif mode == "native":
            stored = Message.assistant("", decision.calls)
        else:
            stored = Message.assistant(reply.text)
        pending = {
            "calls": [c.model_dump(mode="json") for c in decision.calls],
            "text": decision.text.strip(),
        }
        return emit.update(route="act", mode=mode, pending=pending, messages=_dump(stored))

    async def act(state: ChatState, config: RunnableConfig) -> ChatState:
        emit = _Emitter(state, config)
        pending = state.get("pending") or {}
        calls = [ToolCall.model_validate(c) for c in pending.get("calls", [])]
        mode = state.get("mode") or "native"
        used = state.get("calls", 0)
        ctx = rt.context(state.get("slide"))
        whole = Region.whole(ctx.require_slide().dimensions)
        added: list[Message] = []
        results: list[str] = []
        images: list[str | ArtifactRef] = []
        words = pending.get("text") or None
        for call in calls:
            emit("tool_call", tool=call.name, arguments=call.arguments, text=words)
            words = None
            if used >= cfg.max_tool_calls:
                result: BaseModel = ToolFailure(
                    tool=call.name or "?",
                    kind="failed",
                    message=f"not run: the {cfg.max_tool_calls} tool calls for this message "
                    "are used up",
                )
            else:
                result = await rt.run_tool(ctx, call)
                used += 1
            text = _text(result)
            emit("tool_result", tool=call.name, ok=not isinstance(result, ToolFailure), text=text)
            for index, ref in enumerate(_views(result)):
                if index == 0 and not isinstance(result, SearchOutput):
                    emit.crop(ref, whole)
                where = f" of {ref.region}" if ref.region is not None else ""
                images += [f"{call.name}{where}:", ref]
            if mode == "native":
                added.append(Message.tool(call.id, text))
            else:
                results.append(f"Result of {call.name}: {text}")
        if mode == "native" and images:
            added.append(Message.user(load_template("chat/tool_images").render().strip(), *images))
        elif mode == "schema":
            added.append(Message.user("\n".join(results), *images))
        return emit.update(route="think", calls=used, pending=None, messages=_dump(*added))

    async def finish(state: ChatState, config: RunnableConfig) -> ChatState:
        emit = _Emitter(state, config)
        emit("turn_end")
        return emit.update(route="listen", pending=None)

    def after(state: ChatState) -> str:
        return state.get("route", "finish")

    graph: StateGraph[ChatState] = StateGraph(ChatState)
    graph.add_node("listen", listen)
    graph.add_node("think", traced_step("chat", "think", think))
    graph.add_node("act", traced_step("chat", "act", act))
    graph.add_node("finish", traced_step("chat", "finish", finish))
    graph.add_edge(START, "listen")
    graph.add_conditional_edges("listen", after, ["think", "finish"])
    graph.add_conditional_edges("think", after, ["act", "finish"])
    graph.add_edge("act", "think")
    graph.add_edge("finish", "listen")
    return graph
