"""RAG preference pairs (MMed-RAG): four runs per item, four stages, DPO JSONL.

Each item is answered four ways — {clean, noise image} x {without, with retrieved reports};
the noise image is Gaussian N(0, 1) clipped to [0, 1]. Stages:

- 1  (cross-modality): without RAG, clean correct and noise wrong → chosen clean, rejected noise.
- 2a (cross-modality with RAG): with RAG, clean and noise both correct (the answer came from
  the reports, not the image) → chosen clean, rejected noise; subsampled to
  0.5 x (|2b| + |2c|).
- 2b (overall, misled by retrieval): correct without RAG, wrong with → chosen the no-RAG answer.
- 2c (overall, helped by retrieval): wrong without RAG, correct with → chosen the RAG answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from medagent._files import write_atomic

__all__ = ["FourRuns", "PreferencePair", "noise_image", "pairs_from_runs", "write_pairs"]

Stage = Literal["1", "2a", "2b", "2c"]


def noise_image(like: Image.Image, seed: int) -> Image.Image:
    """N(0, 1) noise clipped to [0, 1], the size of ``like`` (the paper's noised input)."""
    rng = np.random.default_rng(seed)
    values = np.clip(rng.standard_normal((like.height, like.width, 3)), 0.0, 1.0)
    return Image.fromarray((values * 255).astype(np.uint8))


class FourRuns(BaseModel):
    """One item answered four ways, with correctness against the reference."""

    model_config = ConfigDict(frozen=True)

    id: str
    image: str
    plain_prompt: str
    rag_prompt: str
    clean_plain: str | None
    noise_plain: str | None
    clean_rag: str | None
    noise_rag: str | None
    clean_plain_ok: bool
    noise_plain_ok: bool
    clean_rag_ok: bool
    noise_rag_ok: bool


class PreferencePair(BaseModel):
    """One DPO example."""

    model_config = ConfigDict(frozen=True)

    id: str
    stage: Stage
    prompt: str
    images: list[str]
    chosen: str
    rejected: str
    rejected_image: Literal["clean", "noise"]


def pairs_from_runs(runs: Sequence[FourRuns], *, seed: int = 0) -> list[PreferencePair]:
    """The pairs each stage's condition produces (2a subsampled, seeded)."""
    stage1, s2a, s2b, s2c = [], [], [], []
    for r in runs:
        if r.clean_plain_ok and not r.noise_plain_ok and r.clean_plain and r.noise_plain:
            stage1.append(
                PreferencePair(
                    id=r.id,
                    stage="1",
                    prompt=r.plain_prompt,
                    images=[r.image],
                    chosen=r.clean_plain,
                    rejected=r.noise_plain,
                    rejected_image="noise",
                )
            )
        if r.clean_rag_ok and r.noise_rag_ok and r.clean_rag and r.noise_rag:
            s2a.append(
                PreferencePair(
                    id=r.id,
                    stage="2a",
                    prompt=r.rag_prompt,
                    images=[r.image],
                    chosen=r.clean_rag,
                    rejected=r.noise_rag,
                    rejected_image="noise",
                )
            )
        if r.clean_plain_ok and not r.clean_rag_ok and r.clean_plain and r.clean_rag:
            s2b.append(
                PreferencePair(
                    id=r.id,
                    stage="2b",
                    prompt=r.rag_prompt,
                    images=[r.image],
                    chosen=r.clean_plain,
                    rejected=r.clean_rag,
                    rejected_image="clean",
                )
            )
        if not r.clean_plain_ok and r.clean_rag_ok and r.clean_plain and r.clean_rag:
            s2c.append(
                PreferencePair(
                    id=r.id,
                    stage="2c",
                    prompt=r.rag_prompt,
                    images=[r.image],
                    chosen=r.clean_rag,
                    rejected=r.clean_plain,
                    rejected_image="clean",
                )
            )
    keep = int(0.5 * (len(s2b) + len(s2c)))
    s2a = random.Random(seed).sample(s2a, min(keep, len(s2a)))
    s2a.sort(key=lambda pair: pair.id)
    return [*stage1, *s2a, *s2b, *s2c]


def write_pairs(pairs: Sequence[PreferencePair], path: str | Path) -> Path:
    """DPO JSONL, one pair per line (prompt, images, chosen, rejected, stage, …)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(pair.model_dump(), ensure_ascii=False) + "\n" for pair in pairs)
    write_atomic(path, "".join(lines))
    return path
