"""GIANT tells the model truly what it looks at: the image's kind in its words and unit, and a
scale that holds for the pixels actually sent (the scripted backend is a test double)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from medagent.agents.base import RunManifest, run_sync
from medagent.agents.giant import GiantConfig, GiantNavigator, GiantResult
from medagent.artifacts import ArtifactStore
from medagent.errors import InputError
from medagent.imaging import ImageSlide, Slide, modality, open_image
from medagent.models import ScriptedModel
from medagent.testing import synthetic_tissue

QUESTION = "Is there a fracture?"
OPTIONS = ["no", "yes"]
ZOOM = {"reasoning": "closer", "action": "zoom", "x": 200, "y": 150, "width": 1200, "height": 900}
BIG_ZOOM = {"reasoning": "closer", "action": "zoom", "x": 0, "y": 0, "width": 4000, "height": 3000}
ANSWER = {"reasoning": "clear", "action": "answer", "answer": "1"}


def navigate(
    slide: Slide | Path, tmp_path: Path, name: str, replies: list[dict[str, Any]], **config: Any
) -> tuple[ScriptedModel, GiantResult]:
    model = ScriptedModel([{"json": reply} for reply in replies])
    for key, value in config.pop("model_attrs", {}).items():
        setattr(model, key, value)  # a backend's image cap, which the test double lacks
    navigator = GiantNavigator(model, GiantConfig(**config), runs_dir=tmp_path)
    result = navigator.run(slide, QUESTION, options=OPTIONS, run_dir=tmp_path / name)
    return model, result


def opening_prompts(model: ScriptedModel) -> str:
    system, question = model.requests[0].messages[:2]
    return system.text + "\n" + question.text


def radiograph() -> ImageSlide:
    image = synthetic_tissue(1600, 1200, seed=5)
    return ImageSlide(image, mpp=(143.0, 143.0), modality=modality("radiograph"))


@pytest.fixture(scope="module")
def plain_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plain") / "plain.png"
    synthetic_tissue(1600, 1200, seed=6).save(path)
    return path


def has_unit(text: str, unit: str) -> bool:
    return re.search(rf"\d\s*{unit}\b", text) is not None


def test_a_slide_is_a_pathologists_slide_in_micrometres(nav_slide: Path, tmp_path: Path) -> None:
    model, _ = navigate(nav_slide, tmp_path, "slide", [ANSWER])
    prompts = opening_prompts(model)
    assert "expert pathologist" in prompts and "whole slide" in prompts
    assert "0.25 µm per pixel" in prompts and not has_unit(prompts, "mm")


def test_a_radiograph_is_a_radiologists_image_in_millimetres(tmp_path: Path) -> None:
    model, result = navigate(radiograph(), tmp_path, "xray", [ZOOM, ANSWER])
    assert result.html_path is not None
    page = result.html_path.read_text(encoding="utf-8")
    assert "0.143 mm per pixel" in page and "µm" not in page  # the trajectory page too
    prompts = opening_prompts(model)
    assert "expert radiologist" in prompts and "a radiograph" in prompts
    assert "0.143 mm per pixel" in prompts and "whole image" in prompts
    lowered = prompts.lower()
    assert "µm" not in prompts and "pathologist" not in lowered and "slide" not in lowered
    # After a zoom, the scale is in mm too: 1200 level-0 px of 0.143 mm shown over 1000 px.
    after = model.requests[1].messages[-1].text
    assert "shown at 0.172 mm per pixel" in after and "µm" not in after
    assert "slide" not in after.lower()


def test_an_image_without_spacing_makes_no_unit_claim(plain_png: Path, tmp_path: Path) -> None:
    assert open_image(plain_png).mpp_x is None
    model, _ = navigate(plain_png, tmp_path, "plain", [ZOOM, ANSWER])
    prompts = opening_prompts(model)
    assert "pixel spacing unknown" in prompts
    assert not has_unit(prompts, "µm") and not has_unit(prompts, "mm")
    after = model.requests[1].messages[-1].text
    assert "shown at 1.2 level-0 pixels per image pixel" in after
    assert not has_unit(after, "µm") and not has_unit(after, "mm")


def test_the_manifest_hashes_the_system_prompt_as_sent(
    nav_slide: Path, plain_png: Path, tmp_path: Path
) -> None:
    manifests = {}
    for name, slide in (("slide", nav_slide), ("xray", radiograph()), ("plain", plain_png)):
        navigate(slide, tmp_path, name, [ANSWER])
        manifests[name] = RunManifest.read(tmp_path / name)
    slide, xray, plain = manifests["slide"], manifests["xray"], manifests["plain"]
    assert slide.agent == "giant" and slide.inputs["question"] == QUESTION
    assert slide.inputs["options"] == OPTIONS and slide.inputs["modality"] == "pathology"
    assert xray.inputs["modality"] == "radiograph"
    systems = {m.rendered_prompts["system"] for m in manifests.values()}
    assert len(systems) == 3  # one per kind of image
    assert slide.prompts == xray.prompts == plain.prompts  # the same templates
    assert slide.image_long_side == 1000


def test_the_stated_scale_is_that_of_the_pixels_sent(nav_slide: Path, tmp_path: Path) -> None:
    model, result = navigate(
        nav_slide,
        tmp_path,
        "capped",
        [BIG_ZOOM, ANSWER],
        long_side=2000,
        model_attrs={"image_long_side": 1024},
    )
    assert result.status == "answered"
    store = ArtifactStore(result.run_dir / "artifacts")
    sent = [part.artifact for r in model.requests for m in r.messages for part in m.images]
    assert len(sent) == 3  # the overview (twice) and the zoom
    for ref in sent:
        assert ref is not None
        assert max(store.get(store.resolve(ref)).size) == 1024
    zoom_image = store.get(store.resolve(sent[-1]))
    after = model.requests[1].messages[-1].text
    stated = float(re.search(r"shown at ([0-9.]+) µm per pixel", after).group(1))  # type: ignore[union-attr]
    assert stated == pytest.approx(BIG_ZOOM["width"] * 0.25 / zoom_image.width, rel=0.01)
    assert RunManifest.read(result.run_dir).image_long_side == 1024


def test_a_resumed_run_reads_the_typed_manifest(tmp_path: Path) -> None:
    path = tmp_path / "xray.png"
    synthetic_tissue(1600, 1200, seed=5).save(path)
    first = GiantNavigator(ScriptedModel([{"json": ANSWER}]), runs_dir=tmp_path)
    slide = open_image(path, modality="radiograph")
    done = first.run(slide, QUESTION, options=OPTIONS, run_dir=tmp_path / "r")
    # A finished run resumed is reported again, from the path and kind the manifest holds.
    again = run_sync(GiantNavigator(ScriptedModel([])).aresume(tmp_path / "r"))
    assert (again.status, again.answer, again.run_id) == (done.status, done.answer, done.run_id)
    with pytest.raises(InputError, match="not a run folder"):
        run_sync(GiantNavigator(ScriptedModel([])).aresume(tmp_path))


def test_ask_says_what_a_plain_image_shows(plain_png: Path, tmp_path: Path) -> None:
    from cli_support import medagent

    script = tmp_path / "script.jsonl"
    script.write_text(json.dumps({"json": ANSWER}) + "\n")
    args = ["ask", str(plain_png), QUESTION, "--backend", "scripted", "--script", str(script)]
    done = medagent(*args, "--modality", "radiograph", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stdout + done.stderr
    trajectory = json.loads((tmp_path / "run" / "trajectory.json").read_text())
    system = trajectory["messages"][0]["content"][0]["text"]
    assert "expert radiologist examining a radiograph" in system
    wrong = medagent(*args, "--modality", "xray", "--out", str(tmp_path / "wrong"))
    assert wrong.returncode == 2 and "--modality" in wrong.stderr
    assert "Traceback" not in wrong.stderr
