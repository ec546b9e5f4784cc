"""``TracedModel``: a span for every model call, in OpenTelemetry's GenAI conventions.

Wraps any ``ChatModel`` as ``CachedModel`` and ``SpendCap`` do; ``build_model`` puts it
innermost when ``Settings.trace`` is on, so a span is a request that reached the backend (a
cached reply is none). Each ``chat {model}`` span carries ``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.*`` (model, max_tokens, temperature, top_p, seed),
``gen_ai.response.model``, ``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens`` /
``output_tokens``; its duration is the call's latency (with retries, as the convention asks).
The messages go on ``gen_ai.input.messages`` / ``gen_ai.output.messages`` only when the user
opted in; images appear there as ``file`` parts naming the artifact id.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from medagent._trace import AttributeValue, TraceSpan, content_enabled, span, to_json
from medagent.artifacts import ArtifactStore
from medagent.models._cache import _image_hash
from medagent.models._messages import ImagePart, Message, TextPart, ToolSpec
from medagent.models.base import (
    ChatModel,
    GenerateParams,
    Reply,
    StreamingChatModel,
    UsageTotals,
    image_cap,
)

__all__ = ["TracedModel", "message_parts"]

#: Backend classes and the provider name a span gives them (OpenAI-compatible servers speak
#: the OpenAI API, whoever serves it).
_PROVIDERS = {
    "OpenAIBackend": "openai",
    "VLLMBackend": "vllm",
    "TransformersBackend": "transformers",
    "ScriptedModel": "scripted",
}


def message_parts(message: Message) -> dict[str, Any]:
    """One message as the GenAI conventions record it: text parts, images by artifact id
    (a content digest for an image given as pixels), tool calls and their results."""
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            kind = "tool_call_response" if message.role == "tool" else "text"
            key = "response" if message.role == "tool" else "content"
            entry: dict[str, Any] = {"type": kind, key: part.text}
            if message.tool_call_id:
                entry["id"] = message.tool_call_id
            parts.append(entry)
        else:
            parts.append(_image_part(part))
    for call in message.tool_calls:
        parts.append(
            {
                "type": "tool_call",
                "id": call.id,
                "name": call.name,
                "arguments": call.arguments if call.arguments is not None else call.raw_arguments,
            }
        )
    return {"role": message.role, "parts": parts}


def _image_part(part: ImagePart) -> dict[str, Any]:
    media = part.artifact.media_type if part.artifact is not None else None
    return {
        "type": "file",
        "modality": "image",
        "file_id": _image_hash(part),
        "mime_type": media,
    }


class TracedModel:
    """Wraps a ``ChatModel``; every call runs inside a GenAI ``chat`` span.

    ``provider`` is the ``gen_ai.provider.name`` recorded (default: from the backend's class).
    With no tracing active, a call costs one context-variable read.
    """

    def __init__(self, inner: ChatModel, provider: str | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.usage_totals: UsageTotals = inner.usage_totals
        self.provider = provider or _PROVIDERS.get(type(inner).__name__, type(inner).__name__)

    @property
    def image_long_side(self) -> int | None:
        """The wrapped backend's cap on images, so agents render within it."""
        return image_cap(self.inner)

    @property
    def reasoning_effort(self) -> str | None:
        """The wrapped backend's default effort (``CachedModel`` keys replies by it)."""
        effort = getattr(self.inner, "reasoning_effort", None)
        return effort if isinstance(effort, str) else None

    def _request(
        self, messages: Sequence[Message], params: GenerateParams, tools: Sequence[ToolSpec] | None
    ) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.name,
            "gen_ai.request.max_tokens": params.max_tokens,
            "gen_ai.request.temperature": params.temperature,
        }
        if params.top_p is not None:
            attributes["gen_ai.request.top_p"] = params.top_p
        if params.seed is not None:
            attributes["gen_ai.request.seed"] = params.seed
        if params.stop:
            attributes["gen_ai.request.stop_sequences"] = list(params.stop)
        if tools:
            attributes["medagent.request.tools"] = [t.name for t in tools]
        if content_enabled():
            attributes["gen_ai.input.messages"] = to_json([message_parts(m) for m in messages])
        return attributes

    @staticmethod
    def _record(current: TraceSpan, reply: Reply) -> None:
        usage = reply.usage
        attributes: dict[str, AttributeValue] = {
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "medagent.usage.reasoning_tokens": usage.reasoning_tokens,
            "medagent.request.attempts": usage.attempts,
            "medagent.request.latency_s": usage.latency_s,
        }
        if reply.model:
            attributes["gen_ai.response.model"] = reply.model
        if reply.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [reply.finish_reason]
        if reply.parse_error is not None:
            attributes["medagent.response.parse_error"] = reply.parse_error[:500]
        if reply.endpoint:
            where = urlsplit(reply.endpoint)
            if where.hostname:
                attributes["server.address"] = where.hostname
            if where.port:
                attributes["server.port"] = where.port
        if content_enabled():
            output = message_parts(reply.as_message())
            output["finish_reason"] = reply.finish_reason or ""
            attributes["gen_ai.output.messages"] = to_json([output])
        current.set_attributes(attributes)

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
        attributes = self._request(messages, params, tools)
        if schema is not None:
            attributes["gen_ai.output.type"] = "json"
        with span(f"chat {self.name}", attributes, kind="client") as current:
            reply = await self.inner.generate(
                messages, schema=schema, tools=tools, params=params, artifacts=artifacts
            )
            self._record(current, reply)
        return reply

    async def generate_stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> AsyncIterator[str | Reply]:
        """What the wrapped model streams (its whole reply when it cannot stream), in one span
        that also records when the first piece came (``medagent.response.first_piece_s``)."""
        params = params or GenerateParams()
        if not isinstance(self.inner, StreamingChatModel):
            yield await self.generate(messages, tools=tools, params=params, artifacts=artifacts)
            return
        attributes = self._request(messages, params, tools)
        attributes["medagent.request.streamed"] = True
        started = time.perf_counter()
        first = True
        # Not made current: the consumer's own work between pieces is not part of this call.
        with span(f"chat {self.name}", attributes, kind="client", current=False) as current:
            async for piece in self.inner.generate_stream(
                messages, tools=tools, params=params, artifacts=artifacts
            ):
                if first:
                    current.set_attribute(
                        "medagent.response.first_piece_s", time.perf_counter() - started
                    )
                    first = False
                if isinstance(piece, Reply):
                    self._record(current, piece)
                yield piece

    async def aclose(self) -> None:
        await self.inner.aclose()
