"""The generic item format: one JSON object per line, each an `EvalItem`.

Each line of a ``.jsonl`` file (UTF-8) is one item::

    {"id": "cxr-001", "task": "chest", "images": ["images/cxr-001.png"],
     "question": "Is there a pleural effusion?", "answer": "yes", "metric": "yes_no"}

(one line in the file; wrapped here). Fields:

- ``id`` (string, required): unique within the file; results are keyed by it.
- ``task`` (string, required): the sub-task that per-task scores are grouped by.
- ``question`` (string, required): the text the model is asked.
- ``images`` (list of paths): image files, for image questions.
- ``slide`` (path): a whole-slide image, for slide questions.
- ``options`` (list of strings): the choices of a multiple-choice question, in order.
- ``answer`` (string): the reference. With ``options`` it may be the option's text or its
  1-based number and becomes the option's text; without, it is normalized like a free-text
  prediction (lower case, whitespace collapsed, a final period dropped). The answer as written
  is kept in ``metadata.raw_answer``.
- ``metric``: ``accuracy`` (default), ``balanced_accuracy``, ``open``, ``yes_no``,
  ``closed`` (yes/no or one of the alternatives the question names, "A or B?"; give them in
  ``metadata.choices`` when the question's wording does not) or ``insight``.
- ``metadata`` (object): anything else, carried through to the results.

Relative paths in ``images`` and ``slide`` are resolved against the folder of the ``.jsonl``
file. Either may instead name a series in a DICOMweb archive,
``dicomweb+https://HOST/DICOMWEB-ROOT/studies/UID/series/UID``: it is read frame by frame when
the item runs (credentials from ``MEDAGENT_DICOMWEB_TOKEN`` / ``_BASIC``), and an archive that
refuses, lacks the series or is down fails that item only.

Blank lines are skipped. Any other field is an error (put extra data in ``metadata``),
as is a repeated id, a line that is not a JSON object, or an image file that does not exist
(unless ``skip_missing``, which leaves the item out). Errors name the file and line number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medagent.agents.base import normalize_answer
from medagent.errors import InputError
from medagent.evals._records import EvalItem
from medagent.evals.datasets._base import (
    Dataset,
    MissingImage,
    absolute,
    check_options,
    check_tasks,
    file_sha256,
    require_file,
    resolve_relative,
    select,
    validation_message,
)
from medagent.imaging import is_dicomweb_ref, parse_dicomweb_ref

__all__ = ["load_jsonl"]

_FIELDS = frozenset(EvalItem.model_fields)


def _reference(answer: str, options: list[str] | None, where: str) -> str:
    # The option's own text first: normalize_answer would read "2 cm" as option number 2.
    exact = [o for o in options or [] if o.strip().casefold() == answer.strip().casefold()]
    if len(exact) == 1:
        return exact[0]
    reference = normalize_answer(answer, options or None)
    if reference is None:
        what = "is not one of the options" if options else "is empty"
        raise InputError(f"{where}: answer {answer!r} {what}")
    return reference


def _source(value: str, base: Path, where: str) -> str:
    """An image or slide of a row: a DICOMweb reference as written (checked now, so a typo
    stops the load, not an item), or a path made absolute against the file's folder."""
    if is_dicomweb_ref(value):
        try:
            return parse_dicomweb_ref(value).url
        except InputError as error:
            raise InputError(f"{where}: {error}") from None
    return resolve_relative(value, base)


def _parse_line(line: str, base: Path, where: str) -> EvalItem:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: not JSON ({error.msg}, column {error.colno})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise InputError(
            f"{where}: unknown field(s) {', '.join(unknown)} (put extra data in 'metadata'; "
            f"the fields are {', '.join(sorted(_FIELDS))})"
        )
    try:
        item = EvalItem.model_validate(data)
    except ValidationError as error:
        raise InputError(f"{where}: {validation_message(error)}") from None
    if not item.id.strip():
        raise InputError(f"{where}: id: must not be empty")
    update: dict[str, Any] = {
        "images": [_source(image, base, where) for image in item.images],
        "slide": None if item.slide is None else _source(item.slide, base, where),
    }
    if item.answer is not None:
        update["answer"] = _reference(item.answer, item.options, where)
        update["metadata"] = {**item.metadata, "raw_answer": item.answer}
    return item.model_copy(update=update)


def _candidates(path: Path) -> list[tuple[EvalItem, list[MissingImage]]]:
    """Every line parsed up front, so a bad line stops the load before any item runs."""
    base = absolute(path.parent)
    seen: dict[str, int] = {}
    candidates: list[tuple[EvalItem, list[MissingImage]]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text ({error.reason})", path=str(path)) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        item = _parse_line(line, base, where)
        if item.id in seen:
            raise InputError(f"{where}: id {item.id!r} repeats line {seen[item.id]}")
        seen[item.id] = number
        wanted = [*item.images, *([item.slide] if item.slide else [])]
        lost = [
            MissingImage(item_id=item.id, path=image, searched=[str(base)])
            for image in wanted
            # not is_file: a DICOM slide can be a folder; an archive is asked when the item runs
            if not is_dicomweb_ref(image) and not Path(image).exists()
        ]
        candidates.append((item, lost))
    return candidates


def load_jsonl(
    path: Path | str,
    *,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
) -> Dataset:
    """Load items in the generic JSONL format (see the module docstring).

    ``tasks`` keeps items of those tasks; ``limit`` keeps the first N in file order (with
    ``skip_missing``, items with a missing image do not count towards N).
    """
    source = require_file(Path(path).expanduser(), "JSONL file")
    wanted = check_options(limit, tasks)
    candidates = _candidates(source)
    check_tasks(wanted, (item.task for item, _ in candidates), source.name)
    items, missing = select(
        (c for c in candidates if wanted is None or c[0].task in wanted),
        limit=limit,
        skip_missing=skip_missing,
        source=source.name,
        hint="fix the paths (relative ones are read from the file's folder), "
        "or pass --skip-missing to leave them out",
    )
    return Dataset(
        name=source.stem,
        kind="jsonl",
        items=items,
        source_path=absolute(source),
        source_sha256=file_sha256(source),
        missing=missing,
    )
