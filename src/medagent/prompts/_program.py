"""A program: prompt steps (named predictors) and the code that chains them.

Optimizers see a program only through its named predictors — they copy it, change
instructions and demos, and score the copy — so any pipeline written as a ``Program`` subclass
can be optimized and saved. The default ``forward`` runs a single predictor.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from medagent._version import package_versions
from medagent.errors import ConfigError
from medagent.models import ChatModel
from medagent.prompts._compiled import (
    CompiledProgram,
    apply_predictor_state,
    image_sink,
    images_dir,
    load_compiled,
    now_iso,
    predictor_state,
    state_sha256,
    write_compiled,
)
from medagent.prompts._modules import Predict, Prediction

__all__ = ["Program"]


class Program:
    """Named predictors plus ``forward``; ``name`` ties compiled files to the program they fit."""

    def __init__(
        self, name: str, predictors: Mapping[str, Predict], *, description: str = ""
    ) -> None:
        if not predictors:
            raise ConfigError(f"program {name} needs at least one predictor")
        self.name = name
        self.description = description
        self.predictors: dict[str, Predict] = dict(predictors)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, predictors={list(self.predictors)})"

    def predictor(self, name: str) -> Predict:
        try:
            return self.predictors[name]
        except KeyError:
            raise ConfigError(
                f"program {self.name} has no predictor {name!r} (it has "
                f"{', '.join(self.predictors)})"
            ) from None

    def clone(self) -> Self:
        """A copy whose predictors can be changed without touching this program."""
        twin = copy.copy(self)
        twin.predictors = {name: p.copy() for name, p in self.predictors.items()}
        return twin

    async def forward(self, model: ChatModel, inputs: Mapping[str, Any]) -> Prediction:
        """Run the program on one example's inputs. Override for multi-step programs."""
        if len(self.predictors) != 1:
            raise ConfigError(
                f"program {self.name!r} has {len(self.predictors)} predictors, so it cannot be run "
                "as one call: its agent runs it (pass it as prompts=), or subclass Program and "
                "write forward"
            )
        (only,) = self.predictors.values()
        return await only.acall(model, inputs)

    async def __call__(self, model: ChatModel, inputs: Mapping[str, Any]) -> Prediction:
        return await self.forward(model, inputs)

    # -- state -------------------------------------------------------------------------------
    def sha256(self) -> str:
        """Hash of the tunable state (instructions, demos with image content, descriptions)."""
        return state_sha256({name: predictor_state(p, name) for name, p in self.predictors.items()})

    def compiled(
        self,
        path: Path | None = None,
        *,
        optimizer: dict[str, Any] | None = None,
        scores: dict[str, Any] | None = None,
        candidates: list[dict[str, Any]] | None = None,
        model: str | None = None,
    ) -> CompiledProgram:
        """This program's state as a `CompiledProgram`; with ``path``, images are written
        next to it."""
        sink = image_sink(images_dir(path)) if path is not None else None
        states = {name: predictor_state(p, name, sink) for name, p in self.predictors.items()}
        return CompiledProgram(
            program=self.name,
            description=self.description,
            sha256=state_sha256(states),
            predictors=states,
            optimizer=optimizer,
            scores=scores or {},
            candidates=candidates or [],
            model=model,
            versions=package_versions(),
            created_at=now_iso(),
            path=path,
        )

    def save(self, path: str | Path, **report: Any) -> CompiledProgram:
        """Write ``path`` (JSON) and its ``.images/`` folder; ``report`` as for ``compiled``."""
        target = Path(path)
        compiled = self.compiled(target, **report)
        write_compiled(compiled, target)
        return compiled

    def load(self, source: CompiledProgram | str | Path) -> Self:
        """Take instructions, demos and descriptions from a compiled program (in place).

        The compiled program must be for this program (same name and predictors); a file made
        by another medagent version, or for a changed signature, loads with a warning.
        """
        compiled = source if isinstance(source, CompiledProgram) else load_compiled(source)
        where = str(compiled.path) if compiled.path else f"compiled program {compiled.program}"
        if compiled.program != self.name:
            raise ConfigError(
                f"{where} holds prompts for the {compiled.program!r} program; this is {self.name!r}"
            )
        if set(compiled.predictors) != set(self.predictors):
            raise ConfigError(
                f"{where} has predictors {sorted(compiled.predictors)}; program {self.name} "
                f"has {sorted(self.predictors)}"
            )
        images = images_dir(compiled.path) if compiled.path else None
        for name, state in compiled.predictors.items():
            apply_predictor_state(self.predictors[name], state, images, f"{where} ({name})")
        return self
