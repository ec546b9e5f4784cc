"""The OpenAI chat-completions wire format, shared by the HTTP and in-process vLLM backends.

Images become JPEG data URLs here and nowhere earlier: this is where bytes enter a request.
How large an image goes out is decided once, by ``sent_long_side``, for every backend.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from PIL import Image
from pydantic import BaseModel

from medagent.artifacts import ArtifactStore, data_url, fit_long_side, to_jpeg
from medagent.errors import ConfigError
from medagent.models._messages import ImagePart, Message, TextPart, ToolCall, ToolSpec
from medagent.models.base import GenerateParams, ToolChoice

__all__ = [
    "RAW_IMAGE_LONG_SIDE",
    "forced_tool_call_schema",
    "image_data_url",
    "json_schema_of",
    "load_image",
    "parse_text_tool_calls",
    "parse_tool_calls",
    "response_format",
    "sampling_fields",
    "sent_image",
    "sent_long_side",
    "split_tool_calls",
    "to_openai_messages",
    "to_openai_tool_choice",
    "to_openai_tools",
]


RAW_IMAGE_LONG_SIDE = 1024
"""The long side raw images (``ImagePart.image`` / ``data``: a user's file, a dataset item) are
shrunk to. Stored artifacts are views an agent rendered at the size the model should get, with
a prompt stating their scale: they are sent as they are, bounded only by a backend's cap."""


def sent_long_side(part: ImagePart, cap: int | None) -> int | None:
    """The most pixels the long side of ``part`` may have when sent; ``None``: no bound.

    ``cap`` is the backend's ``image_long_side`` (the most a server or model accepts). Agents
    render at most the cap (``render_long_side``), so their artifacts pass unchanged.
    """
    if part.artifact is not None:
        return cap
    return RAW_IMAGE_LONG_SIDE if cap is None else min(cap, RAW_IMAGE_LONG_SIDE)


def load_image(part: ImagePart, artifacts: ArtifactStore | None) -> Image.Image:
    """The part's pixels, whatever the part holds."""
    if part.image is not None:
        return part.image
    if part.artifact is not None:
        if artifacts is None:
            raise ConfigError(
                f"message holds artifact {part.artifact.id} but no artifact store was given; "
                "pass artifacts=ArtifactStore(run_dir) to generate()"
            )
        return artifacts.get(part.artifact)
    assert part.data is not None
    from medagent.imaging import decode_image  # pixel count checked before decoding

    return decode_image(part.data, name="image bytes in the message").image


def sent_image(part: ImagePart, artifacts: ArtifactStore | None, cap: int | None) -> Image.Image:
    """The pixels of ``part`` as a backend sends them (see ``sent_long_side``)."""
    image = load_image(part, artifacts)
    bound = sent_long_side(part, cap)
    return image if bound is None else fit_long_side(image, bound)


def image_data_url(part: ImagePart, artifacts: ArtifactStore | None, cap: int | None) -> str:
    """A JPEG data URL of ``part`` as sent; a stored JPEG within the bound goes as stored."""
    ref = part.artifact
    bound = sent_long_side(part, cap)
    if (
        ref is not None
        and artifacts is not None
        and ref.media_type == "image/jpeg"
        and (bound is None or max(ref.width, ref.height) <= bound)
    ):
        return artifacts.data_url(ref)
    return data_url(to_jpeg(sent_image(part, artifacts, cap)))


def to_openai_messages(
    messages: Sequence[Message], artifacts: ArtifactStore | None, image_long_side: int | None
) -> list[dict[str, Any]]:
    """Messages as chat-completions dicts. A text-only turn is sent as a plain string.

    ``image_long_side`` is the backend's cap on images (``None``: none).
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role}
        if message.images:
            parts: list[dict[str, Any]] = []
            for part in message.content:
                if isinstance(part, TextPart):
                    parts.append({"type": "text", "text": part.text})
                else:
                    url = image_data_url(part, artifacts, image_long_side)
                    parts.append({"type": "image_url", "image_url": {"url": url}})
            item["content"] = parts
        else:
            item["content"] = message.text
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.raw_arguments or "{}"},
                }
                for call in message.tool_calls
            ]
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


def to_openai_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def to_openai_tool_choice(choice: ToolChoice, tools: Sequence[ToolSpec]) -> Any:
    """``auto``/``required``/``none`` pass through; a tool name becomes a named choice."""
    if choice in ("auto", "required", "none"):
        return choice
    if choice not in {t.name for t in tools}:
        raise ConfigError(
            f"tool_choice names {choice!r}, which is not among the tools given "
            f"({', '.join(t.name for t in tools) or 'none'})"
        )
    return {"type": "function", "function": {"name": choice}}


@functools.lru_cache(maxsize=512)
def json_schema_of(schema: type[BaseModel]) -> dict[str, Any]:
    """``schema``'s JSON schema, built once per class: agents ask with the same few classes on
    every turn, and building one costs milliseconds. Shared: callers must not change it."""
    return schema.model_json_schema()


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's strict ``json_schema`` response format for a JSON schema."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def sampling_fields(params: GenerateParams) -> dict[str, Any]:
    """The sampling part of a request body, leaving out what was not set.

    Names are the classic ones (``max_tokens``); what a model accepts instead is decided per
    endpoint and model by ``ParameterRules`` just before sending.
    """
    body: dict[str, Any] = {"max_tokens": params.max_tokens, "temperature": params.temperature}
    if params.reasoning_effort is not None:
        body["reasoning_effort"] = params.reasoning_effort
    if params.top_p is not None:
        body["top_p"] = params.top_p
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = params.stop
    return body


def parse_tool_calls(raw_calls: Any) -> list[ToolCall]:
    """Tool calls from a chat-completions message; missing ids get generated ones."""
    calls: list[ToolCall] = []
    for raw in raw_calls or []:
        function = raw.get("function") or {}
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str | dict):
            arguments = json.dumps(arguments)
        calls.append(
            ToolCall.from_raw(
                raw.get("id") or f"call_{uuid.uuid4().hex[:12]}",
                str(function.get("name", "")),
                arguments,
            )
        )
    return calls


_TOOL_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def parse_text_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """Hermes-style ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks in text.

    In-process backends (and servers started without a tool parser) return tool calls as text.
    Returns the text with the blocks removed, and the calls found.
    """
    calls: list[ToolCall] = []
    for index, match in enumerate(_TOOL_CALL_BLOCK.finditer(text)):
        try:
            data = json.loads(match.group(1))
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or "name" not in data:
            calls.append(
                ToolCall(id=f"call_{index}", name="", arguments=None, raw_arguments=match.group(1))
            )
            continue
        arguments = data.get("arguments", data.get("parameters", {}))
        calls.append(
            ToolCall.from_raw(
                f"call_{index}",
                str(data["name"]),
                arguments if isinstance(arguments, dict | str) else json.dumps(arguments),
            )
        )
    return _TOOL_CALL_BLOCK.sub("", text).strip(), calls


def forced_tool_call_schema(tools: Sequence[ToolSpec], choice: ToolChoice) -> dict[str, Any] | None:
    """A JSON schema that forces one call, for backends that emulate ``tool_choice``.

    ``None`` when the choice does not force a call (``auto``/``none``). Otherwise the schema of
    ``{"name": ..., "arguments": {...}}`` for any allowed tool, each tool's own argument schema
    constraining its arguments. Pydantic puts nested models in ``$defs`` with root-relative
    references, so those move to the root of the combined schema.
    """
    if not tools or choice in ("auto", "none"):
        return None
    allowed = [t for t in tools if choice == "required" or t.name == choice]
    if not allowed:
        to_openai_tool_choice(choice, tools)  # raises the ConfigError naming the tools
    defs: dict[str, Any] = {}
    variants: list[dict[str, Any]] = []
    for tool in allowed:
        arguments = dict(tool.parameters) or {"type": "object"}
        own_defs = arguments.pop("$defs", {})
        if any(name in defs and defs[name] != value for name, value in own_defs.items()):
            arguments = {"type": "object"}  # clashing definitions: only require an object
        else:
            defs.update(own_defs)
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {**schema, "$defs": defs} if defs else schema


def split_tool_calls(text: str, *, forced: bool) -> tuple[str, list[ToolCall]]:
    """Tool calls out of generated text, for backends without a server-side tool parser.

    ``forced``: the whole text is one ``{"name", "arguments"}`` object (a forced-call schema
    produced it); otherwise Hermes-style ``<tool_call>`` blocks are looked for.
    """
    if forced:
        return parse_text_tool_calls(f"<tool_call>{text}</tool_call>")
    return parse_text_tool_calls(text)
