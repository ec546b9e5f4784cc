"""Routing over several endpoints: least-loaded, conversation affinity, per-endpoint limits."""

from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter
from pathlib import Path

import pytest

from cli_support import medagent
from eval_support import stub_run_args, vqa_items
from medagent.models import Message, OpenAIBackend, RetryPolicy
from medagent.models._endpoints import EndpointPool, affinity_key
from medagent.settings import Settings
from medagent.testing import StubOpenAIServer

FAST_RETRY = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.05)
LONG = 60.0
"""Seconds a test waits for work that takes well under one: a loaded machine, not a hang."""


def backend_for(*urls: str, **kwargs: object) -> OpenAIBackend:
    options: dict[str, object] = {"retry": FAST_RETRY, "timeout_s": 30.0}
    options.update(kwargs)
    return OpenAIBackend("stub-model", list(urls), **options)  # type: ignore[arg-type]


def opening(conversation: int) -> list[Message]:
    return [Message.system("You read slides."), Message.user(f"Case {conversation}: organ?")]


async def converse(
    model: OpenAIBackend, conversation: int, turns: int, think_s: float = 0.0
) -> list[str]:
    """A conversation of ``turns`` requests, each repeating the ones before, ``think_s``
    between them (tool work): the endpoints that answered."""
    messages = opening(conversation)
    endpoints = []
    for turn in range(turns):
        reply = await model.generate(messages)
        assert reply.endpoint is not None
        endpoints.append(reply.endpoint)
        await asyncio.sleep(think_s)
        messages = [*messages, Message.assistant(reply.text), Message.user(f"zoom {turn}")]
    return endpoints


# -- the key -------------------------------------------------------------------------------


def test_the_key_is_the_opening_up_to_the_first_user_turn() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}
    system = {"role": "system", "content": "You read slides."}
    user = {"role": "user", "content": [{"type": "text", "text": "organ?"}, image]}
    key = affinity_key([system, user])
    later = [
        system,
        user,
        {"role": "assistant", "content": "zoom"},
        {"role": "user", "content": "x"},
    ]
    assert affinity_key(later) == key
    other_image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAB"}}
    assert affinity_key([system, {**user, "content": [user["content"][0], other_image]}]) != key
    assert affinity_key([{**system, "content": "You read X-rays."}, user]) != key
    assert affinity_key([user]) != key


# -- the pool on its own ----------------------------------------------------------------------


def test_a_saturated_pin_moves_only_where_a_slot_is_free() -> None:
    pool = EndpointPool(["http://a/v1", "http://b/v1"], concurrency=1)
    first, second = pool.endpoints
    with pool.lease("k") as pinned:
        assert pinned is first
        # Saturated while b is free: the conversation moves, and its key follows it.
        with pool.lease("k") as moved:
            assert moved is second
            # Both saturated: stay on the remembered one rather than move for nothing.
            assert pool.pick("k") is second
    assert pool.pick("k") is second


def test_the_pins_are_bounded() -> None:
    pool = EndpointPool(["http://a/v1", "http://b/v1"], affinity_size=3)
    for key in "abcde":
        pool.pick(key)
    assert list(pool._pins) == ["c", "d", "e"]


# -- over HTTP ------------------------------------------------------------------------------


async def test_each_conversation_stays_on_one_endpoint_and_the_load_is_even() -> None:
    with StubOpenAIServer(latency_s=0.02) as a, StubOpenAIServer(latency_s=0.02) as b:
        model = backend_for(a.base_url, b.base_url)
        runs = await asyncio.wait_for(
            asyncio.gather(*(converse(model, c, 4, 0.03 * (c % 3)) for c in range(10))), LONG
        )
        await model.aclose()
    for endpoints in runs:
        assert len(set(endpoints)) == 1, endpoints
    per_endpoint = Counter(endpoints[0] for endpoints in runs)
    assert sorted(per_endpoint.values()) == [5, 5]
    assert len(a.requests) == len(b.requests) == 20


