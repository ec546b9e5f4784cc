"""Where sessions outlive the process: the session table and the LangGraph checkpointer.

Embedded default: two SQLite files in the data folder (``sessions.sqlite`` beside
``checkpoints.sqlite``). For several replicas behind a load balancer, ``postgresql://...``
puts both in one Postgres database, and the data folder (crops) on shared storage.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from anyio import to_thread
from langgraph.checkpoint.base import BaseCheckpointSaver
from pydantic import BaseModel, ConfigDict

from medagent.errors import DependencyMissingError

__all__ = [
    "SessionRecord",
    "SessionStore",
    "new_session_id",
    "open_checkpointer",
    "open_session_store",
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
    def __init__(self, connection: Any) -> None:
        self._db = connection
        self._lock = asyncio.Lock()  # one connection, one statement at a time

    async def create(self, slide: str) -> SessionRecord:
        record = SessionRecord(id=new_session_id(), slide=slide, created_at=time.time())
        async with self._lock:
            await self._db.execute(
                "INSERT INTO medagent_sessions (id, slide, created_at) VALUES (%s, %s, %s)",
                (record.id, record.slide, record.created_at),
            )
        return record

    async def get(self, session_id: str) -> SessionRecord | None:
        async with self._lock:
            cursor = await self._db.execute(
                "SELECT id, slide, created_at FROM medagent_sessions WHERE id = %s",
                (session_id,),
            )
            row = await cursor.fetchone()
        return None if row is None else SessionRecord(id=row[0], slide=row[1], created_at=row[2])

    async def delete(self, session_id: str) -> None:
        async with self._lock:
            await self._db.execute("DELETE FROM medagent_sessions WHERE id = %s", (session_id,))


def _postgres_missing(package: str) -> DependencyMissingError:
    return DependencyMissingError(package, "postgres", "--checkpoint postgresql://...")


@asynccontextmanager
async def open_session_store(data_dir: Path, postgres_url: str | None) -> AsyncIterator[Any]:
    """The session table in SQLite under ``data_dir``, or in the Postgres database given."""
    if postgres_url:
        try:
            import psycopg  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise _postgres_missing("psycopg") from None
        connection = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
        try:
            await connection.execute(_CREATE)
            yield _PostgresSessions(connection)
        finally:
            await connection.close()
        return
    import aiosqlite

    await to_thread.run_sync(lambda: data_dir.mkdir(parents=True, exist_ok=True))
    async with aiosqlite.connect(data_dir / "sessions.sqlite") as db:
        await db.execute(_CREATE)
        await db.commit()
        yield _SqliteSessions(db)


def open_checkpointer(
    data_dir: Path, checkpoint: str | None
) -> AbstractAsyncContextManager[BaseCheckpointSaver[Any]]:
    """LangGraph's saver: SQLite (default: ``data_dir/checkpoints.sqlite``) or Postgres."""
    if checkpoint and checkpoint.startswith(("postgresql://", "postgres://")):
        return _postgres_checkpointer(checkpoint)
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = Path(checkpoint) if checkpoint else data_dir / "checkpoints.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return AsyncSqliteSaver.from_conn_string(str(path))


@asynccontextmanager
async def _postgres_checkpointer(url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    try:
        from langgraph.checkpoint.postgres.aio import (  # type: ignore[import-not-found, unused-ignore]
            AsyncPostgresSaver,
        )
    except ImportError:
        raise _postgres_missing("langgraph-checkpoint-postgres") from None
    async with AsyncPostgresSaver.from_conn_string(url) as saver:
        await saver.setup()  # creates its tables once; a no-op afterwards
        yield saver
