"""The scripted backend (a test double): replay, recording, scripted errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from medagent.errors import ConfigError, InputError, ModelResponseError, ModelTimeoutError
from medagent.models import GenerateParams, Message, ScriptedModel, ToolSpec


class Answer(BaseModel):
    answer: str


async def test_replays_in_order_and_records_requests(tmp_path: Path) -> None:
    script = tmp_path / "replies.jsonl"
    script.write_text(
        "# comments and blank lines are skipped\n\n"
        '{"text": "first"}\n'
        '{"json": {"answer": "second"}}\n'
        '{"tool_calls": [{"name": "zoom", "arguments": {"x": 1}}]}\n'
    )
    model = ScriptedModel(script)
    tool = ToolSpec(name="zoom", description="zoom", parameters={"type": "object"})
    first = await model.generate([Message.user("one")], params=GenerateParams(max_tokens=9))
    second = await model.generate([Message.user("two")], schema=Answer)
    third = await model.generate([Message.user("three")], tools=[tool])
    assert first.text == "first"
    assert second.parsed == Answer(answer="second")
    assert third.tool_calls[0].name == "zoom" and third.tool_calls[0].arguments == {"x": 1}
    assert [r.messages[0].text for r in model.requests] == ["one", "two", "three"]
    assert model.requests[0].params.max_tokens == 9
    assert model.requests[1].schema_name == "Answer"
    assert model.requests[2].tools == ["zoom"]
    assert model.remaining == 0
    assert model.usage_totals.requests == 3


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        ("timeout", ModelTimeoutError),
        ("server_error", ModelResponseError),
        ("malformed", ModelResponseError),
    ],
)
async def test_scripted_errors_raise_like_real_backends(
    error: str, raised: type[Exception]
) -> None:
    model = ScriptedModel([{"error": error}])
    with pytest.raises(raised):
        await model.generate([Message.user("x")])
    assert model.usage_totals.failures == 1


async def test_running_out_of_replies_says_so() -> None:
    model = ScriptedModel([{"text": "only"}])
    await model.generate([Message.user("x")])
    with pytest.raises(ConfigError, match="ran out of replies after 1 requests"):
        await model.generate([Message.user("x")])


def test_bad_script_line_names_file_and_line(tmp_path: Path) -> None:
    script = tmp_path / "bad.jsonl"
    script.write_text('{"text": "ok"}\n{"txet": "typo"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: not a scripted reply"):
        ScriptedModel(script)


def test_reply_needs_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ScriptedModel([{"text": "a", "json": {}}])


def test_missing_script_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        ScriptedModel(tmp_path / "nope.jsonl")
