"""Constants and helpers the web-app tests share (imported by name: keep this basename unique)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from medagent.models import ScriptedModel

ZOOM = {"name": "zoom", "arguments": {"x": 400, "y": 300, "width": 800, "height": 600}}
ANSWER = "Glands in a loose stroma."
#: One turn: a zoom, then the answer; repeated so a session can take several turns.
SCRIPT: list[dict[str, Any]] = [{"tool_calls": [ZOOM]}, {"text": ANSWER}] * 10
LOOPBACK = "http://127.0.0.1"
#: The first turn shows the overview (a crop without a box) before the zoom; later turns do not.
TURN = ["turn_start", "crop", "tool_call", "tool_result", "crop", "answer", "turn_end"]
LATER_TURN = ["turn_start", "tool_call", "tool_result", "crop", "answer", "turn_end"]


class SlowModel(ScriptedModel):
    """Scripted replies, each after half a second: a turn long enough to overlap."""

    async def generate(self, messages: Sequence[Any], **kwargs: Any) -> Any:
        await asyncio.sleep(0.5)
        return await super().generate(messages, **kwargs)


def sse_events(response: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """``(event name, id, data)`` for each server-sent event of a streamed response."""
    events, name, ident = [], "", ""
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("id:"):
            ident = line[3:].strip()
        elif line.startswith("data:"):
            events.append((name, ident, json.loads(line[5:])))
    return events
