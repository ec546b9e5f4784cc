"""Chat turns traced to the SDK's in-memory exporter: a span per turn, its steps, and the model
and tool calls nested under them, the session id on every span, and nothing of the turn left
current while the consumer holds an event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from typer.testing import CliRunner

from medagent._trace import SESSION_ID, Tracing, span
from medagent.agents.chat import ChatAgent, ChatEvent
from medagent.artifacts import ArtifactStore
from medagent.cli import app
from medagent.models import Reply, ScriptedModel, TracedModel
from medagent.testing import synthetic_tissue, write_pyramid_tiff

ZOOM = {"name": "zoom", "arguments": {"x": 400, "y": 300, "width": 800, "height": 600}}
#: One turn: a zoom, then the answer.
TURN = [{"tool_calls": [ZOOM]}, {"text": "Glands in a loose stroma."}]


@pytest.fixture(scope="module")
def chat_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chat-trace") / "chat.tif"
    return write_pyramid_tiff(path, synthetic_tissue(3000, 2000, seed=5), mpp=0.5, levels=3)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


class StreamingScripted(ScriptedModel):
    """Scripted replies streamed word by word (a tool call arrives whole, as the last piece)."""

    async def generate_stream(
        self, messages: Sequence[Any], **kwargs: Any
    ) -> AsyncIterator[str | Reply]:
        reply = await self.generate(messages, **kwargs)
        for word in reply.text.split():
            yield word + " "
        yield reply


async def chat(
    agent: ChatAgent, session: str, messages: list[str], tracing: Tracing
) -> list[ChatEvent]:
    """Each message as a turn; between events the consumer opens a span of its own."""
    events = []
    with tracing.active():
        for message in messages:
            async for event in agent.astream(session, message):
                with span("consumer"):
                    events.append(event)
    return events


def ancestors(one: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    names = []
    while one.parent is not None:
        one = by_id[one.parent.span_id]
        names.append(one.name)
    return names


def turns_and_their_spans(
    spans: Sequence[ReadableSpan],
) -> dict[int, list[ReadableSpan]]:
    """Each turn's number and the spans of its trace (below the turn span), in start order."""
    ordered = sorted(spans, key=lambda s: s.start_time or 0)
    turns = {
        int(s.attributes["medagent.turn"]): s for s in ordered if s.name == "invoke_agent chat"
    }
    return {
        number: [
            s for s in ordered if s.context.trace_id == turn.context.trace_id and s is not turn
        ]
        for number, turn in turns.items()
    }


