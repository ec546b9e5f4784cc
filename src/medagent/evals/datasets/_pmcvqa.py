"""PMC-VQA: four-choice questions about figures from PubMed Central papers.

Published on the Hugging Face hub (``xmcmic/PMC-VQA``; the dataset card is the reference) as
CSV files beside zipped image folders:

- version 1: ``train.csv``, ``test.csv`` and ``test_clean.csv`` (the manually checked test
  set), images in ``images.zip`` (unzipped: ``images/``). Columns: ``Figure_path`` (a file
  name such as ``PMC1064097_F1.jpg``), ``Question``, ``Answer`` (the right choice's text),
  ``Choice A`` … ``Choice D`` (written with their letter, ``A:Diffuse uptake pattern``; some
  rows with a space before it) and ``Answer_label`` (``A``..``D``).
- version 2 (non-compound figures): ``train_2.csv`` and ``test_2.csv`` (the card spells them
  ``train2.csv`` / ``test2.csv``; both spellings are read), images in ``images_2.zip``
  (unzipped: ``figures/``). Columns: ``index``, ``Figure_path``, ``Caption``, ``Question``,
  ``Choice A`` … ``Choice D``, ``Answer`` (here the letter) and ``split``.

``path`` is the folder (``split`` picks the file: ``train``, ``test``, ``test_clean``,
``train_2`` or ``test_2``), one CSV file, or the same columns as Parquet or a ``datasets``
``save_to_disk`` folder, where ``Figure_path`` may hold the image itself. A named image is
looked for in ``images/``, ``figures/`` and the folder itself.

Every item is multiple choice with metric ``accuracy``: the paper's "choice" accuracy (the
model picks one of the four choices). The options are the four choices' texts without their
letter prefix, in letter order; the reference is the labelled choice's text. The item id is
the ``index`` column where there is one, else the row number in the file; the task is the
split (or the file's stem), as the paper reports one accuracy per test set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent.errors import ConfigError, InputError
from medagent.evals._records import EvalItem
from medagent.evals.datasets._base import (
    Dataset,
    MissingImage,
    absolute,
    check_options,
    check_tasks,
    select,
    validation_message,
)
from medagent.evals.datasets._tables import Table, default_image_dir, image_file, open_table

__all__ = ["PMCVQA_FILES", "load_pmcvqa", "locate_image"]

#: The splits of the folder layout and the file each is read from (the card's spelling second).
PMCVQA_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.csv",),
    "test": ("test.csv",),
    "test_clean": ("test_clean.csv",),
    "train_2": ("train_2.csv", "train2.csv"),
    "test_2": ("test_2.csv", "test2.csv"),
}
_LETTERS = "ABCD"
# images.zip unpacks to images/, images_2.zip to figures/.
_IMAGE_FOLDERS = ("images", "figures")
_LABEL = re.compile(r"^\s*([A-Da-d])\s*[:.)]?\s*$")


class _Row(BaseModel):
    """One row in the published columns; anything else in the row (Caption, split) is ignored."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    figure: Any = Field(alias="Figure_path")
    question: str = Field(alias="Question")
    choice_a: str | None = Field(alias="Choice A")
    choice_b: str | None = Field(alias="Choice B")
    choice_c: str | None = Field(alias="Choice C")
    choice_d: str | None = Field(alias="Choice D")
    answer: str | None = Field(None, alias="Answer")
    answer_label: str | None = Field(None, alias="Answer_label")
    index: str | None = Field(None, alias="index")

    def choices(self) -> list[str | None]:
        return [self.choice_a, self.choice_b, self.choice_c, self.choice_d]


def locate_image(
    cell: Any, *, folders: Sequence[Path], image_dir: Path | None, where: str
) -> tuple[Path | None, str]:
    """The file behind a table's image cell, and the name the table gives it.

    Image bytes (raw, or a Hugging Face ``{"bytes", "path"}`` struct) are written once under
    ``image_dir`` (default: `default_image_dir`); a file name is looked for in each of
    ``folders`` in turn. ``(None, name)`` when no folder has it; ``(None, "")`` for an empty
    cell.
    """
    if isinstance(cell, dict) and cell.get("bytes") is None:
        cell = cell.get("path")  # a struct naming a file, without its bytes
    if isinstance(cell, bytes | dict):
        folder = image_dir if image_dir is not None else default_image_dir()
        return image_file(cell, base=folders[0], image_dir=folder, where=where)
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return None, ""
    if not isinstance(cell, str):
        raise InputError(
            f"{where}: the image cell is a {type(cell).__name__}, not an image or a file name"
        )
    for folder in folders:
        candidate = folder / cell.strip()
        if candidate.is_file():
            return absolute(candidate), cell
    return None, cell


def _choice_text(value: str | None, letter: str) -> str:
    """``" B:Focal uptake"`` -> ``"Focal uptake"``: the letter the CSV writes is not the choice."""
    text = (value or "").strip()
    prefix = re.match(rf"{letter}\s*:\s*", text)
    return text[prefix.end() :].strip() if prefix else text


