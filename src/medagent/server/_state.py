"""Where sessions outlive the process: the session table, the LangGraph checkpointer and the
turn locks, opened together by ``open_stores``.

Embedded default: two SQLite files in the data folder (``sessions.sqlite`` beside
``checkpoints.sqlite``) and in-process turn locks. For several replicas behind a load
balancer, ``postgresql://...`` puts tables and checkpoints in one Postgres database, reached
through one connection pool per replica, with turn locks as advisory locks; the data folder
(crops) goes on shared storage.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from anyio import to_thread
from langgraph.checkpoint.base import BaseCheckpointSaver
from pydantic import BaseModel, ConfigDict

from medagent.server._config import ServerConfig
from medagent.server._database import PostgresDatabase, open_postgres, postgres_missing
from medagent.server._turns import LocalTurnLocks, PostgresTurnLocks, TurnLocks

__all__ = [
    "SessionRecord",
    "SessionStore",
    "Stores",
    "new_session_id",
    "open_stores",
]

_CREATE = (
    "CREATE TABLE IF NOT EXISTS medagent_sessions ("
    "id TEXT PRIMARY KEY, slide TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)"
)


def new_session_id() -> str:
    """128 random bits, URL-safe: a session id cannot be guessed from another one."""
    return secrets.token_urlsafe(16)


class SessionRecord(BaseModel):
    """A chat session: its id (also the LangGraph thread id) and the slide as requested."""

    model_config = ConfigDict(frozen=True)

    id: str
    slide: str  # as the client named it; resolved under the roots again on every load
    created_at: float


class SessionStore(Protocol):
    """The session table; ``SQLite`` embedded, ``Postgres`` for replicas."""

    async def create(self, slide: str) -> SessionRecord: ...

    async def get(self, session_id: str) -> SessionRecord | None: ...

    async def delete(self, session_id: str) -> None:
        """Forget a session (one whose creation failed part-way); unknown ids are no error."""
        ...


class _SqliteSessions:
    def __init__(self, connection: Any) -> None:
        self._db = connection

    async def create(self, slide: str) -> SessionRecord:
        record = SessionRecord(id=new_session_id(), slide=slide, created_at=time.time())
        await self._db.execute(
            "INSERT INTO medagent_sessions (id, slide, created_at) VALUES (?, ?, ?)",
            (record.id, record.slide, record.created_at),
        )
        await self._db.commit()
        return record

    async def get(self, session_id: str) -> SessionRecord | None:
        async with self._db.execute(
            "SELECT id, slide, created_at FROM medagent_sessions WHERE id = ?", (session_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else SessionRecord(id=row[0], slide=row[1], created_at=row[2])

    async def delete(self, session_id: str) -> None:
        await self._db.execute("DELETE FROM medagent_sessions WHERE id = ?", (session_id,))
        await self._db.commit()


class _PostgresSessions:
    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    async def create(self, slide: str) -> SessionRecord:
        record = SessionRecord(id=new_session_id(), slide=slide, created_at=time.time())
        await self._db.execute(
            "INSERT INTO medagent_sessions (id, slide, created_at) VALUES (%s, %s, %s)",
            (record.id, record.slide, record.created_at),
        )
        return record

    async def get(self, session_id: str) -> SessionRecord | None:
        rows = await self._db.fetch(
            "SELECT id, slide, created_at FROM medagent_sessions WHERE id = %s", (session_id,)
        )
        if not rows:
            return None
        return SessionRecord(id=rows[0][0], slide=rows[0][1], created_at=rows[0][2])

    async def delete(self, session_id: str) -> None:
        await self._db.execute("DELETE FROM medagent_sessions WHERE id = %s", (session_id,))


@dataclass(frozen=True)
class Stores:
    """What the app keeps of its database: checkpoints, sessions, turn locks, and the Postgres
    pool (``None`` with SQLite) that other tables (grades) share."""

    checkpointer: BaseCheckpointSaver[Any]
    sessions: SessionStore
    turns: TurnLocks
    postgres: PostgresDatabase | None


@asynccontextmanager
async def open_stores(config: ServerConfig) -> AsyncIterator[Stores]:
    """Everything under ``config.checkpoint``: SQLite files (default: in ``data_dir``), or
    one Postgres database through a pool sized by ``db_pool_min``/``db_pool_max``."""
    async with AsyncExitStack() as stack:
        if config.uses_postgres:
            url = str(config.checkpoint)
            saver_class = _postgres_saver()  # a missing extra is named before connecting
            database = await stack.enter_async_context(
                open_postgres(
                    url,
                    min_size=config.db_pool_min,
                    max_size=config.db_pool_max,
                    timeout_s=config.db_timeout_s,
                )
            )
            checkpointer = saver_class(conn=database.pool)
            await database.setup(checkpointer.setup)  # LangGraph's tables, once
            await database.execute(_CREATE)
            turns = PostgresTurnLocks(url, config.db_timeout_s)
            stack.push_async_callback(turns.aclose)
            yield Stores(checkpointer, _PostgresSessions(database), turns, database)
            return
        data_dir = config.data_dir
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        path = Path(config.checkpoint) if config.checkpoint else data_dir / "checkpoints.sqlite"
        await to_thread.run_sync(lambda: path.parent.mkdir(parents=True, exist_ok=True))
        await to_thread.run_sync(lambda: data_dir.mkdir(parents=True, exist_ok=True))
        saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
        import aiosqlite

        db = await stack.enter_async_context(aiosqlite.connect(data_dir / "sessions.sqlite"))
        await db.execute(_CREATE)
        await db.commit()
        yield Stores(saver, _SqliteSessions(db), LocalTurnLocks(), None)


def _postgres_saver() -> Any:
    try:
        from langgraph.checkpoint.postgres.aio import (  # type: ignore[import-not-found, unused-ignore]
            AsyncPostgresSaver,
        )
    except ImportError:
        raise postgres_missing("langgraph-checkpoint-postgres") from None
    return AsyncPostgresSaver
