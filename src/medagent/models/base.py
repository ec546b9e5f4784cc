"""The contract every model backend fulfils: one async ``generate`` call.

Agents depend on ``ChatModel`` only; which backend answers (an HTTP server, an in-process
model, a script) is decided by whoever builds it (``build_model`` or the caller). Streaming the
text as it is generated is an optional extra, ``StreamingChatModel``, checked with ``isinstance``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from medagent.artifacts import ArtifactStore
from medagent.models._messages import Message, ToolCall, ToolSpec
from medagent.settings import ReasoningEffort

__all__ = [
    "ChatModel",
    "ReasoningEffort",
    "GenerateParams",
    "Reply",
    "StreamingChatModel",
    "ToolChoice",
    "Usage",
    "UsageTotals",
    "image_cap",
]

ToolChoice = Literal["auto", "required", "none"] | str
"""``auto``/``required``/``none``, or the name of one tool the model must call."""


class GenerateParams(BaseModel):
    """Sampling settings for one request. Greedy by default: evaluations must be repeatable."""

    model_config = ConfigDict(frozen=True)

    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] | None = None
    tool_choice: ToolChoice = "auto"
    reasoning_effort: ReasoningEffort | None = Field(
        None, description="sent to models that reason; None: the backend's default"
    )


class Usage(BaseModel):
    """What one reply cost."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = Field(0, description="of the completion tokens, those spent thinking")
    latency_s: float = 0.0
    attempts: int = 1

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class UsageTotals(BaseModel):
    """Running totals a backend keeps over its lifetime (for run manifests and reports)."""

    requests: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    latency_s: float = 0.0
    parameter_refusals: int = Field(
        0, description="requests sent again without a sampling field the server refused"
    )

    def add(self, usage: Usage) -> None:
        self.requests += 1
        self.retries += usage.attempts - 1
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.reasoning_tokens += usage.reasoning_tokens
        self.latency_s += usage.latency_s


class Reply(BaseModel):
    """A model's answer.

    ``parsed`` holds the validated object when a schema was asked for and the text matched it;
    otherwise ``parse_error`` says why not. ``reasoning`` is the thinking a reasoning model
    showed before its answer (vLLM's ``reasoning_content``, a ``<think>`` block): kept to be
    read, never part of ``text`` or ``parsed``. ``raw`` keeps the backend's response as received,
    so failures can be analysed after the run.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    text: str = ""
    reasoning: str = ""
    parsed: BaseModel | None = None
    parse_error: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    endpoint: str | None = None
    raw: Any = None

    def as_message(self) -> Message:
        """The reply as an assistant turn, to append to the conversation."""
        return Message.assistant(self.text, self.tool_calls)


@runtime_checkable
class ChatModel(Protocol):
    """An async chat model. Implementations: OpenAI-compatible HTTP, vLLM, transformers, scripted.

    ``schema`` asks for JSON matching a pydantic model, constrained at decode time where the
    backend can; the reply is always validated (``Reply.parsed`` / ``Reply.parse_error``).
    ``artifacts`` resolves images given as ``ArtifactRef``. Transport failures raise
    ``medagent.errors.ModelError`` subclasses after the backend's retries.

    A backend may also have ``image_long_side: int | None``, the most pixels on an image's long
    side a server or model accepts (``None``: no cap); wrappers pass the wrapped one's on.
    Agents render their views at most that (``medagent.agents.base.render_long_side``), so
    stored images are sent as rendered and the scale a prompt states is true of the pixels.
    Raw images (``ImagePart.image`` / ``data``) are bounded by ``RAW_IMAGE_LONG_SIDE`` too.
    """

    name: str
    usage_totals: UsageTotals

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> Reply: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class StreamingChatModel(ChatModel, Protocol):
    """A ``ChatModel`` that can also stream: an optional capability, checked with ``isinstance``.

    ``generate_stream`` yields the reply's text in pieces as they are generated (so a user sees
    the answer being written), then exactly one ``Reply`` as its last item: the same reply
    ``generate`` would have given for the request (text, tool calls, usage). The pieces are for
    display only; the ``Reply`` is what counts. Requests a backend cannot stream may yield the
    ``Reply`` alone. Failures raise ``ModelError`` subclasses as ``generate`` does; once pieces
    have been yielded a failed request is not retried (they cannot be taken back).

    The chat agent checks for it and turns the pieces into ``token`` events.
    """

    def generate_stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> AsyncIterator[str | Reply]: ...


def image_cap(model: object) -> int | None:
    """The most pixels on an image's long side ``model`` sends (``image_long_side``), if capped.

    Optional on a ``ChatModel`` (a Protocol member would make every model declare it):
    backends and wrappers that have one expose it; anything else has no cap.
    """
    cap = getattr(model, "image_long_side", None)
    return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None
