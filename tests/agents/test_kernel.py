"""The agent kernel: manifests, run folders, what the model is told, the blocking wrapper."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image

from medagent.agents.base import (
    RunManifest,
    image_words,
    new_run_dir,
    render_long_side,
    run_sync,
    text_sha256,
)
from medagent.errors import InputError
from medagent.imaging import ImageSlide, modality
from medagent.models import ScriptedModel


def test_manifest_round_trips_and_names_the_backend(tmp_path: Path) -> None:
    model = ScriptedModel([])
    manifest = RunManifest.for_model(
        model, agent="giant", method="giant", inputs={"question": "q"}, seed=3
    ).with_rendered(system="You are a radiologist")
    path = manifest.write(tmp_path / "run")
    assert path.name == "manifest.json"
    again = RunManifest.read(tmp_path / "run")
    assert again == manifest
    assert again.backend == "ScriptedModel" and again.versions
    assert again.rendered_prompts == {"system": text_sha256("You are a radiologist")}


def test_a_missing_or_damaged_manifest_is_one_line(tmp_path: Path) -> None:
    assert RunManifest.find(tmp_path) is None
    with pytest.raises(InputError, match="not a run folder"):
        RunManifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text('{"run_id": "abc", "agent"')
    assert RunManifest.find(tmp_path) is None
    with pytest.raises(InputError, match="damaged") as caught:
        RunManifest.read(tmp_path)
    assert "\n" not in str(caught.value)


def test_run_folders_are_unique_and_sortable(tmp_path: Path) -> None:
    names = {new_run_dir(tmp_path).name for _ in range(50)}
    assert len(names) == 50
    assert all(name[:8].isdigit() for name in names)


def test_views_are_rendered_at_what_the_model_receives() -> None:
    model = ScriptedModel([])
    assert render_long_side(model, 2000) == 2000  # no cap: as the agent asked
    model.image_long_side = 1024  # type: ignore[attr-defined]
    assert render_long_side(model, 2000) == 1024
    assert render_long_side(model, 800) == 800


def test_image_words_say_what_the_image_is() -> None:
    pixels = Image.new("RGB", (32, 32))
    radiograph = ImageSlide(pixels, mpp=(143.0, 143.0), modality=modality("radiograph"))
    words = image_words(radiograph)
    assert words["reader"] == "radiologist"
    assert words["a_image"] == "a radiograph"
    assert words["spacing"] == "0.143 mm per pixel"
    plain = image_words(ImageSlide(pixels))
    assert plain["a_image"] == "a medical image"
    assert plain["spacing"] == "pixel spacing unknown"
    assert image_words(radiograph, mpp=286.0)["spacing"] == "0.286 mm per pixel"


def test_run_sync_works_inside_a_running_loop() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run_sync(answer()) == 42

    async def notebook() -> int:
        return run_sync(answer())  # a notebook cell: the loop is already running

    assert asyncio.run(notebook()) == 42
