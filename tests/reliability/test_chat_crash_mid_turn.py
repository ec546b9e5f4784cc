"""A chat turn cut off by a crash loses nothing: not the message, not its turn number.

Cases:
- a real server (uvicorn, loopback) killed with SIGKILL right after a turn's ``turn_start``,
  while the model answers, and while the user's region is being read; restarted as
  ``medagent serve`` on the same data folder: the history shows the message exactly once, the
  next message's stream carries the cut-off turn whole (``turn_start`` ... ``turn_end``, its own
  number, ids never repeated) and then the new turn under the next number;
- in-process: a stream dropped right after ``turn_start``, before the turn ran, and a turn whose
  model call fails mid-way: the message is kept and finished whole before the next;
- over HTTP, a turn that fails with a bug: the error event names its turn, and the next
  message finishes that turn whole before its own;
- a slow checkpoint store: when a client sees ``turn_end``, the answer it saw is already stored
  (a crash then cannot bring back a different one).

The first server is this file run as a script: the app over a scripted model that never
answers a message containing ``[hang]``, and a region reader that never returns, so the kill
lands mid-turn without any timing guess.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from medagent.agents.chat import ChatAgent, ChatEvent
from medagent.artifacts import ArtifactStore
from medagent.models import Message, Reply, ScriptedModel
from medagent.testing import free_port, synthetic_tissue, write_pyramid_tiff
from server_process_support import ServerProcess, start_server, stop_server

ZOOM = {"name": "zoom", "arguments": {"x": 400, "y": 300, "width": 800, "height": 600}}
#: Each turn: a zoom, then the answer.
SCRIPT: list[dict[str, Any]] = [{"tool_calls": [ZOOM]}, {"text": "Glands in a loose stroma."}] * 10
HANG = "[hang]"
REGION = {"x": 100, "y": 200, "width": 300, "height": 200}
#: Generous: the machine running the tests may be loaded.
READ_S = 180.0


class HangingModel(ScriptedModel):
    """The script, except that a message containing ``[hang]`` is never answered."""

    async def generate(self, messages: Sequence[Message], **kwargs: Any) -> Reply:
        if HANG in [m for m in messages if m.role == "user"][-1].text:
            await asyncio.Event().wait()
        return await super().generate(messages, **kwargs)


def _serve_hanging(root: Path, data: Path, port: int) -> None:
    """The first server: a model that hangs on ``[hang]``, a region read that never returns."""
    from medagent.agents.chat import _graph
    from medagent.server import ServerConfig, create_app, serve

    assert hasattr(_graph, "zoom")

    def stalled(*_args: Any, **_kwargs: Any) -> Any:
        threading.Event().wait()  # a disk that stopped answering

    _graph.zoom = stalled  # type: ignore[assignment]  # the user's region only: tools run apart
    config = ServerConfig.build(slide_roots=(root,), data_dir=data, port=port)
    serve(create_app(config, model_factory=lambda _: HangingModel(SCRIPT)), config)


# -- a real server, killed --------------------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Every server a test starts, stopped at the end whatever happened."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        stop_server(server)


def _stream(
    client: httpx.Client, session: str, body: dict[str, Any], *, until_turn_start: int = 0
) -> list[tuple[str, dict[str, Any]]]:
    """``(id, data)`` of each event of one message's stream; with ``until_turn_start``, stop at
    that turn's ``turn_start``."""
    events: list[tuple[str, dict[str, Any]]] = []
    ident = ""
    with client.stream("POST", f"/api/sessions/{session}/messages", json=body) as reply:
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            if line.startswith("id:"):
                ident = line[3:].strip()
            elif line.startswith("data:"):
                event = json.loads(line[5:])
                events.append((ident, event))
                if event["type"] == "turn_start" and event["turn"] == until_turn_start:
                    break
    return events


def _turns(events: list[dict[str, Any]]) -> dict[int, list[str]]:
    """Each turn's event types, checking that every turn is one contiguous, whole run."""
    turns: dict[int, list[str]] = {}
    for event in events:
        number = event["turn"]
        last = list(turns)[-1] if turns else number
        assert number == last or (number > last and number not in turns), f"turn {number} split"
        kinds = turns.setdefault(number, [])
        assert event["seq"] == len(kinds), f"turn {number}: seq {event['seq']} out of order"
        kinds.append(event["type"])
    for number, kinds in turns.items():
        assert kinds[0] == "turn_start" and kinds[-1] == "turn_end", (number, kinds)
    return turns


