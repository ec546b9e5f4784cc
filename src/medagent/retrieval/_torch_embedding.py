"""What the torch-backed embedders share: batching, unit rows, one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from medagent.errors import DependencyMissingError, ModelError
from medagent.models.hf_loading import first_line
from medagent.retrieval.base import Vectors

__all__ = ["require", "unit_batches"]


def require(package: str, extra: str, purpose: str) -> None:
    """Import ``package`` or raise the error that names the extra to install.

    Any import failure counts: a torchvision wheel built for another torch fails with a
    RuntimeError, not an ImportError.
    """
    try:
        __import__(package)
    except Exception as exc:
        if isinstance(exc, ModuleNotFoundError):
            raise DependencyMissingError(package, extra, purpose) from None
        raise DependencyMissingError(
            f"{package} (installed but not importable: {first_line(exc)})", extra, purpose
        ) from None


def unit_batches(
    items: list[Any], batch_size: int, dim: int, name: str, run: Callable[[list[Any]], Any]
) -> Vectors:
    """``run`` over batches of ``items``, concatenated, float32 and L2-normalized."""
    if not items:
        return np.zeros((0, dim), dtype=np.float32)
    try:
        parts = [run(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    except (RuntimeError, MemoryError) as exc:  # how torch reports OOM and device errors
        raise ModelError(f"embedding with {name} failed: {first_line(exc)}") from exc
    vectors = np.concatenate(parts).astype(np.float32)
    if vectors.shape[1] != dim:
        raise ModelError(f"{name} gave vectors of length {vectors.shape[1]}, not {dim}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: Vectors = vectors / np.maximum(norms, np.float32(1e-12))
    return unit
