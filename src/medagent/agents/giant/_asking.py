"""One question put to the model, GIANT's way: the kernel's correction loop with GIANT's own
correction wording, and what a step record keeps of it.

The navigator's turns and both baselines ask through ``ask``, so every request is corrected
the same way and every step record holds the same facts (each reply's text and thinking, why
each refused reply was refused, tokens, model time).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, RootModel

from medagent.agents.giant._config import GiantConfig
from medagent.artifacts import ArtifactStore
from medagent.models import (
    ChatModel,
    GenerateParams,
    Message,
    StructuredFailure,
    generate_structured,
)
from medagent.prompts import load_template

__all__ = ["Asked", "ask", "giant_correction", "unwrap"]

T = TypeVar("T", bound=BaseModel)


class Asked(BaseModel):
    """What a step record keeps of one question: the request's size and every answer to it."""

    model_config = ConfigDict(frozen=True)

    step: int
    sent_messages: int = Field(description="how many conversation messages were sent")
    images_sent: list[str] = Field(default_factory=list, description="artifact ids sent")
    outputs: list[str] = Field(default_factory=list, description="raw model text per attempt")
    thinking: list[str] = Field(
        default_factory=list, description="a reasoning model's thinking per attempt ('' for none)"
    )
    errors: list[str] = Field(default_factory=list, description="why attempts were refused")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = Field(0, description="of the completion tokens, those spent thinking")
    model_s: float = 0.0
    model_error: str | None = Field(None, description="the transport error that ended it")

    def step_fields(self) -> dict[str, Any]:
        """The fields a ``StepRecord`` takes; a model error counts among the errors."""
        fields = self.model_dump(exclude={"model_error"})
        if self.model_error is not None:
            fields["errors"] = [*self.errors, self.model_error]
        return fields


def giant_correction(reason: str, schema: type[BaseModel]) -> Message:
    """GIANT's answer to an unusable reply: its prompts teach the reply format, so the
    correction points back to it instead of listing the schema's fields."""
    return Message.user(load_template("giant/correction").render(error=reason))


def unwrap(value: BaseModel) -> BaseModel:
    """The action inside a discriminated-union root model (``GiantAction`` → ``ZoomAction``)."""
    return value.root if isinstance(value, RootModel) else value


async def ask(
    model: ChatModel,
    messages: Sequence[Message],
    schema: type[T],
    *,
    step: int,
    config: GiantConfig,
    artifacts: ArtifactStore,
    request_schema: type[BaseModel] | None = None,
) -> tuple[T | None, Asked]:
    """Ask for ``schema``, re-asking up to ``config.max_corrections`` times on invalid output.

    ``request_schema`` is what a constrained decoder gets when it is stricter than ``schema``
    (the slide's bounds). Returns the value (``None`` when there is none) and the record; a
    model error ends the attempts and is recorded, never raised.
    """
    params = GenerateParams(
        max_tokens=config.max_tokens, temperature=config.temperature, seed=config.seed
    )
    started = time.perf_counter()
    result = await generate_structured(
        model,
        messages,
        schema,
        max_retries=config.max_corrections,
        params=params,
        artifacts=artifacts,
        request_schema=request_schema,
        correction=giant_correction,
    )
    asked = Asked(
        step=step,
        sent_messages=len(messages),
        images_sent=[p.artifact.id for m in messages for p in m.images if p.artifact is not None],
        outputs=[reply.text for reply in result.replies],
        thinking=(
            [reply.reasoning for reply in result.replies]
            if any(reply.reasoning for reply in result.replies)
            else []
        ),
        errors=list(result.errors),
        prompt_tokens=sum(reply.usage.prompt_tokens for reply in result.replies),
        completion_tokens=sum(reply.usage.completion_tokens for reply in result.replies),
        reasoning_tokens=sum(reply.usage.reasoning_tokens for reply in result.replies),
        model_s=time.perf_counter() - started,
        model_error=(
            result.reason
            if isinstance(result, StructuredFailure) and result.kind == "model_error"
            else None
        ),
    )
    return (None if isinstance(result, StructuredFailure) else result.value), asked
