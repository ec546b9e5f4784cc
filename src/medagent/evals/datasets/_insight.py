"""Insight cases (MedInsightBench style): an analysis goal, images, and reference insights.

A case::

    {"id": "tcga-brca-01", "goal": "Characterize the tumour and its microenvironment",
     "images": ["images/tcga-brca-01.png"],
     "insights": [{"text": "Dense lymphocytic infiltrate at the invasive front",
                   "question": "What immune cells surround the tumour?",
                   "evidence": "Sheets of small round cells along the tumour border",
                   "difficulty": "medium"}]}

A ``.jsonl`` file holds one case per line; any other file is JSON: a list of cases, or an
object ``{"cases": [...]}``. ``images`` (at least one) are paths relative to the file's folder
unless absolute; ``insights`` needs at least one entry with ``text``; ``question``,
``evidence`` and ``difficulty`` are optional, and a case may carry a ``metadata`` object.
Any other field is an error. Each case becomes an `EvalItem` with task and metric
``insight``, the goal as its question, and the reference insights (as dicts) in
``metadata["insights"]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent.errors import InputError
from medagent.evals._records import EvalItem
from medagent.evals.datasets._base import (
    Dataset,
    MissingImage,
    absolute,
    check_options,
    file_sha256,
    require_file,
    resolve_relative,
    select,
    validation_message,
)

__all__ = ["InsightCase", "ReferenceInsight", "load_insight"]


class ReferenceInsight(BaseModel):
    """One verified insight a good analysis of the case should find."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    text: str = Field(min_length=1, description="the insight, one or two sentences")
    question: str | None = Field(None, description="the question the insight answers")
    evidence: str | None = Field(None, description="what in the image supports it")
    difficulty: str | None = Field(None, description="a free label, e.g. 'easy' or '2'")


class InsightCase(BaseModel):
    """One case: an analysis goal over images, with the insights expected from it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    goal: str = Field(min_length=1, description="the analysis goal; the item's question")
    images: list[str] = Field(min_length=1)
    insights: list[ReferenceInsight] = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)

    def to_item(self, base: Path) -> EvalItem:
        """The case as an `EvalItem`, relative image paths resolved against ``base``."""
        return EvalItem(
            id=self.id,
            task="insight",
            images=[resolve_relative(image, base) for image in self.images],
            question=self.goal,
            metric="insight",
            metadata={
                **self.metadata,
                "insights": [insight.model_dump() for insight in self.insights],
            },
        )


def _raw_cases(path: Path) -> list[tuple[str, Any]]:
    """(where, raw case) pairs, from a JSONL or a JSON file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text ({error.reason})", path=str(path)) from None
    if path.suffix.lower() == ".jsonl":
        cases: list[tuple[str, Any]] = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                where = f"{path.name} line {number}"
                try:
                    cases.append((where, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise InputError(
                        f"{where}: not JSON ({error.msg}, column {error.colno})"
                    ) from None
        return cases
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path.name} line {error.lineno}: not JSON ({error.msg}, column {error.colno})"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("cases"), list):
        data = data["cases"]
    if not isinstance(data, list):
        raise InputError(f'{path.name}: expected a list of cases or {{"cases": [...]}}')
    return [(f"{path.name} case {n}", case) for n, case in enumerate(data, 1)]


def load_insight(
    path: Path | str, *, limit: int | None = None, skip_missing: bool = False
) -> Dataset:
    """Load insight cases from a JSON or JSONL file (see the module docstring)."""
    source = require_file(Path(path).expanduser(), "insight cases file")
    check_options(limit, None)
    base = absolute(source.parent)
    candidates: list[tuple[EvalItem, list[MissingImage]]] = []
    seen: dict[str, str] = {}
    for where, raw in _raw_cases(source):
        try:
            case = InsightCase.model_validate(raw)
        except ValidationError as error:
            raise InputError(f"{where}: {validation_message(error)}") from None
        if case.id in seen:
            raise InputError(f"{where}: id {case.id!r} repeats {seen[case.id]}")
        seen[case.id] = where
        item = case.to_item(base)
        lost = [
            MissingImage(item_id=item.id, path=image, searched=[str(base)])
            for image in item.images
            if not Path(image).is_file()
        ]
        candidates.append((item, lost))
    items, missing = select(
        candidates,
        limit=limit,
        skip_missing=skip_missing,
        source=source.name,
        hint="fix the paths (relative ones are read from the file's folder), "
        "or pass --skip-missing to leave them out",
    )
    return Dataset(
        name=source.stem,
        kind="insight",
        items=items,
        source_path=absolute(source),
        source_sha256=file_sha256(source),
        missing=missing,
    )
