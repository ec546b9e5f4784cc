"""Dataset loaders: each turns a benchmark's files, as its authors publish them, into a `Dataset`.

``load_dataset(kind, path, **options)`` picks the loader for ``kind`` (`DATASETS` lists them
with what each reads) and checks ``options`` against the loader's keywords. Every loader takes
``limit`` and ``skip_missing``; most take ``tasks`` and ``split``; slide benchmarks take
``slide_roots``; tables with images inside take ``image_dir``. Loaders are imported when used,
so a benchmark's optional reader (pyarrow for Parquet) is needed only for that benchmark.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from medagent.errors import ConfigError
from medagent.evals.datasets._base import Dataset, DatasetKind, MissingImage
from medagent.evals.datasets._insight import InsightCase, ReferenceInsight, load_insight
from medagent.evals.datasets._jsonl import load_jsonl
from medagent.evals.datasets._multipathqa import (
    MULTIPATHQA_TASKS,
    SLIDE_EXTENSIONS,
    load_multipathqa,
)
from medagent.evals.datasets._vqarad import VqaRadSplit, load_vqarad

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "DatasetKind",
    "InsightCase",
    "MULTIPATHQA_TASKS",
    "MissingImage",
    "ReferenceInsight",
    "SLIDE_EXTENSIONS",
    "VqaRadSplit",
    "dataset_loader",
    "load_dataset",
    "load_insight",
    "load_jsonl",
    "load_multipathqa",
    "load_vqarad",
    "loader_options",
]


class DatasetInfo(NamedTuple):
    """One benchmark ``eval run --dataset`` knows: its loader and what it reads."""

    loader: str  # "module:function" under medagent.evals.datasets
    reads: str


DATASETS: dict[str, DatasetInfo] = {
    "multipathqa": DatasetInfo(
        "_multipathqa:load_multipathqa", "MultiPathQA CSV; slides under --slides"
    ),
    "vqa-rad": DatasetInfo(
        "_vqarad:load_vqarad", "VQA-RAD folder (JSON + images/), or its Parquet / HF release"
    ),
    "pathvqa": DatasetInfo("_pathvqa:load_pathvqa", "PathVQA Parquet or HF save_to_disk"),
    "slake": DatasetInfo("_slake:load_slake", "SLAKE folder (JSON + imgs/), English questions"),
    "pmc-vqa": DatasetInfo("_pmcvqa:load_pmcvqa", "PMC-VQA CSV + images/"),
    "medxpertqa": DatasetInfo("_medxpertqa:load_medxpertqa", "MedXpertQA MM JSONL + images/"),
    "slidebench": DatasetInfo(
        "_slidebench:load_slidebench", "SlideBench-VQA CSV; slides under --slides"
    ),
    "wsi-vqa": DatasetInfo("_wsivqa:load_wsivqa", "WSI-VQA JSON; slides under --slides"),
    "jsonl": DatasetInfo("_jsonl:load_jsonl", "medagent's generic JSONL"),
    "insight": DatasetInfo("_insight:load_insight", "insight cases (JSONL)"),
}


def dataset_loader(kind: str) -> Callable[..., Dataset]:
    """The loader function for ``kind``, imported now; `ConfigError` for an unknown kind."""
    info = DATASETS.get(kind)
    if info is None:
        raise ConfigError(f"unknown dataset kind {kind!r}; use one of {', '.join(DATASETS)}")
    module, function = info.loader.split(":")
    loader: Callable[..., Dataset] = getattr(
        importlib.import_module(f"{__name__}.{module}"), function
    )
    return loader


def loader_options(kind: str) -> list[str]:
    """The keyword options ``kind``'s loader takes (``split``, ``tasks``, ``slide_roots``...)."""
    return [
        name
        for name, parameter in inspect.signature(dataset_loader(kind)).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def load_dataset(kind: DatasetKind, path: Path | str, **options: Any) -> Dataset:
    """Load a dataset with the loader for ``kind``; ``options`` are that loader's keywords.

    Raises `ConfigError` for an unknown kind or an option the loader does not take.
    """
    loader = dataset_loader(kind)
    accepted = loader_options(kind)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"dataset kind {kind!r} takes no option(s) {', '.join(unknown)}; "
            f"it takes {', '.join(accepted)}"
        )
    return loader(path, **options)
