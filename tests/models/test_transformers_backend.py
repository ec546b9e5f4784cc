"""The in-process transformers backend, run for real on the tiny random-weight LLaVA.

Random weights answer noise, so these tests check what the backend guarantees whatever the
model says: usage, schema-valid JSON through constrained decoding, forced tool calls,
reproducibility, several images, and one-line errors.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

import pytest
from PIL import Image
from pydantic import BaseModel, Field

from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError, InputError, ModelError
from medagent.models import GenerateParams, Message, ToolCall, ToolSpec, TransformersBackend
from medagent.models._reasoning import template_arguments
from medagent.models._structured import parse_structured
from medagent.models._wire import forced_tool_call_schema
from medagent.testing import build_tiny_vlm

pytestmark = [pytest.mark.slow, pytest.mark.hf]

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Finding(BaseModel):
    label: Literal["tumor", "normal"]
    confidence: int = Field(ge=0, le=100)


class ZoomArgs(BaseModel):
    x: int = Field(ge=0, le=1000)
    y: int = Field(ge=0, le=1000)
    level: Literal[0, 1, 2]


class Note(BaseModel):
    text: str = Field(max_length=12)


ZOOM = ToolSpec.from_model("zoom", "Look at a region more closely.", ZoomArgs)
NOTE = ToolSpec.from_model("note", "Write down an observation.", Note)


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"), seed=0)


@pytest.fixture
def backend(tiny_vlm: Path) -> TransformersBackend:
    return TransformersBackend(tiny_vlm, device="cpu", seed=0)


def slide_patch(color: str = "purple", size: tuple[int, int] = (300, 200)) -> Image.Image:
    return Image.new("RGB", size, color)


def ask(*parts: str | Image.Image) -> list[Message]:
    return [Message.system("You are a pathologist."), Message.user(*parts)]


async def test_image_and_text_give_text_and_usage(backend: TransformersBackend) -> None:
    reply = await backend.generate(
        ask(slide_patch(), "What is in this patch?"), params=GenerateParams(max_tokens=32)
    )

    assert reply.text.strip()
    assert reply.usage.prompt_tokens == reply.raw["prompt_tokens"] > 16  # 16 image tokens
    assert 0 < reply.usage.completion_tokens <= 32
    assert reply.usage.latency_s > 0
    assert reply.finish_reason in ("stop", "length")
    assert reply.model == backend.name
    assert backend.usage_totals.requests == 1
    assert backend.usage_totals.completion_tokens == reply.usage.completion_tokens


async def test_schema_constrains_decoding_to_a_valid_object(
    backend: TransformersBackend,
) -> None:
    messages = ask(slide_patch(), "Tumor or normal? Answer in JSON.")
    params = GenerateParams(max_tokens=48)

    free = await backend.generate(messages, params=params)
    constrained = await backend.generate(messages, schema=Finding, params=params)

    # Random weights do not write JSON on their own: validity comes from the grammar.
    assert parse_structured(free.text, Finding)[0] is None
    assert free.raw["grammar"] is False
    assert constrained.raw["grammar"] is True
    assert isinstance(constrained.parsed, Finding)
    assert constrained.parse_error is None
    assert constrained.finish_reason == "stop"


async def test_required_tool_choice_gives_a_tool_call(backend: TransformersBackend) -> None:
    reply = await backend.generate(
        ask(slide_patch(), "Zoom in on the tumor."),
        tools=[ZOOM, NOTE],
        params=GenerateParams(max_tokens=64, tool_choice="required"),
    )

    assert reply.text == ""
    [call] = reply.tool_calls
    assert call.name in {"zoom", "note"}
    assert isinstance(call.arguments, dict)
    schema = ZoomArgs if call.name == "zoom" else Note
    schema.model_validate(call.arguments)


async def test_named_tool_choice_calls_that_tool(backend: TransformersBackend) -> None:
    reply = await backend.generate(
        ask(slide_patch(), "Write a note."),
        tools=[ZOOM, NOTE],
        params=GenerateParams(max_tokens=64, tool_choice="note"),
    )

    [call] = reply.tool_calls
    assert call.name == "note"
    Note.model_validate(call.arguments)


async def test_unknown_named_tool_is_a_config_error(backend: TransformersBackend) -> None:
    with pytest.raises(ConfigError, match="'pan'"):
        await backend.generate(ask("hi"), tools=[ZOOM], params=GenerateParams(tool_choice="pan"))


async def test_same_seed_gives_the_same_sampled_text(tiny_vlm: Path) -> None:
    messages = ask(slide_patch(), "Describe.")

    async def sample(seed: int) -> str:
        params = GenerateParams(max_tokens=24, temperature=1.0, seed=seed)
        return (await TransformersBackend(tiny_vlm).generate(messages, params=params)).text

    first, again, other = await sample(7), await sample(7), await sample(8)
    assert first == again
    assert first != other


async def test_two_images_in_one_message(backend: TransformersBackend, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    ref = store.put(slide_patch("white", (2000, 1000)))
    messages = [Message.user("Compare", slide_patch("pink"), "with", ref)]

    reply = await backend.generate(messages, params=GenerateParams(max_tokens=8), artifacts=store)
    single = await backend.generate(
        [Message.user("Compare", slide_patch("pink"), "with")],
        params=GenerateParams(max_tokens=8),
    )

    assert reply.text.strip()
    assert reply.usage.prompt_tokens == single.usage.prompt_tokens + 16  # one token per patch


async def test_stop_string_ends_the_text_before_it(backend: TransformersBackend) -> None:
    messages = ask(slide_patch(), "Describe.")
    full = await backend.generate(messages, params=GenerateParams(max_tokens=24))
    stop = full.text[len(full.text) // 2 :][:3]

    reply = await backend.generate(messages, params=GenerateParams(max_tokens=24, stop=[stop]))

    assert stop not in reply.text
    assert full.text.startswith(reply.text)
    assert reply.finish_reason == "stop"


async def test_history_with_tool_calls_and_results(backend: TransformersBackend) -> None:
    call = ToolCall.from_raw("call_1", "zoom", {"x": 10, "y": 20, "level": 1})
    messages = [
        *ask(slide_patch(), "Find the tumor."),
        Message.assistant("", [call]),
        Message.tool("call_1", "zoomed to level 1"),
        Message.user(slide_patch("red"), "Here is the zoomed view."),
    ]

    reply = await backend.generate(
        messages, schema=Finding, tools=[ZOOM], params=GenerateParams(max_tokens=48)
    )

    assert isinstance(reply.parsed, Finding)


async def test_missing_model_folder_is_a_one_line_input_error(tmp_path: Path) -> None:
    backend = TransformersBackend(tmp_path / "no-such-model")
    with pytest.raises(InputError) as caught:
        await backend.generate(ask("hi"))

    message = str(caught.value)
    assert "\n" not in message
    assert "does not exist" in message
    assert caught.value.__cause__ is None


async def test_hub_id_while_offline_is_a_one_line_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError) as caught:
        TransformersBackend("medagent-tests/not-a-real-model").load()

    assert "\n" not in str(caught.value)
    assert "HF_HUB_OFFLINE" in str(caught.value)


async def test_aclose_drops_the_model_and_generate_reloads(
    backend: TransformersBackend,
) -> None:
    params = GenerateParams(max_tokens=4)
    before = await backend.generate(ask("hi"), params=params)
    await backend.aclose()
    after = await backend.generate(ask("hi"), params=params)
    assert after.text == before.text


def test_tool_call_schema_hoists_nested_definitions() -> None:
    class Point(BaseModel):
        x: int

    class PanArgs(BaseModel):
        to: Point

    schema = forced_tool_call_schema(
        [ToolSpec.from_model("pan", "Pan.", PanArgs), ZOOM], "required"
    )
    assert schema is not None

    assert "Point" in schema["$defs"]
    names = [branch["properties"]["name"]["const"] for branch in schema["anyOf"]]
    assert names == ["pan", "zoom"]
    assert "$defs" not in schema["anyOf"][0]["properties"]["arguments"]


async def test_model_without_chat_template_is_a_model_error(tiny_vlm: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-template"
    shutil.copytree(tiny_vlm, folder)
    (folder / "chat_template.jinja").unlink()
    backend = TransformersBackend(folder)

    with pytest.raises(ModelError, match="cannot take these messages"):
        await backend.generate(ask("hi"))
    assert backend.usage_totals.failures == 1


async def test_reasoning_effort_is_a_chat_template_argument(tiny_vlm: Path, tmp_path: Path) -> None:
    """In-process, the effort goes to the chat template by the name gpt-oss's reads; a
    template that reads it changes the prompt, one that does not is unchanged."""
    folder = tmp_path / "effort"
    shutil.copytree(tiny_vlm, folder)
    template = folder / "chat_template.jinja"
    template.write_text(
        "{%- if reasoning_effort is defined %}Reasoning: {{ reasoning_effort }}\n{% endif -%}"
        + template.read_text()
    )

    def prompt(backend: TransformersBackend, effort: str | None) -> str:
        backend.load()
        inputs = backend._model_inputs(ask("hi"), [], None, template_arguments(effort))
        return str(backend._processor.decode(inputs["input_ids"][0]))

    reading = TransformersBackend(folder, device="cpu", seed=0)
    assert prompt(reading, "high").startswith("Reasoning: high")
    assert "Reasoning:" not in prompt(reading, None)
    plain = TransformersBackend(tiny_vlm, device="cpu", seed=0)
    assert prompt(plain, "high") == prompt(plain, None)
    # Through generate: the backend's setting, then the request's, decide.
    seen: list[dict[str, object] | None] = []

    class Recording(TransformersBackend):
        def _model_inputs(self, *args: object, **kwargs: object) -> object:
            seen.append(args[3] if len(args) > 3 else None)  # type: ignore[arg-type]
            return super()._model_inputs(*args, **kwargs)  # type: ignore[arg-type]

    recording = Recording(folder, device="cpu", seed=0, reasoning_effort="low")
    await recording.generate(ask("hi"), params=GenerateParams(max_tokens=2))
    await recording.generate(
        ask("hi"), params=GenerateParams(max_tokens=2, reasoning_effort="minimal")
    )
    assert seen == [{"reasoning_effort": "low"}, {"reasoning_effort": "minimal"}]
