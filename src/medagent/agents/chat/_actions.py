"""What a model's reply means for the chat: an answer, tool calls, or something unusable.

Two ways to call tools. Natively, the backend returns ``Reply.tool_calls`` and plain text is
the answer. With the JSON action schema (for servers without tool calling), every reply is one
object ``{"name": ..., "arguments": {...}}`` — the same shape Hermes-style models write inside
``<tool_call>`` — where the pseudo-tool ``answer`` carries the answer; the schema is sent for
constrained decoding and every reply is validated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medagent.models import (
    Reply,
    ToolCall,
    ToolSpec,
    extract_json,
    forced_tool_call_schema,
    parse_structured,
)

__all__ = ["ANSWER_TOOL", "ChatAction", "Decision", "action_schema", "read_action", "read_native"]

#: The pseudo-tool that ends a turn with an answer in the JSON action schema.
ANSWER_TOOL = ToolSpec(
    name="answer",
    description="Answer the user; ends your turn.",
    parameters={
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 8000}},
        "required": ["text"],
        "additionalProperties": False,
    },
)


class ChatAction(BaseModel):
    """One reply in the JSON action schema: a tool call, or ``answer`` with the text."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


def action_schema(tools: Sequence[ToolSpec]) -> type[ChatAction]:
    """``ChatAction`` whose JSON schema lists exactly ``tools`` plus ``answer``, each with its
    own arguments, so a constrained decoder can only write a valid call; replies are still
    validated against the looser ``ChatAction``."""
    decoding = forced_tool_call_schema([*tools, ANSWER_TOOL], "required") or {}

    class ChatActionSchema(ChatAction):
        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return decoding

    ChatActionSchema.__name__ = "ChatAction"
    return ChatActionSchema


@dataclass
class Decision:
    """What to do with one reply."""

    kind: Literal["answer", "calls", "invalid"]
    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    error: str | None = None


def _json_call(text: str, names: set[str]) -> ToolCall | None:
    """A bare ``{"name": tool, "arguments": {...}}`` reply from a server without a tool parser."""
    stripped = text.strip()
    if not stripped.startswith(("{", "```")):
        return None
    try:
        data = extract_json(stripped)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("name") not in names:
        return None
    arguments = data.get("arguments", {})
    if not isinstance(arguments, dict):
        return None
    return ToolCall.from_raw("call_0", str(data["name"]), arguments)


def read_native(reply: Reply, tools: Sequence[ToolSpec]) -> Decision:
    """A reply to a request with native tools (``tools`` empty once the turn's calls are spent)."""
    names = {t.name for t in tools}
    if reply.tool_calls:
        if not tools:
            return Decision(
                "invalid",
                error="no more tool calls are allowed for this message",
                text=reply.text,
            )
        return Decision("calls", text=reply.text, calls=list(reply.tool_calls))
    call = _json_call(reply.text, names) if names else None
    if call is not None:
        return Decision("calls", calls=[call])
    if reply.text.strip():
        return Decision("answer", text=reply.text.strip())
    return Decision("invalid", error="the reply was empty")


def read_action(reply: Reply, tools: Sequence[ToolSpec], call_prefix: str) -> Decision:
    """A reply in the JSON action schema; calls get ids ``{call_prefix}_{n}``."""
    parsed = reply.parsed if isinstance(reply.parsed, ChatAction) else None
    error: str | None = None
    if parsed is None:
        parsed, error = parse_structured(reply.text, ChatAction)
    if parsed is None:
        return Decision("invalid", error=error or "the reply is not a JSON action")
    if parsed.name == ANSWER_TOOL.name:
        text = parsed.arguments.get("text")
        if not isinstance(text, str) or not text.strip():
            return Decision("invalid", error='an answer needs {"text": "<your answer>"}')
        return Decision("answer", text=text.strip())
    names = [t.name for t in tools]
    if parsed.name not in names:
        allowed = ", ".join([*names, ANSWER_TOOL.name])
        return Decision("invalid", error=f"{parsed.name!r} is not one of: {allowed}")
    return Decision(
        "calls", calls=[ToolCall.from_raw(f"{call_prefix}_0", parsed.name, parsed.arguments)]
    )
