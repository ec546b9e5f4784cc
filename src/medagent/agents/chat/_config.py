"""What a chat emits (``ChatEvent``) and how it behaves (``ChatConfig``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medagent.imaging import Region
from medagent.tools import DEFAULT_TOOLS

__all__ = ["ChatConfig", "ChatEvent", "ChatEventType", "ToolMode"]

ChatEventType = Literal[
    "turn_start", "token", "tool_call", "tool_result", "crop", "answer", "error", "turn_end"
]
"""Per turn: ``turn_start``, then any of ``token``/``tool_call``/``tool_result``/``crop``,
then ``answer`` or ``error``, then ``turn_end`` — always last, also after an error."""

ToolMode = Literal["auto", "native", "schema"]
"""How the model calls tools: the backend's native tool calls (``native``), one JSON object
per reply checked against a JSON schema (``schema``), or native falling back to the schema
when the server refuses tools (``auto``)."""

_TOOL_NAMES: tuple[str, ...] = tuple(t.name for t in DEFAULT_TOOLS)


class ChatEvent(BaseModel):
    """One thing that happened in a chat turn, in order; ``model_dump(mode="json")`` is its wire
    form (server-sent events, the terminal, the persisted history)."""

    model_config = ConfigDict(frozen=True)

    type: ChatEventType
    thread_id: str
    turn: int = Field(description="1-based user turn within the thread")
    seq: int = Field(description="0-based order of the event within the turn")
    text: str | None = Field(
        None,
        description="token, answer and error text; the user's message on turn_start; the "
        "result summary on tool_result; the model's words before a call on tool_call",
    )
    tool: str | None = Field(None, description="tool_call / tool_result: the tool name")
    arguments: dict[str, Any] | None = Field(None, description="tool_call arguments")
    ok: bool | None = Field(None, description="tool_result: whether the tool worked")
    region: Region | None = Field(
        None,
        description="crop: the level-0 region viewed; turn_start: the region the user pointed at",
    )
    box: int | None = Field(
        None,
        description="crop: the number of this viewed region within the thread (1, 2, 3, ...); "
        "None for a view of the whole image",
    )
    artifact_id: str | None = Field(None, description="crop: the image in the ArtifactStore")


class ChatConfig(BaseModel):
    """How a chat agent behaves; the defaults suit a 7B-class VLM served by vLLM."""

    model_config = ConfigDict(frozen=True)

    max_tool_calls: int = Field(8, ge=0, le=100, description="tool calls per user turn")
    tools: tuple[str, ...] = Field(
        _TOOL_NAMES, description="the tools offered, by name (those of DEFAULT_TOOLS)"
    )
    image_long_side: int = Field(
        1000,
        ge=64,
        le=4096,
        description="long side of views, px (lowered to the backend's image cap, if smaller)",
    )
    view_cache: int = Field(
        32,
        ge=0,
        description="rendered views kept in memory per conversation; a server holding many "
        "conversations keeps few (each view is up to a few MB)",
    )
    max_images_in_context: int | None = Field(
        6, ge=1, description="images kept: the latest, and from 2 on the first and latest N-1"
    )
    overview_first: bool = Field(True, description="show the overview with the first message")
    tool_mode: ToolMode = "auto"
    max_corrections: int = Field(2, ge=0, le=10, description="retries after an unusable reply")
    max_tokens: int = Field(1024, ge=16)
    temperature: float = Field(0.0, ge=0.0)
    seed: int | None = None
    sam_model: str | None = Field(None, description="SAM checkpoint for segment(method='sam')")

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in _TOOL_NAMES]
        if unknown:
            raise ValueError(
                f"unknown chat tool(s) {', '.join(unknown)}; choose from {', '.join(_TOOL_NAMES)}"
            )
        return value
