"""A chat session whose creation fails leaves nothing behind: no row, no folder of crops.

Cases, each on the SQLite session table and on Postgres (skipped when no server is at hand):
- the slide path names a folder;
- a corrupt file (TIFF magic, then garbage), an empty file, a tiled TIFF cut at 30 %;
- a symlink loop, and a name that does not exist (refused before anything is written);
- a file the server may not read (skipped as root, who may read anything);
- a slide that opens but whose agent cannot be built: the row written is taken back.
After the failures a good slide still opens exactly one session.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medagent.models import ScriptedModel
from medagent.server import ServerConfig, create_app
from medagent.server._chat import AgentContext, ChatSession, chat_agent_factory
from medagent.testing import PostgresServer, synthetic_tissue, write_pyramid_tiff

LOOPBACK = "http://127.0.0.1"
BAD = ["folder", "corrupt.tif", "empty.svs", "cut.tif", "loop.tif", "missing.tif"]


@pytest.fixture(scope="module")
def slide_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good slide beside every kind of bad one."""
    root = tmp_path_factory.mktemp("slides")
    good = write_pyramid_tiff(
        root / "good.tif", synthetic_tissue(1200, 900, seed=3), mpp=0.5, levels=2
    )
    (root / "folder").mkdir()
    (root / "corrupt.tif").write_bytes(b"II*\x00" + b"\x13\x37" * 500)
    (root / "empty.svs").write_bytes(b"")
    data = good.read_bytes()
    (root / "cut.tif").write_bytes(data[: int(len(data) * 0.3)])
    os.symlink(root / "loop.tif", root / "loop.tif")
    locked = root / "locked.tif"
    locked.write_bytes(data)
    locked.chmod(0)
    return root


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``None`` for the embedded SQLite files, else a Postgres URL."""
    if request.param == "sqlite":
        yield None
        return
    if importlib.util.find_spec("langgraph.checkpoint.postgres") is None:
        pytest.skip("needs pip install 'medagent[postgres]'")
    if url := os.environ.get("MEDAGENT_TEST_POSTGRES"):
        yield url
        return
    if PostgresServer.find_binaries() is None:
        pytest.skip("no Postgres: set MEDAGENT_TEST_POSTGRES or apt-get install postgresql")
    with PostgresServer() as server:
        yield server.url


def _app(root: Path, data: Path, backend: str | None, **kwargs: Any) -> Any:
    config = ServerConfig(slide_roots=(root,), data_dir=data, checkpoint=backend)
    return create_app(config, model_factory=lambda _: ScriptedModel([{"text": "x"}]), **kwargs)


def _rows(data: Path, backend: str | None) -> list[tuple[str, str]]:
    """``(id, slide)`` of every session in the table."""
    query = "SELECT id, slide FROM medagent_sessions"
    if backend is None:
        with sqlite3.connect(data / "sessions.sqlite") as db:
            return [(row[0], row[1]) for row in db.execute(query)]
    import psycopg  # type: ignore[import-not-found, unused-ignore]

    with psycopg.connect(backend) as db:
        return [(row[0], row[1]) for row in db.execute(query)]


def _folders(data: Path) -> list[str]:
    sessions = data / "sessions"
    return sorted(p.name for p in sessions.iterdir()) if sessions.is_dir() else []


def _left_behind(data: Path, backend: str | None, slide: str) -> tuple[list[Any], list[str]]:
    """Rows naming ``slide``, and every session folder."""
    return [row for row in _rows(data, backend) if row[1] == slide], _folders(data)


@pytest.mark.parametrize("slide", BAD)
def test_a_slide_that_cannot_be_opened_leaves_no_session_behind(
    slide_root: Path, tmp_path: Path, backend: str | None, slide: str
) -> None:
    data = tmp_path / "data"
    with TestClient(_app(slide_root, data, backend), base_url=LOOPBACK) as client:
        reply = client.post("/api/sessions", json={"slide": slide})
        assert reply.status_code in (403, 404, 422), reply.text
        assert len(reply.json()["detail"].splitlines()) == 1
        assert _left_behind(data, backend, slide) == ([], [])
        good = client.post("/api/sessions", json={"slide": "good.tif"})
        assert good.status_code == 201, good.text
        assert [row[0] for row in _rows(data, backend) if row[1] == "good.tif"].count(
            good.json()["id"]
        ) == 1
        assert _folders(data) == [good.json()["id"]]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read a file without read permission")
def test_an_unreadable_slide_leaves_no_session_behind(
    slide_root: Path, tmp_path: Path, backend: str | None
) -> None:
    data = tmp_path / "data"
    with TestClient(_app(slide_root, data, backend), base_url=LOOPBACK) as client:
        reply = client.post("/api/sessions", json={"slide": "locked.tif"})
        assert reply.status_code in (403, 422), reply.text
        assert _left_behind(data, backend, "locked.tif") == ([], [])


class AgentBuildError(RuntimeError):
    """Stands for anything failing after the session row is written."""


def test_a_failure_after_the_row_is_written_takes_the_row_back(
    slide_root: Path, tmp_path: Path, backend: str | None
) -> None:
    data = tmp_path / "data"
    failing = [True]

    def factory(context: AgentContext) -> ChatSession:
        if failing[0]:
            raise AgentBuildError("the agent could not be built")
        return chat_agent_factory(context)

    app = _app(slide_root, data, backend, agent_factory=factory)
    with TestClient(app, base_url=LOOPBACK, raise_server_exceptions=False) as client:
        before = _rows(data, backend)
        assert client.post("/api/sessions", json={"slide": "good.tif"}).status_code == 500
        assert _rows(data, backend) == before
        assert _folders(data) == []
        failing[0] = False
        made = client.post("/api/sessions", json={"slide": "good.tif"})
        assert made.status_code == 201, made.text
        assert [row for row in _rows(data, backend) if row not in before] == [
            (made.json()["id"], "good.tif")
        ]
