"""A replica whose turn-lock connection is lost (Postgres stays up) stops the turns it guarded.

Cases, with a real local PostgreSQL (``medagent.testing.PostgresServer``):
- ``PostgresTurnLocks`` alone: its connection terminated by ``pg_terminate_backend`` while it
  holds a lock: the listener hears that session within seconds though no call was made, and
  the next acquire reconnects;
- two replica processes: a turn held open on A; A's lock connection terminated: A's stream
  ends with a one-line error event; a message through B then runs at once (200, not 409),
  finishing the cut-off turn whole, then its own; A, reconnected, runs the next turn; every
  replica reads the same history.

The replicas are ``test_server_replicas``'s: its app over a scripted model that holds a
``[hang]`` message until a release file exists.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_server_replicas import (
    HANG,
    READ_S,
    SLIDE,
    _held_replica,
    _history,
    _send,
    _turns,
)

from medagent.server._turns import PostgresTurnLocks
from medagent.testing import PostgresServer
from server_process_support import ServerProcess, stop_server

pytestmark = pytest.mark.slow

#: Generous for a loaded machine; the check itself runs every second.
NOTICED_S = 30.0


@pytest.fixture
def database() -> Iterator[PostgresServer]:
    if PostgresServer.find_binaries() is None:
        pytest.skip("no Postgres server binaries (apt-get install postgresql)")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def started() -> Iterator[list[ServerProcess]]:
    """Every replica a test starts, stopped at the end whatever happened."""
    replicas: list[ServerProcess] = []
    yield replicas
    for replica in replicas:
        stop_server(replica)


def _terminate_lock_connection(url: str, pid: int) -> None:
    """End the lock connection of the process ``pid``, as an idle-connection killer would."""
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"medagent turn locks pid={pid}",),
        ).fetchall()
    assert rows == [(True,)], f"no lock connection of process {pid}: {rows}"


async def test_a_terminated_lock_connection_is_noticed_without_a_call_and_replaced(
    database: PostgresServer,
) -> None:
    locks = PostgresTurnLocks(database.url, timeout_s=5.0)
    heard: list[frozenset[str]] = []
    locks.on_lost(heard.append)
    try:
        assert await locks.try_acquire("session-a")
        await asyncio.to_thread(_terminate_lock_connection, database.url, os.getpid())
        deadline = time.monotonic() + NOTICED_S
        while not heard:
            assert time.monotonic() < deadline, "the lost connection was never noticed"
            await asyncio.sleep(0.1)
        assert heard == [frozenset({"session-a"})]
        await locks.release("session-a")  # gone already: nothing to give back, no error
        assert await locks.try_acquire("session-a")  # on a new connection
        assert not await PostgresTurnLocks(database.url, timeout_s=5.0).try_acquire("session-a")
    finally:
        await locks.aclose()


def test_a_replica_that_loses_its_lock_connection_stops_the_turn_and_another_finishes_it(
    slide_root: Path, tmp_path: Path, database: PostgresServer, started: list[ServerProcess]
) -> None:
    a, b = (_held_replica(slide_root, tmp_path, database.url, name) for name in ("a", "b"))
    started.extend([a, b])
    with a.client() as client:
        session = client.post("/api/sessions", json={"slide": SLIDE}).json()["id"]
    status, first, _ = _send(b, session, "What tissue is this?")
    assert status == 200 and list(_turns(first)) == [1]

    question = f"And the glands? {HANG}"
    cut: list[dict[str, Any]] = []
    begun, over = threading.Event(), threading.Event()

    def held_turn() -> None:
        with (
            a.client() as client,
            client.stream(
                "POST", f"/api/sessions/{session}/messages", json={"text": question}
            ) as reply,
        ):
            assert reply.status_code == 200
            for line in reply.iter_lines():
                if line.startswith("data:"):
                    cut.append(json.loads(line[5:]))
                    if cut[-1]["type"] == "turn_start":
                        begun.set()
        over.set()

    reader = threading.Thread(target=held_turn, daemon=True)
    reader.start()
    assert begun.wait(READ_S), "the turn never started"
    assert _send(b, session, "Meanwhile?")[0] == 409  # held on A

    _terminate_lock_connection(database.url, a.process.pid)
    assert over.wait(NOTICED_S), "the turn went on without its lock"
    assert cut[0]["type"] == "turn_start" and cut[-1]["type"] == "error"
    assert "lock was lost" in cut[-1]["text"] and "\n" not in cut[-1]["text"]
    assert cut[-1]["turn"] == 2

    (tmp_path / "release").touch()  # from now on a [hang] message is answered
    status, events, detail = _send(b, session, "Which cells?")
    assert status == 200, detail  # at once: the lock went with A's connection
    turns = _turns(events)
    assert list(turns) == [2, 3]  # the cut-off turn first, whole; then the new one
    assert events[0]["text"] == question and "answer" in turns[2] and "answer" in turns[3]

    status, last, detail = _send(a, session, "And the stroma?")  # A took a new connection
    assert status == 200, detail
    assert list(_turns(last)) == [4]
    assert _history(a, session) == _history(b, session) == first + events + last
    assert a.process.poll() is None and "Traceback" not in a.log.read_text()
