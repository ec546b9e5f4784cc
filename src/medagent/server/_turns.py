"""One turn at a time per session, across every replica that serves it.

Embedded (SQLite, one process): a set of the sessions answering now. Over Postgres: a
session-level advisory lock per answering session, all held by one connection of the replica
running the turns. A lock lives exactly as long as that connection: a replica killed mid-turn
(``kill -9``) loses its connection and with it its locks, so the next message, through any
replica, takes the lock and finishes the interrupted turn (see ``ChatAgent.astream``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from medagent.errors import DatabaseUnavailableError
from medagent.server._database import connection_options, is_database_error, unreachable

__all__ = ["LocalTurnLocks", "PostgresTurnLocks", "TurnLocks"]

log = logging.getLogger("medagent.server")

# 64-bit keys from the session id; the prefix keeps them apart from other users' locks.
_TRY = "SELECT pg_try_advisory_lock(hashtextextended('medagent-turn:' || %s, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('medagent-turn:' || %s, 0))"


class TurnLocks(Protocol):
    """Who may run a turn of a session now."""

    async def try_acquire(self, session_id: str) -> bool:
        """True, and the session is this caller's until ``release``; False if it is answering
        (here or on another replica). ``DatabaseUnavailableError`` when that cannot be known."""
        ...

    async def release(self, session_id: str) -> None: ...

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

    async def aclose(self) -> None:
        self._held.clear()


class PostgresTurnLocks:
    """Advisory locks on one dedicated connection (not the pool's: a pooled connection goes
    back to the pool, and a lock must stay with its holder for the whole turn).

    A connection found broken (the database restarted) is replaced on the next call; the
    locks it held are gone, which the log says, since another replica may now start a turn
    of a session this one is still running.
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._connection: Any = None
        self._io = asyncio.Lock()  # one connection: one statement at a time
        self._held: set[str] = set()
        self._asking: set[str] = set()

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
        return got

    async def release(self, session_id: str) -> None:
        if session_id not in self._held:
            return
        self._held.discard(session_id)
        with contextlib.suppress(DatabaseUnavailableError):  # gone with its connection
            await self._ask(_UNLOCK, session_id, retry=False)

    async def aclose(self) -> None:
        self._held.clear()
        async with self._io:
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
            self._url, **connection_options(self._timeout_s)
        )
        return self._connection

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and self._held:
            log.warning(
                "the turn-lock connection was lost: %d running turn(s) no longer hold their "
                "session's lock (another replica may start one)",
                len(self._held),
            )
        if connection is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to close cleanly
                await connection.close()
