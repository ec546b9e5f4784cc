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
from collections.abc import AsyncIterator, Sequence
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
    "ClientCap",
    "SessionRecord",
    "SessionStore",
    "Stores",
    "new_session_id",
    "open_stores",
    "session_folder",
]

_CREATE = (
    "CREATE TABLE IF NOT EXISTS medagent_sessions ("
    "id TEXT PRIMARY KEY, slide TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)"
)
# Added for expiry and per-client caps; tables from before get them on open.
_COLUMNS = {"last_active": "DOUBLE PRECISION", "client": "TEXT"}
_BACKFILL = "UPDATE medagent_sessions SET last_active = created_at WHERE last_active IS NULL"
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS medagent_sessions_idle ON medagent_sessions (last_active)",
    "CREATE INDEX IF NOT EXISTS medagent_sessions_client ON medagent_sessions (client)",
)
_ROW = "id, slide, created_at, last_active, client"


def new_session_id() -> str:
    """128 random bits, URL-safe: a session id cannot be guessed from another one."""
    return secrets.token_urlsafe(16)


def session_folder(data_dir: Path, session_id: str) -> Path:
    """Where a session keeps its crops and run manifest (the id is checked by its caller)."""
    return data_dir / "sessions" / session_id


class SessionRecord(BaseModel):
    """A chat session: its id (also the LangGraph thread id), the slide as requested, when it
    was last used (wall-clock seconds) and the client that opened it (its per-client cap)."""

    model_config = ConfigDict(frozen=True)

    id: str
    slide: str  # as the client named it; resolved under the roots again on every load
    created_at: float
    last_active: float = 0.0
    client: str | None = None


def _record(row: Sequence[Any]) -> SessionRecord:
    return SessionRecord(
        id=row[0], slide=row[1], created_at=row[2], last_active=row[3] or row[2], client=row[4]
    )


@dataclass(frozen=True)
class ClientCap:
    """At most ``sessions`` live sessions per client, counting those used since ``live_since``
    (older ones are about to expire); ``sessions`` 0: no cap."""

    sessions: int
    live_since: float


class SessionStore(Protocol):
    """The session table; ``SQLite`` embedded, ``Postgres`` for replicas. Times are wall-clock
    seconds given by the caller (its clock is the one tests move)."""

    async def create(
        self, slide: str, *, now: float, client: str | None = None, cap: ClientCap | None = None
    ) -> SessionRecord | None:
        """A new session; ``None`` when ``client`` already holds ``cap.sessions``."""
        ...

    async def get(self, session_id: str) -> SessionRecord | None: ...

    async def touch(self, session_id: str, now: float) -> bool:
        """Mark the session used at ``now``; False when it no longer exists."""
        ...

    async def delete(self, session_id: str, *, idle_before: float | None = None) -> bool:
        """Forget a session (only if unused since ``idle_before``, when given); True when this
        call removed it. Unknown ids are no error."""
        ...

    async def idle(self, before: float, limit: int) -> list[str]:
        """Ids of sessions unused since ``before``, longest idle first."""
        ...

    async def all(self) -> list[SessionRecord]:
        """Every session, longest idle first (the admin listing)."""
        ...


