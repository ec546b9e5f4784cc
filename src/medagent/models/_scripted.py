"""The scripted backend: a TEST DOUBLE that replays prepared replies, one per request.

It exists to test agent logic and failure handling deterministically. It never looks at the
images; it is not a model and must not be used to report results. A ``responder`` (a function
of the request) can stand in for the script where a test needs replies that depend on the
prompt, e.g. to check that a prompt optimizer finds the wording that makes the answer right.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError, InputError, ModelResponseError, ModelTimeoutError
from medagent.models._messages import Message, ToolCall, ToolSpec
from medagent.models._structured import parse_structured
from medagent.models.base import GenerateParams, Reply, Usage, UsageTotals

__all__ = ["RecordedRequest", "Responder", "ScriptedModel", "ScriptedReply", "load_script"]


class ScriptedToolCall(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None


class ScriptedReply(BaseModel):
    """One line of a script: exactly one of ``text``, ``json``, ``tool_calls`` or ``error``.

    ``reasoning`` (optional, beside any of them) plays a reasoning model's thinking: it ends in
    ``Reply.reasoning`` and counts as reasoning tokens, never in the text.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str | None = None
    json_: Any = Field(None, alias="json")
    tool_calls: list[ScriptedToolCall] | None = None
    error: Literal["timeout", "server_error", "malformed"] | None = None
    reasoning: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ScriptedReply:
        given = [
            self.text is not None,
            self.json_ is not None,
            self.tool_calls is not None,
            self.error is not None,
        ]
        if sum(given) != 1:
            raise ValueError("a scripted reply needs exactly one of text, json, tool_calls, error")
        return self


class RecordedRequest(BaseModel):
    """What the scripted backend was asked, for tests to assert on."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    messages: list[Message]
    schema_name: str | None
    tools: list[str]
    params: GenerateParams


def load_script(path: str | Path) -> list[ScriptedReply]:
    """Read a JSONL script; errors name the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"script file {path} does not exist", path=str(path)) from None
    replies = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            replies.append(ScriptedReply.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            first = (
                str(exc).splitlines()[0]
                if isinstance(exc, json.JSONDecodeError)
                else (exc.errors()[0]["msg"])
            )
            raise InputError(
                f"{path}:{number}: not a scripted reply ({first}); each line is one of "
                '{"text": ...}, {"json": {...}}, {"tool_calls": [...]}, {"error": "timeout"}',
                path=str(path),
            ) from None
    return replies


Responder = Callable[[RecordedRequest], ScriptedReply | dict[str, Any]]
"""Computes the reply to one request (the request is already recorded when it is called)."""


class ScriptedModel:
    """Replays ``replies`` in order and records every request it receives.

    Errors in the script are raised as the real backends raise them (``ModelTimeoutError``,
    ``ModelResponseError``), so retry and failure paths can be tested without a server.
    With ``responder`` instead of ``replies``, each reply is computed from its request.
    ``image_long_side`` plays a backend's cap on images, for tests of what agents render.
    """

    def __init__(
        self,
        replies: Sequence[ScriptedReply | dict[str, Any]] | str | Path | None = None,
        *,
        responder: Responder | None = None,
        name: str = "scripted",
        image_long_side: int | None = None,
    ) -> None:
        if (replies is None) == (responder is None):
            raise ConfigError("a scripted model needs exactly one of replies or responder")
        self.responder = responder
        self.script_path: Path | None = None
        self.replies: list[ScriptedReply] = []
        if isinstance(replies, str | Path):
            self.script_path = Path(replies)
            self.replies = load_script(replies)
        elif replies is not None:
            self.replies = [ScriptedReply.model_validate(r) for r in replies]
        self.name = name
        self.image_long_side = image_long_side
        self.usage_totals = UsageTotals()
        self.requests: list[RecordedRequest] = []

    @property
    def remaining(self) -> int:
        """Replies left to replay (unlimited, ``sys.maxsize``, with a responder)."""
        if self.responder is not None:
            return sys.maxsize
        return len(self.replies) - len(self.requests)

    async def aclose(self) -> None:
        return None

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> Reply:
        started = time.perf_counter()
        index = len(self.requests)
        request = RecordedRequest(
            messages=list(messages),
            schema_name=schema.__name__ if schema else None,
            tools=[t.name for t in tools or []],
            params=params or GenerateParams(),
        )
        self.requests.append(request)
        if self.responder is not None:
            scripted = ScriptedReply.model_validate(self.responder(request))
        elif index >= len(self.replies):
            where = f" in {self.script_path}" if self.script_path else ""
            raise ConfigError(
                f"the scripted backend ran out of replies after {len(self.replies)} "
                f"requests; add more lines{where}"
            )
        else:
            scripted = self.replies[index]
        if scripted.error == "timeout":
            self.usage_totals.failures += 1
            raise ModelTimeoutError("scripted timeout", endpoint="scripted")
        if scripted.error == "server_error":
            self.usage_totals.failures += 1
            raise ModelResponseError(
                "scripted server error (HTTP 500)", endpoint="scripted", status_code=500
            )
        if scripted.error == "malformed":
            self.usage_totals.failures += 1
            raise ModelResponseError(
                "scripted malformed response body", endpoint="scripted", status_code=200
            )
        text = scripted.text or ""
        if scripted.json_ is not None:
            text = json.dumps(scripted.json_)
        calls = [
            ToolCall.from_raw(c.id or f"call_{index}_{i}", c.name, c.arguments)
            for i, c in enumerate(scripted.tool_calls or [])
        ]
        parsed, parse_error = parse_structured(text, schema) if schema else (None, None)
        reasoning = scripted.reasoning or ""
        usage = Usage(
            prompt_tokens=sum(len(m.text.split()) for m in messages),
            completion_tokens=len(text.split()) + len(reasoning.split()),
            reasoning_tokens=len(reasoning.split()),
            latency_s=time.perf_counter() - started,
        )
        self.usage_totals.add(usage)
        return Reply(
            text=text,
            reasoning=reasoning,
            parsed=parsed,
            parse_error=parse_error,
            tool_calls=calls,
            finish_reason="tool_calls" if calls else "stop",
            usage=usage,
            model=self.name,
            endpoint="scripted",
            raw=scripted.model_dump(by_alias=True, exclude_none=True),
        )