def _label(row: _Row, where: str) -> str:
    # v1 has the letter in Answer_label (Answer is the text); v2 has it in Answer.
    raw = row.answer_label if row.answer_label is not None else row.answer
    if raw is None:
        raise InputError(f"{where}: no Answer_label or Answer column to say which choice is right")
    match = _LABEL.match(raw)
    if match is None:
        raise InputError(f"{where}: the answer label {raw!r} is not one of A, B, C, D")
    return match.group(1).upper()


def _open(path: Path, split: str) -> tuple[Table, Path, str]:
    """The table to read, the dataset's folder (images are looked for there) and the task."""
    if path.is_dir():
        found = {
            name: next((path / f for f in files if (path / f).is_file()), None)
            for name, files in PMCVQA_FILES.items()
        }
        present = [name for name, file in found.items() if file is not None]
        if present:
            chosen = found.get(split)
            if chosen is None:
                known = "" if split in PMCVQA_FILES else f"; the splits are {', '.join(found)}"
                raise ConfigError(
                    f"PMC-VQA folder {path} has no split {split!r} (it has: "
                    f"{', '.join(present)}){known}; pass --split"
                )
            return open_table(chosen, what="PMC-VQA CSV"), absolute(path), split
        table = open_table(path, split=split, what="PMC-VQA")
        return table, absolute(path), split
    table = open_table(path, split=split, what="PMC-VQA table")
    stem = path.name.split(".", 1)[0]
    if table.layout == "parquet":  # a hub shard, test-00000-of-00001.parquet
        stem = stem.split("-", 1)[0]
    return table, absolute(path.parent), stem


def _candidates(
    table: Table, folders: list[Path], task: str, image_dir: Path | None
) -> Iterator[tuple[EvalItem, list[MissingImage]]]:
    seen: dict[str, str] = {}
    for number, (where, data) in enumerate(table.rows(), 1):
        try:
            row = _Row.model_validate(data)
        except ValidationError as error:
            raise InputError(
                f"{where}: not a PMC-VQA row ({validation_message(error)}); the columns are "
                "Figure_path, Question, Choice A-D and Answer_label (v1) or Answer (v2)"
            ) from None
        item_id = row.index.strip() if row.index and row.index.strip() else str(number)
        if item_id in seen:
            raise InputError(f"{where}: id {item_id} repeats {seen[item_id]}")
        seen[item_id] = where
        letter = _label(row, where)
        choices = [
            _choice_text(value, lt) for value, lt in zip(row.choices(), _LETTERS, strict=True)
        ]
        if not choices[_LETTERS.index(letter)]:
            raise InputError(f"{where}: the right choice ({letter}) is empty")
        # An empty choice is left out; the others keep their order.
        options = [choice for choice in choices if choice]
        image, name = locate_image(row.figure, folders=folders, image_dir=image_dir, where=where)
        if image is None and not name:
            raise InputError(f"{where}: Figure_path is empty")
        metadata: dict[str, Any] = {"answer_label": letter, "figure_path": name}
        if row.answer is not None and row.answer_label is not None:
            metadata["raw_answer"] = row.answer
        item = EvalItem(
            id=item_id,
            task=task,
            images=[str(image)] if image else [],
            question=row.question.strip(),
            options=options,
            answer=choices[_LETTERS.index(letter)],
            metric="accuracy",
            metadata=metadata,
        )
        searched = [str(folder) for folder in folders]
        lost = [] if image else [MissingImage(item_id=item_id, path=name, searched=searched)]
        yield item, lost


def load_pmcvqa(
    path: Path | str,
    *,
    split: str = "test",
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    image_dir: Path | None = None,
) -> Dataset:
    """Load one PMC-VQA split (``test`` by default) from its folder, a CSV, or a table.

    ``tasks`` can only name the split itself (there is one task per split); ``limit`` keeps
    the first N items in file order (with ``skip_missing``, items without an image do not
    count). Images held in a Parquet or ``save_to_disk`` table are written under
    ``image_dir``. Raises `ConfigError` for a split the folder lacks (naming those it has),
    `InputError` for a row not in the published columns, a label other than A-D, a repeated
    ``index`` or a missing image (unless ``skip_missing``: left out, listed in ``missing``).
    """
    wanted = check_options(limit, tasks)
    root = Path(path).expanduser()
    table, folder, task = _open(root, split)
    check_tasks(wanted, [task], "PMC-VQA")
    if wanted is not None and task not in wanted:
        limit = 0
    bases = list(dict.fromkeys([table.base, folder]))
    folders = [base / sub for base in bases for sub in _IMAGE_FOLDERS] + bases
    items, missing = select(
        _candidates(table, folders, task, image_dir),
        limit=limit,
        skip_missing=skip_missing,
        source="PMC-VQA",
        hint="unzip images.zip (images/) or images_2.zip (figures/) beside the CSV, "
        "or pass --skip-missing to leave them out",
    )
    return Dataset(
        name=f"pmc-vqa-{task}",
        kind="pmc-vqa",
        items=items,
        source_path=table.source_path,
        source_sha256=table.sha256(),
        missing=missing,
    )
