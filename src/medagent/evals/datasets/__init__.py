"""Dataset loaders: each turns a benchmark's files into a `Dataset` of `EvalItem`s.

``load_dataset(kind, path, **options)`` picks the loader: ``multipathqa`` (CSV, slides found
under ``slide_roots``), ``vqa-rad`` (the dataset's folder), ``jsonl`` (the generic format) or
``insight`` (insight cases). Every loader takes ``limit`` and ``skip_missing``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

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
    "Dataset",
    "DatasetKind",
    "InsightCase",
    "MULTIPATHQA_TASKS",
    "MissingImage",
    "ReferenceInsight",
    "SLIDE_EXTENSIONS",
    "VqaRadSplit",
    "load_dataset",
    "load_insight",
    "load_jsonl",
    "load_multipathqa",
    "load_vqarad",
]

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "multipathqa": load_multipathqa,
    "vqa-rad": load_vqarad,
    "jsonl": load_jsonl,
    "insight": load_insight,
}


def load_dataset(kind: DatasetKind, path: Path | str, **options: Any) -> Dataset:
    """Load a dataset with the loader for ``kind``; ``options`` are that loader's keywords.

    Raises `ConfigError` for an unknown kind or an option the loader does not take.
    """
    loader = _LOADERS.get(kind)
    if loader is None:
        raise ConfigError(
            f"unknown dataset kind {kind!r}; use one of {', '.join(get_args(DatasetKind))}"
        )
    accepted = [
        name
        for name, parameter in inspect.signature(loader).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"dataset kind {kind!r} takes no option(s) {', '.join(unknown)}; "
            f"it takes {', '.join(accepted)}"
        )
    return loader(path, **options)
