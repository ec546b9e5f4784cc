"""The chat agent with the scripted backend: tool calls both ways, memory, regions, events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from pydantic import BaseModel, ValidationError

from medagent.agents.chat import ChatAgent, ChatConfig, ChatEvent
from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError, InputError, ModelResponseError
from medagent.imaging import Region
from medagent.models import (
    GenerateParams,
    Message,
    OpenAIBackend,
    Reply,
    RetryPolicy,
    ScriptedModel,
    ToolSpec,
)
from medagent.testing import StubOpenAIServer, synthetic_tissue, write_pyramid_tiff

ZOOM = {"name": "zoom", "arguments": {"x": 400, "y": 300, "width": 800, "height": 600}}


@pytest.fixture(scope="module")
def chat_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 x 2000 px, 3 levels, mpp 0.5."""
    path = tmp_path_factory.mktemp("chat") / "chat.tif"
    return write_pyramid_tiff(path, synthetic_tissue(3000, 2000, seed=5), mpp=0.5, levels=3)


def agent_for(model: Any, slide: Path, tmp_path: Path, **config: Any) -> ChatAgent:
    return ChatAgent(
        model, slide, artifacts=ArtifactStore(tmp_path / "artifacts"), config=ChatConfig(**config)
    )


async def turn(
    agent: ChatAgent, message: str, thread: str = "t1", region: Region | None = None
) -> list[ChatEvent]:
    return [event async for event in agent.astream(thread, message, region=region)]


def kinds(events: list[ChatEvent]) -> list[str]:
    return [event.type for event in events]


