"""VQA-RAD: 2,248 radiology questions about 315 images (head CT/MR, chest X-ray, abdomen CT).

The folder holds ``vqa_rad_public.json`` (all questions), ``trainset.json`` (1,798) and
``testset.json`` (450), and ``images/``. Every record has ``qid``, ``image_name``,
``image_organ`` (HEAD, CHEST, ABD), ``question``, ``answer``, ``answer_type`` (CLOSED, OPEN)
and ``question_type``. The splits are keyed by ``qid``: disjoint, together exactly the public
file, with the same fields; the item id is the qid as a string.

Metrics: every CLOSED question is ``closed``, so a task has one metric: a yes/no answer is
scored as yes/no, an "A or B?" question ("Is the lesion on the left or right?") by the
alternative each answer names (the questions list no options), anything else ("both") by
normalized match — accuracy over all of them, as VQA-RAD's closed accuracy is reported. OPEN
questions are ``open`` (normalized match and token F1). The reference is the answer normalized
like a free-text prediction (`normalize_answer` without options: lower case, whitespace
collapsed, a final period dropped); the raw answer stays in ``metadata``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from medagent.agents.base import normalize_answer
from medagent.errors import ConfigError, InputError
from medagent.evals._records import EvalItem, MetricType
from medagent.evals.datasets._base import (
    Dataset,
    MissingImage,
    absolute,
    check_options,
    check_tasks,
    file_sha256,
    require_file,
    select,
)

__all__ = ["VQARAD_FILES", "VqaRadSplit", "load_vqarad"]

VqaRadSplit = Literal["all", "train", "test"]
VQARAD_FILES: dict[str, str] = {
    "all": "vqa_rad_public.json",
    "train": "trainset.json",
    "test": "testset.json",
}
_FIELDS = ("qid", "image_name", "image_organ", "question", "answer", "answer_type")


def _metric(answer_type: str) -> MetricType:
    return "closed" if answer_type == "CLOSED" else "open"


def _item(record: dict[str, Any], images: Path, where: str) -> tuple[EvalItem, Path]:
    absent = [field for field in _FIELDS if record.get(field) is None]
    if absent:
        raise InputError(f"{where}: missing field(s) {', '.join(absent)}")
    # Two records say "CLOSED " (trailing space); answers are sometimes numbers, not strings.
    answer_type = str(record["answer_type"]).strip().upper()
    organ = str(record["image_organ"]).strip().upper()
    raw_answer = str(record["answer"])
    reference = normalize_answer(raw_answer)
    if reference is None:
        raise InputError(f"{where}: the answer is empty")
    image = images / str(record["image_name"])
    extra = {k: v for k, v in record.items() if k in ("question_type", "phrase_type")}
    item = EvalItem(
        id=str(record["qid"]),
        task=f"{organ}/{answer_type}",
        images=[str(image)],
        question=str(record["question"]).strip(),
        answer=reference,
        metric=_metric(answer_type),
        metadata={
            "raw_answer": raw_answer,
            "answer_type": answer_type,
            "image_organ": organ,
            "image_name": record["image_name"],
            **extra,
        },
    )
    return item, image


def load_vqarad(
    folder: Path | str,
    *,
    split: VqaRadSplit = "test",
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    image_dir: Path | None = None,
) -> Dataset:
    """Load one VQA-RAD split (``test`` by default) from the dataset's folder.

    ``tasks`` keeps those tasks (``ORGAN/ANSWER_TYPE``, e.g. ``CHEST/CLOSED``); ``limit`` keeps
    the first N items in file order (with ``skip_missing``, items without an image do not
    count towards N). A missing image raises `InputError` unless ``skip_missing``, which
    leaves the item out and lists it in ``Dataset.missing``. A folder without the JSON files
    (or a table file) is the Hugging Face release: `load_vqarad_table` reads it, writing its
    images under ``image_dir``.
    """
    root = Path(folder).expanduser()
    if not any((root / name).is_file() for name in VQARAD_FILES.values()):
        from medagent.evals.datasets._vqarad_tables import load_vqarad_table

        return load_vqarad_table(
            root,
            split=split,
            tasks=tasks,
            limit=limit,
            skip_missing=skip_missing,
            image_dir=image_dir,
        )
    if split not in VQARAD_FILES:
        raise ConfigError(f"unknown VQA-RAD split {split!r}; use one of all, train, test")
    wanted = check_options(limit, tasks)
    if not root.is_dir():
        raise InputError(f"VQA-RAD folder {root} does not exist", path=str(root))
    path = require_file(root / VQARAD_FILES[split], "VQA-RAD file")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error})", path=str(path)) from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InputError(f"{path} should hold a JSON list of question objects", path=str(path))

    images = absolute(root / "images")
    candidates: list[tuple[EvalItem, list[MissingImage]]] = []
    seen: dict[str, int] = {}
    for number, record in enumerate(records, 1):
        where = f"{path.name} record {number}"
        item, image = _item(record, images, where)
        if item.id in seen:
            raise InputError(f"{where}: qid {item.id} repeats record {seen[item.id]}")
        seen[item.id] = number
        lost = (
            []
            if image.is_file()
            else [MissingImage(item_id=item.id, path=image.name, searched=[str(images)])]
        )
        candidates.append((item, lost))
    check_tasks(wanted, sorted({item.task for item, _ in candidates}), "VQA-RAD")
    items, missing = select(
        (c for c in candidates if wanted is None or c[0].task in wanted),
        limit=limit,
        skip_missing=skip_missing,
        source="VQA-RAD",
        hint="check the folder's images/, or pass --skip-missing to leave them out",
    )
    return Dataset(
        name=f"vqa-rad-{split}",
        kind="vqa-rad",
        items=items,
        source_path=absolute(path),
        source_sha256=file_sha256(path),
        missing=missing,
    )
