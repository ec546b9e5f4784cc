"""What a model's server accepts, from a table by name and from its server's 400s.

Reasoning models behind the OpenAI API (GPT-5, o1/o3/o4) refuse ``max_tokens`` (they take
``max_completion_tokens``) and any temperature or top_p but the default, so a request built for
every other server fails on the first call. Known families are looked up in
``PARAMETER_TABLE``; an unknown model that refuses a parameter says so in a 400 ("Unsupported
parameter: 'max_tokens' ... Use 'max_completion_tokens' instead"), which ``learn_from_refusal``
reads so the request can be sent again without it, and ``ParameterMemory`` remembers the
lesson per endpoint and model.

Two lessons are about the request's shape rather than its parameters, both seen with open
models behind vLLM: a server started with ``--limit-mm-per-prompt`` refuses more images than
its limit ("At most 1 image(s) may be provided in one prompt."), and some chat templates refuse
a system turn ("System role not supported"). The first is met by keeping the images
``kept_images`` picks (the latest, then the overview), the second by folding the system text
into the first user turn, as templates that accept one do themselves.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from medagent.models._messages import kept_images

__all__ = [
    "PARAMETER_TABLE",
    "ParameterMemory",
    "ParameterRules",
    "SHARED_PARAMETER_MEMORY",
    "learn_from_refusal",
    "rules_for_model",
]

_TOKEN_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")
_LEARNABLE = frozenset(
    {*_TOKEN_LIMIT_FIELDS, "temperature", "top_p", "seed", "stop", "reasoning_effort"}
)
"""Fields a refusal may rename or drop: sampling settings, never the request's substance
(messages, tools, a response format), whose loss would change what the answer means."""


@dataclass(frozen=True)
class ParameterRules:
    """How a request body's sampling fields are sent to one model.

    ``renamed`` maps a field to the name the model takes instead; ``dropped`` fields are left
    out (the server's default applies).
    """

    renamed: dict[str, str] = field(default_factory=dict)
    dropped: frozenset[str] = frozenset()
    max_images: int | None = None
    fold_system: bool = False

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` as this model accepts it (a new dict; ``body`` is left as it is)."""
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key in self.dropped:
                continue
            out[self.renamed.get(key, key)] = value
        if isinstance(out.get("messages"), list):
            messages: list[Any] = out["messages"]
            if self.fold_system:
                messages = _folded_system(messages)
            if self.max_images is not None:
                messages = _limited_images(messages, self.max_images)
            out["messages"] = messages
        return out

    def without(self, name: str) -> ParameterRules:
        return replace(self, dropped=self.dropped | {name})

    def renaming(self, name: str, to: str) -> ParameterRules:
        return replace(self, renamed={**self.renamed, name: to})


def _image_positions(messages: list[Any]) -> list[tuple[int, int]]:
    return [
        (m, p)
        for m, message in enumerate(messages)
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for p, part in enumerate(message["content"])
        if isinstance(part, dict) and part.get("type") == "image_url"
    ]


def _limited_images(messages: list[Any], keep: int) -> list[Any]:
    """Wire messages with only the images ``kept_images`` picks; the others become a note."""
    positions = _image_positions(messages)
    if len(positions) <= keep:
        return messages
    dropped = set(positions) - {positions[i] for i in kept_images(len(positions), keep)}
    note = {"type": "text", "text": f"[an earlier image was left out: at most {keep} per request]"}
    out: list[Any] = []
    for m, message in enumerate(messages):
        if not any((m, p) in dropped for p in range(len(message.get("content") or []))):
            out.append(message)
            continue
        content = [note if (m, p) in dropped else part for p, part in enumerate(message["content"])]
        out.append({**message, "content": content})
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _folded_system(messages: list[Any]) -> list[Any]:
    """Wire messages without a system turn: its text opens the first user turn instead."""
    system = [m for m in messages if isinstance(m, dict) and m.get("role") == "system"]
    if not system:
        return messages
    preface = "\n\n".join(_text_of(m.get("content")) for m in system)
    rest = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
    for index, message in enumerate(rest):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            merged: Any = [{"type": "text", "text": preface + "\n\n"}, *content]
        else:
            merged = f"{preface}\n\n{content or ''}"
        return [*rest[:index], {**message, "content": merged}, *rest[index + 1 :]]
    return [{"role": "user", "content": preface}, *rest]


_REASONING_MODEL = ParameterRules(
    renamed={"max_tokens": "max_completion_tokens"}, dropped=frozenset({"temperature", "top_p"})
)
_NO_REASONING_EFFORT = ParameterRules(dropped=frozenset({"reasoning_effort"}))

PARAMETER_TABLE: tuple[tuple[str, ParameterRules], ...] = (
    ("gpt-5*", _REASONING_MODEL),
    ("o1*", _REASONING_MODEL),
    ("o3*", _REASONING_MODEL),
    ("o4*", _REASONING_MODEL),
    ("gpt-4*", _NO_REASONING_EFFORT),
    ("gpt-3.5*", _NO_REASONING_EFFORT),
)
"""Model-name patterns (matched on the name after any ``provider/`` prefix, lower case) and
how their requests are sent; the first match wins, anything else is sent as given."""


def rules_for_model(model: str) -> ParameterRules:
    """The table's rules for ``model`` (``openai/gpt-5-mini`` matches ``gpt-5*``)."""
    name = model.rsplit("/", 1)[-1].lower()
    for pattern, rules in PARAMETER_TABLE:
        if fnmatchcase(name, pattern):
            return rules
    return ParameterRules()


_REFUSED = re.compile(
    r"unsupported (?:parameter|value):\s*'([A-Za-z_]+)'"
    r"|unrecognized request argument supplied:\s*([A-Za-z_]+)",
    re.IGNORECASE,
)
_INSTEAD = re.compile(r"use '([A-Za-z_]+)' instead", re.IGNORECASE)
_IMAGE_LIMIT = re.compile(r"at most (\d+) image\(s\) may be provided", re.IGNORECASE)
_NO_SYSTEM = re.compile(
    r"system role (?:is )?not supported|roles must alternate|unexpected role 'system'",
    re.IGNORECASE,
)


def learn_from_refusal(
    rules: ParameterRules, body: dict[str, Any], message: str, param: str | None = None
) -> ParameterRules | None:
    """New rules after a 400 that refused a parameter of ``body``; ``None``: nothing to learn.

    ``message`` is the server's error message, ``param`` OpenAI's ``error.param`` when given.
    An image limit or a refused system turn changes the request's shape (see the module's
    docstring). A refused token limit is renamed (to the name the message suggests, else the
    other one of ``max_tokens``/``max_completion_tokens``); any other refused field is dropped.
    Only fields the request held as sent are learned, so one refusal is never acted on twice.
    """
    limit = _IMAGE_LIMIT.search(message)
    if limit is not None:
        keep = int(limit.group(1))
        images = len(_image_positions(list(body.get("messages") or [])))
        if 1 <= keep < images and (rules.max_images is None or keep < rules.max_images):
            return replace(rules, max_images=keep)
        return None
    if _NO_SYSTEM.search(message):
        has_system = any(
            isinstance(m, dict) and m.get("role") == "system" for m in body.get("messages") or []
        )
        return replace(rules, fold_system=True) if has_system and not rules.fold_system else None
    found = _REFUSED.search(message)
    name = (found.group(1) or found.group(2)) if found else param
    if not name or name not in body or name not in _LEARNABLE:
        return None
    if name in _TOKEN_LIMIT_FIELDS:
        suggested = _INSTEAD.search(message)
        other = next(f for f in _TOKEN_LIMIT_FIELDS if f != name)
        target = suggested.group(1) if suggested else other
        if target != name and target not in body:
            original = next((k for k, v in rules.renamed.items() if v == name), name)
            return rules.renaming(original, target)
    original = next((k for k, v in rules.renamed.items() if v == name), name)
    return rules.without(original)


class ParameterMemory:
    """What servers taught about their models' parameters, per endpoint and model.

    Shared by every backend in the process (``SHARED_PARAMETER_MEMORY``), so a model that
    refused a parameter once is never sent it again from this process.
    """

    def __init__(self) -> None:
        self._learned: dict[tuple[str, str], ParameterRules] = {}
        self._lock = threading.Lock()

    def rules(self, endpoint: str, model: str) -> ParameterRules:
        with self._lock:
            return self._learned.get((endpoint, model)) or rules_for_model(model)

    def learn(self, endpoint: str, model: str, rules: ParameterRules) -> None:
        with self._lock:
            self._learned[(endpoint, model)] = rules

    def clear(self) -> None:
        with self._lock:
            self._learned.clear()


SHARED_PARAMETER_MEMORY = ParameterMemory()
