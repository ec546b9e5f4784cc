"""Sessions over time: idle ones are swept whole (row, every checkpoint table, crops on disk),
one answering never is, a deleted or swept one is a one-line 404, a client holds at most
``client_max_sessions``, and ``medagent sessions list`` reports what is kept.

Each test runs on SQLite and on a real Postgres (``MEDAGENT_TEST_POSTGRES``, else a throwaway
``medagent.testing.PostgresServer``; a fresh database per test). Time is a clock the test
moves: no test waits for hours, and the one that lets the background sweep run waits seconds.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from expiry_support import (
    HOUR,
    SLIDE,
    Clock,
    build,
    checkpoint_rows,
    fresh_database,
    session_rows,
)
from fastapi.testclient import TestClient
from server_support import LOOPBACK

from cli_support import medagent
from medagent.testing import PostgresServer

HAS_POSTGRES_EXTRA = importlib.util.find_spec("langgraph.checkpoint.postgres") is not None


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    if not HAS_POSTGRES_EXTRA:
        pytest.skip("needs pip install 'medagent[postgres]'")
    if os.environ.get("MEDAGENT_TEST_POSTGRES"):
        yield os.environ["MEDAGENT_TEST_POSTGRES"]
        return
    if PostgresServer.find_binaries() is None:
        pytest.skip(
            "no Postgres: set MEDAGENT_TEST_POSTGRES=postgresql://... or install the server "
            "(apt-get install postgresql)"
        )
    with PostgresServer() as server:
        yield server.url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def checkpoint(request: pytest.FixtureRequest) -> str | None:
    """``None`` (SQLite in the data folder) or the URL of a fresh Postgres database."""
    if request.param == "sqlite":
        return None
    return fresh_database(request.getfixturevalue("postgres_server"))


def _new(client: TestClient, who: str = "10.0.0.1") -> Any:
    return client.post("/api/sessions", json={"slide": SLIDE}, headers={"X-Test-Client": who})


def _sweep(client: TestClient) -> int:
    """One sweep, run in the app's own event loop."""
    assert client.portal is not None
    reaper = client.app.state.chats.reaper  # type: ignore[attr-defined]
    removed: int = client.portal.call(reaper.sweep)
    return removed


def _gone(client: TestClient, data: Path, checkpoint: str | None, session: str) -> None:
    """Nothing of ``session`` is left, and every route says so in one line."""
    for suffix in ("", "/history", "/slide.dzi", "/slide_files/0/0_0.jpeg", "/crops/abc"):
        reply = client.get(f"/api/sessions/{session}{suffix}")
        assert reply.status_code == 404, (suffix, reply.text)
        assert "\n" not in reply.json()["detail"]
    reply = client.post(f"/api/sessions/{session}/messages", json={"text": "still there?"})
    assert (reply.status_code, reply.json()) == (404, {"detail": "no such session"})
    assert session_rows(data, checkpoint, session) == 0
    rows = checkpoint_rows(data, checkpoint, session)
    assert rows and set(rows.values()) == {0}, rows
    assert not (data / "sessions" / session).exists()


def _kept(data: Path, checkpoint: str | None, session: str) -> None:
    assert session_rows(data, checkpoint, session) == 1
    assert sum(checkpoint_rows(data, checkpoint, session).values()) > 0
    assert any((data / "sessions" / session / "crops").rglob("*.jpg"))


def test_an_idle_session_is_swept_whole_and_a_used_one_stays(
    slide_root: Path, tmp_path: Path, ask: Callable[..., Any], checkpoint: str | None
) -> None:
    data, clock = tmp_path / "data", Clock()
    app = build(slide_root, data, checkpoint, clock, session_idle_hours=24)
    with TestClient(app, base_url=LOOPBACK) as client:
        old = _new(client).json()["id"]
        ask(client, old, "What tissue is this?")
        _kept(data, checkpoint, old)
        clock.advance(20 * HOUR)
        new = _new(client).json()["id"]
        ask(client, new, "And this one?")
        clock.advance(5 * HOUR)  # old: 25 h unused; new: 5 h
        assert _sweep(client) == 1
        _gone(client, data, checkpoint, old)
        _kept(data, checkpoint, new)
        assert [e["type"] for e in client.get(f"/api/sessions/{new}/history").json()["events"]]
        # Looking at a session is using it: 20 h more and it is still young enough.
        assert client.get(f"/api/sessions/{new}").status_code == 200
        clock.advance(20 * HOUR)
        assert _sweep(client) == 0
        clock.advance(5 * HOUR)
        assert _sweep(client) == 1
        _gone(client, data, checkpoint, new)


