"""Structured output: tolerant parsing, correction rounds, typed failures."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from medagent.models import (
    Message,
    ScriptedModel,
    Structured,
    StructuredFailure,
    extract_json,
    generate_structured,
    parse_structured,
)


class Grade(BaseModel):
    isup_grade: int = Field(ge=0, le=5)
    reason: Literal["glands", "sheets", "none"]


VALID = '{"isup_grade": 3, "reason": "glands"}'


@pytest.mark.parametrize(
    "text",
    [
        VALID,
        f"```json\n{VALID}\n```",
        f"```\n{VALID}```",
        f"Here is my answer: {VALID}",
        f"{VALID}\nI am fairly confident because the glands fuse.",
        f'Thinking {{not json}} then {VALID} and {{"other": 1}}',
    ],
    ids=["bare", "fenced", "fence-no-lang", "text-before", "trailing-text", "first-complete"],
)
def test_valid_json_is_found_wherever_it_is(text: str) -> None:
    value, error = parse_structured(text, Grade)
    assert error is None
    assert value == Grade(isup_grade=3, reason="glands")


def test_no_json_gives_a_reason_quoting_the_answer() -> None:
    with pytest.raises(ValueError, match=r"no JSON object found.*'I think grade 3'"):
        extract_json("I think grade 3")


def test_schema_mismatch_names_the_field() -> None:
    value, error = parse_structured('{"isup_grade": 9, "reason": "glands"}', Grade)
    assert value is None
    assert error is not None and "isup_grade" in error and "Grade" in error


async def test_valid_first_answer_needs_one_request() -> None:
    model = ScriptedModel([{"text": f"```json\n{VALID}\n```"}])
    result = await generate_structured(model, [Message.user("grade it")], Grade)
    assert isinstance(result, Structured)
    assert result.value.isup_grade == 3
    assert len(model.requests) == 1
    assert model.requests[0].schema_name == "Grade"


async def test_invalid_then_corrected_sends_the_error_back() -> None:
    model = ScriptedModel([{"json": {"isup_grade": 7, "reason": "glands"}}, {"text": VALID}])
    result = await generate_structured(model, [Message.user("grade it")], Grade)
    assert isinstance(result, Structured)
    assert len(result.replies) == 2
    second = model.requests[1].messages
    assert [m.role for m in second] == ["user", "assistant", "user"]
    assert '"isup_grade": 7' in second[1].text
    assert "isup_grade" in second[2].text and "less than or equal to 5" in second[2].text


async def test_always_invalid_is_a_typed_failure_after_bounded_retries() -> None:
    model = ScriptedModel([{"text": "grade three"}] * 5)
    result = await generate_structured(model, [Message.user("grade it")], Grade, max_retries=2)
    assert isinstance(result, StructuredFailure)
    assert result.kind == "invalid_output"
    assert len(model.requests) == 3
    assert len(result.errors) == 3
    assert result.last_text == "grade three"
    assert "no valid Grade after 3 answers" in result.reason


async def test_model_errors_become_a_failure_not_an_exception() -> None:
    model = ScriptedModel([{"text": "nope"}, {"error": "timeout"}])
    result = await generate_structured(model, [Message.user("grade it")], Grade)
    assert isinstance(result, StructuredFailure)
    assert result.kind == "model_error"
    assert "timeout" in result.reason
    assert result.last_text == "nope"


def test_control_characters_inside_strings_are_tolerated() -> None:
    _value, error = parse_structured('{"isup_grade": 1, "reason": "none"}', Grade)
    assert error is None
    assert extract_json('{"text": "a\x0bb\tc"}') == {"text": "a\x0bb\tc"}
