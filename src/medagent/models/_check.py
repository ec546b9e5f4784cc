"""``medagent model check``: the three requests a user sends first to a new backend."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Literal

from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field

from medagent.errors import MedagentError
from medagent.models._messages import Message
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


async def run_checks(model: ChatModel, *, max_tokens: int = 32) -> list[CheckResult]:
    """Text, image and structured-output requests, each judged on its own."""
    params = GenerateParams(max_tokens=max_tokens)
    text = [Message.user("Reply with one word: ready")]
    image = [Message.user(check_image(), "What colour is the shape? Answer in a few words.")]
    structured = [
        Message.user(
            check_image(),
            "Give the colour of the shape and how many shapes there are, as JSON.",
        )
    ]
    return [
        await _timed("text", lambda: model.generate(text, params=params), _answered),
        await _timed("image", lambda: model.generate(image, params=params), _answered),
        await _timed(
            "structured output",
            lambda: model.generate(structured, schema=ImageFacts, params=params),
            _parsed,
        ),
    ]