def test_a_session_answering_is_never_swept_nor_deleted(
    slide_root: Path, tmp_path: Path, checkpoint: str | None
) -> None:
    data, clock, release = tmp_path / "data", Clock(), threading.Event()
    app = build(slide_root, data, checkpoint, clock, release=release, session_idle_hours=1)
    with TestClient(app, base_url=LOOPBACK) as client:
        session = _new(client).json()["id"]
        url = f"/api/sessions/{session}/messages"
        with client.stream("POST", url, json={"text": "Look closely."}) as reply:
            assert reply.status_code == 200
            lines = reply.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: turn_start"
            clock.advance(48 * HOUR)  # the turn runs "for two days"
            assert _sweep(client) == 0
            refused = client.delete(f"/api/sessions/{session}")
            assert refused.status_code == 409
            assert session_rows(data, checkpoint, session) == 1
            release.set()
            rest = [line for line in lines if line.startswith("event:")]
        assert rest[-1] == "event: turn_end"
        # Idle counts from the turn's end: not swept now, swept an idle time later.
        assert _sweep(client) == 0
        assert len(client.get(f"/api/sessions/{session}/history").json()["events"]) > 3
        clock.advance(2 * HOUR)
        assert _sweep(client) == 1
        _gone(client, data, checkpoint, session)


def test_deleting_a_session_removes_it_and_its_checkpoints_and_crops(
    slide_root: Path, tmp_path: Path, ask: Callable[..., Any], checkpoint: str | None
) -> None:
    data = tmp_path / "data"
    app = build(slide_root, data, checkpoint, Clock())
    with TestClient(app, base_url=LOOPBACK) as client:
        doomed, other = _new(client).json()["id"], _new(client).json()["id"]
        for session in (doomed, other):
            ask(client, session, "What tissue is this?")
        crop = next(
            e["artifact_id"]
            for e in client.get(f"/api/sessions/{doomed}/history").json()["events"]
            if e["type"] == "crop"
        )
        assert client.get(f"/api/sessions/{doomed}/crops/{crop}").status_code == 200
        assert client.delete(f"/api/sessions/{doomed}").status_code == 204
        _gone(client, data, checkpoint, doomed)
        assert client.get(f"/api/sessions/{doomed}/crops/{crop}").status_code == 404
        again = client.delete(f"/api/sessions/{doomed}")
        assert (again.status_code, again.json()) == (404, {"detail": "no such session"})
        assert client.delete("/api/sessions/..%2F..%2Fetc").status_code == 404
        _kept(data, checkpoint, other)


def test_two_sweeps_at_once_remove_each_session_once(
    slide_root: Path, tmp_path: Path, ask: Callable[..., Any], checkpoint: str | None
) -> None:
    data, clock = tmp_path / "data", Clock()
    with TestClient(build(slide_root, data, checkpoint, clock), base_url=LOOPBACK) as client:
        sessions = [_new(client, f"10.0.0.{n}").json()["id"] for n in range(6)]
        for session in sessions[:2]:
            ask(client, session, "What tissue is this?")
        clock.advance(100 * HOUR)
        reaper = client.app.state.chats.reaper  # type: ignore[attr-defined]

        async def together() -> list[int]:
            return list(await asyncio.gather(reaper.sweep(), reaper.sweep()))

        assert client.portal is not None
        assert sum(client.portal.call(together)) == 6
        for session in sessions:
            _gone(client, data, checkpoint, session)


