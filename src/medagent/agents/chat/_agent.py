"""``ChatAgent``: multi-turn chat over one slide or image, streamed as ``ChatEvent``s.

Each conversation is a LangGraph thread; its messages (artifact ids, never pixels) and events
are checkpointed, so with a persistent checkpointer (``AsyncSqliteSaver``) a thread carries on
in a new process exactly where it stopped. A user message is stored before its turn runs, and
every step is stored before the next one starts: a process killed mid-turn loses neither the
message nor its turn number, and the next message first finishes that turn — or, when finishing
it fails again, closes it with an error, so that no fault keeps a thread from taking messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph

from medagent._trace import (
    AttributeValue,
    HeldSpan,
    agent_turn,
    content_enabled,
    stream_within,
    to_json,
)
from medagent.agents.base import RunManifest
from medagent.agents.chat._config import ChatConfig, ChatEvent
from medagent.agents.chat._graph import (
    ChatRuntime,
    ChatState,
    UserTurn,
    accept_turn,
    build_graph,
    close_turn,
    slide_key,
    unfinished_turn,
)
from medagent.agents.chat._prompts import system_prompt, template_hashes
from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError, InputError
from medagent.imaging import Region, Slide, open_image
from medagent.models import ChatModel
from medagent.prompts import load_template
from medagent.tools import ImageSearcher, TextImageScorer

__all__ = ["ChatAgent", "build_chat_graph"]

ChatGraph = CompiledStateGraph[ChatState, Any, ChatState, ChatState]


class ChatAgent:
    """A tool-calling chat over ``slide`` (a path, or an open ``Slide``).

    ``astream(thread_id, message, region=...)`` runs one user turn and yields its events;
    ``ahistory(thread_id)`` returns every event of the thread so far. Without a checkpointer
    threads live in memory for the life of the agent. ``searcher`` (similar cases) and
    ``scorer`` (an image-text model, for the zero-shot "where to look" tool) add their tools.
    """

    def __init__(
        self,
        model: ChatModel,
        slide: str | Path | Slide,
        *,
        artifacts: ArtifactStore,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        config: ChatConfig | None = None,
        searcher: ImageSearcher | None = None,
        scorer: TextImageScorer | None = None,
    ) -> None:
        self.config = config or ChatConfig()
        self.slide = slide if isinstance(slide, Slide) else open_image(slide)
        self.artifacts = artifacts
        self.runtime = ChatRuntime(
            model=model,
            artifacts=artifacts,
            config=self.config,
            slide=self.slide,
            searcher=searcher,
            scorer=scorer,
        )
        self._graph: ChatGraph = build_graph(self.runtime).compile(
            checkpointer=checkpointer if checkpointer is not None else InMemorySaver()
        )
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def graph(self) -> ChatGraph:
        """The compiled LangGraph (for inspection, or to drive it directly)."""
        return self._graph

    def manifest(self) -> RunManifest:
        """What this chat runs: the model, the image, the config, the chat templates' hashes,
        the system prompt as filled for this image, and the long side of the views sent."""
        return RunManifest.for_model(
            self.runtime.chat_model(),
            agent="chat",
            method="chat",
            inputs={"slide_path": slide_key(self.slide)},
            config=self.config.model_dump(mode="json"),
            prompts=template_hashes(),
            image_long_side=self.runtime.long_side(),
            seed=self.config.seed,
        ).with_rendered(system=system_prompt(self.slide, self.config))

    def write_manifest(self, folder: Path) -> Path:
        """Write ``manifest()`` into the conversation's ``folder``. A folder reopened keeps its
        ``run_id`` and ``created_at`` (the conversation goes on); the rest describes this
        opening, whose model or config may differ."""
        manifest = self.manifest()
        earlier = RunManifest.find(folder)
        if earlier is not None:
            manifest = manifest.model_copy(
                update={"run_id": earlier.run_id, "created_at": earlier.created_at}
            )
        return manifest.write(folder)

    def _settings(self, thread_id: str) -> RunnableConfig:
        if not isinstance(thread_id, str) or not thread_id.strip():
            raise ConfigError("a chat needs a thread id (any non-empty string)")
        # Per turn: listen, finish, and a think/act pair per reply, tool calls plus the answer.
        steps = 2 * (self.config.max_tool_calls + 1) * (self.config.max_corrections + 1) + 8
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": steps}

    async def astream(
        self, thread_id: str, message: str, *, region: Region | None = None
    ) -> AsyncIterator[ChatEvent]:
        """Send one user message (optionally pointing at a level-0 ``region``); yields the
        turn's events as they happen, ending with ``turn_end``.

        Model failures and unusable replies arrive as an ``error`` event, never as an
        exception; an empty message without a region raises ``InputError``.
        """
        settings = self._settings(thread_id)
        if not message.strip():
            if region is None:
                raise InputError("the message is empty; type a question or point at a region")
            message = load_template("chat/region_question").text.strip()
        user = UserTurn(message=message, region=region)
        lock = self._locks.setdefault(thread_id, asyncio.Lock())
        async with lock:
            snapshot = await self._graph.aget_state(settings)
            values = snapshot.values or {}
            mine = slide_key(self.slide)
            if values.get("slide") not in (None, mine):
                raise ConfigError(
                    f"thread {thread_id!r} is about {values['slide']}, not {mine}; "
                    "use a new thread id"
                )
            if snapshot.next and not snapshot.interrupts:
                # Stopped mid-turn (the process was killed): finish that turn first, streamed
                # whole from its turn_start, so its events cannot pass for the new turn's.
                resumed = {"medagent.turn.resumed": True}
                with agent_turn("chat", thread_id, values.get("turn", 0), resumed) as held:
                    for event in unfinished_turn(values):
                        yield event
                    try:
                        async for event in stream_within(held, self._run(None, settings)):
                            _record_outcome(held, event)
                            yield event
                    except Exception as exc:  # it fails again: a fault, not a stop; close it
                        values = (await self._graph.aget_state(settings)).values or {}
                        text = str(exc).strip()
                        reason = text.splitlines()[0][:160] if text else type(exc).__name__
                        closing, update = close_turn(values, thread_id, reason)
                        await self._graph.aupdate_state(settings, update, as_node="finish")
                        held.span.set_attribute("error.type", type(exc).__qualname__)
                        for event in closing:
                            _record_outcome(held, event)
                            yield event
                values = (await self._graph.aget_state(settings)).values or {}
            # Write-ahead: the message and its number are stored before the turn runs.
            start, update = accept_turn(values, thread_id, user, slide=slide_key(self.slide))
            await self._graph.aupdate_state(settings, update, as_node="finish")
            with agent_turn("chat", thread_id, start.turn, _turn_attributes(user)) as held:
                yield start
                async for event in stream_within(held, self._run(None, settings)):
                    _record_outcome(held, event)
                    yield event

    async def _run(self, payload: Any, settings: RunnableConfig) -> AsyncGenerator[ChatEvent, None]:
        # "sync": each step is stored before the next begins, so a turn_end a client has seen
        # is never followed by a different answer after a crash.
        async for chunk in self._graph.astream(
            payload, settings, stream_mode="custom", durability="sync"
        ):
            if isinstance(chunk, dict) and "type" in chunk:
                yield ChatEvent.model_validate(chunk)

    async def ahistory(self, thread_id: str) -> list[ChatEvent]:
        """Every event of every turn of the thread so far (empty for an unknown thread)."""
        snapshot = await self._graph.aget_state(self._settings(thread_id))
        return [ChatEvent.model_validate(e) for e in (snapshot.values or {}).get("events", [])]


def _turn_attributes(user: UserTurn) -> dict[str, AttributeValue]:
    """What a turn's span says of the user's message: whether it pointed at a region, and
    the text itself only when the user opted in to content."""
    attributes: dict[str, AttributeValue] = {"medagent.turn.region": user.region is not None}
    if content_enabled():
        message = {"role": "user", "parts": [{"type": "text", "content": user.message}]}
        attributes["gen_ai.input.messages"] = to_json([message])
    return attributes


def _record_outcome(held: HeldSpan, event: ChatEvent) -> None:
    """How the turn ended, on its span: answered, or error (the model failed or the reply
    could not be used)."""
    if event.type == "answer":
        held.span.set_attribute("medagent.run.status", "answered")
    elif event.type == "error":
        held.span.set_attribute("medagent.run.status", "error")


def build_chat_graph(config: RunnableConfig | None = None) -> ChatGraph:
    """The chat graph for LangGraph's CLI and Studio (see ``langgraph.json``).

    The backend comes from ``MEDAGENT_*`` settings when the first message arrives; the image
    from the ``slide`` path in the thread's first input, e.g.
    ``{"slide": "slide.svs", "inbox": {"message": "What tissue is this?"}}``; later turns
    resume the interrupt with ``{"message": ..., "region": {...}}``. Views are stored under
    ``configurable.artifacts_dir`` (default: the cache folder's ``chat-artifacts``).
    """
    from medagent.models import build_model
    from medagent.settings import Settings

    settings = Settings()
    configurable = (config or {}).get("configurable") or {}
    folder = configurable.get("artifacts_dir") or settings.cache_dir / "chat-artifacts"
    runtime = ChatRuntime(
        model=lambda: build_model(settings),
        artifacts=ArtifactStore(folder),
        config=ChatConfig(seed=settings.seed),
    )
    return build_graph(runtime).compile()
