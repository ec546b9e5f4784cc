"""Which sampling parameters a model accepts, from a table by name and from its server's 400s.

Reasoning models behind the OpenAI API (GPT-5, o1/o3/o4) refuse ``max_tokens`` (they take
``max_completion_tokens``) and any temperature or top_p but the default, so a request built for
every other server fails on the first call. Known families are looked up in
``PARAMETER_TABLE``; an unknown model that refuses a parameter says so in a 400 ("Unsupported
parameter: 'max_tokens' ... Use 'max_completion_tokens' instead"), which ``learn_from_refusal``
reads so the request can be sent again without it, and ``ParameterMemory`` remembers the
lesson per endpoint and model.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

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

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` as this model accepts it (a new dict; ``body`` is left as it is)."""
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key in self.dropped:
                continue
            out[self.renamed.get(key, key)] = value
        return out

    def without(self, name: str) -> ParameterRules:
        return replace(self, dropped=self.dropped | {name})

    def renaming(self, name: str, to: str) -> ParameterRules:
        return replace(self, renamed={**self.renamed, name: to})


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


def learn_from_refusal(
    rules: ParameterRules, body: dict[str, Any], message: str, param: str | None = None
) -> ParameterRules | None:
    """New rules after a 400 that refused a parameter of ``body``; ``None``: nothing to learn.

    ``message`` is the server's error message, ``param`` OpenAI's ``error.param`` when given.
    A refused token limit is renamed (to the name the message suggests, else the other one of
    ``max_tokens``/``max_completion_tokens``); any other refused field is dropped. Only fields
    the request held as sent are learned, so one refusal is never acted on twice.
    """
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
