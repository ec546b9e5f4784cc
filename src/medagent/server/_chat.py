"""Sessions at run time: one chat agent per session, turns run to completion, limits applied.

A turn runs as its own task and feeds a queue the HTTP response reads: a client that goes away
mid-turn does not cut the turn short, so the history (checkpointed by the agent) stays whole.
A session is written only once its slide has opened, and forgotten again if anything after
that fails: a failed create leaves no row and no folder. One turn at a time per session holds
across replicas (``TurnLocks``); while the database is unreachable, requests fail with
``DatabaseUnavailableError`` (a 503) and turns end with an error event, never a traceback.
A turn whose lock is lost while it runs (its connection dropped) is stopped at once, its
stream ending with an error event: another replica may start the session's next turn now.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import shutil
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from anyio import to_thread

from medagent.artifacts import ArtifactStore
from medagent.errors import DatabaseUnavailableError, MedagentError
from medagent.imaging import Region, Slide, resolve_slide_source
from medagent.server._config import ServerConfig
from medagent.server._database import is_database_error, unreachable
from medagent.server._expiry import SessionReaper
from medagent.server._security import RateLimiter
from medagent.server._state import ClientCap, SessionRecord, SessionStore, session_folder
from medagent.server._tiles import SlideKey
from medagent.server._turns import LOCK_LOST, LocalTurnLocks, TurnLocks

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from medagent._trace import Tracing
    from medagent.agents.chat import ChatEvent
    from medagent.models import ChatModel

__all__ = [
    "AgentContext",
    "AgentFactory",
    "ChatService",
    "ChatSession",
    "OpenSession",
    "RateLimitedError",
    "SessionCapError",
    "SessionNotFoundError",
    "TurnInProgressError",
    "chat_agent_factory",
]

log = logging.getLogger("medagent.server")
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


class SessionNotFoundError(LookupError):
    """No session with that id (or its slide is no longer under a configured root)."""


class SessionCapError(RuntimeError):
    """The client holds as many live sessions as it may; it must delete one or let one expire."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        super().__init__(
            f"this client already holds {cap} sessions, the most allowed; delete one "
            "(DELETE /api/sessions/ID) or wait until an unused one expires"
        )


class TurnInProgressError(RuntimeError):
    """The session is already answering; one turn at a time keeps the thread consistent."""


class RateLimitedError(RuntimeError):
    """The session sent messages faster than its limit; retry after ``retry_after`` s."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many messages in this session; retry in {retry_after} s")


class ChatSession(Protocol):
    """What the server needs of a chat agent (``medagent.agents.chat.ChatAgent``)."""

    def astream(
        self, thread_id: str, message: str, *, region: Region | None = None
    ) -> AsyncIterator[ChatEvent]: ...

    async def ahistory(self, thread_id: str) -> list[ChatEvent]: ...


@dataclass(frozen=True)
class AgentContext:
    """Everything an agent for one session is built from.

    ``slide`` is opened once per file and shared by every session on it (and the tiles): one
    OpenSlide handle and tile cache instead of one per session. ``folder`` is the session's
    own (its crops and its run manifest).
    """

    session_id: str
    slide_path: SlideKey
    slide: Slide
    folder: Path
    artifacts: ArtifactStore
    checkpointer: BaseCheckpointSaver[Any]
    model: ChatModel


AgentFactory = Callable[[AgentContext], ChatSession]

SESSION_VIEW_CACHE = 0
"""Rendered views each session keeps in memory: none. A view takes tens of ms to render again
and a few MB to keep; a server holding many sessions keeps the memory (the agent's default, 32,
is for one chat)."""


def chat_agent_factory(context: AgentContext) -> ChatSession:
    """The real agent: ``ChatAgent`` over the session's slide, crops in its own store, and
    the session's run manifest written into its folder."""
    from medagent.agents.chat import ChatAgent, ChatConfig

    agent = ChatAgent(
        context.model,
        context.slide,
        artifacts=context.artifacts,
        checkpointer=context.checkpointer,
        # many sessions share the process: each keeps only its latest views in memory
        config=ChatConfig(view_cache=SESSION_VIEW_CACHE),
    )
    agent.write_manifest(context.folder)
    return agent


@dataclass(frozen=True)
class OpenSession:
    record: SessionRecord
    slide_path: SlideKey
    artifacts: ArtifactStore
    agent: ChatSession