@pytest.mark.slow
@pytest.mark.parametrize("where", ["model", "region"])
def test_a_server_killed_after_turn_start_keeps_the_message_and_finishes_the_turn_whole(
    tmp_path: Path, servers: list[ServerProcess], where: str
) -> None:
    root, data, log = tmp_path / "slides", tmp_path / "data", tmp_path / "server.log"
    root.mkdir()
    write_pyramid_tiff(root / "tissue.tif", synthetic_tissue(1200, 900, seed=5), levels=2)
    port = free_port()
    servers.append(
        start_server(
            [sys.executable, __file__, "serve", str(root), str(data), str(port)], port, log
        )
    )
    with servers[0].client() as client:
        session = client.post("/api/sessions", json={"slide": "tissue.tif"}).json()["id"]
        first = [e for _, e in _stream(client, session, {"text": "What tissue is this?"})]
        cut: dict[str, Any] = (
            {"text": f"And the glands? {HANG}"}
            if where == "model"
            else {"text": "And here?", "region": REGION}
        )
        seen = _stream(client, session, cut, until_turn_start=2)
    assert seen[-1][1]["type"] == "turn_start" and seen[-1][1]["text"] == cut["text"]
    servers[0].process.send_signal(signal.SIGKILL)
    assert servers[0].process.wait(timeout=60) == -signal.SIGKILL

    script = tmp_path / "script.jsonl"
    script.write_text("".join(json.dumps(line) + "\n" for line in SCRIPT))
    port = free_port()
    command = [sys.executable, "-m", "medagent", "serve", "--slides", str(root)]
    command += ["--data", str(data), "--port", str(port), "--backend", "scripted"]
    servers.append(start_server([*command, "--script", str(script)], port, log))
    with servers[1].client() as client:
        history = client.get(f"/api/sessions/{session}/history").json()["events"]
        starts = [(e["turn"], e["text"]) for e in history if e["type"] == "turn_start"]
        assert starts == [(1, "What tissue is this?"), (2, cut["text"])]  # once each
        assert history[: len(first)] == first

        streamed = _stream(client, session, {"text": "Which cells?"})
        ids = [ident for ident, _ in streamed]
        events = [event for _, event in streamed]
        assert len(set(ids)) == len(ids)
        assert ids == [f"{e['turn']}.{e['seq']}" for e in events]
        turns = _turns(events)
        assert list(turns) == [2, 3]  # the cut-off turn first, whole; then a new number
        assert events[0]["text"] == cut["text"] and "answer" in turns[2]
        assert [e["text"] for e in events if e["type"] == "turn_start"][1] == "Which cells?"

        after = client.get(f"/api/sessions/{session}/history").json()["events"]
    assert after == first + events
    assert list(_turns(after)) == [1, 2, 3]


# -- in-process: the same faults, quickly ------------------------------------------------------


@pytest.fixture(scope="module")
def chat_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "chat.tif"
    return write_pyramid_tiff(path, synthetic_tissue(1200, 900, seed=5), mpp=0.5, levels=2)


def _agent(model: ScriptedModel, slide: Path, saver: AsyncSqliteSaver, tmp_path: Path) -> ChatAgent:
    return ChatAgent(
        model, slide, artifacts=ArtifactStore(tmp_path / "artifacts"), checkpointer=saver
    )


async def _all(agent: ChatAgent, message: str) -> list[ChatEvent]:
    return [event async for event in agent.astream("t", message)]


async def test_a_stream_dropped_after_turn_start_keeps_the_message_and_its_number(
    chat_slide: Path, tmp_path: Path
) -> None:
    database = str(tmp_path / "chat.sqlite")
    async with AsyncSqliteSaver.from_conn_string(database) as saver:
        agent = _agent(ScriptedModel(SCRIPT), chat_slide, saver, tmp_path)
        await _all(agent, "Which organ?")
        stream = agent.astream("t", "Which structures?")
        start = await anext(stream)
        await stream.aclose()  # the process dies here: the turn never ran
    assert (start.type, start.turn, start.seq) == ("turn_start", 2, 0)

    async with AsyncSqliteSaver.from_conn_string(database) as saver:
        agent = _agent(ScriptedModel(SCRIPT), chat_slide, saver, tmp_path)
        history = await agent.ahistory("t")
        assert [e.text for e in history if e.type == "turn_start"] == [
            "Which organ?",
            "Which structures?",
        ]
        events = await _all(agent, "Which cells?")
        assert events[0] == start  # the same event, number and all
        turns = _turns([e.model_dump(mode="json") for e in events])
        assert list(turns) == [2, 3]
        assert await agent.ahistory("t") == history[:-1] + events


