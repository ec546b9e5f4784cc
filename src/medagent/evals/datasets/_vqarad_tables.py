"""VQA-RAD as a table: its Hugging Face release (Parquet) or that release saved to disk.

``flaviagiammarino/vqa-rad`` holds ``data/train-…parquet`` (1,793 rows) and
``data/test-…parquet`` (451) with columns ``image`` (a ``{"bytes", "path"}`` struct),
``question`` and ``answer``; the release dropped the 3 duplicate triplets and 1 shared with the
test split from the 2,248 of the original, and with them every other field (``qid``,
``image_organ``, ``answer_type``). ``save_to_disk`` of it, or one shard file, is read too.

With no answer type, a question is closed when its answer is yes or no (the release's own
definition of its closed questions) and open otherwise; the original's "A or B?" closed
questions therefore count as open here. Closed questions are ``closed`` (accuracy, VQA-RAD's
closed score) and open ones ``open_recall`` (the open-question recall LLaVA-Med reports for
VQA-RAD); tasks ``CLOSED`` / ``OPEN``. Ids are row positions in the split (``test-000001``).
The original folder layout (``vqa_rad_public.json`` + ``images/``) is `load_vqarad`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medagent.evals.datasets._base import Dataset
from medagent.evals.datasets._vqa_tables import load_qa_table

__all__ = ["load_vqarad_table"]


def load_vqarad_table(
    path: Path | str,
    *,
    split: str = "test",
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    image_dir: Path | None = None,
) -> Dataset:
    """Load one VQA-RAD split (``test`` by default) from its Parquet or ``save_to_disk`` release.

    ``tasks`` keeps ``CLOSED`` and/or ``OPEN``; ``limit`` keeps the first N items in row order.
    Images held in the table are written once to ``image_dir`` (default: the cache's
    ``dataset-images``). Raises `ConfigError` for an unknown split or task, `InputError` for
    a missing column or a cell that is no image.
    """
    return load_qa_table(
        path,
        split=split,
        tasks=tasks,
        limit=limit,
        skip_missing=skip_missing,
        image_dir=image_dir,
        kind="vqa-rad",
        source="VQA-RAD",
        release="VQA-RAD's Parquet release",
    )
