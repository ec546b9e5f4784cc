"""The Postgres database replicas share: one connection pool per replica, and the one place
where "the database cannot be reached" becomes ``DatabaseUnavailableError`` (a 503).

The pool checks each connection as it is handed out, so connections broken by a database
restart are replaced on their own; while the database is down, a request waits at most
``timeout_s`` for a connection and then fails in one line instead of hanging a worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from medagent.errors import DatabaseUnavailableError, DependencyMissingError

__all__ = [
    "PostgresDatabase",
    "connection_options",
    "is_database_error",
    "open_postgres",
    "postgres_missing",
    "unreachable",
]

log = logging.getLogger("medagent.server")

#: What a client reads while the database is away: no host, no driver text.
UNREACHABLE = "the database is unreachable; try again in a few seconds (the server reconnects)"


def postgres_missing(package: str) -> DependencyMissingError:
    return DependencyMissingError(package, "postgres", "--checkpoint postgresql://...")


def connection_options(timeout_s: float) -> dict[str, Any]:
    """psycopg connect options: give up connecting after ``timeout_s``, and notice a peer that
    vanished (TCP keepalives) instead of waiting on it for the kernel's two hours."""
    return {
        "autocommit": True,
        "connect_timeout": max(2, round(timeout_s)),  # libpq's floor is 2 s
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is out of reach (rather than a bug in a statement)."""
    try:
        import psycopg  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return False
    # OperationalError: refused, reset, shut down, pool timeout; InterfaceError: "the
    # connection is closed" when a broken connection is used again.
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError))


def unreachable(exc: BaseException) -> DatabaseUnavailableError:
    """The one-line error for ``exc``; the cause goes to the server log, not to the client."""
    cause = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    log.warning("database unreachable: %s", cause)
    return DatabaseUnavailableError(UNREACHABLE)


class PostgresDatabase:
    """A connection pool over one database, for the app's own small tables."""

    def __init__(self, pool: Any, timeout_s: float) -> None:
        self.pool = pool  # psycopg_pool.AsyncConnectionPool, shared with the checkpointer
        self.timeout_s = timeout_s

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        await self._run(sql, params, fetch=False)

    async def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows as tuples, whatever row factory the pool's connections use."""
        return await self._run(sql, params, fetch=True)

    async def transaction(
        self, statements: Sequence[tuple[str, tuple[Any, ...]]]
    ) -> list[tuple[Any, ...]]:
        """Run ``statements`` in one transaction on one connection; the last one's rows (none
        when it returns nothing). What a statement needs to see the effect of a lock taken by
        the one before it (an advisory transaction lock, then a check-and-insert)."""
        from psycopg.rows import tuple_row  # type: ignore[import-not-found, unused-ignore]

        try:
            async with asyncio.timeout(2 * self.timeout_s):
                async with self.pool.connection() as connection, connection.transaction():
                    cursor = connection.cursor(row_factory=tuple_row)
                    for sql, params in statements:
                        await cursor.execute(sql, params)
                    return list(await cursor.fetchall()) if cursor.description else []
        except Exception as exc:
            if is_database_error(exc):
                raise unreachable(exc) from None
            raise

    async def setup(self, create: Callable[[], Awaitable[None]]) -> None:
        """Run ``create`` (another library's table setup) with this pool's error translation."""
        try:
            await create()
        except Exception as exc:
            if is_database_error(exc):
                raise unreachable(exc) from None
            raise

    async def _run(self, sql: str, params: tuple[Any, ...], *, fetch: bool) -> list[Any]:
        from psycopg.rows import tuple_row  # type: ignore[import-not-found, unused-ignore]

        try:
            # Bounded as a whole: waiting for a connection and running the statement.
            async with asyncio.timeout(2 * self.timeout_s):
                async with self.pool.connection() as connection:
                    cursor = connection.cursor(row_factory=tuple_row)
                    await cursor.execute(sql, params)
                    return list(await cursor.fetchall()) if fetch else []
        except Exception as exc:
            if is_database_error(exc):
                raise unreachable(exc) from None
            raise


@asynccontextmanager
async def open_postgres(
    url: str, *, min_size: int = 1, max_size: int = 10, timeout_s: float = 5.0
) -> AsyncIterator[PostgresDatabase]:
    """A pool of ``min_size``..``max_size`` connections to ``url``, open until the block ends.

    Connections suit LangGraph's ``AsyncPostgresSaver`` (autocommit, no prepared statements,
    dict rows). Fails at once, in one line, when the database cannot be reached at start.
    """
    try:
        from psycopg.rows import dict_row  # type: ignore[import-not-found, unused-ignore]
        from psycopg_pool import AsyncConnectionPool  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise postgres_missing(exc.name or "psycopg-pool") from None
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        kwargs={**connection_options(timeout_s), "prepare_threshold": 0, "row_factory": dict_row},
        check=AsyncConnectionPool.check_connection,  # a connection a restart broke is replaced
        open=False,
        name="medagent",
    )
    try:
        await pool.open(wait=min_size > 0, timeout=max(timeout_s, 10.0))
    except Exception as exc:
        await pool.close()
        if is_database_error(exc):
            raise DatabaseUnavailableError(
                "cannot reach the Postgres database given by --checkpoint; start it, or check "
                "the URL and that this machine may connect"
            ) from None
        raise
    try:
        yield PostgresDatabase(pool, timeout_s)
    finally:
        await pool.close()
