"""Chat messages: what every backend takes, whatever wire format it speaks.

Images stay as references (an artifact, a PIL image or raw bytes) until a backend builds its
request, so messages and the agent state that holds them stay small.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Self

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medagent.artifacts import ArtifactRef

__all__ = [
    "ImagePart",
    "Message",
    "Part",
    "Role",
    "TextPart",
    "ToolCall",
    "ToolSpec",
    "kept_images",
    "prune_images",
]

Role = Literal["system", "user", "assistant", "tool"]


class TextPart(BaseModel):
    """Plain text inside a message."""

    model_config = ConfigDict(frozen=True)

    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image inside a user message: exactly one of ``artifact``, ``image`` or ``data``.

    Only user messages may carry images: vLLM rejects images in tool messages, and models are
    trained to read them from the user.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    type: Literal["image"] = "image"
    artifact: ArtifactRef | None = None
    image: Image.Image | None = Field(default=None, exclude=True)
    data: bytes | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Self:
        given = [x is not None for x in (self.artifact, self.image, self.data)]
        if sum(given) != 1:
            raise ValueError("an ImagePart needs exactly one of artifact, image or data")
        return self

    @classmethod
    def of(cls, source: ArtifactRef | Image.Image | bytes) -> ImagePart:
        """Wrap whichever kind of image the caller has."""
        if isinstance(source, ArtifactRef):
            return cls(artifact=source)
        if isinstance(source, Image.Image):
            return cls(image=source)
        return cls(data=source)


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ToolCall(BaseModel):
    """A call the model asked for. ``arguments`` is ``None`` when they were not valid JSON."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str = ""

    @classmethod
    def from_raw(cls, call_id: str, name: str, raw_arguments: str | dict[str, Any]) -> ToolCall:
        """Parse the arguments string a server sent, keeping it when it is not a JSON object."""
        if isinstance(raw_arguments, dict):
            return cls(
                id=call_id,
                name=name,
                arguments=raw_arguments,
                raw_arguments=json.dumps(raw_arguments),
            )
        try:
            parsed = json.loads(raw_arguments) if raw_arguments.strip() else {}
        except json.JSONDecodeError:
            parsed = None
        if parsed is not None and not isinstance(parsed, dict):
            parsed = None
        return cls(id=call_id, name=name, arguments=parsed, raw_arguments=raw_arguments)


class ToolSpec(BaseModel):
    """A tool a model may call: a name, what it is for, and a JSON schema of its arguments."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: dict[str, Any]

    @classmethod
    def from_model(cls, name: str, description: str, arguments: type[BaseModel]) -> ToolSpec:
        """Build the spec from the pydantic model that validates the arguments."""
        return cls(name=name, description=description, parameters=arguments.model_json_schema())


class Message(BaseModel):
    """One chat turn. Use the constructors: ``Message.user("text", image)`` and friends."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: list[Part] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _images_only_from_user(self) -> Self:
        if self.role != "user" and any(isinstance(p, ImagePart) for p in self.content):
            raise ValueError(
                f"images are only allowed in user messages, not in a {self.role} message "
                "(add a user message carrying the image instead)"
            )
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        return self

    @classmethod
    def system(cls, text: str) -> Message:
        return cls(role="system", content=[TextPart(text=text)])

    @classmethod
    def user(
        cls, *parts: str | ArtifactRef | Image.Image | bytes | TextPart | ImagePart
    ) -> Message:
        """A user turn from text and images in the order given."""
        content: list[TextPart | ImagePart] = []
        for part in parts:
            if isinstance(part, TextPart | ImagePart):
                content.append(part)
            elif isinstance(part, str):
                content.append(TextPart(text=part))
            else:
                content.append(ImagePart.of(part))
        return cls(role="user", content=content)

    @classmethod
    def assistant(cls, text: str = "", tool_calls: list[ToolCall] | None = None) -> Message:
        content: list[TextPart | ImagePart] = [TextPart(text=text)] if text else []
        return cls(role="assistant", content=content, tool_calls=tool_calls or [])

    @classmethod
    def tool(cls, tool_call_id: str, text: str) -> Message:
        """A tool's result, as text (images go in a following user message)."""
        return cls(role="tool", content=[TextPart(text=text)], tool_call_id=tool_call_id)

    @property
    def text(self) -> str:
        """All text parts joined, for logs and text-only backends."""
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.content if isinstance(p, ImagePart)]


def kept_images(count: int, keep: int) -> list[int]:
    """Which of ``count`` images (in order) to keep when at most ``keep`` may be sent.

    The latest image is what the model just asked to see, so it always stays; with room for
    two or more, the first (the overview) stays too, then the latest ``keep - 1``.
    """
    if count <= keep:
        return list(range(count))
    if keep <= 1:
        return [count - 1] if keep == 1 else []
    return [0, *range(count - keep + 1, count)]


def prune_images(messages: list[Message], keep: int | None) -> list[Message]:
    """Keep the images ``kept_images`` picks (the overview and the latest); others become text.

    Long conversations outgrow a model's context on images first. Demo images (a compiled
    prompt's worked examples) are part of the prompt: always kept.
    """
    if keep is None:
        return messages
    positions = [
        (m_index, p_index)
        for m_index, message in enumerate(messages)
        for p_index, part in enumerate(message.content)
        if isinstance(part, ImagePart) and not (part.artifact and part.artifact.kind == "demo")
    ]
    kept = {positions[i] for i in kept_images(len(positions), keep)}
    pruned: list[Message] = []
    for m_index, message in enumerate(messages):
        if not any(
            (m_index, p) in positions and (m_index, p) not in kept
            for p in range(len(message.content))
        ):
            pruned.append(message)
            continue
        parts: list[TextPart | ImagePart] = []
        for p_index, part in enumerate(message.content):
            if isinstance(part, ImagePart) and (m_index, p_index) not in kept:
                region = part.artifact.region if part.artifact else None
                where = f" of region {region}" if region else ""
                parts.append(TextPart(text=f"[an earlier image{where} was removed to save space]"))
            else:
                parts.append(part)
        pruned.append(message.model_copy(update={"content": parts}))
    return pruned
