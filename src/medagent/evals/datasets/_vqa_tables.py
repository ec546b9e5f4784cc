"""What the table releases of PathVQA, SLAKE and VQA-RAD share: a closed/open rule, rows to items.

The three are image-question-answer tables; their Hugging Face releases keep only ``image``,
``question`` and ``answer``, so a question is closed exactly when its answer is yes or no (how
PathVQA defines its closed-ended questions, and the only rule left when a release drops the
answer type). Closed questions are scored ``closed`` (accuracy, as the papers report closed
questions); open ones ``open_recall``, the share of the reference's tokens found in the answer,
which LLaVA-Med and later papers report for open questions on all three.

`load_qa_table` reads such a release (Parquet shards, a ``save_to_disk`` folder, or one file),
numbering rows within their split for ids (``test-000001``: stable, the releases have no id
column). Other layouts turn each row into a `Row` (cheap: the image cell is not touched) and
hand the rows to `build_dataset`, which keeps the wanted tasks, writes out only the images of
the items it keeps, and stops reading at ``limit``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medagent.agents.base import normalize_answer
from medagent.errors import InputError
from medagent.evals._records import EvalItem, MetricType
from medagent.evals._text_metrics import normalize_text
from medagent.evals.datasets._base import (
    Dataset,
    DatasetKind,
    MissingImage,
    check_options,
    check_tasks,
    select,
)
from medagent.evals.datasets._tables import Table, default_image_dir, image_file, open_table

__all__ = [
    "ANSWER_TYPES",
    "QA_COLUMNS",
    "AnswerType",
    "Row",
    "answer_cell",
    "build_dataset",
    "load_qa_table",
    "metric_for",
    "position_id",
    "require_columns",
    "split_label",
    "text_cell",
    "yes_no_type",
]

AnswerType = Literal["CLOSED", "OPEN"]
#: The tasks of a release without other labels: the answer type alone.
ANSWER_TYPES: tuple[AnswerType, ...] = ("CLOSED", "OPEN")

# A Hugging Face hub shard: ``test-00000-of-00001.parquet``.
_SHARD = re.compile(r"^([A-Za-z]+)-\d{5}-of-\d{5}\.parquet$")


def yes_no_type(answer: str) -> AnswerType:
    """``CLOSED`` when the answer is yes or no, else ``OPEN``."""
    return "CLOSED" if normalize_text(answer) in ("yes", "no") else "OPEN"


def metric_for(answer_type: AnswerType) -> MetricType:
    """``closed`` for closed questions, ``open_recall`` for open ones."""
    return "closed" if answer_type == "CLOSED" else "open_recall"


def position_id(split: str, number: int) -> str:
    """The id of the ``number``-th row (from 1) of a split: ``test-000001``."""
    return f"{split}-{number:06d}"


def split_label(table: Table, split: str) -> str:
    """The split a table holds: a lone hub shard says so in its name, else ``split``.

    A file like ``train-00000-of-00001.parquet`` given directly is the train split whatever
    ``--split`` says, and its ids and name should say train.
    """
    if len(table.files) == 1:
        match = _SHARD.match(table.files[0].name)
        if match:
            return match.group(1)
    return split


def require_columns(row: Mapping[str, Any], columns: Sequence[str], where: str, what: str) -> None:
    """An `InputError` naming the columns ``row`` lacks (``what`` says which release has them)."""
    absent = [column for column in columns if column not in row]
    if absent:
        raise InputError(
            f"{where}: missing column(s) {', '.join(absent)}; {what} has {', '.join(columns)}"
        )


def text_cell(row: Mapping[str, Any], column: str, where: str) -> str:
    """A text cell as a string (numbers allowed: some answers are); `InputError` otherwise."""
    value = row.get(column)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        kind = "empty" if value is None else f"a {type(value).__name__}"
        raise InputError(f"{where}: {column} should be text, it is {kind}")
    return str(value)


@dataclass(frozen=True)
class Row:
    """One question of a table, before its image is written out."""

    where: str  # file and row, for errors
    item_id: str
    task: str
    answer_type: AnswerType
    question: str
    raw_answer: str
    image: Any  # the cell: bytes, a Hugging Face {"bytes", "path"} struct, or a relative path
    metadata: dict[str, Any] = field(default_factory=dict)


def _holds_bytes(cell: Any) -> bool:
    return isinstance(cell, bytes) or (isinstance(cell, dict) and cell.get("bytes") is not None)


class _Images:
    """Image cells to files; the default image folder is looked up only when a cell holds bytes."""

    def __init__(self, base: Path, image_dir: Path | None) -> None:
        self.base = base
        self._image_dir = image_dir

    def file(self, row: Row) -> tuple[Path | None, str]:
        folder = self.base
        if _holds_bytes(row.image):
            if self._image_dir is None:
                self._image_dir = default_image_dir()
            folder = self._image_dir
        return image_file(row.image, base=self.base, image_dir=folder, where=row.where)


@dataclass
class _Counts:
    empty_answers: int = 0


def _candidates(
    rows: Iterable[Row], wanted: Sequence[str] | None, images: _Images, counts: _Counts
) -> Iterator[tuple[EvalItem, list[MissingImage]]]:
    for row in rows:
        if wanted is not None and row.task not in wanted:
            continue
        reference = normalize_answer(row.raw_answer)
        if reference is None:
            # A question without an answer cannot be scored: the source's own defect.
            counts.empty_answers += 1
            continue
        path, name = images.file(row)
        item = EvalItem(
            id=row.item_id,
            task=row.task,
            images=[] if path is None else [str(path)],
            question=row.question.strip(),
            answer=reference,
            metric=metric_for(row.answer_type),
            metadata={
                "raw_answer": row.raw_answer,
                "answer_type": row.answer_type,
                "image_name": name,
                **row.metadata,
            },
        )
        lost = []
        if path is None or not path.is_file():
            shown = name or f"(no image in {row.where})"
            searched = [] if path is None else [str(path.parent)]
            lost = [MissingImage(item_id=row.item_id, path=shown, searched=searched)]
        yield item, lost


def build_dataset(
    rows: Iterable[Row],
    *,
    table: Table,
    name: str,
    kind: DatasetKind,
    source: str,
    wanted: Sequence[str] | None,
    limit: int | None,
    skip_missing: bool,
    image_dir: Path | None,
) -> Dataset:
    """The `Dataset` of ``rows``: wanted tasks only, images written for kept items only.

    ``rows`` is read lazily: with ``limit``, rows after the last kept item are never read.
    Rows with an empty answer are left out and counted in ``dropped_invalid``.
    """
    counts = _Counts()
    images = _Images(table.base, image_dir)
    items, missing = select(
        _candidates(rows, wanted, images, counts),
        limit=limit,
        skip_missing=skip_missing,
        source=source,
        hint="check the image files the table names, or pass --skip-missing to leave them out",
    )
    return Dataset(
        name=name,
        kind=kind,
        items=items,
        source_path=table.source_path,
        source_sha256=table.sha256(),
        missing=missing,
        dropped_invalid=counts.empty_answers,
    )


# The columns of the Hugging Face image-question-answer releases.
QA_COLUMNS = ("image", "question", "answer")


def answer_cell(row: Mapping[str, Any], where: str) -> str:
    """The answer as text; a missing answer is empty (left out as the source's defect)."""
    return "" if row.get("answer") is None else text_cell(row, "answer", where)


def _qa_rows(table: Table, split: str, release: str) -> Iterator[Row]:
    for number, (where, record) in enumerate(table.rows(), 1):
        require_columns(record, QA_COLUMNS, where, release)
        answer = answer_cell(record, where)
        answer_type = yes_no_type(answer)
        yield Row(
            where=where,
            item_id=position_id(split, number),
            task=answer_type,
            answer_type=answer_type,
            question=text_cell(record, "question", where),
            raw_answer=answer,
            image=record["image"],
            metadata={"split": split, "row": number},
        )


def load_qa_table(
    path: Path | str,
    *,
    split: str,
    tasks: Sequence[str] | None,
    limit: int | None,
    skip_missing: bool,
    image_dir: Path | None,
    kind: DatasetKind,
    source: str,
    release: str,
) -> Dataset:
    """One split of an image-question-answer release: tasks ``CLOSED`` / ``OPEN``.

    ``source`` names the benchmark in messages; ``release`` names the release whose columns
    are expected (for the missing-column error).
    """
    wanted = check_options(limit, tasks)
    check_tasks(wanted, ANSWER_TYPES, source)
    table = open_table(path, split=split, what=f"{source} data")
    label = split_label(table, split)
    return build_dataset(
        _qa_rows(table, label, release),
        table=table,
        name=f"{kind}-{label}",
        kind=kind,
        source=source,
        wanted=wanted,
        limit=limit,
        skip_missing=skip_missing,
        image_dir=image_dir,
    )
