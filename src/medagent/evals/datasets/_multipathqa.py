"""MultiPathQA (GIANT's benchmark): 934 whole-slide questions in one CSV, slides not included.

Columns: benchmark_name, benchmark_id, image_path, answer, options, image_exists, patch_exists,
is_valid, metric_type, file_id, prompt. Five tasks (``benchmark_name``):

- ``gtex``: the answer is an organ label, one of 20 options;
- ``tcga``: the answer is a 1-based index into 30 cancer types;
- ``panda``: the answer is an ISUP grade 0-5, no options (models answer ``{"isup_grade": n}``);
- ``tcga_slidebench``, ``tcga_expert_vqa``: a 1-based index into 4 options.

References are normalized like predictions (`medagent.agents.giant.normalize_answer`): the
chosen option's text, or the grade as a string; the raw answer stays in ``metadata``.

Prompts: the gtex/tcga/panda prompts are ``str.format`` templates (``{options}``, and ``{{``
for literal braces); they are formatted with the options as a numbered list. Prompts without a
placeholder get "Options:" and the numbered list appended. Surrounding whitespace is stripped.
"""

from __future__ import annotations

import ast
import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from medagent.errors import ConfigError, InputError
from medagent.evals._records import EvalItem, MetricType
from medagent.evals.datasets._base import (
    Dataset,
    MissingImage,
    absolute,
    check_options,
    check_tasks,
    disambiguate,
    file_sha256,
    require_file,
    select,
)

__all__ = ["MULTIPATHQA_TASKS", "SLIDE_EXTENSIONS", "SlideFinder", "load_multipathqa"]

MULTIPATHQA_TASKS = ("gtex", "tcga", "panda", "tcga_slidebench", "tcga_expert_vqa")
SLIDE_EXTENSIONS = (".svs", ".tiff", ".tif", ".ndpi", ".mrxs")

_COLUMNS = (
    "benchmark_name",
    "benchmark_id",
    "image_path",
    "answer",
    "options",
    "is_valid",
    "metric_type",
    "file_id",
    "prompt",
)
_INDEX_TASKS = frozenset({"tcga", "tcga_slidebench", "tcga_expert_vqa"})
_METRICS: dict[str, MetricType] = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy"}
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class SlideFinder:
    """Finds a slide under the given folders: exact relative path, file name, then file id.

    The name index (one walk per folder, sorted, so the first of several same-named files
    wins deterministically) is built only when an exact path misses.
    """

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = [Path(root).expanduser() for root in roots]
        for root in self.roots:
            if not root.is_dir():
                raise InputError(f"slide folder {root} does not exist", path=str(root))
        self._by_name: dict[str, Path] | None = None

    def _index(self) -> dict[str, Path]:
        if self._by_name is None:
            self._by_name = {}
            for root in self.roots:
                for folder, dirs, files in os.walk(root):
                    dirs.sort()
                    for name in sorted(files):
                        self._by_name.setdefault(name, Path(folder) / name)
        return self._by_name

    def find(self, image_path: str, file_id: str) -> Path | None:
        for root in self.roots:
            exact = root / image_path
            if exact.is_file():
                return absolute(exact)
        index = self._index()
        by_name = index.get(Path(image_path).name)
        if by_name is not None:
            return absolute(by_name)
        stem = file_id
        if Path(file_id).suffix.lower() in SLIDE_EXTENSIONS:
            stem = file_id[: -len(Path(file_id).suffix)]
        for extension in SLIDE_EXTENSIONS:
            by_id = index.get(stem + extension)
            if by_id is not None:
                return absolute(by_id)
        return None


def _parse_options(text: str, where: str) -> list[str] | None:
    if not text.strip():
        return None
    try:
        # literal_eval evaluates Python literals only, never code.
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
        raise InputError(f"{where}: options are not a Python list literal ({error})") from None
    if not isinstance(value, list | tuple) or not all(isinstance(o, str) for o in value):
        raise InputError(f"{where}: options must be a list of strings, got {text[:80]!r}")
    return list(value)


