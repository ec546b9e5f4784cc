"""One turn at a time per session, across every replica that serves it.

Embedded (SQLite, one process): a set of the sessions answering now. Over Postgres: a
session-level advisory lock per answering session, all held by one connection of the replica
running the turns. A lock lives exactly as long as that connection: a replica killed mid-turn
(``kill -9``) loses its connection and with it its locks, so the next message, through any
replica, takes the lock and finishes the interrupted turn (see ``ChatAgent.astream``).

The same holds when only the connection is lost (``pg_terminate_backend``, a firewall or
pgbouncer dropping it) while the replica runs on: its locks are gone, so the replica must stop
the turns they guarded before another replica starts one of those sessions. The connection is
checked every ``LOCK_CHECK_S`` while it holds locks, and whoever listens (``on_lost``) hears
which sessions lost theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

from medagent.errors import DatabaseUnavailableError
from medagent.server._database import connection_options, is_database_error, unreachable

__all__ = [
    "LOCK_APPLICATION",
    "LOCK_CHECK_S",
    "LOCK_LOST",
    "LocalTurnLocks",
    "LockLost",
    "PostgresTurnLocks",
    "TurnLocks",
]

log = logging.getLogger("medagent.server")

# 64-bit keys from the session id; the prefix keeps them apart from other users' locks.
_TRY = "SELECT pg_try_advisory_lock(hashtextextended('medagent-turn:' || %s, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('medagent-turn:' || %s, 0))"

LOCK_CHECK_S = 1.0
"""How often the lock connection is checked while it holds locks. A lost connection is a
window in which another replica may start a second turn of a session still answering here;
one ``SELECT 1`` a second on one connection is nothing to the database, and it also keeps the
connection from looking idle to whatever drops idle connections (pgbouncer, a firewall)."""

LOCK_APPLICATION = "medagent turn locks"
"""The lock connection's ``application_name`` (with the process id): an operator finds each
replica's lock connection in ``pg_stat_activity``."""

LOCK_LOST = (
    "this turn was stopped because the session's lock was lost (its database connection "
    "dropped); the next message finishes it"
)
"""What a turn stopped for its lost lock tells the client."""

LockLost = Callable[[frozenset[str]], None]
"""Told the sessions whose lock is gone; called from the event loop, must not block."""


class TurnLocks(Protocol):
    """Who may run a turn of a session now."""

    async def try_acquire(self, session_id: str) -> bool:
        """True, and the session is this caller's until ``release``; False if it is answering
        (here or on another replica). ``DatabaseUnavailableError`` when that cannot be known."""
        ...

    async def release(self, session_id: str) -> None: ...

    def on_lost(self, listener: LockLost) -> None:
        """Call ``listener`` with the sessions whose locks were lost while held (their
        connection dropped): their turns must stop, another replica may start one now."""
        ...

    async def aclose(self) -> None: ...


class LocalTurnLocks:
    """One process owns every session (SQLite): a set is the whole truth."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    async def try_acquire(self, session_id: str) -> bool:
        if session_id in self._held:
            return False
        self._held.add(session_id)
        return True

    async def release(self, session_id: str) -> None:
        self._held.discard(session_id)

    def on_lost(self, listener: LockLost) -> None:
        """Never called: a set in memory is not lost while the process runs."""

    async def aclose(self) -> None:
        self._held.clear()


class PostgresTurnLocks:
    """Advisory locks on one dedicated connection (not the pool's: a pooled connection goes
    back to the pool, and a lock must stay with its holder for the whole turn).

    A connection found broken (the database restarted, the connection was terminated) is
    replaced on the next call. The locks it held are gone: the listeners are told at once,
    so the turns they guarded stop before another replica starts one of those sessions.
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._connection: Any = None
        self._io = asyncio.Lock()  # one connection: one statement at a time
        self._held: set[str] = set()
        self._asking: set[str] = set()
        self._listeners: list[LockLost] = []
        self._watcher: asyncio.Task[None] | None = None

    def on_lost(self, listener: LockLost) -> None:
        self._listeners.append(listener)

    async def try_acquire(self, session_id: str) -> bool:
        # Checked before any await: a race between two requests on this replica ends here.
        if session_id in self._held or session_id in self._asking:
            return False
        self._asking.add(session_id)
        try:
            got = await self._ask(_TRY, session_id, retry=True)
        finally:
            self._asking.discard(session_id)
        if got:
            self._held.add(session_id)
            self._watch()
        return got

    async def release(self, session_id: str) -> None:
        if session_id not in self._held:
            return
        self._held.discard(session_id)
        with contextlib.suppress(DatabaseUnavailableError):  # gone with its connection
            await self._ask(_UNLOCK, session_id, retry=False)

    async def aclose(self) -> None:
        self._held.clear()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        async with self._io:
            await self._drop()

    def _watch(self) -> None:
        """Check the connection while it holds locks: a loss is noticed even when no turn
        starts or ends to find it."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._check_while_held())

    async def _check_while_held(self) -> None:
        while True:
            await asyncio.sleep(LOCK_CHECK_S)
            if not self._held:  # no await from here to the end: _watch starts a new one
                return
            await self._check()

    async def _check(self) -> None:
        async with self._io:
            connection = self._connection
            if connection is None or not self._held:
                return
            try:
                async with asyncio.timeout(2 * self._timeout_s):
                    await connection.execute("SELECT 1")
            except Exception as exc:  # whatever failed, the connection cannot vouch for them
                cause = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                log.warning("the turn-lock connection failed its check: %s", cause or repr(exc))
                await self._drop()

    async def _ask(self, sql: str, session_id: str, *, retry: bool) -> bool:
        import psycopg  # type: ignore[import-not-found, unused-ignore]

        async with self._io:
            try:
                async with asyncio.timeout(2 * self._timeout_s):
                    for attempt in range(2 if retry else 1):
                        connection = await self._connect()
                        try:
                            cursor = await connection.execute(sql, (session_id,))
                            row = await cursor.fetchone()
                            return bool(row and row[0])
                        except psycopg.OperationalError:
                            # Broken since its last use (a restart): once more on a new one.
                            await self._drop()
                            if attempt or not retry:
                                raise
            except Exception as exc:
                if is_database_error(exc):
                    await self._drop()
                    raise unreachable(exc) from None
                raise
        return False  # not reached: the loop returns or raises

    async def _connect(self) -> Any:
        import psycopg

        if self._connection is not None and not self._connection.closed:
            return self._connection
        self._connection = await psycopg.AsyncConnection.connect(
            self._url,
            **connection_options(self._timeout_s),
            application_name=f"{LOCK_APPLICATION} pid={os.getpid()}",
        )
        return self._connection

    async def _drop(self) -> None:
        """Close the connection; the locks it held are gone, and the listeners hear whose."""
        connection, self._connection = self._connection, None
        lost, self._held = frozenset(self._held), set()
        if connection is not None and lost:
            log.warning(
                "the turn-lock connection was lost: stopping %d running turn(s) whose "
                "session's lock went with it (the next message finishes each)",
                len(lost),
            )
            for listener in self._listeners:
                listener(lost)
        if connection is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to close cleanly
                await connection.close()
