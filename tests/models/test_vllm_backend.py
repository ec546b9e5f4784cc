"""The in-process vLLM backend's glue, with a fake ``vllm`` module standing in for the engine.

The real engine needs a GPU; ``scripts/gpu_check.sh`` runs it there. These tests check what
this project owns: the messages and sampling parameters handed to ``LLM.chat`` and the reply
built from its output.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest
from PIL import Image
from pydantic import BaseModel

from medagent.errors import DependencyMissingError
from medagent.models import GenerateParams, Message, ToolSpec, VLLMBackend
from medagent.models._vllm import vllm_sampling_kwargs


class Finding(BaseModel):
    label: Literal["tumor", "normal"]


@dataclass
class FakeCompletion:
    text: str
    token_ids: list[int]
    finish_reason: str = "stop"


@dataclass
class FakeOutput:
    outputs: list[FakeCompletion]
    prompt_token_ids: list[int] = field(default_factory=lambda: [1] * 40)


class FakeLLM:
    """Records what the backend hands vLLM and answers with a queued text."""

    answers: ClassVar[list[str]] = []
    calls: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.engine_kwargs = kwargs

    def chat(
        self,
        conversations: Any,
        sampling: Any,
        use_tqdm: bool,
        tools: Any,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        FakeLLM.calls.append(
            {
                "conversations": conversations,
                "sampling": sampling,
                "tools": tools,
                "engine": self.engine_kwargs,
                "template": chat_template_kwargs,
            }
        )
        return [FakeOutput([FakeCompletion(FakeLLM.answers.pop(0), [1, 2, 3])])]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> type[FakeLLM]:
    module = types.ModuleType("vllm")
    sampling_module = types.ModuleType("vllm.sampling_params")

    def sampling_params(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    def structured_outputs_params(**kwargs: Any) -> dict[str, Any]:
        return {"structured": kwargs}

    module.LLM = FakeLLM  # type: ignore[attr-defined]
    module.SamplingParams = sampling_params  # type: ignore[attr-defined]
    sampling_module.StructuredOutputsParams = structured_outputs_params  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling_module)
    FakeLLM.answers, FakeLLM.calls = [], []
    return FakeLLM


def test_sampling_kwargs_carry_schema_or_forced_tool() -> None:
    params = GenerateParams(max_tokens=7, seed=3, stop=["###"])
    plain = vllm_sampling_kwargs(params, None, None)
    assert plain == {"max_tokens": 7, "temperature": 0.0, "seed": 3, "stop": ["###"]}
    assert vllm_sampling_kwargs(params, Finding, None)["json"] == Finding.model_json_schema()
    tool = ToolSpec(name="zoom", description="", parameters={"type": "object"})
    assert "json" not in vllm_sampling_kwargs(params, None, [tool])
    forced = vllm_sampling_kwargs(GenerateParams(tool_choice="required"), None, [tool])
    assert forced["json"]["properties"]["name"] == {"const": "zoom"}


async def test_generate_hands_openai_messages_to_llm_chat(fake_vllm: type[FakeLLM]) -> None:
    fake_vllm.answers = ['{"label": "tumor"}']
    model = VLLMBackend("/models/tiny", image_long_side=64, max_images_per_prompt=4)
    image = Image.new("RGB", (256, 128), "red")
    reply = await model.generate([Message.user("classify", image)], schema=Finding)
    assert reply.parsed == Finding(label="tumor")
    assert reply.usage.prompt_tokens == 40 and reply.usage.completion_tokens == 3
    call = fake_vllm.calls[0]
    assert call["engine"]["limit_mm_per_prompt"] == {"image": 4}
    parts = call["conversations"][0][0]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert call["sampling"]["structured_outputs"] == {
        "structured": {"json": Finding.model_json_schema()}
    }


async def test_forced_tool_call_comes_back_as_a_tool_call(fake_vllm: type[FakeLLM]) -> None:
    fake_vllm.answers = ['{"name": "zoom", "arguments": {"x": 5}}']
    tool = ToolSpec(name="zoom", description="zoom in", parameters={"type": "object"})
    reply = await VLLMBackend("m").generate(
        [Message.user("go")], tools=[tool], params=GenerateParams(tool_choice="required")
    )
    assert reply.text == ""
    assert reply.tool_calls[0].name == "zoom" and reply.tool_calls[0].arguments == {"x": 5}
    assert fake_vllm.calls[0]["tools"][0]["function"]["name"] == "zoom"


async def test_missing_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(DependencyMissingError, match=r"pip install 'medagent\[vllm\]'"):
        await VLLMBackend("m").generate([Message.user("x")])


async def test_reasoning_effort_reaches_the_chat_template(fake_vllm: type[FakeLLM]) -> None:
    fake_vllm.answers = ["a", "b", "c"]
    model = VLLMBackend("m", reasoning_effort="low")
    await model.generate([Message.user("x")])
    await model.generate([Message.user("x")], params=GenerateParams(reasoning_effort="high"))
    await VLLMBackend("m").generate([Message.user("x")])
    templates = [call["template"] for call in fake_vllm.calls]
    assert templates == [{"reasoning_effort": "low"}, {"reasoning_effort": "high"}, None]
