"""MedXpertQA MM: expert-level five-choice medical exam questions with images.

Published on the Hugging Face hub (``TsinghuaC3I/MedXpertQA``; the dataset card is the
reference) as two subsets, each ``dev.jsonl`` (5 questions, for few-shot demos) and
``test.jsonl``: ``MM/`` (multimodal, 2,000 test questions, five options A-E) and ``Text/``
(2,450, ten options A-J, no images). The images of MM are in ``images.zip``, unzipped beside
``MM/`` as ``images/``. One JSON object per line:

- ``id``: ``MM-26`` (``Text-…`` in the Text subset);
- ``question``: the case and question, ending in the choices as text
  (``\\nAnswer Choices: (A) … (B) … (E) …``);
- ``options``: ``{"A": "…", …, "E": "…"}``; ``label``: the right letter;
- ``images``: image file names (``["MM-26-a.jpeg"]``; MM only);
- ``medical_task`` (Diagnosis, Treatment, Basic Medicine), ``body_system`` (Cardiovascular,
  Digestive, …) and ``question_type`` (Reasoning or Understanding).

``path`` is the dataset's folder (``split``: ``test`` or ``dev`` picks ``MM/SPLIT.jsonl``),
an MM ``.jsonl`` file, or the same fields as Parquet or a ``datasets`` ``save_to_disk``
folder (where ``images`` may hold the images themselves). This loader reads MM only: a Text
question has no image for a vision-language model to read, so it is refused.

Metric ``accuracy``: the paper's accuracy over the five options. The options are the option
texts in letter order and the reference is the labelled option's text. The question sent
keeps the case but not its "Answer Choices" block: the agents list ``options`` themselves,
numbered, and a model reading both a lettered and a numbered list may answer with a letter
that matches neither (the question as published stays in ``metadata.question``). The task is
``question_type``: the paper reports MM accuracy for Reasoning and Understanding and their
average; ``medical_task`` and ``body_system`` stay in ``metadata``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

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
from medagent.evals.datasets._pmcvqa import locate_image
from medagent.evals.datasets._tables import Table, open_table

__all__ = ["MEDXPERTQA_SPLITS", "MEDXPERTQA_TASKS", "load_medxpertqa", "question_without_choices"]

MEDXPERTQA_SPLITS = ("test", "dev")
MEDXPERTQA_TASKS = ("Reasoning", "Understanding")
_CHOICES = re.compile(r"\s*Answer Choices:\s*\(A\)")


class _Record(BaseModel):
    """One line in the published fields; anything else on the line is ignored."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    id: str
    question: str
    options: dict[str, str | None]
    label: str
    images: list[Any] | None = None
    question_type: str
    medical_task: str | None = None
    body_system: str | None = None


def question_without_choices(question: str) -> str:
    """The question without its trailing "Answer Choices: (A) … (E) …" block (else as is)."""
    matches = list(_CHOICES.finditer(question))
    if not matches:
        return question.strip()
    stem = question[: matches[-1].start()].strip()
    return stem or question.strip()


def _open(path: Path, split: str) -> tuple[Table, Path, str]:
    """The table to read, the dataset's folder (images/ is looked for there) and its name."""
    if path.is_dir() and (path / "MM").is_dir():
        if split not in MEDXPERTQA_SPLITS:
            raise ConfigError(
                f"MedXpertQA has no split {split!r}; use one of {', '.join(MEDXPERTQA_SPLITS)}"
            )
        file = path / "MM" / f"{split}.jsonl"
        if not file.is_file():
            have = sorted(p.stem for p in (path / "MM").glob("*.jsonl"))
            raise ConfigError(
                f"MedXpertQA folder {path} has no MM/{split}.jsonl (it has: "
                f"{', '.join(have) or 'none'}); pass --split"
            )
        return open_table(file, what="MedXpertQA file"), absolute(path), split
    if path.is_dir():
        return open_table(path, split=split, what="MedXpertQA"), absolute(path), split
    table = open_table(path, split=split, what="MedXpertQA file")
    folder = path.parent.parent if path.parent.name == "MM" else path.parent
    return table, absolute(folder), path.name.split(".", 1)[0].split("-", 1)[0]


