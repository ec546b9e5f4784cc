"""``medagent model check``: the requests a user sends first to a new backend, and its quirks.

Three checks pass or fail (text, an image, structured output). The others find what breaks a
naive client of an open model — a system turn the template refuses, a limit on images per
request, tokens per image far from the family's estimate, thinking sent with the answer, a
short context — and say what medagent does about each: a quirk is reported, not failed, when
medagent works around it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Literal

from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field

from medagent.errors import MedagentError
from medagent.models._messages import Message
from medagent.models._presets import VLMPreset
from medagent.models.base import ChatModel, GenerateParams, Reply

__all__ = ["CheckResult", "ImageFacts", "check_image", "run_checks"]


class ImageFacts(BaseModel):
    """The finite schema of the structured-output check (enums and bounds keep it decodable)."""

    colour: Literal["red", "green", "blue", "white", "black", "other"]
    shapes: int = Field(ge=0, le=9)


class CheckResult(BaseModel):
    """One row of the check table."""

    model_config = ConfigDict(frozen=True)

    capability: str
    ok: bool
    quirk: bool = Field(False, description="works, through a workaround medagent applies")
    latency_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    detail: str = ""


def check_image() -> Image.Image:
    """A small synthetic picture: a red disc on white (no data files needed)."""
    image = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(image).ellipse((48, 48, 208, 208), fill=(220, 30, 30))
    return image


def _short(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


async def _timed(
    capability: str,
    request: Callable[[], Awaitable[Reply]],
    judge: Callable[[Reply], tuple[bool, str]],
) -> CheckResult:
    started = time.perf_counter()
    try:
        reply = await request()
    except MedagentError as exc:
        return CheckResult(
            capability=capability,
            ok=False,
            latency_s=time.perf_counter() - started,
            detail=str(exc),
        )
    ok, detail = judge(reply)
    return CheckResult(
        capability=capability,
        ok=ok,
        latency_s=reply.usage.latency_s,
        prompt_tokens=reply.usage.prompt_tokens,
        completion_tokens=reply.usage.completion_tokens,
        detail=detail,
    )


def _answered(reply: Reply) -> tuple[bool, str]:
    if not reply.text.strip():
        return False, f"empty answer (finish_reason={reply.finish_reason})"
    return True, repr(_short(reply.text))


def _parsed(reply: Reply) -> tuple[bool, str]:
    if reply.parsed is None:
        return False, f"not valid ImageFacts: {reply.parse_error}"
    return True, _short(reply.parsed.model_dump_json())


_CHECK_SIDE = 256
"""The check image's side in pixels (``check_image``)."""


def _refusals(model: ChatModel) -> int:
    return model.usage_totals.parameter_refusals


async def _system_turn(model: ChatModel, params: GenerateParams) -> CheckResult:
    messages = [
        Message.system("You are a concise assistant."),
        Message.user("Reply with one word: ready"),
    ]
    before = _refusals(model)
    result = await _timed("system turn", lambda: model.generate(messages, params=params), _answered)
    if result.ok and _refusals(model) > before:
        detail = "the chat template refuses a system turn: medagent puts it in the first user turn"
        return result.model_copy(update={"quirk": True, "detail": detail})
    return result


async def _two_images(
    model: ChatModel, params: GenerateParams, preset: VLMPreset | None, one_image: CheckResult
) -> CheckResult:
    messages = [Message.user(check_image(), check_image(), "Are the two pictures the same?")]
    before = _refusals(model)
    result = await _timed("two images", lambda: model.generate(messages, params=params), _answered)
    if not result.ok:
        return result
    if _refusals(model) > before:
        detail = (
            "the server takes fewer images per request: medagent sends the latest ones; "
            """start vLLM with --limit-mm-per-prompt '{"image": 8}' to send more"""
        )
        return result.model_copy(update={"quirk": True, "detail": detail})
    if not (one_image.ok and one_image.prompt_tokens and result.prompt_tokens):
        return result
    per_image = result.prompt_tokens - one_image.prompt_tokens
    detail = f"{per_image} prompt tokens per {_CHECK_SIDE}-px image"
    if preset is None:
        return result.model_copy(update={"detail": detail})
    estimate = preset.image_tokens(_CHECK_SIDE, _CHECK_SIDE)
    detail += f" ({preset.name} estimate: {estimate})"
    # A count far from the family's means a processor configured unlike the preset
    # (max_pixels, image splitting): budgets computed from the preset would be wrong.
    off = per_image > 0 and not (estimate / 4 <= per_image <= estimate * 4)
    if off:
        detail += "; far from the estimate: check the server's processor settings"
    return result.model_copy(update={"detail": detail, "quirk": off})


def _thinking(thought: bool) -> CheckResult:
    detail = (
        "the model thinks before answering: the thinking is kept apart from answers and "
        "counted in usage (--reasoning-effort sets how hard)"
        if thought
        else "no thinking returned"
    )
    return CheckResult(capability="thinking", ok=True, quirk=thought, latency_s=0.0, detail=detail)


def preset_row(preset: VLMPreset | None, source: str) -> CheckResult:
    """The row naming the family preset in force and the image cap it sets."""
    if preset is None:
        detail = "no family detected; pass --preset NAME (`medagent model presets`) if it is one"
    else:
        detail = (
            f"{preset.name} ({preset.family}, {source}): images capped at "
            f"{preset.image_long_side} px; system turn: {preset.system_role}"
        )
    return CheckResult(capability="preset", ok=True, latency_s=0.0, detail=detail)


def context_row(max_model_len: int, preset: VLMPreset | None) -> CheckResult:
    """The server's context length, and whether a GIANT-sized conversation fits in it."""
    side = preset.image_long_side if preset is not None else 1000
    per_image = preset.image_tokens(side, side * 3 // 4) if preset is not None else 1000
    # GIANT's default: the overview and the latest crops (up to 20 steps, ~300 text tokens each).
    needed = 6 * per_image + 20 * 300
    short = max_model_len < needed
    detail = f"max_model_len {max_model_len} tokens"
    if short:
        detail += (
            f"; a 20-step GIANT run with 6 images in context needs ~{needed}: pass "
            "--max-images or start vLLM with a larger --max-model-len"
        )
    return CheckResult(capability="context", ok=True, quirk=short, latency_s=0.0, detail=detail)


async def run_checks(
    model: ChatModel, *, max_tokens: int = 32, preset: VLMPreset | None = None
) -> list[CheckResult]:
    """Text, image and structured-output requests, each judged on its own; then the quirks.

    ``preset`` is the model's family (``resolve_preset``), whose token estimate the measured
    tokens per image are compared with.
    """
    params = GenerateParams(max_tokens=max_tokens)
    text = [Message.user("Reply with one word: ready")]
    image = [Message.user(check_image(), "What colour is the shape? Answer in a few words.")]
    structured = [
        Message.user(
            check_image(),
            "Give the colour of the shape and how many shapes there are, as JSON.",
        )
    ]
    thought = False

    async def noting(request: Awaitable[Reply]) -> Reply:
        nonlocal thought
        reply = await request
        thought = thought or bool(reply.reasoning)
        return reply

    answered_text = await _timed(
        "text", lambda: noting(model.generate(text, params=params)), _answered
    )
    one_image = await _timed(
        "image", lambda: noting(model.generate(image, params=params)), _answered
    )
    results = [
        answered_text,
        one_image,
        await _timed(
            "structured output",
            lambda: noting(model.generate(structured, schema=ImageFacts, params=params)),
            _parsed,
        ),
        await _system_turn(model, params),
        await _two_images(model, params, preset, one_image),
    ]
    return [*results, _thinking(thought)]