class ChatService:
    """Creates and reopens sessions, runs turns, and applies the per-session limits."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        store: SessionStore,
        checkpointer: BaseCheckpointSaver[Any],
        model_for: Callable[[str], ChatModel],
        open_slide: Callable[[SlideKey], Slide],
        agent_factory: AgentFactory = chat_agent_factory,
        turns: TurnLocks | None = None,
        tracing: Tracing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._roots = config.roots
        self._archives = config.dicomweb_archives
        self._store = store
        self._checkpointer = checkpointer
        self._model_for = model_for
        self._open_slide = open_slide
        self._agent_factory = agent_factory
        self._open: OrderedDict[str, OpenSession] = OrderedDict()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._turns = turns if turns is not None else LocalTurnLocks()
        self._turns.on_lost(self._stop_turns)
        self._lock_lost: set[str] = set()  # turns being stopped because their lock is gone
        self._tracing = tracing  # each turn's task traces to it (its spans nest per turn)
        self._limiter = RateLimiter(config.messages_per_minute, config.message_burst)
        self._clock = clock
        self._touched: dict[str, float] = {}  # when this replica last wrote each open one's use
        self.reaper = SessionReaper(
            store=store,
            checkpointer=checkpointer,
            turns=self._turns,
            data_dir=config.data_dir,
            idle_s=config.session_idle_s,
            forget=self._forget,
            clock=clock,
        )

    def resolve(self, slide: str) -> SlideKey:
        """The slide file under a root, or the series in an allowed archive
        (``PathRefusedError``/``InputError`` otherwise)."""
        source = resolve_slide_source(slide, self._roots, self._archives)
        return source if isinstance(source, Path) else source.url

    async def create(self, slide: str, client: str | None = None) -> OpenSession:
        """A new session on ``slide`` for ``client`` (``SessionCapError`` when it holds its
        most); one that cannot be opened leaves nothing behind."""
        path = self.resolve(slide)  # refuse before anything is written
        await to_thread.run_sync(self._open_slide, path)  # a folder, a corrupt file: refused here
        now = self._clock()
        idle = self._config.session_idle_s
        # Sessions already past their idle time do not count: the next sweep removes them.
        cap = ClientCap(self._config.client_max_sessions, 0.0 if idle is None else now - idle)
        async with _reachable():
            record = await self._store.create(slide, now=now, client=client, cap=cap)
        if record is None:
            raise SessionCapError(cap.sessions)
        try:
            return await self.open(record.id)
        except BaseException:
            # Shielded: a cancelled request still takes its half-made session with it.
            await asyncio.shield(self._discard(record.id))
            raise

    async def _discard(self, session_id: str) -> None:
        self._forget(session_id)
        await self._store.delete(session_id)
        await to_thread.run_sync(
            functools.partial(shutil.rmtree, self._folder(session_id), ignore_errors=True)
        )

    def _folder(self, session_id: str) -> Path:
        return session_folder(self._config.data_dir, session_id)

    def _forget(self, session_id: str) -> None:
        """Drop what this replica keeps of a session (removed, or evicted from memory)."""
        self._open.pop(session_id, None)
        self._touched.pop(session_id, None)

    async def _touch(self, session_id: str, *, always: bool = False) -> None:
        """Record that the session is in use, at most every ``touch_interval_s`` unless
        ``always``; ``SessionNotFoundError`` when it was removed (here or by another replica)."""
        now = self._clock()
        last = self._touched.get(session_id)
        if not always and last is not None and now - last < self._config.touch_interval_s:
            return
        async with _reachable():
            alive = await self._store.touch(session_id, now)
        if not alive:
            self._forget(session_id)
            raise SessionNotFoundError(session_id)
        if session_id in self._open:
            self._touched[session_id] = now

    async def delete(self, session_id: str) -> None:
        """Remove the session, its checkpoints and crops (``TurnInProgressError`` while it
        answers, ``SessionNotFoundError`` when there is none)."""
        if not _SESSION_ID.fullmatch(session_id):
            raise SessionNotFoundError(session_id)
        if session_id in self._running:
            raise TurnInProgressError(session_id)
        async with _reachable():
            outcome = await self.reaper.remove(session_id)
        if outcome == "busy":
            raise TurnInProgressError(session_id)
        if outcome == "missing":
            raise SessionNotFoundError(session_id)

    async def open(self, session_id: str) -> OpenSession:
        """The session, its agent built on first use; ``SessionNotFoundError`` when unknown."""
        found = self._open.get(session_id)
        if found is not None:
            await self._touch(session_id)  # also how a removal elsewhere is noticed here
            self._open.move_to_end(session_id)
            return found
        if not _SESSION_ID.fullmatch(session_id):
            raise SessionNotFoundError(session_id)
        async with _reachable():
            record = await self._store.get(session_id)
        if record is None:
            raise SessionNotFoundError(session_id)
        # Before its folder is made: a session swept meanwhile is not brought back half.
        await self._touch(session_id, always=True)
        try:
            # Resolved again on every load: roots may have changed since the session began.
            path = self.resolve(record.slide)
        except MedagentError:
            raise SessionNotFoundError(session_id) from None
        slide = await to_thread.run_sync(self._open_slide, path)  # before any folder is made
        folder = self._folder(session_id)
        artifacts = await to_thread.run_sync(ArtifactStore, folder / "crops")
        context = AgentContext(
            session_id=session_id,
            slide_path=path,
            slide=slide,
            folder=folder,
            artifacts=artifacts,
            checkpointer=self._checkpointer,
            model=self._model_for(session_id),
        )
        agent = await to_thread.run_sync(self._agent_factory, context)
        found = self._open.get(session_id)  # another request may have opened it meanwhile
        if found is not None:
            return found
        session = OpenSession(record=record, slide_path=path, artifacts=artifacts, agent=agent)
        self._open[session_id] = session
        self._touched[session_id] = self._clock()
        while len(self._open) > self._config.open_agents:
            oldest = next(iter(self._open))
            if oldest in self._running:
                break  # never drop an agent mid-turn; the bound is soft
            self._forget(oldest)
        return session

    async def history(self, session: OpenSession) -> list[ChatEvent]:
        async with _reachable():
            return await session.agent.ahistory(session.record.id)

    async def start_turn(
        self, session: OpenSession, text: str, region: Region | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Start a turn now (or refuse: 409 here or on another replica, 429, 503) and return
        its events as JSON objects. The session's turn lock is held until the turn ends."""
        session_id = session.record.id
        if session_id in self._running:
            raise TurnInProgressError(session_id)
        wait = self._limiter.take(session_id)
        if wait:
            raise RateLimitedError(wait)
        if not await self._turns.try_acquire(session_id):  # answering on another replica
            raise TurnInProgressError(session_id)
        try:
            # Under the lock, which a removal holds too: removed before → 404; after → never.
            await self._touch(session_id, always=True)
        except BaseException:
            await asyncio.shield(self._turns.release(session_id))
            raise
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        pump = self._pump(session, text, region, queue)
        if self._tracing is not None:
            task = asyncio.create_task(pump, context=self._tracing.context())
        else:
            task = asyncio.create_task(pump)
        self._running[session_id] = task
        task.add_done_callback(lambda _: self._running.pop(session_id, None))
        return _drain(queue)

    def _stop_turns(self, sessions: frozenset[str]) -> None:
        """Cancel the turns of ``sessions``, whose locks are gone: another replica may start
        a turn of one now, and two at once would interleave its history. The write-ahead
        checkpoint keeps each cut-off turn for the next message to finish."""
        for session_id in sessions:
            task = self._running.get(session_id)
            if task is not None and not task.done():
                self._lock_lost.add(session_id)
                task.cancel()

    async def _pump(
        self,
        session: OpenSession,
        text: str,
        region: Region | None,
        queue: asyncio.Queue[dict[str, Any] | None],
    ) -> None:
        session_id = session.record.id
        where: dict[str, int] = {}  # the turn an error belongs to, once one has started
        ended = False
        try:
            async for event in session.agent.astream(session_id, text, region=region):
                ended = event.type == "turn_end"
                where = {} if ended else {"turn": event.turn, "seq": event.seq + 1}
                queue.put_nowait(event.model_dump(mode="json"))
        except asyncio.CancelledError:
            if session_id not in self._lock_lost:
                raise  # shutdown
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # stopped on purpose, and told: the stream ends normally
            if not ended:
                queue.put_nowait(
                    {"type": "error", "thread_id": session_id, "text": LOCK_LOST, **where}
                )
        except MedagentError as exc:
            queue.put_nowait({"type": "error", "thread_id": session_id, "text": str(exc), **where})
        except Exception as exc:
            if is_database_error(exc):  # the next message finishes the turn (write-ahead)
                text = str(unreachable(exc))
                queue.put_nowait({"type": "error", "thread_id": session_id, "text": text, **where})
                return
            log.exception("turn failed in session %s", session_id)
            queue.put_nowait(
                {
                    "type": "error",
                    "thread_id": session_id,
                    "text": "internal error; see the log",
                    **where,
                }
            )
        finally:
            try:
                with contextlib.suppress(Exception):  # idle from the turn's end, not its start
                    await asyncio.shield(self._store.touch(session_id, self._clock()))
                # Before the stream ends, so a client that asks again at once (through any
                # replica) finds the session free; shielded: a turn cancelled at shutdown
                # still gives it back.
                await asyncio.shield(self._turns.release(session_id))
            finally:
                self._lock_lost.discard(session_id)
                queue.put_nowait(None)

    async def aclose(self) -> None:
        """Let running turns finish briefly, then cancel them: shutdown must not hang."""
        running = list(self._running.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._open.clear()


@contextlib.asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    """Failures to reach the database, from below (checkpointer, psycopg), as one
    ``DatabaseUnavailableError``."""
    try:
        yield
    except DatabaseUnavailableError:
        raise
    except Exception as exc:
        if is_database_error(exc):
            raise unreachable(exc) from None
        raise


async def _drain(queue: asyncio.Queue[dict[str, Any] | None]) -> AsyncIterator[dict[str, Any]]:
    while (item := await queue.get()) is not None:
        yield item
