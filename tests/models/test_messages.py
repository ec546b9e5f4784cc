"""Messages and their wire format."""

from __future__ import annotations

import pytest
from PIL import Image
from pydantic import ValidationError

from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError
from medagent.models import ImagePart, Message, ToolCall, ToolSpec
from medagent.models._wire import (
    forced_tool_call_schema,
    parse_text_tool_calls,
    to_openai_messages,
    to_openai_tool_choice,
)


def test_images_are_refused_outside_user_messages() -> None:
    with pytest.raises(ValidationError, match="only allowed in user messages"):
        Message(role="tool", tool_call_id="c1", content=[ImagePart.of(b"\x89PNG")])


def test_image_part_needs_exactly_one_source() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ImagePart()


def test_tool_call_keeps_malformed_arguments() -> None:
    call = ToolCall.from_raw("c1", "zoom", '{"x": 1,')
    assert call.arguments is None
    assert call.raw_arguments == '{"x": 1,'
    assert ToolCall.from_raw("c2", "zoom", "[1, 2]").arguments is None
    assert ToolCall.from_raw("c3", "zoom", "").arguments == {}


def test_artifact_images_need_a_store(tmp_path: object) -> None:
    store = ArtifactStore(str(tmp_path))
    ref = store.put(Image.new("RGB", (8, 8)))
    with pytest.raises(ConfigError, match="no artifact store"):
        to_openai_messages([Message.user(ref)], None, 1024)
    sent = to_openai_messages([Message.user(ref)], store, 1024)
    assert sent[0]["content"][0]["image_url"]["url"] == store.data_url(ref)


def test_message_state_serialises_without_pixels(tmp_path: object) -> None:
    store = ArtifactStore(str(tmp_path))
    ref = store.put(Image.new("RGB", (8, 8)))
    dumped = Message.user("look", ref).model_dump_json()
    assert ref.id in dumped and "base64" not in dumped
    assert Message.model_validate_json(dumped).images[0].artifact == ref


def test_tool_choice_must_name_a_given_tool() -> None:
    tool = ToolSpec(name="zoom", description="", parameters={"type": "object"})
    assert to_openai_tool_choice("required", [tool]) == "required"
    with pytest.raises(ConfigError, match="'pan', which is not among the tools given \\(zoom\\)"):
        to_openai_tool_choice("pan", [tool])


def test_text_tool_calls_are_parsed_and_removed() -> None:
    text = 'Let me look.\n<tool_call>\n{"name": "zoom", "arguments": {"x": 3}}\n</tool_call>'
    rest, calls = parse_text_tool_calls(text)
    assert rest == "Let me look."
    assert calls[0].name == "zoom" and calls[0].arguments == {"x": 3}
    _, broken = parse_text_tool_calls("<tool_call>{nope</tool_call>")
    assert broken[0].arguments is None and broken[0].raw_arguments == "{nope"


def test_forced_tool_schema_covers_allowed_tools_only() -> None:
    zoom = ToolSpec(name="zoom", description="", parameters={"type": "object"})
    answer = ToolSpec(name="answer", description="", parameters={"type": "object"})
    assert forced_tool_call_schema([zoom, answer], "auto") is None
    one = forced_tool_call_schema([zoom, answer], "answer")
    assert one is not None and one["properties"]["name"] == {"const": "answer"}
    both = forced_tool_call_schema([zoom, answer], "required")
    assert both is not None and len(both["anyOf"]) == 2
