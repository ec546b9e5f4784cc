"""A reasoning model's thinking, kept apart from its answer.

vLLM's reasoning parsers (Qwen3, DeepSeek-R1, ...) put the thinking in the message's
``reasoning_content`` (newer versions: ``reasoning``); a server started without a parser leaves
it in the text as a ``<think>...</think>`` block. Either way it goes to ``Reply.reasoning`` and
never into the text an answer is parsed from.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REASONING_FIELDS", "split_reasoning", "split_think_block", "template_arguments"]

REASONING_FIELDS = ("reasoning_content", "reasoning")
"""Where servers put a message's (or a streamed delta's) thinking, in the order looked at."""

_THINK = re.compile(r"^\s*(?:<think>)?(.*?)</think>\s*", re.DOTALL)


def template_arguments(effort: str | None) -> dict[str, str]:
    """Chat-template arguments for an in-process model: ``reasoning_effort`` when one is set.

    In-process there is no server to translate the setting: chat templates that take an effort
    read it by this name (gpt-oss's does, as vLLM's server passes it), and the rest ignore it.
    """
    return {"reasoning_effort": effort} if effort else {}


def split_think_block(text: str) -> tuple[str, str]:
    """``text`` without a leading ``<think>...</think>`` block, and the block's content.

    The opening tag may be missing: chat templates that open the block in the prompt (Qwen3)
    leave only the closing one in the reply. A block never closed (the reply ran out of
    tokens while thinking) is all reasoning and no answer.
    """
    if "</think>" not in text:
        stripped = text.lstrip()
        if stripped.startswith("<think>"):
            return "", stripped.removeprefix("<think>").strip()
        return text, ""
    match = _THINK.match(text)
    if match is None:
        return text, ""
    return text[match.end() :], match.group(1).strip()


def split_reasoning(message: dict[str, Any]) -> tuple[str, str]:
    """A chat-completions message's answer text and its reasoning (``""`` when none)."""
    text = message.get("content") or ""
    if not isinstance(text, str):
        text = str(text)
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value:
            return text, value
    return split_think_block(text)
