"""Choosing a backend from settings, and the blocking wrapper for SDK users."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from medagent.errors import ConfigError
from medagent.models import (
    Message,
    OpenAIBackend,
    ScriptedModel,
    SyncChatModel,
    TransformersBackend,
    VLLMBackend,
    build_model,
)
from medagent.settings import Settings
from medagent.testing import StubOpenAIServer


def test_each_backend_name_builds_its_backend(tmp_path: Path) -> None:
    script = tmp_path / "s.jsonl"
    script.write_text('{"text": "hi"}\n')
    openai = build_model(Settings(model="m", base_url=["http://a:1/v1", "http://b:2/v1"]))
    assert isinstance(openai, OpenAIBackend)
    assert [e.url for e in openai.pool.endpoints] == ["http://a:1/v1", "http://b:2/v1"]
    assert isinstance(build_model(Settings(backend="scripted", script=str(script))), ScriptedModel)
    assert isinstance(build_model(Settings(backend="transformers", model="x")), TransformersBackend)
    assert isinstance(build_model(Settings(backend="vllm", model="x")), VLLMBackend)


@pytest.mark.parametrize("backend", ["openai", "vllm", "transformers"])
def test_image_cap_is_none_unless_set(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    uncapped = build_model(Settings(backend=backend, model="m"))  # type: ignore[arg-type]
    assert uncapped.image_long_side is None  # type: ignore[attr-defined]
    monkeypatch.setenv("MEDAGENT_IMAGE_LONG_SIDE", "896")
    capped = build_model(Settings(backend=backend, model="m"))  # type: ignore[arg-type]
    assert capped.image_long_side == 896  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["openai", "vllm", "transformers"])
def test_model_is_required(backend: str) -> None:
    with pytest.raises(ConfigError, match=f"the {backend} backend needs --model"):
        build_model(Settings(backend=backend))  # type: ignore[arg-type]


def test_sync_wrapper_blocks_and_keeps_one_connection_pool() -> None:
    with (
        StubOpenAIServer([{"text": "one"}, {"text": "two"}]) as server,
        SyncChatModel(OpenAIBackend("m", [server.base_url])) as model,
    ):
        assert model.generate([Message.user("a")]).text == "one"
        assert model.generate([Message.user("b")]).text == "two"


async def test_sync_wrapper_works_inside_a_running_event_loop() -> None:
    # As in a Jupyter notebook, where the main thread already runs a loop.
    assert asyncio.get_running_loop().is_running()
    with SyncChatModel(ScriptedModel([{"text": "from a notebook"}])) as model:
        assert model.generate([Message.user("x")]).text == "from a notebook"
