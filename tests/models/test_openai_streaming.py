"""Streaming chat completions: the HTTP backend's ``generate_stream`` against the stub server.

The streamed ``Reply`` must be the one ``generate`` gives; pieces arrive in order while the
server is still sending; failures before the first chunk are retried, a stream that breaks off
afterwards is one clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from medagent.agents.chat import ChatAgent, ChatConfig
from medagent.artifacts import ArtifactStore
from medagent.errors import ModelResponseError, ModelUnavailableError
from medagent.models import (
    GenerateParams,
    Message,
    OpenAIBackend,
    Reply,
    RetryPolicy,
    StreamingChatModel,
    ToolSpec,
)
from medagent.testing import StubOpenAIServer, synthetic_tissue, write_pyramid_tiff

FAST_RETRY = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.05)
ANSWER = "The tissue shows glands in a loose stroma, most likely benign."


class ZoomArgs(BaseModel):
    x: int
    y: int


ZOOM = ToolSpec.from_model("zoom", "Zoom into a region", ZoomArgs)
MEASURE = ToolSpec.from_model("measure", "Measure a region", ZoomArgs)


@pytest.fixture
def stub() -> Iterator[StubOpenAIServer]:
    with StubOpenAIServer(stream_chunk_chars=5) as server:
        yield server


def backend_for(url: str, **kwargs: Any) -> OpenAIBackend:
    options: dict[str, Any] = {"retry": FAST_RETRY, "timeout_s": 5.0}
    options.update(kwargs)
    return OpenAIBackend("stub-model", [url], **options)


async def collect(
    model: OpenAIBackend, messages: list[Message], **kwargs: Any
) -> tuple[list[str], Reply]:
    """The text pieces, and the ``Reply`` that must come last and only once."""
    items = [item async for item in model.generate_stream(messages, **kwargs)]
    *pieces, reply = items
    assert isinstance(reply, Reply)
    assert all(isinstance(p, str) for p in pieces)
    return [str(p) for p in pieces], reply


def same_reply(streamed: Reply, whole: Reply) -> None:
    assert streamed.text == whole.text
    # Ids aside: the stub numbers them per reply.
    assert [c.model_dump(exclude={"id"}) for c in streamed.tool_calls] == [
        c.model_dump(exclude={"id"}) for c in whole.tool_calls
    ]
    assert streamed.finish_reason == whole.finish_reason
    assert streamed.model == whole.model and streamed.endpoint == whole.endpoint
    assert streamed.usage.prompt_tokens == whole.usage.prompt_tokens
    assert streamed.usage.completion_tokens == whole.usage.completion_tokens
    assert streamed.usage.attempts == whole.usage.attempts
    assert streamed.usage.latency_s > 0


def mock_backend(events: list[str], **kwargs: Any) -> OpenAIBackend:
    """A backend whose server answers every request with these server-sent events."""
    body = "".join(f"data: {event}\n\n" for event in events).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return OpenAIBackend(
        "mock", ["http://mock/v1"], retry=FAST_RETRY, transport=httpx.MockTransport(handler)
    )


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps(
        {"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    )


def test_the_backend_has_the_streaming_capability() -> None:
    model = OpenAIBackend("m")
    assert isinstance(model, StreamingChatModel)  # what the chat agent checks


async def test_text_arrives_in_pieces_and_the_reply_equals_the_whole_one(
    stub: StubOpenAIServer,
) -> None:
    stub.enqueue({"text": ANSWER}, {"text": ANSWER})
    model = backend_for(stub.base_url)
    messages = [Message.system("be brief"), Message.user("what is it?")]
    whole = await model.generate(messages)

    pieces, reply = await collect(model, messages)

    assert len(pieces) == -(-len(ANSWER) // 5)
    assert "".join(pieces) == ANSWER
    same_reply(reply, whole)
    assert reply.usage.completion_tokens == len(ANSWER.split())
    assert reply.raw["choices"][0]["message"]["content"] == ANSWER
    plain, streamed = stub.requests
    assert streamed.pop("stream") is True
    assert streamed.pop("stream_options") == {"include_usage": True}
    assert streamed == plain  # one way to build a request
    totals = model.usage_totals
    assert totals.requests == 2 and totals.retries == 0 and totals.failures == 0
    assert totals.completion_tokens == 2 * len(ANSWER.split())
    await model.aclose()


async def test_pieces_arrive_while_the_server_is_still_sending() -> None:
    script = [{"text": "one two three four"}]
    with StubOpenAIServer(script, stream_chunk_chars=4, stream_interval_s=0.2) as server:
        model = backend_for(server.base_url)
        seen_in_flight = []
        async for item in model.generate_stream([Message.user("count")]):
            if isinstance(item, str):
                seen_in_flight.append(server.in_flight)
        assert seen_in_flight[0] == 1  # the first piece came before the server was done
        await model.aclose()


async def test_tool_call_deltas_become_the_calls_generate_returns(
    stub: StubOpenAIServer,
) -> None:
    calls = [
        {"name": "zoom", "arguments": {"x": 1200, "y": 3400}},
        {"name": "measure", "arguments": {"x": 5, "y": 6}, "id": "call_m"},
    ]
    stub.enqueue({"tool_calls": calls}, {"tool_calls": calls})
    model = backend_for(stub.base_url)
    messages = [Message.user("look closer")]
    whole = await model.generate(messages, tools=[ZOOM, MEASURE])

    pieces, reply = await collect(model, messages, tools=[ZOOM, MEASURE])

    assert pieces == []
    same_reply(reply, whole)
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [
        ("zoom", {"x": 1200, "y": 3400}),
        ("measure", {"x": 5, "y": 6}),
    ]
    assert reply.tool_calls[1].id == "call_m" and reply.finish_reason == "tool_calls"
    assert stub.requests[1]["tool_choice"] == "auto" and stub.requests[1]["stream"] is True


async def test_interleaved_fragments_are_joined_by_index() -> None:
    def call(index: int, **fields: Any) -> str:
        call_id = {"id": fields.pop("id")} if "id" in fields else {}
        return chunk({"tool_calls": [{"index": index, **call_id, "function": fields}]})

    usage = {"prompt_tokens": 7, "completion_tokens": 3}
    model = mock_backend(
        [
            chunk({"role": "assistant", "content": ""}),
            call(1, id="b", name="measure"),
            call(0, id="a", name="zoom", arguments='{"x"'),
            call(1, arguments='{"x": 5, '),
            call(0, arguments=': 1, "y": 2}'),
            call(1, arguments='"y": 6}'),
            chunk({}, "tool_calls"),
            json.dumps({"id": "c1", "choices": [], "usage": usage}),
            "[DONE]",
        ]
    )
    pieces, reply = await collect(model, [Message.user("go")], tools=[ZOOM, MEASURE])
    assert pieces == []
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("a", "zoom", {"x": 1, "y": 2}),
        ("b", "measure", {"x": 5, "y": 6}),
    ]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 3)


async def test_tool_call_blocks_in_text_are_not_streamed(stub: StubOpenAIServer) -> None:
    # A server without a tool parser streams the Hermes block as text: show only the words.
    text = 'Let me look closer. <tool_call>{"name": "zoom", "arguments": {"x": 3, "y": 4}}'
    stub.enqueue({"text": text + "</tool_call>"})
    pieces, reply = await collect(backend_for(stub.base_url), [Message.user("go")], tools=[ZOOM])
    assert "".join(pieces) == "Let me look closer. "
    assert reply.text == "Let me look closer."
    assert reply.tool_calls[0].arguments == {"x": 3, "y": 4}


async def test_a_lone_angle_bracket_is_not_held_back_for_good(stub: StubOpenAIServer) -> None:
    stub.enqueue({"text": "size <"})
    pieces, reply = await collect(backend_for(stub.base_url), [Message.user("go")], tools=[ZOOM])
    assert "".join(pieces) == "size <" == reply.text


async def test_forced_calls_and_schemas_come_whole(stub: StubOpenAIServer) -> None:
    stub.enqueue(
        {"tool_calls": [{"name": "zoom", "arguments": {"x": 1, "y": 2}}]},
        {"json": {"x": 1, "y": 2}},
    )
    model = backend_for(stub.base_url)
    forced = GenerateParams(tool_choice="required")
    pieces, reply = await collect(model, [Message.user("go")], tools=[ZOOM], params=forced)
    assert pieces == [] and reply.tool_calls[0].name == "zoom"
    pieces, reply = await collect(model, [Message.user("go")], schema=ZoomArgs)
    assert pieces == [] and reply.parsed == ZoomArgs(x=1, y=2)
    assert not any("stream" in request for request in stub.requests)


@pytest.mark.parametrize("fault", ["429", "500", "drop", "malformed"])
async def test_failures_before_the_first_chunk_are_retried(
    stub: StubOpenAIServer, fault: str
) -> None:
    stub.enqueue({"fault": fault, "retry_after": 0.3}, {"text": ANSWER})
    model = backend_for(stub.base_url)
    started = time.perf_counter()
    pieces, reply = await collect(model, [Message.user("x")])
    assert "".join(pieces) == ANSWER == reply.text
    assert reply.usage.attempts == 2 and len(stub.requests) == 2
    assert model.usage_totals.retries == 1 and model.usage_totals.failures == 0
    if fault == "429":
        assert time.perf_counter() - started >= 0.28  # Retry-After was honoured


async def test_a_stream_cut_before_its_first_chunk_is_retried(stub: StubOpenAIServer) -> None:
    stub.enqueue({"fault": "cut", "after_chunks": 0}, {"text": "fine"})
    pieces, reply = await collect(backend_for(stub.base_url), [Message.user("x")])
    assert pieces == ["fine"] and reply.usage.attempts == 2


async def test_a_stream_cut_midway_is_one_clear_error(stub: StubOpenAIServer) -> None:
    stub.default_text = "an answer that never finishes"
    stub.enqueue({"fault": "cut", "after_chunks": 3}, {"text": "not asked for"})
    model = backend_for(stub.base_url)
    pieces: list[str] = []
    with pytest.raises(ModelUnavailableError) as info:
        async for item in model.generate_stream([Message.user("x")]):
            assert isinstance(item, str)
            pieces.append(item)
    assert pieces == ["an an", "swer "]  # what came before the cut, then the error
    message = str(info.value)
    assert "\n" not in message and stub.base_url in message and "broke off" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert len(stub.requests) == 1  # not retried: the pieces cannot be taken back
    assert model.usage_totals.failures == 1


async def test_a_stream_that_ends_unfinished_is_one_clear_error() -> None:
    model = mock_backend([chunk({"role": "assistant", "content": ""}), chunk({"content": "Gla"})])
    with pytest.raises(ModelResponseError, match=r"without finishing") as info:
        await collect(model, [Message.user("x")])
    assert "\n" not in str(info.value)


async def test_an_error_event_in_the_stream_is_reported() -> None:
    error = {"error": {"message": "out of\nKV cache", "type": "InternalError", "code": 400}}
    model = mock_backend([chunk({"content": "Gl"}), json.dumps(error), "[DONE]"])
    with pytest.raises(ModelResponseError, match="reported an error in the stream: out of KV"):
        await collect(model, [Message.user("x")])


async def test_a_server_that_ignores_stream_still_gives_the_reply() -> None:
    completion = {
        "model": "m",
        "choices": [{"index": 0, "message": {"content": "whole"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1},
    }
    model = OpenAIBackend(
        "m",
        ["http://mock/v1"],
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=completion)),
    )
    pieces, reply = await collect(model, [Message.user("x")])
    assert pieces == ["whole"] and reply.text == "whole" and reply.usage.prompt_tokens == 2


async def test_chat_agent_streams_token_events_from_the_http_backend(tmp_path: Path) -> None:
    slide = write_pyramid_tiff(
        tmp_path / "chat.tif", synthetic_tissue(1200, 800, seed=3), mpp=0.5, levels=2
    )
    zoom = {"name": "zoom", "arguments": {"x": 100, "y": 100, "width": 400, "height": 300}}
    with StubOpenAIServer([{"tool_calls": [zoom]}, {"text": ANSWER}], stream_chunk_chars=6) as s:
        model = backend_for(s.base_url)
        agent = ChatAgent(
            model, slide, artifacts=ArtifactStore(tmp_path / "artifacts"), config=ChatConfig()
        )
        events = [event async for event in agent.astream("t1", "What tissue is this?")]
        await model.aclose()
        assert all(request.get("stream") is True for request in s.requests)
    kinds = [event.type for event in events]
    assert kinds[-2:] == ["answer", "turn_end"]
    assert kinds.index("tool_call") < kinds.index("token")  # the call streamed no text
    tokens = [event.text or "" for event in events if event.type == "token"]
    assert len(tokens) == -(-len(ANSWER) // 6)
    assert "".join(tokens) == ANSWER == events[-2].text


async def test_calls_sent_whole_without_an_index_stay_apart() -> None:
    # Some servers send each call whole in one delta and leave out the index.
    def whole_call(call_id: str, x: int) -> str:
        function = {"name": "zoom", "arguments": json.dumps({"x": x, "y": 0})}
        return chunk({"tool_calls": [{"id": call_id, "type": "function", "function": function}]})

    model = mock_backend([whole_call("a", 1), whole_call("b", 2), chunk({}, "tool_calls")])
    _, reply = await collect(model, [Message.user("go")], tools=[ZOOM])
    assert [(c.id, c.arguments) for c in reply.tool_calls] == [
        ("a", {"x": 1, "y": 0}),
        ("b", {"x": 2, "y": 0}),
    ]


async def test_stopping_early_frees_the_endpoint_slot() -> None:
    script = [{"text": "a long answer " * 20}, {"text": "next"}]
    with StubOpenAIServer(script, stream_chunk_chars=3, stream_interval_s=0.05) as server:
        model = backend_for(server.base_url, concurrency=1)
        async with contextlib.aclosing(model.generate_stream([Message.user("x")])) as stream:
            async for _ in stream:
                break
        reply = await asyncio.wait_for(model.generate([Message.user("y")]), timeout=3)
        assert reply.text == "next"
        await model.aclose()


async def test_a_cut_whole_reply_is_retried_by_generate(stub: StubOpenAIServer) -> None:
    # The stub's cut fault also breaks off a non-streamed body halfway.
    stub.enqueue({"fault": "cut"}, {"text": "again"})
    reply = await backend_for(stub.base_url).generate([Message.user("x")])
    assert reply.text == "again" and reply.usage.attempts == 2


async def test_a_cached_model_streams_through_then_answers_whole_from_the_cache(
    stub: StubOpenAIServer, tmp_path: Path
) -> None:
    from medagent.models import CachedModel, ScriptedModel

    stub.enqueue({"text": ANSWER})
    messages = [Message.user("what is it?")]
    cached = CachedModel(backend_for(stub.base_url), tmp_path / "cache.sqlite")
    assert isinstance(cached, StreamingChatModel)
    items = [item async for item in cached.generate_stream(messages)]
    assert len(items) > 2 and "".join(str(i) for i in items[:-1]) == ANSWER
    assert cached.hits == 0

    again = [item async for item in cached.generate_stream(messages)]  # the stub has no more
    assert len(again) == 1 and isinstance(again[0], Reply) and again[0].text == ANSWER
    assert cached.hits == 1 and len(stub.requests) == 1
    # A backend that cannot stream answers whole, and its reply is stored too.
    plain = CachedModel(ScriptedModel([{"text": "whole"}]), tmp_path / "plain.sqlite")
    assert [r.text async for r in plain.generate_stream(messages) if isinstance(r, Reply)] == [
        "whole"
    ]
    assert (await plain.generate(messages)).text == "whole" and plain.hits == 1