async def test_the_fast_endpoint_takes_more() -> None:
    with StubOpenAIServer(latency_s=0.3) as slow, StubOpenAIServer() as fast:
        model = backend_for(slow.base_url, fast.base_url)

        async def worker(number: int) -> None:
            for i in range(8):
                await model.generate([Message.user(f"question {number}-{i}")])

        await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(3))), LONG)
        await model.aclose()
    assert len(slow.requests) + len(fast.requests) == 24
    assert len(fast.requests) >= 2 * len(slow.requests), (len(fast.requests), len(slow.requests))


async def test_a_failing_endpoint_cools_down_and_its_conversation_moves() -> None:
    with StubOpenAIServer() as a, StubOpenAIServer() as b:
        model = backend_for(a.base_url, b.base_url, failure_threshold=2, cooldown_s=60)
        endpoints = await converse(model, 0, turns=2)
        assert endpoints == [a.base_url, a.base_url]
        a.enqueue({"fault": "500"}, {"fault": "500"})
        moved = await converse(model, 0, turns=3)
        # The failed attempt is retried on b; the conversation stays there.
        assert moved == [b.base_url] * 3
        assert model.usage_totals.retries == 1
        # a failed once: not yet cooling down, so a new conversation may still go there.
        assert model.pool.endpoints[0].consecutive_failures == 1
        await converse(model, 1, turns=1)  # a new conversation, a's second failure: cooling
        assert model.pool.endpoints[0].skip_until > 0
        asked_a = len(a.requests)
        assert set(await converse(model, 2, turns=2)) == {b.base_url}
        assert len(a.requests) == asked_a  # left alone while it cools down
        await model.aclose()


async def test_requests_per_endpoint_caps_the_server_not_the_items() -> None:
    """8 items in flight, 2 requests per endpoint: never more than 2 open on the server, and
    items busy with something other than the model hold no slot (else this deadlocks)."""
    with StubOpenAIServer(latency_s=0.05) as server:
        model = backend_for(server.base_url, concurrency=2)
        others_done = asyncio.Event()
        finished = 0

        async def item(number: int, stuck: bool) -> None:
            nonlocal finished
            await model.generate([Message.user(f"item {number} step 1")])
            if stuck:  # a slow non-model step (a big tile read) until everyone else is done
                await others_done.wait()
            for step in range(2, 5):
                await model.generate([Message.user(f"item {number} step {step}")])
            if not stuck:
                finished += 1
                if finished == 6:
                    others_done.set()

        items = [item(n, stuck=n < 2) for n in range(8)]
        await asyncio.wait_for(asyncio.gather(*items), LONG)
        await model.aclose()
    assert server.max_in_flight == 2
    assert len(server.requests) == 32


def test_the_old_environment_name_still_sets_requests_per_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEDAGENT_CONCURRENCY", "3")
    assert Settings().requests_per_endpoint == 3
    monkeypatch.setenv("MEDAGENT_REQUESTS_PER_ENDPOINT", "5")
    assert Settings().requests_per_endpoint == 5


def test_eval_run_requests_per_endpoint_flag(tmp_path: Path) -> None:
    data = vqa_items(tmp_path / "data", 12)
    args = stub_run_args(data, tmp_path / "run", concurrency=8)
    with StubOpenAIServer(default_text='{"answer": "yes"}', latency_s=0.2) as server:
        done = medagent(*args, "--requests-per-endpoint", "2", "--base-url", server.base_url)
        assert done.returncode == 0, done.stdout + done.stderr
    assert server.max_in_flight == 2
    bad = medagent(*args, "--base-url", server.base_url, env={"MEDAGENT_CONCURRENCY": "0"})
    assert bad.returncode == 2
    assert "MEDAGENT_CONCURRENCY" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


def test_the_key_covers_all_of_a_200_kb_image() -> None:
    """Images that differ only in their last bytes are two openings, two keys."""
    url = "data:image/jpeg;base64," + base64.b64encode(os.urandom(150_000)).decode()
    user = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
    changed = url[:-8] + "AAAAAAAA"
    other = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": changed}}]}
    assert affinity_key([user]) != affinity_key([other])
