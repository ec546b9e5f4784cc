"""The insight agent names each image truly: a slide with µm, a radiograph with mm, an image
without spacing with no unit; the manifest records the role as sent, and the render size."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medagent.agents.insight import InsightAgent, InsightConfig
from medagent.imaging import ImageSlide, Slide, modality
from medagent.models import ScriptedModel

MM = re.compile(r"\bmm\b")


def radiograph_slide() -> ImageSlide:
    """A chest-film-like image at 150 µm per pixel (0.15 mm), opened as a radiograph."""
    pixels = (np.random.default_rng(1).random((400, 500)) * 60 + 80).astype(np.uint8)
    return ImageSlide(
        Image.fromarray(pixels, mode="L"), mpp=(150.0, 150.0), modality=modality("radiograph")
    )


def run_once(slide: Slide | Path, folder: Path, replies: Any, **model: Any) -> tuple[str, dict]:
    """One root question answered at once; every text the model was sent, and the manifest."""
    scripted = ScriptedModel(
        [replies.roots(1), replies.answer("Something is there."), replies.summary([1])], **model
    )
    report = InsightAgent(scripted, InsightConfig(roots=1, depth=1)).run(
        slide, "Describe the image.", run_dir=folder
    )
    assert report.status == "completed", report.error
    sent = "\n".join(m.text for r in scripted.requests for m in r.messages)
    return sent, json.loads((folder / "manifest.json").read_text())


@pytest.fixture
def kinds(insight_slide: Path, radiograph: Path, tmp_path: Path, replies: Any) -> dict[str, Any]:
    return {
        "pathology": run_once(insight_slide, tmp_path / "pathology", replies),
        "radiograph": run_once(radiograph_slide(), tmp_path / "radiograph", replies),
        "plain": run_once(radiograph, tmp_path / "plain", replies),
    }


def test_a_slide_is_a_pathology_slide_in_micrometres(kinds: dict[str, Any]) -> None:
    sent, _ = kinds["pathology"]
    assert "expert pathologist" in sent
    assert "Image 1: a whole-slide pathology image" in sent and "0.5 µm per pixel" in sent
    assert "measures in µm" in sent


def test_a_radiograph_is_a_radiograph_in_millimetres(kinds: dict[str, Any], tmp_path: Path) -> None:
    sent, _ = kinds["radiograph"]
    assert "expert radiologist" in sent and "analyst of a radiograph" in sent
    assert "Image 1: a radiograph, 500 x 400 level-0 pixels, 0.15 mm per pixel" in sent
    assert "measures in mm" in sent
    assert "µm" not in sent
    page = (tmp_path / "radiograph" / "insights.html").read_text(encoding="utf-8")
    assert "radiograph, 500 × 400 px, 0.15 mm per pixel" in page and "µm" not in page
    for wrong in ("pathologist", "whole slide", "whole-slide", "histopathology"):
        assert wrong not in sent


def test_an_image_without_spacing_gets_no_unit(kinds: dict[str, Any]) -> None:
    sent, _ = kinds["plain"]
    assert "Image 1: a medical image" in sent and "pixel spacing unknown" in sent
    assert "measures in level-0 pixels (the pixel spacing is unknown)" in sent
    assert "µm" not in sent and not MM.search(sent)
    assert "pathologist" not in sent and "whole-slide" not in sent


def test_the_manifest_records_the_role_as_sent_for_each_kind(kinds: dict[str, Any]) -> None:
    manifests = {kind: manifest for kind, (_, manifest) in kinds.items()}
    for manifest in manifests.values():
        assert manifest["agent"] == "insight" and manifest["method"] == "insight"
        assert manifest["inputs"]["goal"] == "Describe the image."
        assert manifest["image_long_side"] == 1000
        assert set(manifest["prompts"]) >= {"insight/role", "insight/agent"}
    systems = {m["rendered_prompts"]["system"] for m in manifests.values()}
    assert len(systems) == 3  # the role names a different kind each time


def test_views_are_rendered_at_the_size_the_model_receives(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    _, manifest = run_once(insight_slide, tmp_path / "capped", replies, image_long_side=640)
    assert manifest["image_long_side"] == 640
    report = json.loads((tmp_path / "capped" / "insights.json").read_text())
    overview = report["sources"][0]["overview"]
    assert max(overview["width"], overview["height"]) == 640