@pytest.mark.slow
def test_two_replicas_sweep_one_postgres_together(
    slide_root: Path, tmp_path: Path, ask: Callable[..., Any], postgres_server: str
) -> None:
    """Both replicas sweep the same idle sessions at the same moment: each session is removed
    once, neither sweep fails, and the replica that had a session open answers 404 for it."""
    url, data, clock = fresh_database(postgres_server), tmp_path / "shared", Clock()
    one = TestClient(build(slide_root, data, url, clock), base_url=LOOPBACK)
    two = TestClient(build(slide_root, data, url, clock), base_url=LOOPBACK)
    with one, two:
        sessions = [_new(one, f"10.0.1.{n}").json()["id"] for n in range(8)]
        ask(one, sessions[0], "What tissue is this?")
        assert two.get(f"/api/sessions/{sessions[0]}").status_code == 200  # open on two too
        clock.advance(100 * HOUR)
        results: dict[str, int] = {}

        def sweep(name: str, client: TestClient) -> None:
            results[name] = _sweep(client)

        threads = [
            threading.Thread(target=sweep, args=item) for item in (("one", one), ("two", two))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert set(results) == {"one", "two"} and sum(results.values()) == 8, results
        for session in sessions:
            _gone(two, data, url, session)
            assert one.get(f"/api/sessions/{session}").status_code == 404


def test_a_client_holds_at_most_its_cap_of_sessions(
    slide_root: Path, tmp_path: Path, checkpoint: str | None
) -> None:
    clock = Clock()
    app = build(
        slide_root,
        tmp_path / "data",
        checkpoint,
        clock,
        client_max_sessions=2,
        session_idle_hours=24,
    )
    with TestClient(app, base_url=LOOPBACK) as client:
        first, _second = (_new(client, "10.0.0.7").json()["id"] for _ in range(2))
        over = _new(client, "10.0.0.7")
        assert over.status_code == 429
        detail = over.json()["detail"]
        assert "\n" not in detail and "2 sessions" in detail and "delete one" in detail
        # Another client is not affected.
        assert _new(client, "10.0.0.8").status_code == 201
        # Deleting one makes room; so does letting them expire (swept or not yet).
        assert client.delete(f"/api/sessions/{first}").status_code == 204
        assert _new(client, "10.0.0.7").status_code == 201
        assert _new(client, "10.0.0.7").status_code == 429
        clock.advance(25 * HOUR)
        assert _new(client, "10.0.0.7").status_code == 201


def test_sessions_list_reports_count_disk_use_and_idle_time(
    slide_root: Path, tmp_path: Path, ask: Callable[..., Any], checkpoint: str | None
) -> None:
    data, clock = tmp_path / "data", Clock(time.time() - 5 * HOUR)
    with TestClient(build(slide_root, data, checkpoint, clock), base_url=LOOPBACK) as client:
        old = _new(client, "10.0.0.3").json()["id"]
        ask(client, old, "What tissue is this?")
        clock.advance(3 * HOUR)
        new = _new(client, "10.0.0.4").json()["id"]
    extra = ["--checkpoint", checkpoint] if checkpoint else []
    done = medagent("sessions", "list", "--data", str(data), "--json", *extra, timeout=120)
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    rows = {row["id"]: row for row in listing["sessions"]}
    assert listing["count"] == 2 and list(rows) == [old, new]  # longest idle first
    assert abs(rows[old]["idle_s"] - 5 * HOUR) < 600
    assert abs(rows[new]["idle_s"] - 2 * HOUR) < 600
    assert (rows[old]["client"], rows[old]["slide"]) == ("10.0.0.3", SLIDE)
    files = [p for p in (data / "sessions" / old).rglob("*") if p.is_file()]
    assert rows[old]["files"] == len(files) > 1
    assert rows[old]["disk_bytes"] == sum(p.stat().st_size for p in files)
    assert listing["disk_bytes"] == rows[old]["disk_bytes"] + rows[new]["disk_bytes"]
    table = medagent("sessions", "list", "--data", str(data), *extra, timeout=120)
    assert table.returncode == 0 and "2 session(s)" in table.stdout and old in table.stdout


def test_sessions_list_of_a_folder_without_sessions_says_so(tmp_path: Path) -> None:
    done = medagent("sessions", "list", "--data", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--data folder" in done.stderr


def test_the_background_sweep_removes_an_idle_session(
    slide_root: Path, tmp_path: Path, ask: Callable[..., Any]
) -> None:
    """Real time, short idle (1.5 s): the sweep the app starts itself does it."""
    data = tmp_path / "data"
    app = build(slide_root, data, None, time.time, session_idle_hours=1.5 / HOUR)
    with TestClient(app, base_url=LOOPBACK) as client:
        session = _new(client).json()["id"]
        ask(client, session, "What tissue is this?")
        deadline = time.monotonic() + 30
        while session_rows(data, None, session) and time.monotonic() < deadline:
            time.sleep(0.2)  # the database, not the API: a request would keep it in use
        _gone(client, data, None, session)
