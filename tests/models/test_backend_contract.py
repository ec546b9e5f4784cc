"""One contract, every ``ChatModel``: the same checks over each backend, as httpx runs its
transport tests.

A ``Harness`` wraps a backend with two controls: ``script`` queues the next replies (ignored
by the random-weight tiny VLM, whose answers are only checked for shape) and ``fail`` makes
the next request fail the way that backend fails. Backends: ``OpenAIBackend`` on an httpx
``MockTransport``, ``ScriptedModel``, ``CachedModel`` over a scripted model, and the in-process
``TransformersBackend`` with the tiny VLM (slow, needs the hf extra).
"""

from __future__ import annotations

import base64
import io
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from PIL import Image
from pydantic import BaseModel, Field

from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError, ModelError
from medagent.models import (
    RAW_IMAGE_LONG_SIDE,
    CachedModel,
    ChatModel,
    GenerateParams,
    Message,
    OpenAIBackend,
    RetryPolicy,
    ScriptedModel,
    SyncChatModel,
    ToolSpec,
    image_cap,
)
from medagent.models._transformers import to_template_messages
from medagent.models._wire import to_openai_messages
from model_support import chat_completion


class Finding(BaseModel):
    label: Literal["tumor", "normal"]
    confidence: int = Field(ge=0, le=100)


class ZoomArgs(BaseModel):
    x: int = Field(ge=0, le=1000)
    y: int = Field(ge=0, le=1000)


ZOOM = ToolSpec.from_model("zoom", "Look at a region more closely.", ZoomArgs)


@dataclass
class Harness:
    """A backend under test and how to steer it."""

    model: ChatModel
    scripted: bool = True  # replies follow ``script`` (False: random weights)
    reads_images: bool = True  # resolves image parts (the scripted double never does)
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    break_next: Callable[[], None] | None = None

    def script(self, *replies: dict[str, Any]) -> None:
        self.queue.extend(replies)

    def fail(self) -> None:
        if self.break_next is not None:
            self.break_next()
        else:
            self.queue.append({"error": "server_error"})


def openai_harness(tmp_path: Path) -> Harness:
    queue: deque[dict[str, Any]] = deque()
    model = OpenAIBackend(
        "mock",
        ["http://mock.invalid/v1"],
        retry=RetryPolicy(max_retries=0),
        transport=httpx.MockTransport(lambda request: chat_completion(queue.popleft())),
    )
    return Harness(model=model, queue=queue)


def scripted_harness(tmp_path: Path) -> Harness:
    queue: deque[dict[str, Any]] = deque()
    model = ScriptedModel(responder=lambda request: queue.popleft())
    return Harness(model=model, reads_images=False, queue=queue)


def cached_harness(tmp_path: Path) -> Harness:
    harness = scripted_harness(tmp_path)
    harness.model = CachedModel(harness.model, tmp_path / "cache.sqlite")
    return harness


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from medagent.testing import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"), seed=0)