class _SqliteSessions:
    def __init__(self, connection: Any) -> None:
        self._db = connection

    async def migrate(self) -> None:
        await self._db.execute(_CREATE)
        async with self._db.execute("PRAGMA table_info(medagent_sessions)") as cursor:
            have = {row[1] for row in await cursor.fetchall()}
        for column, kind in _COLUMNS.items():
            if column not in have:
                await self._db.execute(f"ALTER TABLE medagent_sessions ADD COLUMN {column} {kind}")
        await self._db.execute(_BACKFILL)
        for sql in _INDEXES:
            await self._db.execute(sql)
        await self._db.commit()

    async def create(
        self, slide: str, *, now: float, client: str | None = None, cap: ClientCap | None = None
    ) -> SessionRecord | None:
        record = SessionRecord(
            id=new_session_id(), slide=slide, created_at=now, last_active=now, client=client
        )
        values: tuple[Any, ...] = (record.id, slide, now, now, client)
        if cap is None or not cap.sessions:
            sql = f"INSERT INTO medagent_sessions ({_ROW}) VALUES (?, ?, ?, ?, ?)"
        else:
            # One statement: SQLite runs writes one at a time, so two creates cannot both fit.
            sql = (
                f"INSERT INTO medagent_sessions ({_ROW}) SELECT ?, ?, ?, ?, ? WHERE "
                "(SELECT count(*) FROM medagent_sessions WHERE client = ? AND last_active >= ?)"
                " < ?"
            )
            values += (client, cap.live_since, cap.sessions)
        cursor = await self._db.execute(sql, values)
        await self._db.commit()
        return record if cursor.rowcount == 1 else None

    async def get(self, session_id: str) -> SessionRecord | None:
        async with self._db.execute(
            f"SELECT {_ROW} FROM medagent_sessions WHERE id = ?", (session_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _record(row)

    async def touch(self, session_id: str, now: float) -> bool:
        cursor = await self._db.execute(
            "UPDATE medagent_sessions SET last_active = max(last_active, ?) WHERE id = ?",
            (now, session_id),
        )
        await self._db.commit()
        return bool(cursor.rowcount)

    async def delete(self, session_id: str, *, idle_before: float | None = None) -> bool:
        values: tuple[Any, ...] = (session_id,)
        sql = "DELETE FROM medagent_sessions WHERE id = ?"
        if idle_before is not None:
            sql += " AND last_active < ?"
            values += (idle_before,)
        cursor = await self._db.execute(sql, values)
        await self._db.commit()
        return bool(cursor.rowcount)

    async def idle(self, before: float, limit: int) -> list[str]:
        async with self._db.execute(
            "SELECT id FROM medagent_sessions WHERE last_active < ? ORDER BY last_active LIMIT ?",
            (before, limit),
        ) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    async def all(self) -> list[SessionRecord]:
        async with self._db.execute(
            f"SELECT {_ROW} FROM medagent_sessions ORDER BY last_active"
        ) as cursor:
            return [_record(row) for row in await cursor.fetchall()]


class _PostgresSessions:
    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    async def migrate(self) -> None:
        # Replicas may start together: one at a time changes the table.
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("SELECT pg_advisory_xact_lock(hashtextextended('medagent-schema', 0))", ()),
            (_CREATE, ()),
        ]
        for column, kind in _COLUMNS.items():
            sql = f"ALTER TABLE medagent_sessions ADD COLUMN IF NOT EXISTS {column} {kind}"
            statements.append((sql, ()))
        statements += [(_BACKFILL, ()), *((sql, ()) for sql in _INDEXES)]
        await self._db.transaction(statements)

    async def create(
        self, slide: str, *, now: float, client: str | None = None, cap: ClientCap | None = None
    ) -> SessionRecord | None:
        record = SessionRecord(
            id=new_session_id(), slide=slide, created_at=now, last_active=now, client=client
        )
        values = (record.id, slide, now, now, client)
        if cap is None or not cap.sessions:
            sql = f"INSERT INTO medagent_sessions ({_ROW}) VALUES (%s, %s, %s, %s, %s)"
            await self._db.execute(sql, values)
            return record
        # Replicas create at once: the client's lock, then a count that sees every insert
        # committed before it (a new snapshot per statement), then the insert.
        lock = "SELECT pg_advisory_xact_lock(hashtextextended('medagent-client:' || %s, 0))"
        insert = (
            f"INSERT INTO medagent_sessions ({_ROW}) SELECT %s, %s, %s, %s, %s WHERE "
            "(SELECT count(*) FROM medagent_sessions WHERE client = %s AND last_active >= %s)"
            " < %s RETURNING id"
        )
        rows = await self._db.transaction(
            [(lock, (client or "",)), (insert, (*values, client, cap.live_since, cap.sessions))]
        )
        return record if rows else None

    async def get(self, session_id: str) -> SessionRecord | None:
        rows = await self._db.fetch(
            f"SELECT {_ROW} FROM medagent_sessions WHERE id = %s", (session_id,)
        )
        return _record(rows[0]) if rows else None

    async def touch(self, session_id: str, now: float) -> bool:
        rows = await self._db.fetch(
            "UPDATE medagent_sessions SET last_active = GREATEST(last_active, %s) WHERE id = %s "
            "RETURNING id",
            (now, session_id),
        )
        return bool(rows)

    async def delete(self, session_id: str, *, idle_before: float | None = None) -> bool:
        if idle_before is None:
            sql = "DELETE FROM medagent_sessions WHERE id = %s RETURNING id"
            rows = await self._db.fetch(sql, (session_id,))
        else:
            sql = "DELETE FROM medagent_sessions WHERE id = %s AND last_active < %s RETURNING id"
            rows = await self._db.fetch(sql, (session_id, idle_before))
        return bool(rows)

    async def idle(self, before: float, limit: int) -> list[str]:
        rows = await self._db.fetch(
            "SELECT id FROM medagent_sessions WHERE last_active < %s ORDER BY last_active LIMIT %s",
            (before, limit),
        )
        return [row[0] for row in rows]

    async def all(self) -> list[SessionRecord]:
        rows = await self._db.fetch(f"SELECT {_ROW} FROM medagent_sessions ORDER BY last_active")
        return [_record(row) for row in rows]


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
            sessions = _PostgresSessions(database)
            await sessions.migrate()
            turns = PostgresTurnLocks(url, config.db_timeout_s)
            stack.push_async_callback(turns.aclose)
            yield Stores(checkpointer, sessions, turns, database)
            return
        data_dir = config.data_dir
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        path = Path(config.checkpoint) if config.checkpoint else data_dir / "checkpoints.sqlite"
        await to_thread.run_sync(lambda: path.parent.mkdir(parents=True, exist_ok=True))
        await to_thread.run_sync(lambda: data_dir.mkdir(parents=True, exist_ok=True))
        saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
        await saver.setup()  # now, not at the first write: a removal may come before any turn
        import aiosqlite

        db = await stack.enter_async_context(aiosqlite.connect(data_dir / "sessions.sqlite"))
        sqlite_sessions = _SqliteSessions(db)
        await sqlite_sessions.migrate()
        yield Stores(saver, sqlite_sessions, LocalTurnLocks(), None)


def _postgres_saver() -> Any:
    try:
        from langgraph.checkpoint.postgres.aio import (  # type: ignore[import-not-found, unused-ignore]
            AsyncPostgresSaver,
        )
    except ImportError:
        raise postgres_missing("langgraph-checkpoint-postgres") from None
    return AsyncPostgresSaver
