"""What every loader returns (`Dataset`) and the parts loaders share.

Shared rules: ids are unique within a dataset; an item whose image or slide cannot be found
either stops the load with one `InputError` naming the first few, or (``skip_missing``) is left
out and listed in ``Dataset.missing`` so a run manifest can say what was not run.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent.errors import ConfigError, InputError
from medagent.evals._records import EvalItem

__all__ = ["Dataset", "DatasetKind", "MissingImage"]

DatasetKind = Literal[
    "multipathqa",
    "vqa-rad",
    "jsonl",
    "insight",
    "pathvqa",
    "slake",
    "pmc-vqa",
    "medxpertqa",
    "slidebench",
    "wsi-vqa",
]

# How many missing names an error message shows before "...".
_SHOWN = 3


class MissingImage(BaseModel):
    """An item left out because its slide or image file was not found."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    path: str = Field(description="the path looked for (as written in the source, or resolved)")
    searched: list[str] = Field(description="the folders it was looked for in")


class Dataset(BaseModel):
    """A loaded benchmark: its items plus what a run manifest records about the source."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="e.g. 'multipathqa', 'vqa-rad-test', or the file's stem")
    kind: DatasetKind
    items: list[EvalItem]
    source_path: Path = Field(description="the file the items were read from")
    source_sha256: str = Field(description="sha256 of that file (hex), for run manifests")
    missing: list[MissingImage] = Field(
        default_factory=list, description="items left out because their image was not found"
    )
    dropped_invalid: int = Field(0, description="rows the source itself marks as invalid")
    left_out: dict[str, int] = Field(
        default_factory=dict, description="rows left out by choice, counted by reason"
    )

    def __len__(self) -> int:
        return len(self.items)

    def task_counts(self) -> dict[str, int]:
        """Items per task, in order of first appearance."""
        return dict(Counter(item.task for item in self.items))


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks (sources can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a readable file, else an `InputError` saying what was expected."""
    if not path.is_file():
        reason = "is a folder" if path.is_dir() else "does not exist"
        raise InputError(f"{what} {path} {reason}", path=str(path))
    return path


def absolute(path: Path) -> Path:
    """``path`` made absolute with '..' folded in, symlinks kept (so paths read like the input)."""
    return Path(os.path.abspath(path))


def resolve_relative(value: str, base: Path) -> str:
    """A path from a data file, made absolute against the file's folder when relative."""
    return str(absolute(base / Path(value).expanduser()))


def check_options(limit: int | None, tasks: Sequence[str] | None) -> list[str] | None:
    """``limit`` checked; ``tasks`` as a list (a lone string is one task, not its letters)."""
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be 0 or more, got {limit}")
    if isinstance(tasks, str):
        return [tasks]
    return None if tasks is None else list(tasks)


def check_tasks(wanted: Sequence[str] | None, known: Iterable[str], source: str) -> None:
    """A `ConfigError` naming the known tasks when ``wanted`` names one that is not."""
    known = list(dict.fromkeys(known))
    unknown = sorted(set(wanted or ()) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {source} task(s) {', '.join(unknown)}; the tasks are {', '.join(known)}"
        )


def select(
    candidates: Iterable[tuple[EvalItem, list[MissingImage]]],
    *,
    limit: int | None,
    skip_missing: bool,
    source: str,
    hint: str,
) -> tuple[list[EvalItem], list[MissingImage]]:
    """Items whose images were all found, at most ``limit``, and what was missing.

    ``candidates`` is consumed lazily, so rows after the limit are never read. Without
    ``skip_missing`` an item with a missing image counts towards the limit (the error then
    names the first ones); with it, only items that can run count. Raises one `InputError`
    for all missing images unless ``skip_missing``.
    """
    items: list[EvalItem] = []
    missing: list[MissingImage] = []
    lost_items = 0
    if limit is not None and limit <= 0:
        return items, missing
    for item, lost in candidates:
        if lost:
            missing.extend(lost)
            lost_items += 1
        else:
            items.append(item)
        if limit is not None and len(items) + (0 if skip_missing else lost_items) >= limit:
            break
    if missing and not skip_missing:
        names = list(dict.fromkeys(m.path for m in missing))
        shown = ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
        searched = list(dict.fromkeys(folder for m in missing for folder in m.searched))
        where = f" under {', '.join(searched)}" if searched else ""
        raise InputError(
            f"{lost_items} of {lost_items + len(items)} {source} items have no image file"
            f"{where} ({shown}); {hint}"
        )
    return items, missing


def disambiguate(ids: Sequence[str]) -> list[str]:
    """Ids made unique: the 2nd, 3rd... occurrence of an id gets '#2', '#3'... (file order)."""
    seen: Counter[str] = Counter()
    taken = set(ids)
    unique: list[str] = []
    for item_id in ids:
        seen[item_id] += 1
        if seen[item_id] == 1:
            unique.append(item_id)
            continue
        n = seen[item_id]
        while f"{item_id}#{n}" in taken:
            n += 1
        taken.add(f"{item_id}#{n}")
        unique.append(f"{item_id}#{n}")
    return unique


def validation_message(error: ValidationError) -> str:
    """A pydantic error on one line: ``field: message; other.field: message``."""
    parts = []
    for detail in error.errors():
        location = ".".join(str(part) for part in detail["loc"]) or "(object)"
        parts.append(f"{location}: {detail['msg']}")
    return "; ".join(parts)
