"""Fixtures for the insight agent: generated images and the replies a scripted model gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medagent.testing import synthetic_tissue, write_pyramid_tiff


@pytest.fixture(scope="session")
def insight_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3000 x 2000 px pyramidal slide at 0.5 µm/px."""
    path = tmp_path_factory.mktemp("insight") / "slide.tif"
    return write_pyramid_tiff(path, synthetic_tissue(3000, 2000, seed=5), mpp=0.5, levels=3)


@pytest.fixture(scope="session")
def radiograph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain greyscale PNG (no pixel spacing), like a radiograph."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((400, 500)) * 60 + 80).astype(np.uint8)
    pixels[150:250, 200:320] = 230
    path = tmp_path_factory.mktemp("insight") / "radiograph.png"
    Image.fromarray(pixels, mode="L").save(path)
    return path


class Replies:
    """Builds the JSON replies of each module, for ``ScriptedModel``."""

    @staticmethod
    def roots(
        k: int, *, region: dict[str, int] | None = None, prefix: str = "Root question"
    ) -> dict[str, Any]:
        return {
            "json": {
                "findings": [
                    {"description": "a dense cellular area", "image": 1, "region": region},
                    {"description": "pale stroma around it", "image": 1, "region": None},
                ],
                "questions": [f"{prefix} {i}?" for i in range(1, k + 1)],
            }
        }

    @staticmethod
    def answer(text: str, confidence: int = 70) -> dict[str, Any]:
        return {
            "json": {
                "reasoning": "what the tools showed",
                "action": "answer",
                "answer": f"answer: {text}",
                "insight": text,
                "confidence": confidence,
            }
        }

    @staticmethod
    def final(text: str, confidence: int = 60) -> dict[str, Any]:
        return {
            "json": {
                "reasoning": "last turn",
                "answer": f"answer: {text}",
                "insight": text,
                "confidence": confidence,
            }
        }

    @staticmethod
    def tool(action: str, **arguments: Any) -> dict[str, Any]:
        return {"json": {"reasoning": f"use {action}", "action": action, **arguments}}

    @staticmethod
    def follow_up(
        question: str,
        *,
        kind: str = "diagnostic",
        nothing_new: bool = False,
        others: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        candidates = {"descriptive": "", "diagnostic": "", "predictive": "", "prescriptive": ""}
        candidates.update(others or {})
        candidates[kind] = question
        return {
            "json": {
                "reasoning": "deeper",
                **candidates,
                "choice": kind,
                "nothing_new": nothing_new,
            }
        }

    @staticmethod
    def summary(
        ranking: list[int], duplicates: list[list[int]] | None = None, text: str = "Summary."
    ) -> dict[str, Any]:
        return {"json": {"summary": text, "ranking": ranking, "duplicates": duplicates or []}}


@pytest.fixture
def replies() -> type[Replies]:
    return Replies
