"""The HTTP backend against the stub server: request format, retries, faults, endpoints."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Iterator
from typing import Literal

import pytest
from PIL import Image
from pydantic import BaseModel, Field

from medagent.artifacts import ArtifactStore
from medagent.errors import ModelResponseError, ModelTimeoutError, ModelUnavailableError
from medagent.models import GenerateParams, Message, OpenAIBackend, RetryPolicy, ToolSpec
from medagent.testing import StubOpenAIServer, free_port

FAST_RETRY = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.05)


class Finding(BaseModel):
    label: Literal["tumor", "normal"]
    confidence: int = Field(ge=0, le=100)


class ZoomArgs(BaseModel):
    x: int
    y: int


@pytest.fixture
def stub() -> Iterator[StubOpenAIServer]:
    with StubOpenAIServer() as server:
        yield server


def backend_for(*urls: str, **kwargs: object) -> OpenAIBackend:
    options: dict[str, object] = {"retry": FAST_RETRY, "timeout_s": 5.0}
    options.update(kwargs)
    return OpenAIBackend("stub-model", list(urls), **options)  # type: ignore[arg-type]


def decode_data_url(url: str) -> Image.Image:
    head, payload = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload)))


async def test_text_reply_carries_text_usage_and_raw(stub: StubOpenAIServer) -> None:
    stub.enqueue({"text": "a benign lesion"})
    model = backend_for(stub.base_url)
    reply = await model.generate([Message.system("be brief"), Message.user("what is it?")])
    assert reply.text == "a benign lesion"
    assert reply.usage.completion_tokens == 3
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.latency_s > 0
    assert reply.raw["id"].startswith("chatcmpl-stub")
    assert reply.endpoint == stub.base_url
    assert model.usage_totals.requests == 1
    sent = stub.requests[0]
    assert sent["model"] == "stub-model"
    assert sent["temperature"] == 0.0
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    await model.aclose()


async def test_images_arrive_as_jpeg_data_urls_in_user_messages(
    stub: StubOpenAIServer, tmp_path: object
) -> None:
    big = Image.new("RGB", (3000, 1500), (200, 40, 90))
    store = ArtifactStore(str(tmp_path))
    ref = store.put(Image.new("RGB", (64, 32), "blue"))
    model = backend_for(stub.base_url, image_long_side=512)
    await model.generate(
        [Message.user("compare", big, ref), Message.assistant("ok"), Message.user("again")],
        artifacts=store,
    )
    content = stub.requests[0]["messages"][0]["content"]
    assert [part["type"] for part in content] == ["text", "image_url", "image_url"]
    first = decode_data_url(content[1]["image_url"]["url"])
    assert first.size == (512, 256)  # shrunk to the long side, aspect kept
    second = decode_data_url(content[2]["image_url"]["url"])
    assert second.size == (64, 32)  # never upscaled
    assert stub.requests[0]["messages"][2]["content"] == "again"


async def test_schema_request_carries_strict_json_schema(stub: StubOpenAIServer) -> None:
    stub.enqueue({"json": {"label": "tumor", "confidence": 80}})
    model = backend_for(stub.base_url)
    reply = await model.generate([Message.user("classify")], schema=Finding)
    assert reply.parsed == Finding(label="tumor", confidence=80)
    fmt = stub.requests[0]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == Finding.model_json_schema()


async def test_vllm_structured_outputs_field_can_replace_response_format(
    stub: StubOpenAIServer,
) -> None:
    model = backend_for(stub.base_url, structured_field="structured_outputs")
    await model.generate([Message.user("classify")], schema=Finding)
    assert "response_format" not in stub.requests[0]
    assert stub.requests[0]["structured_outputs"] == {"json": Finding.model_json_schema()}


async def test_invalid_schema_answer_is_reported_not_raised(stub: StubOpenAIServer) -> None:
    stub.enqueue({"json": {"label": "maybe", "confidence": 300}})
    reply = await backend_for(stub.base_url).generate([Message.user("x")], schema=Finding)
    assert reply.parsed is None
    assert reply.parse_error is not None and "label" in reply.parse_error


async def test_tools_are_sent_and_tool_calls_parsed(stub: StubOpenAIServer) -> None:
    stub.enqueue({"tool_calls": [{"name": "zoom", "arguments": {"x": 1, "y": 2}}]})
    tool = ToolSpec.from_model("zoom", "Zoom into a region", ZoomArgs)
    reply = await backend_for(stub.base_url).generate(
        [Message.user("look closer")], tools=[tool], params=GenerateParams(tool_choice="zoom")
    )
    assert reply.tool_calls[0].name == "zoom"
    assert reply.tool_calls[0].arguments == {"x": 1, "y": 2}
    assert reply.finish_reason == "tool_calls"
    sent = stub.requests[0]
    assert sent["tools"][0]["function"]["parameters"] == ZoomArgs.model_json_schema()
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "zoom"}}
    # The call and its result go back in the next request, text-only.
    history = [
        Message.user("look closer"),
        reply.as_message(),
        Message.tool(reply.tool_calls[0].id, "zoomed"),
    ]
    await backend_for(stub.base_url).generate(history, tools=[tool])
    again = stub.requests[1]["messages"]
    assert again[1]["tool_calls"][0]["function"]["name"] == "zoom"
    assert again[2] == {"role": "tool", "content": "zoomed", "tool_call_id": reply.tool_calls[0].id}


@pytest.mark.parametrize("fault", ["drop", "500", "malformed"])
async def test_transient_faults_are_retried(stub: StubOpenAIServer, fault: str) -> None:
    stub.enqueue({"fault": fault}, {"text": "recovered"})
    model = backend_for(stub.base_url)
    reply = await model.generate([Message.user("x")])
    assert reply.text == "recovered"
    assert reply.usage.attempts == 2
    assert len(stub.requests) == 2
    assert model.usage_totals.retries == 1


async def test_429_waits_for_retry_after(stub: StubOpenAIServer) -> None:
    stub.enqueue({"fault": "429", "retry_after": 1}, {"text": "later"})
    started = time.perf_counter()
    reply = await backend_for(stub.base_url).generate([Message.user("x")])
    assert reply.text == "later"
    assert time.perf_counter() - started >= 0.95


async def test_slow_reply_past_timeout_is_retried(stub: StubOpenAIServer) -> None:
    stub.enqueue({"fault": "slow", "delay_s": 3}, {"text": "fast now"})
    reply = await backend_for(stub.base_url, timeout_s=0.3).generate([Message.user("x")])
    assert reply.text == "fast now"
    assert reply.usage.attempts == 2


async def test_timeouts_that_persist_raise_model_timeout(stub: StubOpenAIServer) -> None:
    stub.enqueue(*[{"fault": "slow", "delay_s": 2}] * 4)
    model = backend_for(
        stub.base_url, timeout_s=0.2, retry=RetryPolicy(max_retries=1, base_delay_s=0.01)
    )
    with pytest.raises(ModelTimeoutError, match=r"did not answer within 0.2 s.*2 attempts"):
        await model.generate([Message.user("x")])


async def test_persistent_server_errors_give_up_after_bounded_retries(
    stub: StubOpenAIServer,
) -> None:
    stub.enqueue(*[{"fault": "500"}] * 10)
    model = backend_for(stub.base_url)
    with pytest.raises(ModelResponseError, match="HTTP 500: injected server error") as info:
        await model.generate([Message.user("x")])
    assert len(stub.requests) == FAST_RETRY.max_retries + 1
    assert info.value.status_code == 500
    assert model.usage_totals.failures == 1


async def test_client_errors_are_not_retried(stub: StubOpenAIServer) -> None:
    # A 4xx other than 429 is the caller's mistake: report it at once, with the server's words.
    model = OpenAIBackend(
        "stub-model", [stub.base_url.removesuffix("/v1") + "/nowhere"], retry=FAST_RETRY
    )
    with pytest.raises(ModelResponseError, match="HTTP 404: no route POST"):
        await model.generate([Message.user("x")])


async def test_unreachable_server_names_url_and_what_to_do() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    model = backend_for(url, retry=RetryPolicy(max_retries=2, base_delay_s=0.01))
    with pytest.raises(ModelUnavailableError) as info:
        await model.generate([Message.user("x")])
    message = str(info.value)
    assert url in message and "vllm serve" in message and "--base-url" in message
    assert "3 attempts" in message
    assert "\n" not in message


async def test_several_endpoints_share_the_load() -> None:
    with StubOpenAIServer() as first, StubOpenAIServer() as second:
        model = backend_for(first.base_url, second.base_url)
        await asyncio.gather(*(model.generate([Message.user(str(i))]) for i in range(10)))
        assert len(first.requests) == 5
        assert len(second.requests) == 5


async def test_failing_endpoint_is_skipped_for_a_while(stub: StubOpenAIServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    model = backend_for(dead, stub.base_url, failure_threshold=2, cooldown_s=60)
    for i in range(8):
        reply = await model.generate([Message.user(str(i))])
        assert reply.endpoint == stub.base_url
    # The dead endpoint was tried until it hit the threshold, then left alone.
    assert model.usage_totals.retries == 2
    assert len(stub.requests) == 8


async def test_concurrency_is_limited_per_endpoint() -> None:
    with StubOpenAIServer(latency_s=0.1) as server:
        model = backend_for(server.base_url, concurrency=3)
        await asyncio.gather(*(model.generate([Message.user("x")]) for _ in range(12)))
        assert server.max_in_flight == 3


async def test_api_key_is_sent_as_bearer_token(
    stub: StubOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    await backend_for(stub.base_url).generate([Message.user("x")])
    assert stub.request_headers[0]["authorization"] == "Bearer sk-from-env"


ZOOM_TOOL = ToolSpec.from_model("zoom", "Zoom into a region", ZoomArgs)
REQUIRED = GenerateParams(tool_choice="required")


async def test_tool_call_blocks_in_text_are_parsed(stub: StubOpenAIServer) -> None:
    # A server started without a tool parser hands the model's Hermes block back as text.
    stub.enqueue({"text": '<tool_call>{"name": "zoom", "arguments": {"x": 3, "y": 4}}</tool_call>'})
    reply = await backend_for(stub.base_url).generate([Message.user("go")], tools=[ZOOM_TOOL])
    assert reply.tool_calls[0].arguments == {"x": 3, "y": 4} and reply.text == ""


async def test_ignored_forced_choice_falls_back_to_schema_decoding(stub: StubOpenAIServer) -> None:
    stub.enqueue(
        {"text": "I would rather not"}, {"json": {"name": "zoom", "arguments": {"x": 1, "y": 2}}}
    )
    reply = await backend_for(stub.base_url).generate(
        [Message.user("go")], tools=[ZOOM_TOOL], params=REQUIRED
    )
    assert reply.tool_calls[0].name == "zoom" and reply.tool_calls[0].arguments == {"x": 1, "y": 2}
    assert reply.usage.attempts == 2
    assert reply.raw["medagent_native_response"]["choices"][0]["message"]["content"] == (
        "I would rather not"
    )
    native, fallback = stub.requests
    assert native["tool_choice"] == "required" and "response_format" not in native
    assert fallback["tool_choice"] == "none" and fallback["tools"] == native["tools"]
    schema = fallback["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["name"] == {"const": "zoom"}


async def test_native_mode_never_falls_back(stub: StubOpenAIServer) -> None:
    stub.enqueue({"text": "no call"})
    model = backend_for(stub.base_url, tool_mode="native")
    reply = await model.generate([Message.user("go")], tools=[ZOOM_TOOL], params=REQUIRED)
    assert reply.tool_calls == [] and len(stub.requests) == 1


async def test_schema_mode_asks_for_the_call_as_json_at_once(stub: StubOpenAIServer) -> None:
    stub.enqueue({"json": {"name": "zoom", "arguments": {"x": 5, "y": 6}}})
    model = backend_for(stub.base_url, tool_mode="schema")
    reply = await model.generate([Message.user("go")], tools=[ZOOM_TOOL], params=REQUIRED)
    assert reply.tool_calls[0].arguments == {"x": 5, "y": 6}
    assert len(stub.requests) == 1 and stub.requests[0]["tool_choice"] == "none"


def test_giving_up_builds_a_new_error_and_leaves_the_last_one_as_raised() -> None:
    from medagent.models._endpoints import Retryable

    model = OpenAIBackend("m", retry=RetryPolicy(max_retries=2))
    last = ModelResponseError("HTTP 503: busy", endpoint="http://x", status_code=503, body="b")
    error = model._gave_up(Retryable(last))
    assert error is not last and str(last) == "HTTP 503: busy"
    assert str(error) == "HTTP 503: busy (gave up after 3 attempts)"
    assert isinstance(error, ModelResponseError)
    assert (error.status_code, error.endpoint, error.body) == (503, "http://x", "b")
    assert model.usage_totals.failures == 1 and model.usage_totals.retries == 2
