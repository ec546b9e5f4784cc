"""MMed-RAG names the image truly (a slide in µm, a radiograph in mm, a picture without
spacing with no unit), states the spacing of the pixels it sends, and leaves a manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_rag import FakeSearcher, hit

from medagent.agents.base import run_sync
from medagent.agents.rag import RAGPipeline, RAGResult
from medagent.imaging import ImageSlide, Slide, modality, open_image
from medagent.models import ScriptedModel
from medagent.testing import synthetic_tissue, write_pyramid_tiff

MM = re.compile(r"\bmm\b")


def radiograph() -> ImageSlide:
    """A 500 x 400 film at 150 µm (0.15 mm) per pixel, opened as a radiograph."""
    pixels = (np.random.default_rng(2).random((400, 500)) * 60 + 80).astype(np.uint8)
    return ImageSlide(
        Image.fromarray(pixels, mode="L"), mpp=(150.0, 150.0), modality=modality("radiograph")
    )


@pytest.fixture(scope="module")
def pathology(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1200 x 800 pyramidal slide at 0.5 µm per pixel (sent at 1000 px: 0.6 µm)."""
    path = tmp_path_factory.mktemp("rag-kinds") / "slide.tif"
    return write_pyramid_tiff(path, synthetic_tissue(1200, 800, seed=3), mpp=0.5, levels=2)


@pytest.fixture(scope="module")
def plain_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rag-kinds") / "plain.png"
    Image.new("RGB", (300, 200), (90, 90, 90)).save(path)
    return path


async def ask(
    image: Slide, folder: Path, **model: Any
) -> tuple[RAGResult, ScriptedModel, dict[str, Any]]:
    scripted = ScriptedModel([{"json": {"answer": "no"}}], **model)
    pipeline = RAGPipeline(scripted, FakeSearcher([hit(1, 0.9)]))
    result = await pipeline.ask(image, "Effusion?", run_dir=folder)
    assert result.status == "answered", result.error
    return result, scripted, json.loads((folder / "manifest.json").read_text())


async def test_each_kind_is_named_with_its_own_unit_or_none(
    pathology: Path, plain_png: Path, tmp_path: Path
) -> None:
    with open_image(pathology) as slide:
        slide_result, _, slide_manifest = await ask(slide, tmp_path / "pathology")
    film_result, film_model, film_manifest = await ask(radiograph(), tmp_path / "film")
    with open_image(plain_png) as plain:
        plain_result, _, plain_manifest = await ask(plain, tmp_path / "plain")

    assert "the whole-slide pathology image you are shown" in slide_result.prompt
    assert "The image: a whole-slide pathology image, 0.6 µm per pixel." in slide_result.prompt

    film = film_result.prompt
    assert "the radiograph you are shown" in film
    assert "The image: a radiograph, 0.15 mm per pixel." in film
    assert film_model.requests[0].messages[-1].text == film  # as sent
    assert "µm" not in film and "pathologist" not in film and "whole-slide" not in film

    text = plain_result.prompt
    assert "The image: a medical image, pixel spacing unknown." in text
    assert "µm" not in text and not MM.search(text)

    manifests = [slide_manifest, film_manifest, plain_manifest]
    for manifest in manifests:
        assert manifest["agent"] == "rag" and manifest["method"] == "rag"
        assert manifest["inputs"]["question"] == "Effusion?"
        assert manifest["image_long_side"] == 1000
        assert set(manifest["prompts"]) == {"rag/role", "rag/references", "rag/task", "rag/domain"}
    assert len({m["rendered_prompts"]["prompt"] for m in manifests}) == 3
    assert slide_manifest["inputs"]["image"] == str(pathology)
    saved = json.loads((tmp_path / "film" / "result.json").read_text())
    assert saved["answer"] == "no" and saved["prompt"] == film


async def test_the_stated_spacing_is_that_of_the_pixels_sent(tmp_path: Path) -> None:
    result, model, manifest = await ask(radiograph(), tmp_path / "capped", image_long_side=400)
    sent = model.requests[0].messages[-1].images[0].image
    assert sent is not None and sent.size == (400, 320)
    assert "The image: a radiograph, 0.188 mm per pixel." in result.prompt  # 150 µm x 1.25
    assert manifest["image_long_side"] == 400


def test_without_a_run_dir_nothing_is_written(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    pipeline = RAGPipeline(ScriptedModel([{"json": {"answer": "no"}}]), FakeSearcher([hit(1, 0.9)]))
    run_sync(pipeline.ask(radiograph(), "Effusion?"))
    assert list(tmp_path.iterdir()) == []


async def test_the_noise_image_is_described_as_the_clean_one(tmp_path: Path) -> None:
    image = tmp_path / "film.png"
    Image.new("RGB", (64, 48), "white").save(image)
    model = ScriptedModel([{"json": {"answer": "no"}}] * 4)
    four = await RAGPipeline(model, FakeSearcher([hit(1, 0.9)])).four_runs(
        "q1", str(image), "Effusion?", "no"
    )
    clean_plain, noise_plain, clean_rag, noise_rag = (r.messages[-1] for r in model.requests)
    assert clean_plain.text == noise_plain.text == four.plain_prompt
    assert clean_rag.text == noise_rag.text == four.rag_prompt
    assert "The image: a medical image, pixel spacing unknown." in four.plain_prompt
