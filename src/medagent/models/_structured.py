"""Getting a pydantic object out of a model, however loosely it follows instructions.

Even with constrained decoding, answers arrive fenced, with prose around them, or invalid.
``parse_structured`` is the one tolerant parser every backend uses; ``generate_structured`` adds
bounded correction rounds and never raises past the agent that calls it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent.artifacts import ArtifactStore
from medagent.errors import ModelError
from medagent.models._messages import Message, ToolSpec
from medagent.models.base import ChatModel, GenerateParams, Reply

__all__ = [
    "Attempts",
    "Correction",
    "Structured",
    "StructuredFailure",
    "ask_with_corrections",
    "correction_message",
    "extract_json",
    "generate_structured",
    "parse_structured",
]

T = TypeVar("T", bound=BaseModel)
V = TypeVar("V")

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


Correction = Callable[[str, type[BaseModel]], Message]
"""Builds the user turn that answers an unusable reply: ``(reason, schema) -> Message``.

Agents whose prompts teach their own reply format pass their own; the default is
``correction_message``."""


class Structured(BaseModel, Generic[T]):
    """A validated answer, with every reply it took to get it and why earlier ones were refused."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    ok: Literal[True] = True
    value: T
    replies: list[Reply] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)

    @property
    def text(self) -> str:
        """The text of the reply that was accepted."""
        return self.replies[-1].text if self.replies else ""


class StructuredFailure(BaseModel):
    """No valid answer: ``kind`` says whether the model answered badly or could not be reached."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    ok: Literal[False] = False
    kind: Literal["invalid_output", "model_error"]
    reason: str
    errors: list[str] = Field(default_factory=list)
    last_text: str = ""
    replies: list[Reply] = Field(default_factory=list)


@dataclass(frozen=True)
class Attempts(Generic[V]):
    """How asking went: the value read (``None`` if none), every reply, why each refused
    reply was refused, and the transport error that ended it early, if one did."""

    value: V | None
    replies: list[Reply] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    model_error: str | None = None


async def ask_with_corrections(
    send: Callable[[list[Message]], Awaitable[Reply]],
    messages: Sequence[Message],
    read: Callable[[Reply], tuple[V | None, str | None]],
    correction: Callable[[str], Message],
    *,
    max_retries: int,
) -> Attempts[V]:
    """The one loop behind every structured ask: send, read, explain what was wrong, send again.

    ``send`` makes one request (a plain ``generate``, a stream, a JSON-schema or a tool-call
    request: the caller's choice); ``read`` turns a reply into a value or a reason it is
    unusable; ``correction`` words that reason as the next user turn. Each refused answer and
    its correction stay in the conversation, so the model sees all its earlier mistakes. At
    most ``1 + max_retries`` requests; a ``ModelError`` ends the loop (``model_error``) instead
    of raising, so an agent can record the failure and go on.
    """
    history = list(messages)
    replies: list[Reply] = []
    errors: list[str] = []
    for _ in range(max_retries + 1):
        try:
            reply = await send(history)
        except ModelError as exc:
            return Attempts(None, replies, errors, model_error=str(exc))
        replies.append(reply)
        value, reason = read(reply)
        if value is not None:
            return Attempts(value, replies, errors)
        errors.append(reason or "the answer did not match the schema")
        history = [*history, Message.assistant(reply.text or "(empty)"), correction(errors[-1])]
    return Attempts(None, replies, errors)


async def generate_structured(
    model: ChatModel,
    messages: Sequence[Message],
    schema: type[T],
    *,
    max_retries: int = 2,
    tools: Sequence[ToolSpec] | None = None,
    params: GenerateParams | None = None,
    artifacts: ArtifactStore | None = None,
    request_schema: type[BaseModel] | None = None,
    correction: Correction = correction_message,
) -> Structured[T] | StructuredFailure:
    """Ask for ``schema``; on an invalid answer, explain the error and ask again.

    At most ``1 + max_retries`` requests. Model transport errors end the attempt with
    ``kind="model_error"`` instead of raising, so an agent can record the failure and go on.
    ``request_schema`` is what constrained decoding is given when it differs from what the
    reply is validated against (e.g. a schema bounded by the slide's size, validated loosely);
    ``correction`` writes the turn that explains a refused reply (the agent's own wording).
    """

    async def send(history: list[Message]) -> Reply:
        return await model.generate(
            history,
            schema=request_schema or schema,
            tools=tools,
            params=params,
            artifacts=artifacts,
        )

    def read(reply: Reply) -> tuple[T | None, str | None]:
        # A reply parsed against a stricter request schema is validated again against ours.
        if isinstance(reply.parsed, schema):
            return reply.parsed, None
        value, reason = parse_structured(reply.text, schema)
        return value, reason or reply.parse_error

    done = await ask_with_corrections(
        send, messages, read, lambda reason: correction(reason, schema), max_retries=max_retries
    )
    last_text = done.replies[-1].text if done.replies else ""
    if done.value is not None:
        return Structured[schema](  # type: ignore[valid-type]
            value=done.value, replies=done.replies, errors=done.errors
        )
    if done.model_error is not None:
        return StructuredFailure(
            kind="model_error",
            reason=done.model_error,
            errors=done.errors,
            replies=done.replies,
            last_text=last_text,
        )
    return StructuredFailure(
        kind="invalid_output",
        reason=(
            f"no valid {schema.__name__} after {len(done.replies)} answers; "
            f"last error: {done.errors[-1]}"
        ),
        errors=done.errors,
        last_text=last_text,
        replies=done.replies,
    )
