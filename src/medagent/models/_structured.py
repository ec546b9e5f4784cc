"""Getting a pydantic object out of a model, however loosely it follows instructions.

Even with constrained decoding, answers arrive fenced, with prose around them, or invalid.
``parse_structured`` is the one tolerant parser every backend uses; ``generate_structured`` adds
bounded correction rounds and never raises past the agent that calls it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent.artifacts import ArtifactStore
from medagent.errors import ModelError
from medagent.models._messages import Message, ToolSpec
from medagent.models.base import ChatModel, GenerateParams, Reply

__all__ = [
    "Structured",
    "StructuredFailure",
    "correction_message",
    "extract_json",
    "generate_structured",
    "parse_structured",
]

T = TypeVar("T", bound=BaseModel)

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
# strict=False: raw control characters inside strings (weak models write them) are accepted.
_DECODER = json.JSONDecoder(strict=False)


def extract_json(text: str) -> Any:
    """The first complete JSON object (or array) in ``text``.

    Looks inside code fences first, then anywhere; text before and after is ignored.
    Raises ``ValueError`` when there is none.
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        for start, char in enumerate(candidate):
            if char not in "{[":
                continue
            try:
                value, _ = _DECODER.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            return value
    snippet = text.strip().replace("\n", " ")[:80]
    raise ValueError(f"no JSON object found in the answer (it began: {snippet!r})")


def _describe(error: ValidationError, limit: int = 3) -> str:
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(str(x) for x in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def parse_structured(text: str, schema: type[T]) -> tuple[T | None, str | None]:
    """``(object, None)`` when ``text`` holds valid JSON for ``schema``, else ``(None, reason)``."""
    try:
        data = extract_json(text)
    except ValueError as exc:
        return None, str(exc)
    try:
        return schema.model_validate(data), None
    except ValidationError as exc:
        return None, f"the JSON does not match {schema.__name__}: {_describe(exc)}"


def correction_message(reason: str, schema: type[BaseModel]) -> Message:
    """The short user turn that tells a model what was wrong with its last answer."""
    fields = ", ".join(schema.model_fields)
    return Message.user(
        f"Your last answer could not be used: {reason}. "
        f"Reply again with only one JSON object for {schema.__name__} (fields: {fields}), "
        "no other text."
    )


class Structured(BaseModel, Generic[T]):
    """A validated answer, with every reply it took to get it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    ok: Literal[True] = True
    value: T
    replies: list[Reply] = Field(default_factory=list)


class StructuredFailure(BaseModel):
    """No valid answer: ``kind`` says whether the model answered badly or could not be reached."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    ok: Literal[False] = False
    kind: Literal["invalid_output", "model_error"]
    reason: str
    errors: list[str] = Field(default_factory=list)
    last_text: str = ""
    replies: list[Reply] = Field(default_factory=list)


async def generate_structured(
    model: ChatModel,
    messages: Sequence[Message],
    schema: type[T],
    *,
    max_retries: int = 2,
    tools: Sequence[ToolSpec] | None = None,
    params: GenerateParams | None = None,
    artifacts: ArtifactStore | None = None,
) -> Structured[T] | StructuredFailure:
    """Ask for ``schema``; on an invalid answer, explain the error and ask again.

    At most ``1 + max_retries`` requests. Model transport errors end the attempt with
    ``kind="model_error"`` instead of raising, so an agent can record the failure and go on.
    """
    history = list(messages)
    replies: list[Reply] = []
    errors: list[str] = []
    for _ in range(max_retries + 1):
        try:
            reply = await model.generate(
                history, schema=schema, tools=tools, params=params, artifacts=artifacts
            )
        except ModelError as exc:
            return StructuredFailure(
                kind="model_error",
                reason=str(exc),
                errors=errors,
                replies=replies,
                last_text=replies[-1].text if replies else "",
            )
        replies.append(reply)
        value, reason = (
            (reply.parsed, None)
            if reply.parsed is not None
            else (parse_structured(reply.text, schema))
        )
        if isinstance(value, schema):
            return Structured[schema](value=value, replies=replies)  # type: ignore[valid-type]
        reason = reason or reply.parse_error or "the answer did not match the schema"
        errors.append(reason)
        history += [Message.assistant(reply.text), correction_message(reason, schema)]
    return StructuredFailure(
        kind="invalid_output",
        reason=f"no valid {schema.__name__} after {len(replies)} answers; last error: {errors[-1]}",
        errors=errors,
        last_text=replies[-1].text,
        replies=replies,
    )
