"""Several replicas of the web app over one PostgreSQL, as behind a load balancer.

Cases, each with real app processes on loopback ports and a real local PostgreSQL
(``medagent.testing.PostgresServer``):
- one turn at a time per session across replicas: four messages sent at once to one session
  through two replicas: exactly one runs, the others get 409, and so does a third replica;
- the replica running that turn is killed (SIGKILL): the next message, through another
  replica, first finishes the cut-off turn whole, then runs its own; the history then reads
  the same from every replica;
- Postgres restarted under a running replica: meanwhile requests get a one-line 503 (the
  process stays up, nothing hangs), then the same process works again, history intact.

Replicas are ``medagent serve --backend scripted`` and this file run as a script: the same app
over a scripted model that holds a message containing ``[hang]`` until a release file exists,
so a turn stays open exactly as long as the test needs, without timing guesses.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from medagent.models import Message, Reply, ScriptedModel
from medagent.testing import PostgresServer, free_port
from server_process_support import ServerProcess, start_server, stop_server

pytestmark = pytest.mark.slow

ZOOM = {"name": "zoom", "arguments": {"x": 400, "y": 300, "width": 800, "height": 600}}
SCRIPT: list[dict[str, Any]] = [{"tool_calls": [ZOOM]}, {"text": "Glands in a loose stroma."}] * 10
HANG = "[hang]"
SLIDE = "cases/tissue.tif"
#: Generous: the machine running the tests may be loaded.
READ_S = 180.0


class HeldModel(ScriptedModel):
    """The script, except that a message containing ``[hang]`` waits for the release file."""

    def __init__(self, script: list[dict[str, Any]], release: Path) -> None:
        super().__init__(script)
        self._release = release

    async def generate(self, messages: Sequence[Message], **kwargs: Any) -> Reply:
        if HANG in [m for m in messages if m.role == "user"][-1].text:
            # The test, another process, releases it: a file, polled (no Event crosses).
            while not self._release.exists():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        return await super().generate(messages, **kwargs)


def _serve_held(root: Path, data: Path, port: int, url: str, release: Path) -> None:
    from medagent.server import ServerConfig, create_app, serve

    config = ServerConfig.build(slide_roots=(root,), data_dir=data, port=port, checkpoint=url)
    serve(create_app(config, model_factory=lambda _: HeldModel(SCRIPT, release)), config)


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A throwaway server of the test's own: the restart case stops and starts it."""
    if importlib.util.find_spec("langgraph.checkpoint.postgres") is None:
        pytest.skip("needs pip install 'medagent[postgres]'")
    if PostgresServer.find_binaries() is None:
        pytest.skip("no Postgres server binaries (apt-get install postgresql)")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def replicas() -> Iterator[list[ServerProcess]]:
    """Every replica a test starts, stopped at the end whatever happened."""
    started: list[ServerProcess] = []
    yield started
    for replica in started:
        stop_server(replica)


def _held_replica(root: Path, tmp_path: Path, url: str, name: str) -> ServerProcess:
    port = free_port()
    command = [sys.executable, __file__, "serve", str(root), str(tmp_path / "shared"), str(port)]
    return start_server([*command, url, str(tmp_path / "release")], port, tmp_path / f"{name}.log")


def _medagent_replica(
    root: Path, tmp_path: Path, url: str, name: str, *extra: str
) -> ServerProcess:
    script = tmp_path / "script.jsonl"
    script.write_text("".join(json.dumps(line) + "\n" for line in SCRIPT))
    port = free_port()
    command = [sys.executable, "-m", "medagent", "serve", "--slides", str(root)]
    command += ["--data", str(tmp_path / "shared"), "--port", str(port), "--checkpoint", url]
    command += ["--backend", "scripted", "--script", str(script), *extra]
    return start_server(command, port, tmp_path / f"{name}.log")


def _send(
    replica: ServerProcess, session: str, text: str, *, leave: bool = False
) -> tuple[int, list[dict[str, Any]], str]:
    """Status, the events and an error's detail; with ``leave``, the stream is left at the
    first ``turn_start`` (the turn goes on in the replica)."""
    with (
        replica.client() as client,
        client.stream("POST", f"/api/sessions/{session}/messages", json={"text": text}) as reply,
    ):
        if reply.status_code != 200:
            return reply.status_code, [], json.loads(reply.read())["detail"]
        events: list[dict[str, Any]] = []
        for line in reply.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if leave and events[-1]["type"] == "turn_start":
                    break
        return 200, events, ""


def _history(replica: ServerProcess, session: str) -> list[dict[str, Any]]:
    with replica.client() as client:
        reply = client.get(f"/api/sessions/{session}/history")
    assert reply.status_code == 200, reply.text
    events: list[dict[str, Any]] = reply.json()["events"]
    return events


