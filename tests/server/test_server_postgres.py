"""``--checkpoint postgresql://...``: sessions shared by replicas through one Postgres database.

Runs against the server named by ``MEDAGENT_TEST_POSTGRES`` (e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``), else a throwaway local server
(``medagent.testing.PostgresServer``, from the Debian ``postgresql`` package the Makefile
installs); needs the ``postgres`` extra. Skips, saying which, when a part is missing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from server_support import LATER_TURN, LOOPBACK, SCRIPT, TURN

from medagent.errors import DependencyMissingError
from medagent.models import ScriptedModel
from medagent.server import ServerConfig, create_app
from medagent.testing import PostgresServer

POSTGRES_URL = os.environ.get("MEDAGENT_TEST_POSTGRES")
HAS_EXTRA = importlib.util.find_spec("langgraph.checkpoint.postgres") is not None


async def test_postgres_without_the_extra_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medagent.server._state import open_stores

    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres.aio", None)  # not installed
    config = ServerConfig(
        slide_roots=(tmp_path,), data_dir=tmp_path, checkpoint="postgresql://127.0.0.1/none"
    )
    with pytest.raises(DependencyMissingError, match=r"medagent\[postgres\]"):
        async with open_stores(config):
            pass


def _replica(slide_root: Path, shared: Path, url: str) -> Any:
    config = ServerConfig(slide_roots=(slide_root,), data_dir=shared, checkpoint=url)
    return create_app(config, model_factory=lambda _: ScriptedModel(SCRIPT))


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The server to test against: MEDAGENT_TEST_POSTGRES, else a throwaway local one."""
    if not HAS_EXTRA:
        pytest.skip("needs pip install 'medagent[postgres]'")
    if POSTGRES_URL:
        yield POSTGRES_URL
        return
    if PostgresServer.find_binaries() is None:
        pytest.skip(
            "no Postgres: set MEDAGENT_TEST_POSTGRES=postgresql://... or install the server "
            "(apt-get install postgresql)"
        )
    with PostgresServer() as server:
        yield server.url


@pytest.mark.slow
def test_two_replicas_serve_one_session_through_postgres(
    slide_root: Path, tmp_path: Path, ask: Callable[..., Any], postgres_url: str
) -> None:
    shared = tmp_path / "shared"  # crops: shared storage in a real deployment
    one = TestClient(_replica(slide_root, shared, postgres_url), base_url=LOOPBACK)
    two = TestClient(_replica(slide_root, shared, postgres_url), base_url=LOOPBACK)
    with one, two:
        info = one.post("/api/sessions", json={"slide": "cases/tissue.tif"}).json()
        first = ask(one, info["id"], "What tissue is this?")
        assert [e["type"] for e in first] == TURN
        assert two.get(f"/api/sessions/{info['id']}").json() == info
        assert two.get(f"/api/sessions/{info['id']}/history").json()["events"] == first
        second = ask(two, info["id"], "And here?")
        assert [e["type"] for e in second] == LATER_TURN and second[0]["turn"] == 2
    with TestClient(_replica(slide_root, shared, postgres_url), base_url=LOOPBACK) as restarted:
        events = restarted.get(f"/api/sessions/{info['id']}/history").json()["events"]
        assert events == first + second