class Crash(Exception):
    """Stands for the process dying in the middle of a model call."""


class CrashesOnSecondCall(ScriptedModel):
    """Dies on its second request, once: inside the first turn, after its tool call."""

    crashed = False

    async def generate(self, messages: Sequence[Message], **kwargs: Any) -> Reply:
        if len(self.requests) == 1 and not self.crashed:
            self.crashed = True
            raise Crash
        return await super().generate(messages, **kwargs)


async def test_a_turn_that_died_mid_way_is_streamed_whole_before_the_next(
    chat_slide: Path, tmp_path: Path
) -> None:
    database = str(tmp_path / "chat.sqlite")
    async with AsyncSqliteSaver.from_conn_string(database) as saver:
        agent = _agent(CrashesOnSecondCall(SCRIPT), chat_slide, saver, tmp_path)
        seen: list[ChatEvent] = []
        with pytest.raises(Crash):
            async for event in agent.astream("t", "Which organ?"):
                seen.append(event)
    assert [e.type for e in seen] == ["turn_start", "crop", "tool_call", "tool_result", "crop"]

    async with AsyncSqliteSaver.from_conn_string(database) as saver:
        model = ScriptedModel([{"text": "Kidney."}, *SCRIPT])
        agent = _agent(model, chat_slide, saver, tmp_path)
        events = await _all(agent, "Which cells?")
    turns = _turns([e.model_dump(mode="json") for e in events])
    assert list(turns) == [1, 2]
    assert events[: len(seen)] == seen  # what the client saw is what it sees again
    assert turns[1][len(seen) :] == ["answer", "turn_end"]


def test_an_error_names_its_turn_and_the_next_message_finishes_that_turn(
    tmp_path: Path, chat_slide: Path
) -> None:
    from fastapi.testclient import TestClient

    from medagent.server import ServerConfig, create_app

    config = ServerConfig(slide_roots=(chat_slide.parent,), data_dir=tmp_path / "data")
    app = create_app(config, model_factory=lambda _: CrashesOnSecondCall(SCRIPT))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        session = client.post("/api/sessions", json={"slide": chat_slide.name}).json()["id"]

        def ask(text: str) -> list[dict[str, Any]]:
            body = {"text": text}
            with client.stream("POST", f"/api/sessions/{session}/messages", json=body) as reply:
                return [json.loads(x[5:]) for x in reply.iter_lines() if x.startswith("data:")]

        failed = ask("Which organ?")
        assert [e["type"] for e in failed][-2:] == ["crop", "error"]
        assert (failed[-1]["turn"], failed[-1]["seq"]) == (1, failed[-2]["seq"] + 1)
        events = ask("Which cells?")
    turns = _turns(events)
    assert list(turns) == [1, 2] and turns[1][-2:] == ["answer", "turn_end"]
    assert events[: len(failed) - 1] == failed[:-1]


class SlowSaver(AsyncSqliteSaver):
    """Takes its time to store each step, as a busy database does."""

    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)
        return await super().aput(*args, **kwargs)

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.3)
        await super().aput_writes(*args, **kwargs)


async def test_the_answer_is_stored_before_turn_end_is_sent(
    chat_slide: Path, tmp_path: Path
) -> None:
    async with SlowSaver.from_conn_string(str(tmp_path / "chat.sqlite")) as saver:
        agent = _agent(ScriptedModel(SCRIPT), chat_slide, saver, tmp_path)
        settings: Any = {"configurable": {"thread_id": "t"}}
        stored: list[str] = []
        async for event in agent.astream("t", "Which organ?"):
            if event.type == "turn_end":
                state = await agent.graph.aget_state(settings)
                stored = [e["type"] for e in state.values.get("events", [])]
    assert "answer" in stored


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 5:
        _serve_hanging(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(f"usage: {os.path.basename(__file__)} serve SLIDES DATA PORT")
