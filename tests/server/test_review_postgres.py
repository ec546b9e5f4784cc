"""Grades in Postgres (``--checkpoint postgresql://...``): the same table as in SQLite.

Runs against ``MEDAGENT_TEST_POSTGRES``, else a throwaway local server; skips, saying why,
when neither the server nor ``psycopg`` is there.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from medagent.evals import ReviewGrade
from medagent.server._review_store import open_review_store
from medagent.testing import PostgresServer

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``None``: SQLite in the test's folder; else a Postgres URL."""
    if request.param == "sqlite":
        yield None
        return
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("needs pip install 'medagent[postgres]'")
    if os.environ.get("MEDAGENT_TEST_POSTGRES"):
        yield os.environ["MEDAGENT_TEST_POSTGRES"]
        return
    if PostgresServer.find_binaries() is None:
        pytest.skip("no Postgres: set MEDAGENT_TEST_POSTGRES or apt-get install postgresql")
    with PostgresServer() as server:
        yield server.url


async def test_a_grade_is_replaced_and_listed_per_run(
    store_url: str | None, tmp_path: Path
) -> None:
    run = f"runs/{tmp_path.name}"  # a shared server keeps earlier tests' rows
    async with open_review_store(tmp_path, store_url) as store:
        await store.save(ReviewGrade(run=run, item="a", answer="partly", steps={1: "useful"}))
        await store.save(ReviewGrade(run=run, item="a", answer="wrong", comment="second look"))
        await store.save(ReviewGrade(run=run, item="b:1/2", answer="correct"))
        got = await store.get(run, "a")
        assert got is not None and (got.answer, got.steps, got.comment) == (
            "wrong",
            {},
            "second look",
        )
        assert await store.get(run, "zz") is None
        assert [g.item for g in await store.for_run(run)] == ["a", "b:1/2"]
        assert (await store.counts())[run] == 2
