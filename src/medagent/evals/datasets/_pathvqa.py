"""PathVQA: 32,799 questions about 4,998 pathology images from two textbooks and PEIR.

Read from its Hugging Face release (``flaviagiammarino/path-vqa``): Parquet shards
``data/{train,validation,test}-000NN-of-000NN.parquet`` with columns ``image`` (a
``{"bytes", "path"}`` struct holding the JPEG), ``question`` and ``answer`` (both lower-cased
by the release; exact duplicates dropped): 19,654 train, 6,259 validation and 6,719 test rows.
The same table written with ``datasets``' ``save_to_disk`` (one folder per split beside
``dataset_dict.json``) or a single shard file is read too.

The authors' own release is Python pickle files (``pvqa/qas/SPLIT/SPLIT_qa.pkl``). Loading a
pickle runs code from the file, so it is refused with a pointer to the Parquet release.

Closed questions are the yes/no ones, as the PathVQA paper defines them; every other question
is open. The paper reports accuracy on yes/no questions and BLEU / F1 / exact match on open
ones; LLaVA-Med and later papers report closed accuracy and open-question recall. Here closed
questions are ``closed`` and open ones ``open_recall`` (tasks ``CLOSED`` / ``OPEN``). Ids are
the row's position in its split (``test-000001``); the image's own name, when the release
keeps one, is in ``metadata.image_name``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medagent.errors import InputError
from medagent.evals.datasets._base import Dataset
from medagent.evals.datasets._vqa_tables import load_qa_table

__all__ = ["PATHVQA_SPLITS", "load_pathvqa"]

PATHVQA_SPLITS = ("train", "validation", "test")
_PICKLES = (".pkl", ".pickle")


def _pickle_in(root: Path) -> Path | None:
    """The authors' pickle file at or under ``root`` (``qas/SPLIT/SPLIT_qa.pkl``), if any."""
    if root.is_file():
        return root if root.suffix.lower() in _PICKLES else None
    tables = any(root.glob("*.parquet")) or any(root.glob("data/*.parquet"))
    hf_disk = (root / "state.json").is_file() or (root / "dataset_dict.json").is_file()
    if not root.is_dir() or tables or hf_disk:
        return None
    for pattern in ("*", "*/*", "qas/*/*", "*/qas/*/*"):
        for found in sorted(root.glob(pattern)):
            if found.suffix.lower() in _PICKLES:
                return found
    return None


def _refuse_pickles(root: Path) -> None:
    """An `InputError` when ``root`` is (or holds) the authors' pickle release."""
    found = _pickle_in(root)
    if found is not None:
        raise InputError(
            f"{found} is PathVQA's pickle release, which medagent does not load (unpickling "
            "runs code from the file); use the Parquet release (Hugging Face "
            "flaviagiammarino/path-vqa)",
            path=str(found),
        )


def load_pathvqa(
    path: Path | str,
    *,
    split: str = "test",
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    image_dir: Path | None = None,
) -> Dataset:
    """Load one PathVQA split (``test`` by default) from its Parquet or ``save_to_disk`` release.

    ``tasks`` keeps ``CLOSED`` and/or ``OPEN``; ``limit`` keeps the first N items in row order
    (rows after them are not read). Images held in the table are written once to
    ``image_dir`` (default: the cache's ``dataset-images``). Raises `ConfigError` for an unknown
    split or task, `InputError` for a pickle file, a missing column or a cell that is no image.
    """
    root = Path(path).expanduser()
    _refuse_pickles(root)
    return load_qa_table(
        root,
        split=split,
        tasks=tasks,
        limit=limit,
        skip_missing=skip_missing,
        image_dir=image_dir,
        kind="pathvqa",
        source="PathVQA",
        release="PathVQA's Parquet release",
    )