def _options(record: _Record, where: str) -> tuple[list[str], str]:
    """The option texts in letter order, and the labelled one's text."""
    texts = {
        letter.strip().upper(): text.strip()
        for letter, text in record.options.items()
        if text is not None and text.strip()  # a Parquet struct pads absent letters with null
    }
    label = record.label.strip().upper()
    letters = sorted(texts)
    if label not in texts:
        raise InputError(
            f"{where}: label {record.label!r} is not one of the options ({', '.join(letters)})"
        )
    return [texts[letter] for letter in letters], texts[label]


def _candidates(
    table: Table, folders: list[Path], wanted: Sequence[str] | None, image_dir: Path | None
) -> Iterator[tuple[EvalItem, list[MissingImage]]]:
    seen: dict[str, str] = {}
    searched = [str(folder) for folder in folders]
    for where, data in table.rows():
        try:
            record = _Record.model_validate(data)
        except ValidationError as error:
            raise InputError(
                f"{where}: not a MedXpertQA question ({validation_message(error)})"
            ) from None
        if record.id in seen:
            raise InputError(f"{where}: id {record.id} repeats {seen[record.id]}")
        seen[record.id] = where
        if not record.images:
            raise InputError(
                f"{where}: question {record.id} has no images (a MedXpertQA Text question?); "
                "this benchmark reads the MM subset: pass the dataset folder or MM/test.jsonl"
            )
        task = record.question_type.strip()
        if wanted is not None and task not in wanted:
            continue
        options, reference = _options(record, where)
        images: list[str] = []
        lost: list[MissingImage] = []
        names: list[str] = []
        for cell in record.images:
            image, name = locate_image(cell, folders=folders, image_dir=image_dir, where=where)
            names.append(name)
            if image is not None:
                images.append(str(image))
            elif name:
                lost.append(MissingImage(item_id=record.id, path=name, searched=searched))
            else:
                raise InputError(f"{where}: an entry of images is empty")
        item = EvalItem(
            id=record.id,
            task=task,
            images=images,
            question=question_without_choices(record.question),
            options=options,
            answer=reference,
            metric="accuracy",
            metadata={
                "label": record.label.strip().upper(),
                "medical_task": record.medical_task,
                "body_system": record.body_system,
                "image_names": names,
                "question": record.question,
            },
        )
        yield item, lost


def load_medxpertqa(
    path: Path | str,
    *,
    split: str = "test",
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    image_dir: Path | None = None,
) -> Dataset:
    """Load MedXpertQA MM's ``test`` (default) or ``dev`` split from its folder or a file.

    ``tasks`` keeps Reasoning or Understanding questions; ``limit`` keeps the first N items
    in file order (with ``skip_missing``, items without all their images do not count).
    Images held in a Parquet or ``save_to_disk`` table are written under ``image_dir``.
    Raises `ConfigError` for an unknown split or task, `InputError` for a line not in the
    published fields, a label that is not an option, a repeated id, a question without
    images, or a missing image (unless ``skip_missing``: left out, listed in ``missing``).
    """
    wanted = check_options(limit, tasks)
    check_tasks(wanted, MEDXPERTQA_TASKS, "MedXpertQA")
    table, folder, name = _open(Path(path).expanduser(), split)
    bases = list(dict.fromkeys([folder, table.base]))
    folders = [base / "images" for base in bases] + bases
    items, missing = select(
        _candidates(table, folders, wanted, image_dir),
        limit=limit,
        skip_missing=skip_missing,
        source="MedXpertQA",
        hint="unzip images.zip beside MM/ (as images/), or pass --skip-missing to leave them out",
    )
    return Dataset(
        name=f"medxpertqa-{name}",
        kind="medxpertqa",
        items=items,
        source_path=table.source_path,
        source_sha256=table.sha256(),
        missing=missing,
    )
