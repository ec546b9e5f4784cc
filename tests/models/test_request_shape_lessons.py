"""Open models behind vLLM refuse request shapes, not only parameters: more images than the
server's ``--limit-mm-per-prompt``, or a system turn their chat template has no place for. The
stub server answers with vLLM's own 400 messages; the backend learns once, remembers, and each
later request is sent in the shape the server takes."""

from __future__ import annotations

import logging

import pytest
from PIL import Image

from medagent.errors import ModelResponseError
from medagent.models import (
    GenerateParams,
    Message,
    OpenAIBackend,
    ParameterMemory,
    RetryPolicy,
    kept_images,
    prune_images,
)
from medagent.models._params import ParameterRules, learn_from_refusal
from medagent.testing import StubOpenAIServer
from model_support import images_in

RED, GREEN, BLUE = (Image.new("RGB", (32, 32), c) for c in ("red", "green", "blue"))
PARAMS = GenerateParams(max_tokens=8)


def backend(server: StubOpenAIServer, memory: ParameterMemory | None = None) -> OpenAIBackend:
    return OpenAIBackend(
        "medgemma-4b-it",
        [server.base_url],
        retry=RetryPolicy(max_retries=0),
        timeout_s=5.0,
        parameter_memory=memory or ParameterMemory(),
    )


@pytest.mark.parametrize(
    ("count", "keep", "kept"),
    [
        (3, 5, [0, 1, 2]),
        (4, 1, [3]),  # one image: the latest, what the model just asked to see
        (4, 2, [0, 3]),  # the overview and the latest
        (5, 3, [0, 3, 4]),
        (2, 0, []),
    ],
)
def test_kept_images(count: int, keep: int, kept: list[int]) -> None:
    assert kept_images(count, keep) == kept


def test_prune_images_with_room_for_one_keeps_the_latest() -> None:
    messages = [Message.user("overview", RED), Message.user("zoom 1", GREEN)]
    pruned = prune_images(messages, 1)
    assert pruned[0].images == [] and "removed" in pruned[0].text
    assert len(pruned[1].images) == 1


async def test_a_server_limited_to_one_image_gets_the_latest_from_then_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conversation = [
        Message.user("Overview.", RED),
        Message.assistant("zoom"),
        Message.user("Zoom 1.", GREEN),
        Message.assistant("zoom"),
        Message.user("Zoom 2.", BLUE),
    ]
    with StubOpenAIServer(max_images=1) as server:
        model = backend(server)
        with caplog.at_level(logging.WARNING, logger="medagent.models"):
            reply = await model.generate(conversation, params=PARAMS)
            again = await model.generate(conversation, params=PARAMS)
    assert reply.text and again.text
    refused, accepted, second = server.requests
    assert len(images_in(refused)) == 3
    assert images_in(accepted) == images_in(refused)[-1:]  # the latest image, blue
    assert images_in(second) == images_in(accepted)  # remembered: no refusal the second time
    assert "at most 1 image(s) per request" in caplog.text
    notes = [
        part["text"]
        for message in accepted["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "text" and "left out" in part["text"]
    ]
    assert len(notes) == 2
    assert model.usage_totals.parameter_refusals == 1


async def test_with_room_for_two_the_overview_stays() -> None:
    conversation = [Message.user("Overview.", RED), Message.user("Zooms.", GREEN, BLUE)]
    with StubOpenAIServer(max_images=2) as server:
        await backend(server).generate(conversation, params=PARAMS)
    first, kept = (images_in(body) for body in server.requests)
    assert kept == [first[0], first[2]]


async def test_a_refused_system_turn_opens_the_first_user_turn() -> None:
    conversation = [
        Message.system("You are a pathologist."),
        Message.user("Describe the tissue.", RED),
    ]
    with StubOpenAIServer(system_role=False) as server:
        model = backend(server)
        await model.generate(conversation, params=PARAMS)
        await model.generate(conversation, params=PARAMS)
    refused, accepted, second = server.requests
    assert [m["role"] for m in refused["messages"]] == ["system", "user"]
    assert [m["role"] for m in accepted["messages"]] == ["user"]
    first_part = accepted["messages"][0]["content"][0]
    assert first_part["text"].startswith("You are a pathologist.")
    assert images_in(accepted) == images_in(refused)
    assert second["messages"] == accepted["messages"]


async def test_streamed_requests_learn_the_same_lessons() -> None:
    conversation = [Message.system("Be brief."), Message.user("Two.", RED, GREEN)]
    with StubOpenAIServer(max_images=1, system_role=False, stream_chunk_chars=2) as server:
        model = backend(server)
        pieces = [p async for p in model.generate_stream(conversation, params=PARAMS)]
    assert isinstance(pieces[-1], object) and len(server.requests) == 3
    last = server.requests[-1]
    assert [m["role"] for m in last["messages"]] == ["user"] and len(images_in(last)) == 1


async def test_lessons_are_kept_per_endpoint_and_model() -> None:
    memory = ParameterMemory()
    with StubOpenAIServer(max_images=1) as limited, StubOpenAIServer() as roomy:
        await backend(limited, memory).generate([Message.user("a", RED, GREEN)], params=PARAMS)
        await backend(roomy, memory).generate([Message.user("a", RED, GREEN)], params=PARAMS)
    assert len(images_in(roomy.requests[0])) == 2


def test_a_limit_the_request_already_meets_teaches_nothing() -> None:
    body = {"messages": [{"role": "user", "content": "no images"}]}
    message = "At most 1 image(s) may be provided in one prompt."
    assert learn_from_refusal(ParameterRules(), body, message) is None
    no_system = {"messages": [{"role": "user", "content": "hi"}]}
    assert learn_from_refusal(ParameterRules(), no_system, "System role not supported") is None


async def test_a_server_that_takes_no_image_at_all_is_reported() -> None:
    with (
        StubOpenAIServer(max_images=0) as server,
        pytest.raises(ModelResponseError, match="At most 0 image"),
    ):
        await backend(server).generate([Message.user("a", RED)], params=PARAMS)
