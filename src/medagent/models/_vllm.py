"""vLLM in-process (``LLM.chat``): for a GPU machine without a separate server.

The request is built in the same OpenAI message format the HTTP backend sends, so both paths
see identical prompts; only the transport differs. vLLM is imported on first use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from medagent.artifacts import ArtifactStore
from medagent.errors import DependencyMissingError, ModelError
from medagent.models._messages import Message, ToolSpec
from medagent.models._reasoning import split_think_block, template_arguments
from medagent.models._structured import parse_structured
from medagent.models._wire import (
    forced_tool_call_schema,
    split_tool_calls,
    to_openai_messages,
    to_openai_tools,
)
from medagent.models.base import GenerateParams, ReasoningEffort, Reply, Usage, UsageTotals

__all__ = ["VLLMBackend", "vllm_sampling_kwargs"]


def vllm_sampling_kwargs(
    params: GenerateParams,
    schema: type[BaseModel] | None,
    tools: Sequence[ToolSpec] | None,
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams``; ``json`` is the structured-output schema.

    A schema wins over a forced tool call; ``tool_choice`` "required" or a tool name is
    emulated with a JSON schema, which vLLM enforces whatever the model's tool template.
    """
    kwargs: dict[str, Any] = {"max_tokens": params.max_tokens, "temperature": params.temperature}
    if params.top_p is not None:
        kwargs["top_p"] = params.top_p
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if schema is not None:
        kwargs["json"] = schema.model_json_schema()
    elif tools:
        forced = forced_tool_call_schema(tools, params.tool_choice)
        if forced is not None:
            kwargs["json"] = forced
    return kwargs


class VLLMBackend:
    """An in-process vLLM engine. Needs the ``[vllm]`` extra and, in practice, a GPU.

    ``image_long_side`` caps the images sent (``None``: no cap; raw images are bounded anyway).
    """

    def __init__(
        self,
        model: str,
        *,
        image_long_side: int | None = None,
        max_model_len: int | None = None,
        max_images_per_prompt: int = 8,
        seed: int = 0,
        engine_kwargs: dict[str, Any] | None = None,
        reasoning_effort: ReasoningEffort | None = None,
    ) -> None:
        self.name = model
        self.usage_totals = UsageTotals()
        self.image_long_side = image_long_side
        self.reasoning_effort = reasoning_effort
        self._engine_kwargs: dict[str, Any] = {
            "model": model,
            "seed": seed,
            "limit_mm_per_prompt": {"image": max_images_per_prompt},
            **({"max_model_len": max_model_len} if max_model_len else {}),
            **(engine_kwargs or {}),
        }
        self._llm: Any = None
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """Start the engine (slow: loads weights and compiles)."""
        if self._llm is not None:
            return
        try:
            import vllm
        except ImportError:
            raise DependencyMissingError("vllm", "vllm", "The in-process vllm backend") from None
        try:
            self._llm = vllm.LLM(**self._engine_kwargs)
        except Exception as exc:  # vLLM raises many types; report one line with the cause
            raise ModelError(
                f"vLLM could not start model {self.name!r}: {type(exc).__name__}: {exc}; "
                "check the model path and that a GPU is visible (nvidia-smi)"
            ) from exc

    async def aclose(self) -> None:
        self._llm = None

    def _sampling_params(self, kwargs: dict[str, Any]) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        schema = kwargs.pop("json", None)
        if schema is not None:
            kwargs["structured_outputs"] = StructuredOutputsParams(json=schema)
        return SamplingParams(**kwargs)

    def _run(
        self,
        conversation: list[dict[str, Any]],
        kwargs: dict[str, Any],
        tools: list[dict[str, Any]] | None,
        template: dict[str, Any],
    ) -> Any:
        self.load()
        sampling = self._sampling_params(kwargs)
        extra = {"chat_template_kwargs": template} if template else {}
        outputs = self._llm.chat([conversation], sampling, use_tqdm=False, tools=tools, **extra)
        return outputs[0]

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> Reply:
        params = params or GenerateParams()
        conversation = to_openai_messages(messages, artifacts, self.image_long_side)
        kwargs = vllm_sampling_kwargs(params, schema, tools)
        forced = schema is None and "json" in kwargs
        started = time.perf_counter()
        async with self._lock:
            output = await asyncio.to_thread(
                self._run,
                conversation,
                kwargs,
                to_openai_tools(tools) if tools else None,
                template_arguments(params.reasoning_effort or self.reasoning_effort),
            )
        completion = output.outputs[0]
        text, reasoning = split_think_block(completion.text)
        text, calls = split_tool_calls(text, forced=forced)
        parsed, parse_error = parse_structured(text, schema) if schema else (None, None)
        usage = Usage(
            prompt_tokens=len(output.prompt_token_ids or []),
            completion_tokens=len(completion.token_ids or []),
            latency_s=time.perf_counter() - started,
        )
        self.usage_totals.add(usage)
        return Reply(
            text=text,
            reasoning=reasoning,
            parsed=parsed,
            parse_error=parse_error,
            tool_calls=calls,
            finish_reason=completion.finish_reason,
            usage=usage,
            model=self.name,
            endpoint="in-process",
            raw={"text": completion.text, "finish_reason": completion.finish_reason},
        )
