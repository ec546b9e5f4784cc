"""Chat turns through the web app's API, traced: each message a turn span holding its steps,
model and tool calls, labelled with the session's id; ``serve --trace`` hands the app its
tracer."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from server_support import LATER_TURN, LOOPBACK, SCRIPT, TURN
from typer.testing import CliRunner

from medagent._trace import SESSION_ID, Tracing
from medagent.models import ScriptedModel, TracedModel
from medagent.server import ServerConfig, create_app

Ask = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


def check_two_turns(spans: list[ReadableSpan], session_id: str) -> None:
    """Two turn spans, each the root of its trace, with its steps, model and tool calls under
    it and the session id on every span."""
    by_id = {s.context.span_id: s for s in spans}
    turns = sorted(
        (s for s in spans if s.name == "invoke_agent chat"),
        key=lambda s: s.attributes["medagent.turn"],
    )
    assert [t.attributes["medagent.turn"] for t in turns] == [1, 2]
    assert {s.attributes[SESSION_ID] for s in spans} == {session_id}
    for turn in turns:
        assert turn.parent is None and turn.attributes["gen_ai.conversation.id"] == session_id
        assert turn.attributes["medagent.run.status"] == "answered"
        inside = [s for s in spans if s.context.trace_id == turn.context.trace_id]
        names = sorted(s.name for s in inside)
        assert names.count("chat scripted") == 2 and names.count("execute_tool zoom") == 1
        for one in inside:
            if one.name in ("chat scripted", "execute_tool zoom"):
                assert one.parent is not None
                step = by_id[one.parent.span_id]
                assert step.name in ("step chat.think", "step chat.act")
                assert step.parent is not None and by_id[step.parent.span_id] is turn


def test_turns_through_the_api_are_traced_per_session(
    slide_root: Path, tmp_path: Path, exporter: InMemorySpanExporter, ask: Ask
) -> None:
    config = ServerConfig(slide_roots=(slide_root,), data_dir=tmp_path / "data")
    app = create_app(
        config,
        model_factory=lambda _sid: TracedModel(ScriptedModel(SCRIPT)),
        tracing=Tracing.to(exporter, batch=False),
    )
    with TestClient(app, base_url=LOOPBACK) as client:
        reply = client.post("/api/sessions", json={"slide": "cases/tissue.tif"})
        assert reply.status_code == 201, reply.text
        session_id = reply.json()["id"]
        assert not exporter.get_finished_spans()  # opening a session is not a turn
        first = ask(client, session_id, "What tissue is this?")
        second = ask(client, session_id, "And here?")
    assert [e["type"] for e in first] == TURN and [e["type"] for e in second] == LATER_TURN
    check_two_turns(list(exporter.get_finished_spans()), session_id)


def test_serve_with_trace_gives_the_app_its_tracer(
    slide_root: Path,
    tmp_path: Path,
    exporter: InMemorySpanExporter,
    ask: Ask,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``medagent serve --trace`` with the server stubbed by two turns through its API: the
    app it built traces them to the OTLP tracer the flag asks for (here: to memory)."""
    from medagent.cli import app as cli

    sessions: list[str] = []

    def two_turns(application: Any, config: ServerConfig) -> None:
        with TestClient(application, base_url=LOOPBACK) as client:
            reply = client.post("/api/sessions", json={"slide": "cases/tissue.tif"})
            sessions.append(reply.json()["id"])
            ask(client, sessions[0], "What tissue is this?")
            ask(client, sessions[0], "And here?")

    monkeypatch.setattr(
        Tracing, "otlp", staticmethod(lambda content=False: Tracing.to(exporter, batch=False))
    )
    monkeypatch.setattr("medagent.server.serve", two_turns)
    script = tmp_path / "replies.jsonl"
    script.write_text("\n".join(json.dumps(r) for r in SCRIPT) + "\n")
    arguments = ["serve", "--slides", str(slide_root), "--data", str(tmp_path / "data")]
    arguments += ["--backend", "scripted", "--script", str(script), "--trace"]
    done = CliRunner().invoke(cli, arguments)
    assert done.exit_code == 0, done.output
    check_two_turns(list(exporter.get_finished_spans()), sessions[0])
