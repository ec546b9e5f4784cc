"""WSI-VQA (Chen et al., ECCV 2024): questions about TCGA breast cancer slides, as JSON.

The authors' repository (``cpystan/WSI-VQA``, ``dataset/WSI_captions/``) holds
``WsiVQA_train.json``, ``WsiVQA_val.json`` and ``WsiVQA_test.json``, slides not included. Each
is a JSON list of objects: ``Id`` (the TCGA case, e.g. ``TCGA-LD-A74U``), ``Question``,
``Answer`` and, for close-ended questions only, ``Choice`` (a list of four option texts, the
answer being one of them). Open-ended questions have no ``Choice``; their answers are short
free text (a histological type, a receptor status, HER2 score, vital status, survival days).
The authors pair a case with its diagnostic slide (``DX1``), matching the slide name's first
12 characters.

The paper reports accuracy on close-ended questions and BLEU-1..4 / METEOR / ROUGE-L on
open-ended ones: here close-ended items are task ``close``, metric ``accuracy``, options the
choices and the reference the matching choice's text; open-ended items are task ``open``,
metric ``open_bleu`` (corpus BLEU-4 over the task), the reference normalized like a free-text
prediction (lower case; the raw answer stays in ``metadata``). A case asks many questions, and
may ask the same one twice, so an item id is ``<Id>:<Question>`` made unique with '#2', '#3'...
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from medagent.agents.base import normalize_answer
from medagent.errors import ConfigError, InputError
from medagent.evals._records import EvalItem, MetricType
from medagent.evals.datasets._base import (
    Dataset,
    MissingImage,
    check_options,
    check_tasks,
    disambiguate,
    file_sha256,
    select,
)
from medagent.evals.datasets._slidebench import BenchmarkSlides
from medagent.evals.datasets._tables import open_table, table_splits

__all__ = ["WSIVQA_TASKS", "load_wsivqa"]

WSIVQA_TASKS = ("close", "open")

_FILE = re.compile(r"^WsiVQA_(\w+)\.json$")
#: Where the three files are, under the folder given: itself or the authors' repository.
_PLACES = (".", "WSI_captions", "dataset/WSI_captions")


def _splits(folder: Path) -> tuple[Path, dict[str, Path]]:
    """The folder holding the split files, and each split's file."""
    for place in _PLACES:
        where = folder / place
        found = {
            m.group(1): where / name
            for name in sorted(p.name for p in where.glob("WsiVQA_*.json"))
            if (m := _FILE.match(name))
        }
        if found:
            return where, found
    raise InputError(
        f"{folder} holds no WsiVQA_<split>.json files (the authors' dataset/WSI_captions "
        "folder, or one of its files)",
        path=str(folder),
    )


def _split_file(path: Path, split: str) -> tuple[Path, str]:
    """The file to read and the split it holds; a single file is its own split. A Hugging Face
    copy (``save_to_disk``, Parquet shards) is read by `open_table`, which picks the split."""
    if path.is_dir() and ((path / "state.json").is_file() or table_splits(path)):
        return path, split
    if path.is_dir():
        _, found = _splits(path)
        if split not in found:
            raise ConfigError(
                f"{path} has no split {split!r} (it has: {', '.join(found)}); pass --split"
            )
        return found[split], split
    match = _FILE.match(path.name)
    return path, match.group(1) if match else path.stem


def _string(row: dict[str, Any], field: str, where: str, *, number: bool = False) -> str:
    value = row.get(field)
    if number and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # a survival time may be written as a number
    if not isinstance(value, str) or not value.strip():
        found = "missing" if value is None else f"not text ({value!r})"
        raise InputError(f"{where}: {field} is {found}")
    return value.strip()


def _choices(row: dict[str, Any], where: str) -> list[str] | None:
    value = row.get("Choice")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) for c in value):
        raise InputError(f"{where}: Choice must be a list of at least two texts, got {value!r:.80}")
    return [c.strip() for c in value]


