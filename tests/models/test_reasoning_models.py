"""Reasoning models behind the OpenAI API: the parameters each accepts, and their thinking.

The stub server plays GPT-5 (400 on ``max_tokens`` and on a temperature other than 1, with
OpenAI's own messages) and vLLM's reasoning parsers (``reasoning_content`` / ``reasoning`` in
replies and in streamed deltas, reasoning tokens in usage). Each test reads the request bodies
the server received.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from medagent.errors import ModelResponseError
from medagent.models import (
    CachedModel,
    GenerateParams,
    Message,
    OpenAIBackend,
    ParameterMemory,
    Reply,
    RetryPolicy,
    build_model,
    rules_for_model,
)
from medagent.models._params import ParameterRules, learn_from_refusal
from medagent.models._reasoning import split_think_block
from medagent.settings import Settings
from medagent.testing import OPENAI_REASONING_REFUSES, StubOpenAIServer

FAST_RETRY = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.05)
QUESTION = [Message.user("Is this tissue benign?")]


class Verdict(BaseModel):
    label: str


def backend(server: StubOpenAIServer, model: str = "stub-model", **kwargs: Any) -> OpenAIBackend:
    options: dict[str, Any] = {
        "retry": FAST_RETRY,
        "timeout_s": 5.0,
        "parameter_memory": ParameterMemory(),
    }
    options.update(kwargs)
    return OpenAIBackend(model, [server.base_url], **options)


async def last_reply(stream: Any) -> tuple[list[str], Reply]:
    pieces: list[str] = []
    reply: Reply | None = None
    async for item in stream:
        if isinstance(item, Reply):
            reply = item
        else:
            pieces.append(item)
    assert reply is not None
    return pieces, reply


@pytest.fixture
def gpt5_like() -> Iterator[StubOpenAIServer]:
    with StubOpenAIServer(refuses=OPENAI_REASONING_REFUSES, stream_chunk_chars=4) as server:
        yield server


# -- the capability table: no failed request at all for a known model -----------------------


@pytest.mark.parametrize(
    "name", ["gpt-5", "gpt-5-mini", "openai/gpt-5.1", "o1", "o3-mini", "o4-mini"]
)
async def test_known_reasoning_models_get_their_parameters_first_time(
    gpt5_like: StubOpenAIServer, name: str
) -> None:
    model = backend(gpt5_like, name)
    reply = await model.generate(QUESTION, params=GenerateParams(max_tokens=77, top_p=0.5))
    assert reply.text == "ok"
    assert len(gpt5_like.requests) == 1
    sent = gpt5_like.requests[0]
    assert sent["max_completion_tokens"] == 77
    assert not {"max_tokens", "temperature", "top_p"} & set(sent)
    assert model.usage_totals.parameter_refusals == 0


async def test_other_models_keep_the_classic_fields() -> None:
    with StubOpenAIServer() as server:
        await backend(server).generate(QUESTION, params=GenerateParams(max_tokens=33))
    sent = server.requests[0]
    assert sent["max_tokens"] == 33 and sent["temperature"] == 0.0
    assert "max_completion_tokens" not in sent and "reasoning_effort" not in sent


def test_table_matches_names_after_a_provider_prefix() -> None:
    assert rules_for_model("Azure/GPT-5-nano").renamed == {"max_tokens": "max_completion_tokens"}
    assert rules_for_model("gpt-4o").dropped == {"reasoning_effort"}
    assert rules_for_model("Qwen/Qwen3-VL-8B-Thinking") == ParameterRules()


# -- learning from a 400: an unknown model works, and is remembered -------------------------


async def test_unknown_model_learns_from_each_refusal_once_and_remembers(
    gpt5_like: StubOpenAIServer,
) -> None:
    memory = ParameterMemory()
    model = backend(gpt5_like, "future-reasoner", parameter_memory=memory)
    reply = await model.generate(QUESTION, params=GenerateParams(max_tokens=50))
    assert reply.text == "ok"
    bodies = gpt5_like.requests
    assert len(bodies) == 3  # max_tokens refused, then temperature 0.0 refused, then accepted
    assert "max_tokens" in bodies[0]
    assert bodies[1]["max_completion_tokens"] == 50 and bodies[1]["temperature"] == 0.0
    assert "temperature" not in bodies[2] and bodies[2]["max_completion_tokens"] == 50
    assert model.usage_totals.parameter_refusals == 2
    assert model.usage_totals.failures == 0 and model.usage_totals.retries == 0

    await model.generate(QUESTION, params=GenerateParams(max_tokens=50))
    assert len(bodies) == 4  # remembered: straight through
    # ... by any backend of this process for the same endpoint and model
    other = backend(gpt5_like, "future-reasoner", parameter_memory=memory)
    await other.generate(QUESTION)
    assert len(bodies) == 5 and "max_tokens" not in bodies[4]
    # ... and not for another model at the same endpoint
    await backend(gpt5_like, "another-model", parameter_memory=memory).generate(QUESTION)
    assert len(bodies) == 8


async def test_streaming_learns_too(gpt5_like: StubOpenAIServer) -> None:
    model = backend(gpt5_like, "future-reasoner")
    pieces, reply = await last_reply(model.generate_stream(QUESTION))
    assert "".join(pieces) == reply.text == "ok"
    assert [("max_tokens" in b, "temperature" in b) for b in gpt5_like.requests] == [
        (True, True),
        (False, True),
        (False, False),
    ]
    assert all(body["stream"] for body in gpt5_like.requests)


async def test_default_temperature_is_not_refused() -> None:
    with StubOpenAIServer(refuses=["temperature"]) as server:
        await backend(server).generate(QUESTION, params=GenerateParams(temperature=1.0))
    assert len(server.requests) == 1


async def test_a_refusal_of_the_substance_is_reported_not_dropped() -> None:
    with StubOpenAIServer(refuses=["response_format"]) as server:
        model = backend(server)
        with pytest.raises(ModelResponseError, match="response_format"):
            await model.generate(QUESTION, schema=Verdict)
    assert len(server.requests) == 1


def test_refusal_messages_are_read_as_openai_writes_them() -> None:
    body = {"max_tokens": 5, "temperature": 0.0, "reasoning_effort": "low"}
    rules = ParameterRules()
    renamed = learn_from_refusal(
        rules,
        body,
        "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
    )
    assert renamed is not None and renamed.apply(body)["max_completion_tokens"] == 5
    dropped = learn_from_refusal(
        rules,
        body,
        "Unsupported value: 'temperature' does not support 0.0 with this model. "
        "Only the default (1) value is supported.",
    )
    assert dropped is not None and "temperature" not in dropped.apply(body)
    by_param = learn_from_refusal(rules, body, "not supported", param="reasoning_effort")
    assert by_param is not None and "reasoning_effort" not in by_param.apply(body)
    assert learn_from_refusal(rules, body, "Invalid image URL") is None


# -- reasoning_effort --------------------------------------------------------------------


async def test_reasoning_effort_from_params_or_from_settings(
    gpt5_like: StubOpenAIServer,
) -> None:
    await backend(gpt5_like, "gpt-5").generate(
        QUESTION, params=GenerateParams(reasoning_effort="high")
    )
    settings = Settings(
        model="gpt-5", base_url=[gpt5_like.base_url], reasoning_effort="minimal", max_retries=0
    )
    from_settings = build_model(settings)
    assert isinstance(from_settings, OpenAIBackend)
    await from_settings.generate(QUESTION)
    await from_settings.generate(QUESTION, params=GenerateParams(reasoning_effort="low"))
    await from_settings.aclose()
    efforts = [body.get("reasoning_effort") for body in gpt5_like.requests]
    assert efforts == ["high", "minimal", "low"]


def test_reasoning_effort_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDAGENT_REASONING_EFFORT", "medium")
    assert Settings().reasoning_effort == "medium"


async def test_a_model_that_refuses_reasoning_effort_is_sent_none() -> None:
    with StubOpenAIServer(refuses=["reasoning_effort"]) as server:
        model = backend(server, "some-vlm", reasoning_effort="low")
        await model.generate(QUESTION)
        await model.generate(QUESTION)
    assert ["reasoning_effort" in b for b in server.requests] == [True, False, False]


# -- reasoning in replies ------------------------------------------------------------------

THOUGHT = "The glands are regular and the nuclei small, so benign."


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_is_kept_apart_from_the_answer(field: str) -> None:
    script = [{"json": {"label": "benign"}, "reasoning": THOUGHT}]
    with StubOpenAIServer(script, reasoning_field=field) as server:  # type: ignore[arg-type]
        model = backend(server)
        reply = await model.generate(QUESTION, schema=Verdict)
    assert reply.reasoning == THOUGHT
    assert reply.text == '{"label": "benign"}'
    assert isinstance(reply.parsed, Verdict) and reply.parsed.label == "benign"
    thought_words = len(THOUGHT.split())
    assert reply.usage.reasoning_tokens == thought_words
    assert reply.usage.completion_tokens == thought_words + 2
    assert model.usage_totals.reasoning_tokens == thought_words


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_streamed_reasoning_is_collected_not_shown(field: str) -> None:
    script = [{"text": "Benign glands.", "reasoning": THOUGHT}]
    with StubOpenAIServer(
        script,
        reasoning_field=field,  # type: ignore[arg-type]
        stream_chunk_chars=3,
    ) as server:
        model = backend(server)
        pieces, reply = await last_reply(model.generate_stream(QUESTION))
    assert "".join(pieces) == reply.text == "Benign glands."
    assert reply.reasoning == THOUGHT
    assert reply.usage.reasoning_tokens == len(THOUGHT.split())
    assert model.usage_totals.reasoning_tokens == len(THOUGHT.split())


async def test_a_think_block_in_the_text_is_reasoning_not_answer() -> None:
    script = [{"text": '<think>\nlooks regular\n</think>\n\n{"label": "benign"}'}]
    with StubOpenAIServer(script) as server:
        reply = await backend(server).generate(QUESTION, schema=Verdict)
    assert reply.reasoning == "looks regular"
    assert isinstance(reply.parsed, Verdict) and reply.text == '{"label": "benign"}'


def test_think_block_splitting() -> None:
    assert split_think_block("no thinking here") == ("no thinking here", "")
    assert split_think_block("<think>ran out of tok") == ("", "ran out of tok")
    assert split_think_block("opened in the prompt</think>answer") == (
        "answer",
        "opened in the prompt",
    )


@pytest.mark.parametrize("chunk", [1, 3, 50])
async def test_a_streamed_think_block_is_not_shown(chunk: int) -> None:
    script = [{"text": "<think>\nlooks regular\n</think>\n\nBenign glands."}]
    with StubOpenAIServer(script, stream_chunk_chars=chunk) as server:
        pieces, reply = await last_reply(backend(server).generate_stream(QUESTION))
    assert "".join(pieces) == reply.text == "Benign glands."
    assert reply.reasoning == "looks regular"


async def test_a_streamed_think_block_cut_short_shows_nothing() -> None:
    with StubOpenAIServer([{"text": "<think>still thinking"}], stream_chunk_chars=2) as server:
        pieces, reply = await last_reply(backend(server).generate_stream(QUESTION))
    assert pieces == [] and reply.text == "" and reply.reasoning == "still thinking"


async def test_streamed_text_that_only_looks_like_a_think_tag_is_shown() -> None:
    with StubOpenAIServer([{"text": "<thin ice"}], stream_chunk_chars=1) as server:
        pieces, reply = await last_reply(backend(server).generate_stream(QUESTION))
    assert "".join(pieces) == reply.text == "<thin ice"


async def test_the_cache_tells_efforts_apart_and_keeps_the_thinking(tmp_path: Path) -> None:
    script = [{"text": "benign", "reasoning": THOUGHT}, {"text": "benign, surely"}]
    with StubOpenAIServer(script) as server:
        path = tmp_path / "cache.sqlite"
        low = CachedModel(backend(server, reasoning_effort="low"), path)
        first = await low.generate(QUESTION)
        again = await low.generate(QUESTION)
        high = CachedModel(backend(server, reasoning_effort="high"), path)
        other = await high.generate(QUESTION)
        await low.aclose()
        await high.aclose()
    assert len(server.requests) == 2 and low.hits == 1
    assert again.reasoning == first.reasoning == THOUGHT and other.text == "benign, surely"