def _parse_bool(text: str, where: str, column: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE or value == "":
        return True  # an empty cell does not mark a row invalid
    if value in _FALSE:
        return False
    raise InputError(f"{where}: {column} must be True or False, got {text!r}")


def _reference(task: str, answer: str, options: list[str] | None, where: str) -> str:
    raw = answer.strip()
    if task == "panda":
        if not raw.isdigit() or not 0 <= int(raw) <= 5:
            raise InputError(f"{where}: a PANDA answer is an ISUP grade 0-5, got {answer!r}")
        return str(int(raw))
    if not options:
        raise InputError(f"{where}: task {task!r} needs options, the options cell is empty")
    if task in _INDEX_TASKS:
        if not raw.isdigit() or not 1 <= int(raw) <= len(options):
            raise InputError(f"{where}: answer {answer!r} is not an option number 1-{len(options)}")
        return options[int(raw) - 1]
    matches = [o for o in options if o.strip().casefold() == raw.casefold()]
    if len(matches) != 1:
        raise InputError(f"{where}: answer {answer!r} is not one of the options")
    return matches[0]


def _question(prompt: str, options: list[str] | None, where: str) -> str:
    listing = "\n".join(f"{n}. {option}" for n, option in enumerate(options or [], 1))
    text = prompt
    placeholder = "{options}" in prompt
    if placeholder or "{{" in prompt:  # a str.format template, as GIANT's prompts are
        if placeholder and not options:
            raise InputError(f"{where}: the prompt has an {{options}} placeholder but no options")
        try:
            text = prompt.format(options=listing)
        except (KeyError, IndexError, ValueError) as error:
            raise InputError(f"{where}: the prompt is not a valid template ({error!r})") from None
    if options and not placeholder:
        text = f"{text.rstrip()}\n\nOptions:\n{listing}"
    return text.strip()


def _read_rows(path: Path) -> list[dict[str, str]]:
    # utf-8-sig: a spreadsheet's byte-order mark would otherwise rename the first column.
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            absent = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
            if absent:
                raise InputError(
                    f"{path} is not a MultiPathQA CSV: missing column(s) {', '.join(absent)}",
                    path=str(path),
                )
            return list(reader)
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text ({error.reason})", path=str(path)) from None
    except csv.Error as error:
        raise InputError(f"{path} is not a readable CSV ({error})", path=str(path)) from None


def _rows(path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(where, item id, row) for every row; ids made unique, task names checked."""
    rows = _read_rows(path)
    ids = disambiguate([f"{r['benchmark_name']}:{r['benchmark_id']}" for r in rows])
    for number, (row, item_id) in enumerate(zip(rows, ids, strict=True), 1):
        where = f"{path.name} row {number} ({item_id})"
        if row["benchmark_name"] not in MULTIPATHQA_TASKS:
            raise InputError(f"{where}: unknown benchmark_name {row['benchmark_name']!r}")
        yield where, item_id, row


def _candidates(
    rows: list[tuple[str, str, dict[str, str]]], finder: SlideFinder
) -> Iterator[tuple[EvalItem, list[MissingImage]]]:
    searched = [str(root) for root in finder.roots]
    for where, item_id, row in rows:
        task = row["benchmark_name"]
        metric = _METRICS.get(row["metric_type"].strip())
        if metric is None:
            raise InputError(f"{where}: unknown metric_type {row['metric_type']!r}")
        options = _parse_options(row["options"], where)
        slide = finder.find(row["image_path"], row["file_id"]) if finder.roots else None
        metadata: dict[str, Any] = {
            "raw_answer": row["answer"],
            "benchmark_id": row["benchmark_id"],
            "image_path": row["image_path"],
            "file_id": row["file_id"],
        }
        if item_id != f"{task}:{row['benchmark_id']}":
            metadata["id_renamed_from"] = f"{task}:{row['benchmark_id']}"
        item = EvalItem(
            id=item_id,
            task=task,
            slide=None if slide is None else str(slide),
            question=_question(row["prompt"], options, where),
            options=options,
            answer=_reference(task, row["answer"], options, where),
            metric=metric,
            metadata=metadata,
        )
        lost = (
            []
            if slide
            else [MissingImage(item_id=item_id, path=row["image_path"], searched=searched)]
        )
        yield item, lost


def load_multipathqa(
    csv_path: Path | str,
    *,
    slide_roots: Sequence[Path | str] = (),
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
) -> Dataset:
    """Load MultiPathQA, resolving each ``image_path`` under ``slide_roots``.

    A slide is looked for under each root as the exact relative path, then anywhere below by
    file name, then as ``<file_id>`` with a slide extension (.svs .tiff .tif .ndpi .mrxs).
    ``tasks`` keeps those tasks; ``limit`` keeps the first N items in file order (with
    ``skip_missing``, items without a slide do not count towards N). Rows with ``is_valid``
    False are dropped and counted in ``dropped_invalid``. Raises `InputError` when a kept item's
    slide is missing (unless ``skip_missing``: then it is left out and listed in ``missing``)
    and `ConfigError` for an unknown task, or when no slide folder is given without
    ``skip_missing``.
    """
    path = require_file(Path(csv_path).expanduser(), "MultiPathQA CSV")
    wanted = check_options(limit, tasks)
    check_tasks(wanted, MULTIPATHQA_TASKS, "MultiPathQA")
    if not slide_roots and not skip_missing:
        raise ConfigError(
            "MultiPathQA slides are not part of the CSV: pass --slides DIR (a folder holding "
            "the GTEx, TCGA and PANDA slides; may be repeated) or --skip-missing"
        )
    finder = SlideFinder([Path(root) for root in slide_roots])
    rows = [r for r in _rows(path) if wanted is None or r[2]["benchmark_name"] in wanted]
    valid = [r for r in rows if _parse_bool(r[2]["is_valid"], r[0], "is_valid")]
    items, missing = select(
        _candidates(valid, finder),
        limit=limit,
        skip_missing=skip_missing,
        source="MultiPathQA",
        hint="pass --slides DIR with the folder holding them, or --skip-missing to leave them out",
    )
    return Dataset(
        name="multipathqa",
        kind="multipathqa",
        items=items,
        source_path=absolute(path),
        source_sha256=file_sha256(path),
        missing=missing,
        dropped_invalid=len(rows) - len(valid),
    )
