"""Typed signatures: what a prompt takes (text, lists, images) and the pydantic object it returns.

A signature is the contract an optimizer must keep while it rewrites the words around it:
instructions and demos change, the fields and the output model do not.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from medagent.errors import ConfigError

__all__ = ["FieldKind", "InputField", "Signature", "with_reasoning"]

FieldKind = Literal["text", "list", "image", "images"]
"""``text``: a string; ``list``: strings shown numbered; ``image``/``images``: one or several."""

_NAME = re.compile(r"[a-z][a-z0-9_]*")
REASONING_FIELD = "reasoning"


class InputField(BaseModel):
    """One input of a signature. Optional fields are left out of the prompt when empty."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    kind: FieldKind = "text"
    optional: bool = False

    @property
    def label(self) -> str:
        """How the field is introduced in a prompt: ``options`` → ``Options``."""
        return self.name.replace("_", " ").capitalize()

    @property
    def is_image(self) -> bool:
        return self.kind in ("image", "images")


class Signature(BaseModel):
    """Named inputs, an output model and the instructions that connect them.

    ``name`` identifies the signature in compiled programs (e.g. ``"vqa.answer"``); the output
    model's field descriptions are what the prompt says about each output field.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    instructions: str
    inputs: tuple[InputField, ...]
    output: type[BaseModel]
    description: str = Field("", description="what the step does, for instruction proposals")

    @model_validator(mode="after")
    def _check(self) -> Signature:
        names = [f.name for f in self.inputs]
        bad = [n for n in names if not _NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"input field names must be lower_snake_case, not {bad}")
        if len(set(names)) != len(names):
            raise ValueError(f"input field names repeat: {names}")
        if not self.inputs:
            raise ValueError("a signature needs at least one input field")
        return self

    @property
    def output_fields(self) -> list[str]:
        return list(self.output.model_fields)

    def input_descriptions(self) -> dict[str, str]:
        return {f.name: f.description for f in self.inputs}

    def output_descriptions(self) -> dict[str, str]:
        return {name: f.description or "" for name, f in self.output.model_fields.items()}

    def check_inputs(self, values: Mapping[str, Any]) -> None:
        """A one-line `ConfigError` when a required input is missing or an unknown one given."""
        missing = [
            f.name for f in self.inputs if not f.optional and _empty(values.get(f.name, None))
        ]
        unknown = sorted(set(values) - {f.name for f in self.inputs})
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown {', '.join(unknown)}")
            raise ConfigError(
                f"inputs for {self.name}: {'; '.join(parts)} (it takes "
                f"{', '.join(f.name for f in self.inputs)})"
            )

    def sha256(self) -> str:
        """Hash of everything but the instructions: a compiled program's demos stay valid while
        it holds (instructions are what optimizers change)."""
        text = json.dumps(
            {
                "name": self.name,
                "inputs": [f.model_dump() for f in self.inputs],
                "output": self.output.model_json_schema(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, str | list | tuple) and len(value) == 0)


@functools.cache
def with_reasoning(output: type[BaseModel]) -> type[BaseModel]:
    """``output`` with a ``reasoning`` string first, so the model thinks before it answers.

    Cached: one class per output model, so backends that cache grammars by schema reuse them.
    """
    if REASONING_FIELD in output.model_fields:
        raise ConfigError(f"{output.__name__} already has a {REASONING_FIELD!r} field")
    fields: dict[str, Any] = {
        REASONING_FIELD: (
            str,
            Field(description="your step-by-step reasoning, before the answer", max_length=2000),
        )
    }
    for name, info in output.model_fields.items():
        fields[name] = (info.annotation, info)
    return create_model(f"{output.__name__}WithReasoning", **fields)
