"""Model-side test helpers: an OpenAI chat-completions response for mock transports, the
images a request body carries, and a wrapper that 'kills the process' at a chosen request (to
test resuming)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from medagent.models import ScriptedModel


def chat_completion(reply: dict[str, Any]) -> httpx.Response:
    """The server's response for one scripted reply: ``text``, ``json`` (sent as text),
    ``tool_calls`` (name + arguments), or ``error`` (an HTTP 500)."""
    if reply.get("error"):
        return httpx.Response(500, json={"error": {"message": "engine died"}})
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("text")}
    if "json" in reply:
        message["content"] = json.dumps(reply["json"])
    if "tool_calls" in reply:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for i, c in enumerate(reply["tool_calls"])
        ]
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "model": "mock",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3},
        },
    )


def images_in(body: dict[str, Any]) -> list[str]:
    """The image URLs of a chat-completions request body, in order."""
    return [
        part["image_url"]["url"]
        for message in body["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]


class Killed(BaseException):
    """Stands for the process being killed (not an error the agent would handle)."""


class KillAt:
    """Wraps a model and 'kills the process' on request number ``n`` (1-based)."""

    def __init__(self, model: ScriptedModel, n: int) -> None:
        self.inner, self.n = model, n
        self.name, self.usage_totals = model.name, model.usage_totals

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        if len(self.inner.requests) + 1 == self.n:
            raise Killed
        return await self.inner.generate(*args, **kwargs)

    async def aclose(self) -> None:
        return None