async def test_two_turns_are_two_turn_spans_with_their_steps_model_and_tool_calls(
    chat_slide: Path, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    model = TracedModel(ScriptedModel(TURN * 2))
    agent = ChatAgent(model, chat_slide, artifacts=ArtifactStore(tmp_path / "artifacts"))

    events = await chat(
        agent, "session-7", ["What tissue?", "And now?"], Tracing.to(exporter, batch=False)
    )

    assert [e.type for e in events].count("answer") == 2
    spans = list(exporter.get_finished_spans())
    agent_spans = [s for s in spans if s.name != "consumer"]
    by_id = {s.context.span_id: s for s in spans}
    turns = [s for s in spans if s.name == "invoke_agent chat"]
    assert sorted(s.attributes["medagent.turn"] for s in turns) == [1, 2]
    for turn in turns:
        assert turn.parent is None  # each turn is a trace of its own
        assert turn.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert turn.attributes["gen_ai.conversation.id"] == "session-7"
        assert turn.attributes["medagent.run.status"] == "answered"
        assert "gen_ai.input.messages" not in turn.attributes  # no content unless opted in
    assert {s.attributes.get(SESSION_ID) for s in agent_spans} == {"session-7"}
    inside = turns_and_their_spans(agent_spans)
    # The first turn shows the overview (a tool call in listen); both zoom once and answer.
    assert [s.name for s in inside[1]] == [
        "step chat.listen",
        "execute_tool overview",
        "step chat.think",
        "chat scripted",
        "step chat.act",
        "execute_tool zoom",
        "step chat.think",
        "chat scripted",
        "step chat.finish",
    ]
    assert [s.name for s in inside[2]] == [
        n for n in (s.name for s in inside[1]) if "overview" not in n
    ]
    for members in inside.values():
        for one in members:
            chain = ancestors(one, by_id)
            assert chain[-1] == "invoke_agent chat"
            if one.name == "chat scripted":
                assert chain[0] == "step chat.think"
            elif one.name == "execute_tool zoom":
                assert chain[0] == "step chat.act"
            elif one.name.startswith("step "):
                assert len(chain) == 1  # steps hang off the turn itself
    # The consumer's work between events never nests under the turn.
    consumers = [s for s in spans if s.name == "consumer"]
    assert len(consumers) == len(events)
    assert all(s.parent is None and SESSION_ID not in s.attributes for s in consumers)


async def test_streamed_replies_nest_under_think_and_still_stream_tokens(
    chat_slide: Path, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    model = TracedModel(StreamingScripted(TURN), provider="scripted")
    agent = ChatAgent(model, chat_slide, artifacts=ArtifactStore(tmp_path / "artifacts"))

    events = await chat(agent, "s", ["What tissue?"], Tracing.to(exporter, batch=False))

    assert "".join(e.text or "" for e in events if e.type == "token").split() == [
        "Glands", "in", "a", "loose", "stroma."
    ]  # fmt: skip
    spans = list(exporter.get_finished_spans())
    by_id = {s.context.span_id: s for s in spans}
    calls = [s for s in spans if s.name == "chat scripted"]
    assert len(calls) == 2
    for call in calls:
        assert call.attributes["medagent.request.streamed"] is True
        assert ancestors(call, by_id) == ["step chat.think", "invoke_agent chat"]
    assert all(s.parent is None for s in spans if s.name == "consumer")


async def test_the_message_is_on_the_turn_only_with_content_and_a_failed_turn_says_so(
    chat_slide: Path, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    model = TracedModel(ScriptedModel([{"error": "server_error"}]))
    agent = ChatAgent(model, chat_slide, artifacts=ArtifactStore(tmp_path / "artifacts"))

    events = await chat(
        agent, "s", ["Is it <b>benign</b>?"], Tracing.to(exporter, content=True, batch=False)
    )

    assert [e.type for e in events][-2:] == ["error", "turn_end"]
    spans = list(exporter.get_finished_spans())
    (turn,) = [s for s in spans if s.name == "invoke_agent chat"]
    assert turn.attributes["medagent.run.status"] == "error"
    (message,) = json.loads(str(turn.attributes["gen_ai.input.messages"]))
    assert message["parts"][0]["content"] == "Is it <b>benign</b>?"
    (call,) = [s for s in spans if s.name == "chat scripted"]
    assert call.status.status_code is StatusCode.ERROR


def test_chat_command_traces_each_turn_with_trace(
    chat_slide: Path,
    tmp_path: Path,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``medagent chat --trace``: the OTLP tracer the flag builds (here: to memory) gets a turn
    span per message; without the flag none is built."""
    built: list[bool] = []

    def to_memory(content: bool = False) -> Tracing:
        built.append(content)
        return Tracing.to(exporter, content=content, batch=False)

    monkeypatch.setattr(Tracing, "otlp", staticmethod(to_memory))
    script = tmp_path / "replies.jsonl"
    script.write_text("\n".join(json.dumps(r) for r in TURN * 2) + "\n")
    arguments = ["chat", str(chat_slide), "-q", "What tissue?", "-q", "And now?"]
    arguments += ["--backend", "scripted", "--script", str(script), "--thread", "cli-thread"]

    plain = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    assert built == [] and not exporter.get_finished_spans()

    traced = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "chat"), "--trace"])
    assert traced.exit_code == 0, traced.output
    assert built == [False]
    spans = list(exporter.get_finished_spans())
    turns = sorted(
        (s.attributes["medagent.turn"], s.attributes[SESSION_ID])
        for s in spans
        if s.name == "invoke_agent chat"
    )
    assert turns == [(1, "cli-thread"), (2, "cli-thread")]
    assert len([s for s in spans if s.name == "chat scripted"]) == 4
    assert {s.attributes[SESSION_ID] for s in spans} == {"cli-thread"}
