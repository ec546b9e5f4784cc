"""The one correction loop every structured ask goes through."""

from __future__ import annotations

from pydantic import BaseModel

from medagent.errors import ModelUnavailableError
from medagent.models import Message, Reply, ScriptedModel, ask_with_corrections, generate_structured


class Grade(BaseModel):
    grade: int


def _read(reply: Reply) -> tuple[int | None, str | None]:
    text = reply.text.strip()
    return (int(text), None) if text.isdigit() else (None, f"{text!r} is not a number")


async def test_refused_answers_and_their_corrections_stay_in_the_conversation() -> None:
    seen: list[list[Message]] = []
    replies = iter(["two", "III", "3"])

    async def send(history: list[Message]) -> Reply:
        seen.append(history)
        return Reply(text=next(replies))

    done = await ask_with_corrections(
        send,
        [Message.user("grade?")],
        _read,
        lambda reason: Message.user(f"fix: {reason}"),
        max_retries=2,
    )
    assert done.value == 3 and done.model_error is None
    assert done.errors == ["'two' is not a number", "'III' is not a number"]
    assert [len(h) for h in seen] == [1, 3, 5]
    assert seen[2][-1].text == "fix: 'III' is not a number"


async def test_a_transport_error_ends_the_loop_without_raising() -> None:
    async def send(history: list[Message]) -> Reply:
        raise ModelUnavailableError("http://127.0.0.1:9 connection refused")

    done = await ask_with_corrections(
        send, [Message.user("x")], _read, lambda r: Message.user(r), max_retries=3
    )
    assert done.value is None and done.model_error and "refused" in done.model_error


async def test_generate_structured_uses_the_agents_own_correction_wording() -> None:
    model = ScriptedModel([{"text": "not json"}, {"text": '{"grade": 2}'}])
    result = await generate_structured(
        model,
        [Message.user("grade it")],
        Grade,
        correction=lambda reason, schema: Message.user(f"Only JSON for {schema.__name__}!"),
    )
    assert result.ok and result.value == Grade(grade=2)
    assert result.errors and result.text == '{"grade": 2}'
    assert model.requests[1].messages[-1].text == "Only JSON for Grade!"