def _reference(answer: str, choices: list[str], where: str) -> str:
    if answer in choices:
        return answer
    matches = [c for c in choices if c.casefold() == answer.casefold()]
    if len(matches) == 1:
        return matches[0]
    raise InputError(f"{where}: answer {answer!r} is not one of the choices {choices}")


def _open_reference(answer: str) -> str:
    # Predictions are normalized (lower case, spaces collapsed, final period dropped) and BLEU
    # is case-sensitive: "Alive" against "alive" would share no word.
    return normalize_answer(answer) or answer


def _candidates(
    rows: list[tuple[str, str, dict[str, Any]]], slides: BenchmarkSlides
) -> Iterator[tuple[EvalItem, list[MissingImage]]]:
    searched = [str(root) for root in slides.roots]
    for where, item_id, row in rows:
        case = _string(row, "Id", where)
        answer = _string(row, "Answer", where, number=True)
        choices = _choices(row, where)
        metric: MetricType = "open_bleu" if choices is None else "accuracy"
        slide = slides.by_case(case)
        item = EvalItem(
            id=item_id,
            task="open" if choices is None else "close",
            slide=None if slide is None else str(slide),
            question=_string(row, "Question", where),
            options=choices,
            answer=_open_reference(answer)
            if choices is None
            else _reference(answer, choices, where),
            metric=metric,
            metadata={"case_id": case, "raw_answer": answer},
        )
        lost = [] if slide else [MissingImage(item_id=item_id, path=case, searched=searched)]
        yield item, lost


def load_wsivqa(
    path: Path | str,
    *,
    split: str = "test",
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    slide_roots: Sequence[Path | str] = (),
) -> Dataset:
    """Load one split of WSI-VQA, finding each case's diagnostic slide under ``slide_roots``.

    ``path`` is the folder holding ``WsiVQA_<split>.json`` (or the authors' repository), or one
    such file (then ``split`` is not used). A case's slide is a file named after the case, else
    its ``DX1`` slide, else another ``DX`` slide (TCGA names: ``<case>-01Z-00-DX1.<uuid>.svs``).
    ``tasks`` keeps ``close`` and/or ``open``; ``limit`` keeps the first N items in file order.
    Raises `ConfigError` for an unknown split or task, or when no slide folder is given without
    ``skip_missing``; `InputError` for a file not in the published layout, or when a kept
    item's slide is missing (unless ``skip_missing``: then it is left out and listed in
    ``missing``).
    """
    wanted = check_options(limit, tasks)
    check_tasks(wanted, WSIVQA_TASKS, "WSI-VQA")
    given = Path(path).expanduser()
    if not given.exists():
        raise InputError(f"WSI-VQA data {given} does not exist", path=str(given))
    source, name = _split_file(given, split)
    if not slide_roots and not skip_missing:
        raise ConfigError(
            "WSI-VQA slides are not part of the JSON: pass --slides DIR (a folder holding the "
            "TCGA-BRCA diagnostic .svs files; may be repeated) or --skip-missing"
        )
    table = open_table(source, split=name if source.is_dir() else None, what="WSI-VQA file")
    read = list(table.rows())
    keys = []
    for where, row in read:
        keys.append(f"{_string(row, 'Id', where)}:{_string(row, 'Question', where)}")
    ids = disambiguate(keys)
    rows = [
        (f"{where} ({item_id})", item_id, row)
        for (where, row), item_id in zip(read, ids, strict=True)
        if wanted is None or ("open" if row.get("Choice") is None else "close") in wanted
    ]
    slides = BenchmarkSlides([Path(root) for root in slide_roots])
    items, missing = select(
        _candidates(rows, slides),
        limit=limit,
        skip_missing=skip_missing,
        source="WSI-VQA",
        hint="pass --slides DIR with the folder holding them, or --skip-missing to leave them out",
    )
    return Dataset(
        name=f"wsi-vqa-{name}",
        kind="wsi-vqa",
        items=items,
        source_path=table.source_path,
        # One file's own digest, so `sha256sum` on the download gives the same.
        source_sha256=file_sha256(table.files[0]) if len(table.files) == 1 else table.sha256(),
        missing=missing,
    )