@pytest.fixture(
    params=[
        "openai",
        "scripted",
        "cached",
        pytest.param("transformers", marks=[pytest.mark.slow, pytest.mark.hf]),
    ]
)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "transformers":
        from medagent.models import TransformersBackend

        backend = TransformersBackend(request.getfixturevalue("tiny_vlm"), device="cpu", seed=0)

        def break_next() -> None:
            backend.load()

            def out_of_memory(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")

            backend._model.generate = out_of_memory

        made = Harness(model=backend, scripted=False, break_next=break_next)
    else:
        build = {"openai": openai_harness, "scripted": scripted_harness, "cached": cached_harness}
        made = build[request.param](tmp_path)
    yield made
    await made.model.aclose()


def ask(*parts: Any) -> list[Message]:
    return [Message.system("You are a pathologist."), Message.user(*parts)]


async def test_text_reply(harness: Harness) -> None:
    harness.script({"text": "ready"})
    reply = await harness.model.generate(
        ask("Reply with one word: ready"), params=GenerateParams(max_tokens=16)
    )
    assert reply.text == "ready" if harness.scripted else reply.text.strip()
    assert reply.finish_reason in ("stop", "length")
    assert reply.tool_calls == [] and reply.parsed is None
    assert reply.as_message().role == "assistant"


async def test_schema_gives_a_parsed_object(harness: Harness) -> None:
    harness.script({"json": {"label": "tumor", "confidence": 80}})
    reply = await harness.model.generate(
        ask("Tumor or normal? Answer in JSON."),
        schema=Finding,
        params=GenerateParams(max_tokens=48),
    )
    assert isinstance(reply.parsed, Finding) and reply.parse_error is None
    if harness.scripted:
        assert reply.parsed == Finding(label="tumor", confidence=80)


async def test_required_tool_choice_gives_a_tool_call(harness: Harness) -> None:
    harness.script({"tool_calls": [{"name": "zoom", "arguments": {"x": 1, "y": 2}}]})
    reply = await harness.model.generate(
        ask("Zoom in on the tumour."),
        tools=[ZOOM],
        params=GenerateParams(max_tokens=64, tool_choice="required"),
    )
    [call] = reply.tool_calls
    assert call.name == "zoom"
    arguments = ZoomArgs.model_validate(call.arguments)
    if harness.scripted:
        assert arguments == ZoomArgs(x=1, y=2)


async def test_usage_is_counted(harness: Harness) -> None:
    harness.script({"text": "one"}, {"text": "two"})
    params = GenerateParams(max_tokens=8)
    first = await harness.model.generate(ask("first question"), params=params)
    second = await harness.model.generate(ask("second question"), params=params)
    totals = harness.model.usage_totals
    assert totals.requests == 2 and totals.failures == 0
    assert first.usage.prompt_tokens > 0 and first.usage.attempts == 1
    assert totals.prompt_tokens == first.usage.prompt_tokens + second.usage.prompt_tokens
    assert totals.completion_tokens == (
        first.usage.completion_tokens + second.usage.completion_tokens
    )


async def test_images_are_given_by_artifact(harness: Harness, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    ref = store.put(Image.new("RGB", (300, 200), "purple"), kind="zoom")
    harness.script({"text": "purple"}, {"text": "purple"})
    reply = await harness.model.generate(
        ask(ref, "What colour is this patch?"),
        params=GenerateParams(max_tokens=8),
        artifacts=store,
    )
    assert reply.text == "purple" if harness.scripted else reply.text.strip()
    if harness.reads_images:
        with pytest.raises(ConfigError, match="no artifact store was given"):
            await harness.model.generate(ask(ref, "again"), params=GenerateParams(max_tokens=8))


async def test_failure_is_a_one_line_model_error(harness: Harness) -> None:
    harness.fail()
    with pytest.raises(ModelError) as caught:
        await harness.model.generate(ask("anything"), params=GenerateParams(max_tokens=8))
    assert "\n" not in str(caught.value)
    assert harness.model.usage_totals.failures == 1
    assert harness.model.usage_totals.requests == 0


async def test_aclose_can_be_called_twice(harness: Harness) -> None:
    harness.script({"text": "ok"})
    await harness.model.generate(ask("hello"), params=GenerateParams(max_tokens=4))
    await harness.model.aclose()
    await harness.model.aclose()


def test_no_backend_caps_images_unless_told(harness: Harness) -> None:
    assert image_cap(harness.model) is None


# -- what size an image goes out at: the same rule on every wire ----------------------------


def _openai_sizes(messages: list[Message], store: ArtifactStore, cap: int | None) -> list:
    sizes = []
    for item in to_openai_messages(messages, store, cap):
        for part in item["content"] if isinstance(item["content"], list) else []:
            if part["type"] == "image_url":
                payload = part["image_url"]["url"].split(",", 1)[1]
                sizes.append(Image.open(io.BytesIO(base64.b64decode(payload))).size)
    return sizes


def _template_sizes(messages: list[Message], store: ArtifactStore, cap: int | None) -> list:
    return [image.size for image in to_template_messages(messages, store, cap)[1]]


@pytest.mark.parametrize("sizes_sent", [_openai_sizes, _template_sizes])
@pytest.mark.parametrize(
    ("cap", "rendered", "raw"),
    [(None, (2000, 1500), (1024, 512)), (800, (800, 600), (800, 400))],
)
def test_rendered_views_go_as_rendered_raw_images_are_bounded(
    tmp_path: Path,
    sizes_sent: Callable[[list[Message], ArtifactStore, int | None], list],
    cap: int | None,
    rendered: tuple[int, int],
    raw: tuple[int, int],
) -> None:
    store = ArtifactStore(tmp_path)
    view = store.put(Image.new("RGB", (2000, 1500), "purple"), kind="zoom")
    photo = Image.new("RGB", (3000, 1500), "white")
    assert RAW_IMAGE_LONG_SIDE == 1024
    assert sizes_sent([Message.user("look", view, photo)], store, cap) == [rendered, raw]


def test_wrappers_expose_the_wrapped_cap(tmp_path: Path) -> None:
    inner = ScriptedModel([], image_long_side=768)
    assert image_cap(inner) == 768
    assert image_cap(CachedModel(inner, tmp_path / "cache.sqlite")) == 768
    sync = SyncChatModel(inner)
    try:
        assert image_cap(sync) == 768
    finally:
        sync.close()
    assert image_cap(OpenAIBackend("m", image_long_side=512)) == 512
    assert image_cap(OpenAIBackend("m")) is None
