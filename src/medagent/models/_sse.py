"""Server-sent events of a streamed chat completion, put back together into one completion.

A stream's chunks carry pieces of text and of tool calls (joined by their index); the
assembled completion has the shape of a whole one, so streamed and whole replies are read by
the same code. Text that may begin a ``<tool_call>`` block is held back from display; a
reasoning model's thinking (``reasoning_content`` deltas, or a ``<think>`` block leading the
text of a server without a reasoning parser) is collected, never displayed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from medagent.errors import ModelResponseError
from medagent.models._endpoints import RETRYABLE_STATUS, Endpoint, Retryable
from medagent.models._reasoning import REASONING_FIELDS

__all__ = ["StreamAssembly", "read_chunk", "sse_data"]

_TOOL_BLOCK = "<tool_call>"
_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"


class StreamAssembly:
    """A streamed completion put back together: text, tool calls by index, finish, usage.

    ``completion()`` gives it the shape of a whole (non-streamed) completion, so both paths
    read replies with the same code.
    """

    def __init__(self, *, hide_tool_blocks: bool) -> None:
        self.hide_tool_blocks = hide_tool_blocks
        self.chunks = 0
        self.done = False
        self.text = ""
        self.reasoning = ""
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.meta: dict[str, Any] = {}
        self._shown = 0  # characters of text already yielded
        self._block_at: int | None = None  # where a <tool_call> block began: no text after

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one chunk; returns the text that may be shown now."""
        self.chunks += 1
        for key in ("id", "created", "model"):
            if key not in self.meta and chunk.get(key) is not None:
                self.meta[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]  # the last one counts (vLLM may send running totals)
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str):
                self.text += content
            for name in REASONING_FIELDS:
                thought = delta.get(name)
                if isinstance(thought, str):
                    self.reasoning += thought
                    break
            for fragment in delta.get("tool_calls") or []:
                if isinstance(fragment, dict):
                    self._add_call(fragment)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return self._showable(final=False)

    def flush(self) -> str:
        """Text held back at the end because it might have begun a ``<tool_call>`` tag."""
        return self._showable(final=True)

    def _answer_start(self, *, final: bool) -> int | None:
        """Where the answer begins after a leading ``<think>`` block; ``None``: not yet known
        (the block, or what may begin it, is still being written)."""
        stripped = self.text.lstrip()
        if not stripped.startswith(_THINK_OPEN):
            may_open = bool(stripped) and _THINK_OPEN.startswith(stripped)
            return None if may_open and not final else 0
        close = self.text.find(_THINK_CLOSE)
        if close < 0:
            return len(self.text) if final else None
        after = close + len(_THINK_CLOSE)
        return after + len(self.text[after:]) - len(self.text[after:].lstrip())

    def _showable(self, *, final: bool) -> str:
        start = self._answer_start(final=final)
        if start is None:
            return ""
        self._shown = max(self._shown, start)
        end = len(self.text)
        if self.hide_tool_blocks:
            if self._block_at is None:
                # A tag cannot start before what was shown: a possible start is held back.
                found = self.text.find(_TOOL_BLOCK, self._shown)
                self._block_at = found if found >= 0 else None
            if self._block_at is not None:
                end = self._block_at
            elif not final:
                end -= _partial_tag(self.text)
        piece = self.text[self._shown : end] if end > self._shown else ""
        self._shown = max(self._shown, end)
        return piece

    def _add_call(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index")
        if not isinstance(index, int):
            # Servers that leave the index out send each call whole: a new id is a new call.
            known = {call["id"] for call in self.calls.values()}
            new = not self.calls or (fragment.get("id") and fragment.get("id") not in known)
            index = len(self.calls) if new else max(self.calls)
        call = self.calls.setdefault(
            index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if fragment.get("id") and not call["id"]:
            call["id"] = str(fragment["id"])
        function = fragment.get("function") or {}
        if function.get("name") and not call["function"]["name"]:
            call["function"]["name"] = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call["function"]["arguments"] += arguments
        elif isinstance(arguments, dict):
            call["function"]["arguments"] = json.dumps(arguments)

    def completion(self) -> dict[str, Any]:
        """The stream as the completion a non-streamed request would have returned."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        data: dict[str, Any] = {
            **self.meta,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
        }
        if self.usage is not None:
            data["usage"] = self.usage
        return data


def _partial_tag(text: str) -> int:
    """How many characters at the end of ``text`` could be the start of ``<tool_call>``."""
    for size in range(min(len(_TOOL_BLOCK) - 1, len(text)), 0, -1):
        if text.endswith(_TOOL_BLOCK[:size]):
            return size
    return 0


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event; comments and other fields are skipped."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        name, _, value = line.partition(":")
        if name == "data":
            lines.append(value.removeprefix(" "))
    if lines:
        yield "\n".join(lines)


def read_chunk(endpoint: Endpoint, data: str, received: int) -> dict[str, Any]:
    """One event's JSON chunk; a server's error event or an unreadable chunk raises."""
    try:
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise ValueError("not an object")
    except (json.JSONDecodeError, ValueError):
        error = ModelResponseError(
            f"the stream from {endpoint.url} sent a chunk that is not JSON after {received} "
            f"chunks: {data[:120]!r}",
            endpoint=endpoint.url,
            status_code=200,
            body=data[:2000],
        )
        raise (error if received else Retryable(error)) from None
    if "error" in chunk or chunk.get("object") == "error":
        detail = chunk.get("error", chunk)
        message = detail.get("message", detail) if isinstance(detail, dict) else detail
        code = detail.get("code") if isinstance(detail, dict) else None
        error = ModelResponseError(
            f"the server at {endpoint.url} reported an error in the stream: "
            + " ".join(str(message).split())[:300],
            endpoint=endpoint.url,
            status_code=code if isinstance(code, int) else None,
            body=data[:2000],
        )
        retry = not received and isinstance(code, int) and code in RETRYABLE_STATUS
        raise (Retryable(error) if retry else error)
    return chunk
