"""The retrieval contracts: embedders turn images (and texts) into vectors; indexes find them.

Vectors are float32, shape (n, d), L2-normalized, so inner product is cosine similarity and
every index, embedder and caller agrees on what a score means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medagent.imaging import Region

__all__ = ["Domain", "Embedder", "IndexRecord", "Neighbour", "Vectors"]

Vectors = npt.NDArray[np.float32]
"""float32 (n, d), each row of unit L2 norm."""

Domain = Literal["radiology", "pathology", "ophthalmology", "other"]


@runtime_checkable
class Embedder(Protocol):
    """Images (and, where the model has one, texts) into one normalized vector space."""

    name: str
    dim: int

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        """(len(images), dim) float32, L2-normalized rows."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Same space as images; raises ``ConfigError`` when the embedder has no text side."""
        ...


class IndexRecord(BaseModel):
    """What is stored next to each vector (the SQLite side of the index)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="unique within the index; removal and updates use it")
    source: str = Field(description="where the image came from: a file path or a slide path")
    region: Region | None = Field(None, description="the slide region, for slide tiles")
    label: str | None = None
    domain: Domain | None = None
    report: str | None = Field(None, description="report / caption text, for RAG")
    extra: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One search hit: the record and its cosine similarity to the query.

    A slotted dataclass rather than a pydantic model: search makes one per hit, and at
    thousands of queries per second a pydantic object costs as much as the FAISS search.
    """

    record: IndexRecord
    score: float
