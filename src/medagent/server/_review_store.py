"""Where a reviewer's grades live: a table in the app's own database, beside the sessions.

SQLite (``sessions.sqlite`` in the data folder) embedded, or the Postgres database that
``--checkpoint postgresql://...`` names, so replicas share the grades as they share sessions.
One row per (run, item): the grade as JSON, replaced whole on every save.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from anyio import to_thread

from medagent.evals import ReviewGrade
from medagent.server._database import PostgresDatabase, open_postgres

__all__ = ["ReviewStore", "open_review_store"]

_CREATE = (
    "CREATE TABLE IF NOT EXISTS medagent_reviews ("
    "run TEXT NOT NULL, item TEXT NOT NULL, grade TEXT NOT NULL, "
    "updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run, item))"
)
# One statement for both databases (SQLite has had ON CONFLICT … DO UPDATE since 3.24).
_UPSERT = (
    "INSERT INTO medagent_reviews (run, item, grade, updated_at) VALUES ({0}, {0}, {0}, {0}) "
    "ON CONFLICT (run, item) DO UPDATE SET grade = excluded.grade, "
    "updated_at = excluded.updated_at"
)
_ONE = "SELECT grade FROM medagent_reviews WHERE run = {0} AND item = {0}"
_RUN = "SELECT grade FROM medagent_reviews WHERE run = {0} ORDER BY item"
_COUNTS = "SELECT run, COUNT(*) FROM medagent_reviews GROUP BY run"


class ReviewStore(Protocol):
    """The grades table; SQLite embedded, Postgres for replicas."""

    async def save(self, grade: ReviewGrade) -> None:
        """Insert or replace the grade of ``grade.run``/``grade.item``."""
        ...

    async def get(self, run: str, item: str) -> ReviewGrade | None: ...

    async def for_run(self, run: str) -> list[ReviewGrade]:
        """Every grade of ``run``, ordered by item id."""
        ...

    async def counts(self) -> dict[str, int]:
        """Graded items per run."""
        ...


def _row(grade: ReviewGrade) -> tuple[str, str, str, float]:
    return grade.run, grade.item, grade.model_dump_json(), grade.updated_at


class _SqliteReviews:
    def __init__(self, connection: Any) -> None:
        self._db = connection

    async def save(self, grade: ReviewGrade) -> None:
        await self._db.execute(_UPSERT.format("?"), _row(grade))
        await self._db.commit()

    async def get(self, run: str, item: str) -> ReviewGrade | None:
        async with self._db.execute(_ONE.format("?"), (run, item)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else ReviewGrade.model_validate_json(row[0])

    async def for_run(self, run: str) -> list[ReviewGrade]:
        async with self._db.execute(_RUN.format("?"), (run,)) as cursor:
            rows = await cursor.fetchall()
        return [ReviewGrade.model_validate_json(row[0]) for row in rows]

    async def counts(self) -> dict[str, int]:
        async with self._db.execute(_COUNTS) as cursor:
            rows = await cursor.fetchall()
        return {str(row[0]): int(row[1]) for row in rows}


class _PostgresReviews:
    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database  # the app's pool, shared with sessions and checkpoints

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return await self._db.fetch(sql, params)

    async def save(self, grade: ReviewGrade) -> None:
        await self._db.execute(_UPSERT.format("%s"), _row(grade))

    async def get(self, run: str, item: str) -> ReviewGrade | None:
        rows = await self._fetch(_ONE.format("%s"), (run, item))
        return ReviewGrade.model_validate_json(rows[0][0]) if rows else None

    async def for_run(self, run: str) -> list[ReviewGrade]:
        rows = await self._fetch(_RUN.format("%s"), (run,))
        return [ReviewGrade.model_validate_json(row[0]) for row in rows]

    async def counts(self) -> dict[str, int]:
        return {str(run): int(count) for run, count in await self._fetch(_COUNTS)}


@asynccontextmanager
async def open_review_store(
    data_dir: Path, postgres: PostgresDatabase | str | None
) -> AsyncIterator[Any]:
    """The grades table in ``data_dir/sessions.sqlite``, or in the Postgres database given
    (the app's pool, or a URL to open one for)."""
    if isinstance(postgres, str):
        async with (
            open_postgres(postgres) as database,
            open_review_store(data_dir, database) as store,
        ):
            yield store
        return
    if postgres is not None:
        await postgres.execute(_CREATE)
        yield _PostgresReviews(postgres)
        return
    import aiosqlite

    await to_thread.run_sync(lambda: data_dir.mkdir(parents=True, exist_ok=True))
    async with aiosqlite.connect(data_dir / "sessions.sqlite") as db:
        await db.execute(_CREATE)
        await db.commit()
        yield _SqliteReviews(db)
