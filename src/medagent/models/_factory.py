"""Building a backend from settings: the one place a backend name becomes an object."""

from __future__ import annotations

from medagent.errors import ConfigError
from medagent.models._endpoints import RetryPolicy
from medagent.models._presets import resolve_preset
from medagent.models.base import ChatModel
from medagent.settings import Settings

__all__ = ["build_model"]


def _long_side_cap(settings: Settings) -> int | None:
    """The long-side cap a backend applies: the setting, else the model family's preset.

    A family's preset knows the size its processor brings images to (Gemma 3: 896 px); sending
    more only costs bandwidth, and rendering more would state a scale the model never sees.
    """
    if settings.image_long_side is not None:
        return settings.image_long_side
    preset = resolve_preset(settings.model, settings.preset)
    return preset.image_long_side if preset is not None else None


def build_model(settings: Settings) -> ChatModel:
    """The backend ``settings.backend`` names, configured from ``settings``; with
    ``settings.trace``, wrapped so every call it answers is a span (``TracedModel``)."""
    model = _backend(settings)
    if settings.trace:
        from medagent.models._traced import TracedModel

        return TracedModel(model, provider=settings.backend)
    return model


def _backend(settings: Settings) -> ChatModel:
    if settings.backend == "scripted":
        from medagent.models._scripted import ScriptedModel

        if not settings.script:
            raise ConfigError(
                "the scripted backend replays a JSONL file of replies; pass --script FILE"
            )
        return ScriptedModel(settings.script)
    if not settings.model:
        hint = {
            "openai": "the name the server serves, e.g. --model Qwen/Qwen2.5-VL-7B-Instruct "
            "(GET /v1/models lists them)",
            "vllm": "a model folder or hub id, e.g. --model Qwen/Qwen2.5-VL-7B-Instruct",
            "transformers": "a model folder or hub id; `medagent model build-tiny-vlm DIR` "
            "makes a tiny test model",
        }[settings.backend]
        raise ConfigError(f"the {settings.backend} backend needs --model: {hint}")
    cap = _long_side_cap(settings)
    if settings.backend == "openai":
        from medagent.models._openai import OpenAIBackend

        return OpenAIBackend(
            settings.model,
            settings.base_url,
            api_key=settings.api_key,
            timeout_s=settings.timeout_s,
            retry=RetryPolicy(max_retries=settings.max_retries),
            concurrency=settings.requests_per_endpoint,
            image_long_side=cap,
            tool_mode=settings.tool_mode,
            seed=settings.seed,
            reasoning_effort=settings.reasoning_effort,
        )
    if settings.backend == "transformers":
        from medagent.models._transformers import TransformersBackend

        return TransformersBackend(
            settings.model,
            device=settings.device,
            dtype=settings.dtype,
            image_long_side=cap,
            seed=settings.seed,
            reasoning_effort=settings.reasoning_effort,
        )
    from medagent.models._vllm import VLLMBackend

    return VLLMBackend(
        settings.model,
        image_long_side=cap,
        seed=settings.seed,
        reasoning_effort=settings.reasoning_effort,
    )
