"""Prompt templates as files: the words agents send live next to each other, not in code.

Templates use ``$name`` placeholders (``string.Template``), so JSON examples with braces need
no escaping. Each template has a content hash that run manifests record.
"""

from __future__ import annotations

import hashlib
import string
from functools import cache
from importlib import resources

from medagent.errors import ConfigError

__all__ = ["PromptTemplate", "load_template"]


class PromptTemplate:
    """A named template; ``render(**values)`` fills it and refuses missing values."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.sha256 = hashlib.sha256(text.encode()).hexdigest()[:16]
        self._template = string.Template(text)

    def render(self, **values: object) -> str:
        try:
            return self._template.substitute({k: str(v) for k, v in values.items()})
        except KeyError as exc:
            raise ConfigError(f"prompt template {self.name} needs a value for {exc}") from None

    def __repr__(self) -> str:
        return f"PromptTemplate({self.name!r}, sha256={self.sha256})"


@cache
def load_template(name: str) -> PromptTemplate:
    """The packaged template ``name`` (e.g. ``"giant/system"``; ``.md`` is implied)."""
    resource = resources.files("medagent.prompts") / "templates" / f"{name}.md"
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no prompt template named {name!r}") from None
    return PromptTemplate(name, text.strip() + "\n")
