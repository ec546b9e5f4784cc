"""SLAKE 1.0: 14,028 English and Chinese questions about 642 CT, MRI and X-ray images.

The authors' release is a folder of ``train.json``, ``validate.json`` (renamed
``validation.json`` in the Hugging Face copy ``BoKelvin/SLAKE``) and ``test.json`` beside
``imgs/``. Each JSON file is a list of questions with ``img_id``, ``img_name`` (the image under
``imgs/``, e.g. ``xmlab102/source.jpg``), ``question``, ``answer``, ``q_lang`` (``en`` or
``zh``), ``location``, ``modality`` (``CT``, ``MRI``, ``X-Ray``), ``answer_type`` (``OPEN`` /
``CLOSED``), ``base_type``, ``content_type``, ``triple`` and ``qid``. A single split file may
be given instead of the folder (``imgs/`` beside it).

LLaVA-Med, MMed-RAG and others evaluate the English questions, so only ``q_lang`` in
``languages`` (default ``("en",)``; empty keeps all) is kept; the others are left out without
an error and counted in ``Dataset.left_out``. Tasks are ``MODALITY/ANSWER_TYPE``
(``CT/CLOSED``, ``X-RAY/OPEN``), as VQA-RAD's are ``ORGAN/ANSWER_TYPE``: modality is what most
changes difficulty, and per-modality scores are what SLAKE's own paper breaks results down by
besides answer type. Closed questions are ``closed`` (accuracy, including SLAKE's "A or B?"
closed questions), open ones ``open_recall`` (the recall LLaVA-Med reports). Ids are ``qid``.

Hugging Face mirrors with the images inside differ: ``mdwiratathya/SLAKE-vqa-english`` (the
common one) keeps only ``image``, ``question`` and ``answer`` of the English questions, in
Parquet shards per split. Such a table is read with the fields it has: with no
``answer_type``, a yes/no answer makes a question closed (so SLAKE's "A or B?" questions count
as open); with no ``modality`` the task is the answer type alone; with no ``qid`` the id is the
row's position (``test-000001``); with no ``q_lang`` nothing is filtered. A question with an
empty answer (the original has one) is left out and counted in ``dropped_invalid``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medagent.errors import ConfigError, InputError
from medagent.evals.datasets._base import Dataset, check_options, check_tasks
from medagent.evals.datasets._tables import Table, open_table
from medagent.evals.datasets._vqa_tables import (
    ANSWER_TYPES,
    AnswerType,
    Row,
    answer_cell,
    build_dataset,
    position_id,
    require_columns,
    split_label,
    text_cell,
    yes_no_type,
)

__all__ = ["SLAKE_FILES", "load_slake"]

#: Each split's file in the authors' folder, first name first.
SLAKE_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.json",),
    "validation": ("validation.json", "validate.json"),
    "test": ("test.json",),
}
_JSON_FIELDS = ("qid", "img_name", "question", "answer", "q_lang", "answer_type", "modality")
_KEPT = ("qid", "img_id", "img_name", "q_lang", "location", "modality", "content_type")
_KEPT_TOO = ("base_type", "triple")


def _json_split(root: Path, split: str) -> Path:
    present = {
        s: [root / n for n in names if (root / n).is_file()] for s, names in SLAKE_FILES.items()
    }
    found = present.get(split)
    if not found:
        have = ", ".join(s for s, files in present.items() if files)
        raise ConfigError(f"{root} has no SLAKE split {split!r} (it has: {have}); pass --split")
    return found[0]


def _is_json_folder(root: Path) -> bool:
    return root.is_dir() and any((root / n).is_file() for ns in SLAKE_FILES.values() for n in ns)


def _answer_type(record: Mapping[str, Any], answer: str, where: str) -> AnswerType:
    if record.get("answer_type") is None:
        return yes_no_type(answer)
    value = str(record["answer_type"]).strip().upper()
    if value not in ANSWER_TYPES:
        raise InputError(f"{where}: answer_type must be OPEN or CLOSED, got {value!r}")
    return "CLOSED" if value == "CLOSED" else "OPEN"


def _row(record: dict[str, Any], number: int, where: str, split: str, json_layout: bool) -> Row:
    if json_layout:
        require_columns(record, _JSON_FIELDS, where, "SLAKE's JSON")
    else:
        require_columns(record, ("question", "answer"), where, "a SLAKE table")
        if "image" not in record and "img_name" not in record:
            raise InputError(f"{where}: missing column image (or img_name with imgs/ beside it)")
    answer = answer_cell(record, where)
    answer_type = _answer_type(record, answer, where)
    modality = record.get("modality")
    task = answer_type if modality is None else f"{str(modality).strip().upper()}/{answer_type}"
    qid = record.get("qid")
    # A mirror holds the image; the authors' JSON names it under imgs/.
    in_folder = "image" not in record
    image = f"imgs/{text_cell(record, 'img_name', where)}" if in_folder else record["image"]
    metadata = {k: record[k] for k in (*_KEPT, *_KEPT_TOO) if record.get(k) is not None}
    return Row(
        where=where,
        item_id=position_id(split, number) if qid is None else str(qid),
        task=task,
        answer_type=answer_type,
        question=text_cell(record, "question", where),
        raw_answer=answer,
        image=image,
        metadata={"split": split, **metadata},
    )


def _rows(
    table: Table, split: str, languages: set[str], json_layout: bool
) -> tuple[list[Row], int]:
    """Every kept row (SLAKE is small: a split is read whole, to know its tasks), and how many
    were in other languages."""
    rows: list[Row] = []
    seen: dict[str, str] = {}
    other_language = 0
    for number, (where, record) in enumerate(table.rows(), 1):
        language = record.get("q_lang")
        if languages and language is not None and str(language).strip().lower() not in languages:
            other_language += 1
            continue
        row = _row(record, number, where, split, json_layout)
        if row.item_id in seen:
            raise InputError(f"{where}: qid {row.item_id} repeats {seen[row.item_id]}")
        seen[row.item_id] = where
        rows.append(row)
    return rows, other_language


def load_slake(
    path: Path | str,
    *,
    split: str = "test",
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    image_dir: Path | None = None,
    languages: Sequence[str] = ("en",),
) -> Dataset:
    """Load one SLAKE split (``test`` by default): the authors' folder, or a table mirror.

    ``languages`` keeps questions whose ``q_lang`` is one of them (empty: all); ``tasks``
    keeps those tasks (``MRI/CLOSED``...; ``CLOSED`` / ``OPEN`` for a mirror without
    modality); ``limit`` keeps the first N items in file order. A missing image raises
    `InputError` unless ``skip_missing``. Raises `ConfigError` for an unknown split or task.
    """
    wanted = check_options(limit, tasks)
    if isinstance(languages, str):
        languages = [languages]
    kept_languages = {language.strip().lower() for language in languages}
    root = Path(path).expanduser()
    json_layout = _is_json_folder(root) or (root.is_file() and root.suffix.lower() == ".json")
    if _is_json_folder(root):
        table = open_table(_json_split(root, split), what="SLAKE file")
        label = split
    else:
        table = open_table(root, split=split, what="SLAKE data")
        label = split if json_layout else split_label(table, split)
    rows, other_language = _rows(table, label, kept_languages, json_layout)
    check_tasks(wanted, [row.task for row in rows], "SLAKE")
    dataset = build_dataset(
        rows,
        table=table,
        name=f"slake-{label}",
        kind="slake",
        source="SLAKE",
        wanted=wanted,
        limit=limit,
        skip_missing=skip_missing,
        image_dir=image_dir,
    )
    if not other_language:
        return dataset
    reason = f"not in {', '.join(sorted(kept_languages))}"
    return dataset.model_copy(update={"left_out": {reason: other_language}})