async def test_native_tool_call_streams_events_in_order(chat_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([{"tool_calls": [ZOOM]}, {"text": "Glands in a loose stroma."}])
    agent = agent_for(model, chat_slide, tmp_path)

    events = await turn(agent, "What tissue is this?")

    assert kinds(events) == [
        "turn_start", "crop", "tool_call", "tool_result", "crop", "answer", "turn_end"
    ]  # fmt: skip
    assert [e.seq for e in events] == list(range(len(events)))
    assert {e.turn for e in events} == {1} and {e.thread_id for e in events} == {"t1"}
    overview_crop, zoom_crop = events[1], events[4]
    assert overview_crop.box is None and overview_crop.region == Region(
        x=0, y=0, width=3000, height=2000
    )
    assert zoom_crop.box == 1
    assert zoom_crop.region == Region(x=400, y=300, width=800, height=600)
    assert (tmp_path / "artifacts" / f"{zoom_crop.artifact_id}.jpg").exists()
    assert events[2].tool == "zoom" and events[2].arguments == ZOOM["arguments"]
    assert events[3].ok is True and "Zoomed to" in (events[3].text or "")
    assert events[5].text == "Glands in a loose stroma."
    # Native mode: the tools go as tool schemas; the result as a tool message (text only),
    # the crop in a following user message.
    first, second = model.requests
    assert first.tools == ["overview", "zoom", "tissue", "segment", "measure"]
    assert len(first.messages[-1].images) == 1  # the overview with the question
    tool_message, image_message = second.messages[-2:]
    assert tool_message.role == "tool" and not tool_message.images
    assert image_message.role == "user" and len(image_message.images) == 1
    assert all(not m.images for m in second.messages if m.role != "user")
    # Events are plain JSON for a wire.
    json.dumps([e.model_dump(mode="json") for e in events])


async def test_json_action_schema_when_configured(chat_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel(
        [
            {"json": ZOOM},
            {"text": '```json\n{"name": "answer", "arguments": {"text": "Tumour."}}\n```'},
        ]
    )
    agent = agent_for(model, chat_slide, tmp_path, tool_mode="schema")

    events = await turn(agent, "Is there tumour?")

    assert kinds(events) == [
        "turn_start", "crop", "tool_call", "tool_result", "crop", "answer", "turn_end"
    ]  # fmt: skip
    assert events[-2].text == "Tumour."
    first, second = model.requests
    assert first.tools == [] and first.schema_name == "ChatAction"
    assert '"name": "answer"' in first.messages[0].text  # the action format in the system prompt
    assert "- zoom:" in first.messages[0].text
    result = second.messages[-1]  # schema mode: the result and the crop in one user message
    assert result.role == "user" and "Result of zoom" in result.text and len(result.images) == 1


class RefusesTools:
    """A backend whose server rejects tool calling (as vLLM does without a tool parser)."""

    name = "refuses-tools"

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.inner = ScriptedModel(replies)
        self.usage_totals = self.inner.usage_totals
        self.refused = 0

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> Reply:
        if tools:
            self.refused += 1
            raise ModelResponseError(
                'the server answered HTTP 400: "auto" tool choice requires '
                "--enable-auto-tool-choice",
                status_code=400,
            )
        return await self.inner.generate(
            messages, schema=schema, params=params, artifacts=artifacts
        )

    async def aclose(self) -> None:
        return None


async def test_auto_mode_falls_back_to_the_schema_once(chat_slide: Path, tmp_path: Path) -> None:
    model = RefusesTools(
        [
            {"json": ZOOM},
            {"json": {"name": "answer", "arguments": {"text": "Fat."}}},
            {"json": {"name": "answer", "arguments": {"text": "Still fat."}}},
        ]
    )
    agent = agent_for(model, chat_slide, tmp_path)

    first = await turn(agent, "What is this?")
    second = await turn(agent, "Sure?")

    assert kinds(first)[-2:] == ["answer", "turn_end"] and "tool_call" in kinds(first)
    assert second[-2].text == "Still fat."
    assert model.refused == 1  # the thread remembers that the server refuses tools


async def test_schema_mode_over_http_sends_the_action_schema(
    chat_slide: Path, tmp_path: Path
) -> None:
    replies = [{"json": ZOOM}, {"json": {"name": "answer", "arguments": {"text": "Skin."}}}]
    with StubOpenAIServer(replies) as server:
        backend = OpenAIBackend("stub", [server.base_url], retry=RetryPolicy(max_retries=0))
        agent = agent_for(backend, chat_slide, tmp_path, tool_mode="schema")
        events = await turn(agent, "Which organ?")
        await backend.aclose()
        body = server.requests[0]
    assert events[-2].type == "answer" and events[-2].text == "Skin."
    schema = body["response_format"]["json_schema"]["schema"]
    names = {variant["properties"]["name"]["const"] for variant in schema["anyOf"]}
    assert names == {"overview", "zoom", "tissue", "segment", "measure", "answer"}
    assert "tools" not in body


async def test_threads_remember_earlier_turns(chat_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([{"text": "Colon."}, {"text": "Yes, glands."}, {"text": "Hello."}])
    agent = agent_for(model, chat_slide, tmp_path)

    await turn(agent, "Which organ?")
    events = await turn(agent, "Any glands?")
    await turn(agent, "Hi", thread="other")

    assert {e.turn for e in events} == {2}
    assert [m.text for m in model.requests[1].messages if m.role == "assistant"] == ["Colon."]
    assert "Which organ?" in model.requests[1].messages[1].text
    other = model.requests[2].messages
    assert not [m for m in other if m.role == "assistant"]  # a new thread starts afresh
    history = await agent.ahistory("t1")
    assert [e.turn for e in history if e.type == "turn_start"] == [1, 2]
    assert [e.text for e in history if e.type == "answer"] == ["Colon.", "Yes, glands."]
    assert await agent.ahistory("never-used") == []


async def test_region_injection_shows_the_region(chat_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([{"text": "Tissue."}, {"text": "A gland."}])
    agent = agent_for(model, chat_slide, tmp_path)
    pointed = Region(x=1000, y=500, width=400, height=300)

    await turn(agent, "Overview?")
    events = await turn(agent, "", region=pointed)

    assert kinds(events) == ["turn_start", "crop", "answer", "turn_end"]
    assert events[0].region == pointed and events[0].text == "What is in this region?"
    assert events[1].region == pointed and events[1].box == 1
    asked = model.requests[1].messages[-1]
    assert asked.role == "user" and len(asked.images) == 1
    assert "x=1000, y=500, width=400, height=300" in asked.text


async def test_region_outside_the_image_is_an_error_event(chat_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([])
    agent = agent_for(model, chat_slide, tmp_path)

    events = await turn(agent, "this?", region=Region(x=50_000, y=0, width=10, height=10))

    assert kinds(events) == ["turn_start", "crop", "error", "turn_end"]
    assert "outside" in (events[2].text or "")
    assert model.requests == []


async def test_thread_resumes_from_sqlite_in_a_new_agent(chat_slide: Path, tmp_path: Path) -> None:
    database = str(tmp_path / "chat.sqlite")
    async with AsyncSqliteSaver.from_conn_string(database) as saver:
        agent = ChatAgent(
            ScriptedModel([{"tool_calls": [ZOOM]}, {"text": "Liver."}]),
            chat_slide,
            artifacts=ArtifactStore(tmp_path / "artifacts"),
            checkpointer=saver,
        )
        first = await turn(agent, "Which organ?")

    later = ScriptedModel([{"text": "Hepatocytes."}])
    async with AsyncSqliteSaver.from_conn_string(database) as saver:
        agent = ChatAgent(
            later, chat_slide, artifacts=ArtifactStore(tmp_path / "artifacts"), checkpointer=saver
        )
        assert await agent.ahistory("t1") == first
        second = await turn(agent, "Which cells?")

    assert {e.turn for e in second} == {2}
    assert kinds(second) == ["turn_start", "answer", "turn_end"]  # no second overview
    sent = later.requests[0].messages
    assert [m.text for m in sent if m.role == "assistant"][-1] == "Liver."
    assert any(m.role == "tool" for m in sent)


@pytest.mark.parametrize(
    ("mode", "bad"),
    [("native", {"text": "  "}), ("schema", {"text": "I think it is a zoom"})],
)
async def test_unusable_replies_end_in_an_error_event(
    chat_slide: Path, tmp_path: Path, mode: str, bad: dict[str, Any]
) -> None:
    model = ScriptedModel([bad] * 3)
    agent = agent_for(model, chat_slide, tmp_path, tool_mode=mode, max_corrections=2)

    events = await turn(agent, "What is it?")

    assert kinds(events) == ["turn_start", "crop", "error", "turn_end"]
    assert "could not be used after 3 tries" in (events[2].text or "")
    correction = model.requests[1].messages[-1]
    assert correction.role == "user" and "could not be used" in correction.text


async def test_unreachable_model_is_a_one_line_error_event(
    chat_slide: Path, tmp_path: Path
) -> None:
    backend = OpenAIBackend(
        "m", ["http://127.0.0.1:9/v1"], retry=RetryPolicy(max_retries=0), timeout_s=5
    )
    agent = agent_for(backend, chat_slide, tmp_path)

    events = await turn(agent, "Hello?")
    await backend.aclose()

    assert kinds(events) == ["turn_start", "crop", "error", "turn_end"]
    text = events[2].text or ""
    assert "cannot reach the model server" in text and "\n" not in text


async def test_bad_tool_calls_go_back_to_the_model(chat_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel(
        [
            {"tool_calls": [{"name": "zoom", "arguments": {"x": 1}}, {"name": "teleport"}]},
            {"text": "Sorry."},
        ]
    )
    agent = agent_for(model, chat_slide, tmp_path)

    events = await turn(agent, "Zoom!")

    results = [e for e in events if e.type == "tool_result"]
    assert [(e.tool, e.ok) for e in results] == [("zoom", False), ("teleport", False)]
    assert "width" in (results[0].text or "") and "no tool named" in (results[1].text or "")
    tool_messages = [m for m in model.requests[1].messages if m.role == "tool"]
    assert len(tool_messages) == 2 and "failed" in tool_messages[0].text


async def test_tool_calls_per_turn_are_limited(chat_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([{"tool_calls": [ZOOM, ZOOM]}, {"text": "Done."}])
    agent = agent_for(model, chat_slide, tmp_path, max_tool_calls=1)

    events = await turn(agent, "Look twice")

    results = [e for e in events if e.type == "tool_result"]
    assert [e.ok for e in results] == [True, False]
    assert "used up" in (results[1].text or "")
    last = model.requests[1]
    assert last.tools == []  # no tools once the turn's calls are spent
    assert "Answer now" in last.messages[-1].text


class StreamingModel(ScriptedModel):
    """The scripted backend, streaming each reply word by word."""

    async def generate_stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> AsyncIterator[str | Reply]:
        reply = await self.generate(messages, tools=tools, params=params, artifacts=artifacts)
        for word in reply.text.split(" "):
            yield word + " "
        yield reply


async def test_streaming_backends_give_token_events(chat_slide: Path, tmp_path: Path) -> None:
    agent = agent_for(StreamingModel([{"text": "A benign lesion."}]), chat_slide, tmp_path)

    events = await turn(agent, "Benign?")

    tokens = [e.text for e in events if e.type == "token"]
    assert "".join(t or "" for t in tokens).strip() == "A benign lesion."
    assert kinds(events)[-2:] == ["answer", "turn_end"]


async def test_search_is_offered_only_with_an_index(chat_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([{"text": "ok"}])
    agent = agent_for(model, chat_slide, tmp_path, tools=("zoom", "search_similar"))
    await turn(agent, "hi")
    assert model.requests[0].tools == ["zoom"]


async def test_usage_errors(chat_slide: Path, tmp_path: Path) -> None:
    agent = agent_for(ScriptedModel([{"text": "ok"}]), chat_slide, tmp_path)
    with pytest.raises(InputError, match="message is empty"):
        await turn(agent, "   ")
    with pytest.raises(ConfigError, match="thread id"):
        await turn(agent, "hi", thread="")
    with pytest.raises(ValidationError, match="unknown chat tool"):
        ChatConfig(tools=("zoom", "teleport"))
    await turn(agent, "hi")
    other = tmp_path / "other.png"
    synthetic_tissue(300, 200, seed=1).save(other)
    moved = ChatAgent(
        ScriptedModel([]), other, artifacts=agent.artifacts, checkpointer=agent.graph.checkpointer
    )
    with pytest.raises(ConfigError, match="use a new thread id"):
        await turn(moved, "hi")


class Crash(Exception):
    """Stands for the process being killed."""


class CrashesOnSecondCall(ScriptedModel):
    """Dies in the middle of a turn, after the first tool call."""

    async def generate(self, messages: Sequence[Message], **kwargs: Any) -> Reply:
        if len(self.requests) == 1:
            raise Crash
        return await super().generate(messages, **kwargs)


async def test_a_turn_cut_off_is_finished_before_the_next(chat_slide: Path, tmp_path: Path) -> None:
    database = str(tmp_path / "chat.sqlite")
    artifacts = ArtifactStore(tmp_path / "artifacts")
    async with AsyncSqliteSaver.from_conn_string(database) as saver:
        agent = ChatAgent(
            CrashesOnSecondCall([{"tool_calls": [ZOOM]}]),
            chat_slide,
            artifacts=artifacts,
            checkpointer=saver,
        )
        with pytest.raises(Crash):
            await turn(agent, "Which organ?")

    model = ScriptedModel([{"text": "Kidney."}, {"text": "Tubules."}])
    async with AsyncSqliteSaver.from_conn_string(database) as saver:
        agent = ChatAgent(model, chat_slide, artifacts=artifacts, checkpointer=saver)
        events = await turn(agent, "Which structures?")

    # The cut-off turn streams whole, from its own turn_start, before the new one.
    assert [(e.turn, e.type) for e in events] == [
        (1, "turn_start"), (1, "crop"), (1, "tool_call"), (1, "tool_result"), (1, "crop"),
        (1, "answer"), (1, "turn_end"), (2, "turn_start"), (2, "answer"), (2, "turn_end"),
    ]  # fmt: skip
    assert [e.seq for e in events if e.turn == 1] == list(range(7))
    assert events[0].text == "Which organ?" and events[5].text == "Kidney."
    assert events[-2].text == "Tubules."