def _turns(events: list[dict[str, Any]]) -> dict[int, list[str]]:
    """Each turn's event types; every turn one contiguous, whole run."""
    turns: dict[int, list[str]] = {}
    for event in events:
        kinds = turns.setdefault(event["turn"], [])
        assert event["seq"] == len(kinds), f"turn {event['turn']} out of order"
        kinds.append(event["type"])
    for number, kinds in turns.items():
        assert kinds[0] == "turn_start" and kinds[-1] == "turn_end", (number, kinds)
    return turns


def test_one_turn_at_a_time_across_replicas_and_a_killed_replicas_turn_is_finished_by_another(
    slide_root: Path, tmp_path: Path, postgres: PostgresServer, replicas: list[ServerProcess]
) -> None:
    held = [_held_replica(slide_root, tmp_path, postgres.url, name) for name in ("a", "b")]
    replicas.extend(held)
    replicas.append(plain := _medagent_replica(slide_root, tmp_path, postgres.url, "c"))
    with held[0].client() as client:
        session = client.post("/api/sessions", json={"slide": SLIDE}).json()["id"]
    status, first, _ = _send(plain, session, "What tissue is this?")
    assert status == 200 and list(_turns(first)) == [1] and "answer" in _turns(first)[1]

    question = f"And the glands? {HANG}"
    senders = [held[0], held[1], held[0], held[1]]
    with ThreadPoolExecutor(len(senders)) as pool:
        results = list(pool.map(lambda r: _send(r, session, question, leave=True), senders))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 409, 409, 409], results
    winner = senders[[status for status, _, _ in results].index(200)]
    started = next(events for status, events, _ in results if status == 200)
    assert [(e["type"], e["turn"]) for e in started] == [("turn_start", 2)]
    assert all("\n" not in detail for _, _, detail in results)
    assert _send(plain, session, "Meanwhile?")[0] == 409  # a third replica refuses too

    winner.process.send_signal(signal.SIGKILL)
    assert winner.process.wait(timeout=60) == -signal.SIGKILL
    (tmp_path / "release").touch()  # from now on a [hang] message is answered

    deadline = time.monotonic() + READ_S
    while (sent := _send(plain, session, "Which cells?"))[0] == 409:
        assert time.monotonic() < deadline, "the killed replica's lock was never released"
        time.sleep(0.5)
    status, events, detail = sent
    assert status == 200, detail
    turns = _turns(events)
    assert list(turns) == [2, 3]  # the cut-off turn first, whole; then the new one
    assert events[0]["text"] == question and "answer" in turns[2] and "answer" in turns[3]

    survivor = held[1] if winner is held[0] else held[0]
    assert _history(plain, session) == _history(survivor, session) == first + events


def test_a_replica_answers_503_while_postgres_restarts_and_then_works_again(
    slide_root: Path, tmp_path: Path, postgres: PostgresServer, replicas: list[ServerProcess]
) -> None:
    replica = _medagent_replica(slide_root, tmp_path, postgres.url, "r", "--db-timeout", "2")
    replicas.append(replica)
    with replica.client() as client:
        session = client.post("/api/sessions", json={"slide": SLIDE}).json()["id"]
        status, first, _ = _send(replica, session, "What tissue is this?")
        assert status == 200 and list(_turns(first)) == [1]

        postgres.stop()
        down = [
            client.get(f"/api/sessions/{session}/history"),
            client.post(f"/api/sessions/{session}/messages", json={"text": "And here?"}),
            client.post("/api/sessions", json={"slide": SLIDE}),
        ]
        for reply in down:
            detail = reply.json()["detail"]
            assert reply.status_code == 503, reply.text
            assert "database is unreachable" in detail and "\n" not in detail
            assert reply.headers["retry-after"]
        assert client.get("/healthz").status_code == 200  # up, answering, not hung

        postgres.start()
        deadline = time.monotonic() + READ_S
        while (reply := client.get(f"/api/sessions/{session}/history")).status_code == 503:
            assert time.monotonic() < deadline, "the replica never reconnected"
            time.sleep(0.5)
        assert reply.status_code == 200 and reply.json()["events"] == first
        status, second, _ = _send(replica, session, "And here?")
        assert status == 200 and list(_turns(second)) == [2] and "answer" in _turns(second)[2]
        assert _history(replica, session) == first + second
        assert client.post("/api/sessions", json={"slide": SLIDE}).status_code == 201
    assert replica.process.poll() is None  # the same process throughout
    assert "Traceback" not in replica.log.read_text()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 7:
        root, data, port, url, release = sys.argv[2:]
        _serve_held(Path(root), Path(data), int(port), url, Path(release))
    else:
        sys.exit(f"usage: {os.path.basename(__file__)} serve SLIDES DATA PORT URL RELEASE")
