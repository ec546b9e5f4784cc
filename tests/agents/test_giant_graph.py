"""The GIANT navigation loop, driven by the scripted backend (a test double)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from medagent.agents.giant import GiantConfig, GiantNavigator, GiantResult, Trajectory
from medagent.artifacts import ArtifactStore
from medagent.imaging import Region
from medagent.models import ChatModel, ImagePart, ScriptedModel
from model_support import KillAt, Killed

QUESTION = "Is there tumour on this slide?"
OPTIONS = ["no", "yes"]


def zoom(x: int, y: int, w: int, h: int, why: str = "looking closer") -> dict[str, Any]:
    return {"json": {"reasoning": why, "action": "zoom", "x": x, "y": y, "width": w, "height": h}}


def answer(text: str = "2", why: str = "clear evidence") -> dict[str, Any]:
    return {"json": {"reasoning": why, "action": "answer", "answer": text}}


def final(text: str = "2") -> dict[str, Any]:
    return {"json": {"reasoning": "from what I saw", "answer": text}}


def run(
    model: ChatModel, slide: Path, tmp_path: Path, **config: Any
) -> tuple[GiantResult, Trajectory]:
    navigator = GiantNavigator(model, GiantConfig(**config), runs_dir=tmp_path)
    result = navigator.run(slide, QUESTION, options=OPTIONS, run_dir=tmp_path / "run")
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    return result, trajectory


def test_zoom_zoom_answer(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([zoom(2000, 1500, 4000, 3000), zoom(3000, 2000, 1000, 800), answer()])
    result, trajectory = run(model, nav_slide, tmp_path)
    assert result.status == "answered" and result.answer == "2" and result.prediction == "yes"
    assert [s.kind for s in trajectory.steps] == ["zoom", "zoom", "answer"]
    first, second = trajectory.steps[0], trajectory.steps[1]
    assert first.region == Region(x=2000, y=1500, width=4000, height=3000)
    # 4000 px to 1000: downsample 4, biased to 3.4, so level 1 (2x) is read and shrunk.
    assert first.level == 1 and first.mpp == pytest.approx(1.0)
    assert second.level == 0
    # Every image went in a user message; the conversation holds ids, never pixels.
    for request in model.requests:
        for message in request.messages:
            assert message.role == "user" or not message.images
    dumped = result.trajectory_path.read_text()
    assert "base64" not in dumped
    assert trajectory.messages[-2].images[0].artifact == second.artifact  # crop 2 shown
    # The text after a zoom names the region, the slide size and the turns left.
    after = trajectory.messages[3].text
    assert "x=2000, y=1500, width=4000, height=3000" in after
    assert "8000 x 6000" in after and "19 turns left" in after
    assert result.html_path is not None and result.html_path.exists()


def test_early_answer(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([answer("1")])
    result, trajectory = run(model, nav_slide, tmp_path)
    assert result.status == "answered" and result.prediction == "no"
    assert len(model.requests) == 1 and len(trajectory.steps) == 1
    # The first request: system prompt, then the question with the overview.
    system, user = model.requests[0].messages
    assert system.role == "system" and "level-0" in system.text
    assert "Options:\n1. no\n2. yes" in user.text and len(user.images) == 1


def test_step_limit_forces_an_answer(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([zoom(0, 0, 4000, 3000), zoom(100, 100, 2000, 2000), final("2")])
    result, _trajectory = run(model, nav_slide, tmp_path, max_steps=3)
    assert result.status == "answered_at_limit" and result.answer == "2"
    assert model.requests[-1].schema_name == "FinalAnswer"
    last = model.requests[-1].messages[-1].text
    assert "last turn" in last and "step 1" in last and "step 2" in last


def test_no_valid_answer_on_the_last_turn(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([{"text": "I cannot tell"}] * 3)
    result, trajectory = run(model, nav_slide, tmp_path, max_steps=1, max_corrections=2)
    assert result.status == "no_answer" and result.answer is None
    assert "no valid answer on the last turn" in (result.error or "")
    assert len(model.requests) == 3 and trajectory.steps[0].kind == "invalid"


@pytest.mark.parametrize(
    ("bad", "error_words"),
    [
        ({"text": "zoom to the middle please"}, "no JSON object found"),
        ({"json": {"reasoning": "x", "action": "zoom", "x": 1}}, "Field required"),
        ({"json": {"reasoning": "x", "action": "pan", "x": 1}}, "does not match any of the"),
        (
            {"json": {"reasoning": "x", "action": "zoom", "x": 1, "y": 1, "width": 0, "height": 5}},
            "greater than or equal to 1",
        ),
    ],
    ids=["not-json", "missing-fields", "unknown-action", "zero-area"],
)
def test_malformed_output_is_corrected(
    nav_slide: Path, tmp_path: Path, bad: dict[str, Any], error_words: str
) -> None:
    model = ScriptedModel([bad, answer()])
    result, trajectory = run(model, nav_slide, tmp_path)
    assert result.status == "answered"
    correction = model.requests[1].messages[-1].text
    assert "could not be used" in correction and error_words in correction
    assert trajectory.steps[0].errors and error_words in trajectory.steps[0].errors[0]
    assert len(trajectory.steps[0].outputs) == 2


def test_trailing_text_after_json_is_recovered(nav_slide: Path, tmp_path: Path) -> None:
    text = '{"reasoning": "ok", "action": "answer", "answer": "2"}\nHope this helps!'
    model = ScriptedModel([{"text": text}])
    result, _ = run(model, nav_slide, tmp_path)
    assert result.status == "answered" and len(model.requests) == 1


def test_invalid_output_consumes_the_step_after_max_corrections(
    nav_slide: Path, tmp_path: Path
) -> None:
    model = ScriptedModel([{"text": "nonsense"}] * 3 + [answer()])
    result, trajectory = run(model, nav_slide, tmp_path, max_corrections=2)
    assert result.status == "answered"
    assert [s.kind for s in trajectory.steps] == ["invalid", "answer"]
    spent = model.requests[3].messages[-1].text
    assert "that turn is spent" in spent and "19 turns left" in spent


def test_regions_are_clamped_with_a_note(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([zoom(-500, 5000, 2000, 2000), answer()])
    _result, trajectory = run(model, nav_slide, tmp_path)
    step = trajectory.steps[0]
    assert step.clamped and step.region == Region(x=0, y=5000, width=1500, height=1000)
    assert "clamped" in model.requests[1].messages[-1].text


def test_strict_mode_rejects_partly_outside_regions(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([zoom(-500, 5000, 2000, 2000), answer()])
    _result, trajectory = run(model, nav_slide, tmp_path, strict_regions=True)
    assert trajectory.steps[0].kind == "rejected"
    assert "extends beyond the slide" in model.requests[1].messages[-1].text


def test_regions_fully_outside_are_rejected(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([zoom(9000, 100, 500, 500), answer()])
    _, trajectory = run(model, nav_slide, tmp_path)
    assert trajectory.steps[0].kind == "rejected"
    assert "entirely outside the slide" in model.requests[1].messages[-1].text


def test_revisiting_a_region_gets_a_nudge(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([zoom(1000, 1000, 2000, 2000), zoom(1050, 1000, 2000, 2000), answer()])
    _, trajectory = run(model, nav_slide, tmp_path)
    assert "almost the same region" in model.requests[2].messages[-1].text
    assert "almost the same region" not in model.requests[1].messages[-1].text
    assert trajectory.steps[1].notes


def test_image_pruning_keeps_overview_and_latest_crops(nav_slide: Path, tmp_path: Path) -> None:
    zooms = [zoom(1000 * i, 500, 1500, 1500) for i in range(4)]
    model = ScriptedModel([*zooms, answer()])
    _, trajectory = run(model, nav_slide, tmp_path, max_images_in_context=2)
    last = model.requests[-1].messages
    images = [p.artifact for m in last for p in m.content if isinstance(p, ImagePart)]
    assert len(images) == 2
    assert images[0] == trajectory.overview
    assert images[1] == trajectory.steps[3].artifact
    assert sum("was removed to save space" in m.text for m in last) == 3
    assert trajectory.steps[-1].images_sent == [images[0].id, images[1].id]


def test_a_killed_run_resumes_from_its_last_step(nav_slide: Path, tmp_path: Path) -> None:
    script = [zoom(0, 0, 4000, 3000), zoom(1000, 1000, 2000, 2000), answer()]
    first = ScriptedModel(script)
    with pytest.raises(Killed):
        run(KillAt(first, 3), nav_slide, tmp_path)  # type: ignore[arg-type]
    events = (tmp_path / "run" / "events.jsonl").read_text()
    assert events.count('"type": "step"') == 2
    resumed = ScriptedModel(script[2:])
    result, trajectory = run(resumed, nav_slide, tmp_path)
    assert result.status == "answered"
    assert [s.step for s in trajectory.steps] == [1, 2, 3]
    assert len(resumed.requests) == 1  # only the step that had not finished
    assert len(resumed.requests[0].messages) == 6  # the whole history was restored


def test_checkpoints_stay_small(nav_slide: Path, tmp_path: Path) -> None:
    zooms = [zoom(500 * i, 300 * i, 2000, 1500, why="x" * 400) for i in range(10)]
    model = ScriptedModel([*zooms, answer()])
    run(model, nav_slide, tmp_path)
    with sqlite3.connect(tmp_path / "run" / "checkpoints.sqlite") as db:
        stored = db.execute(
            "SELECT coalesce(sum(length(checkpoint)), 0) + coalesce(sum(length(metadata)), 0) "
            "FROM checkpoints"
        ).fetchone()[0]
        stored += db.execute("SELECT coalesce(sum(length(value)), 0) FROM writes").fetchone()[0]
    per_step = stored / 11
    assert per_step <= 20_000, per_step


def test_model_error_ends_the_run_with_what_finished(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([zoom(0, 0, 4000, 3000), {"error": "timeout"}])
    result, trajectory = run(model, nav_slide, tmp_path)
    assert result.status == "model_error" and "timeout" in (result.error or "")
    assert trajectory.steps[0].kind == "zoom"


def test_manifest_records_model_prompts_and_config(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([answer()])
    run(model, nav_slide, tmp_path, max_steps=7)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"] == "scripted" and manifest["config"]["max_steps"] == 7
    assert set(manifest["prompts"]) >= {"giant/system", "giant/question"}
    assert "medagent" in manifest["versions"]


def test_votes_take_the_majority(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([answer("1"), answer("2"), answer("2")])
    navigator = GiantNavigator(model, GiantConfig(), votes=3, runs_dir=tmp_path)
    result = navigator.run(nav_slide, QUESTION, options=OPTIONS, run_dir=tmp_path / "vote")
    assert result.prediction == "yes" and result.votes == {"no": 1, "yes": 2}
    summary = json.loads((tmp_path / "vote" / "votes.json").read_text())
    assert len(summary["runs"]) == 3


@pytest.mark.realdata
def test_label_image_never_reaches_the_model(
    cmu_slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medagent.imaging._openslide import OpenSlideSlide

    def refuse(self: object, name: str) -> None:
        raise AssertionError(f"associated image {name} was read")

    monkeypatch.setattr(OpenSlideSlide, "_associated_image", refuse)
    model = ScriptedModel([zoom(500, 500, 1000, 1000), answer()])
    result, _trajectory = run(model, cmu_slide, tmp_path)
    assert result.status == "answered"
    store = ArtifactStore(tmp_path / "run" / "artifacts")
    sent = {
        p.artifact.id
        for r in model.requests
        for m in r.messages
        for p in m.images
        if p.artifact is not None
    }
    assert sent and all(store.find(i).kind in ("overview", "zoom") for i in sent)


def test_random_region_finds_small_tissue_and_keeps_its_size(tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    from medagent.testing import write_pyramid_tiff

    image = Image.new("RGB", (8000, 6000), (242, 242, 240))
    ImageDraw.Draw(image).ellipse((4000, 3000, 4400, 3300), fill=(214, 140, 190))
    slide = write_pyramid_tiff(tmp_path / "sparse.tif", image, mpp=0.5, levels=4)
    look = {"json": {"reasoning": "another", "action": "look"}}
    model = ScriptedModel([look, look, look, answer()])
    navigator = GiantNavigator(model, GiantConfig(), method="random-region", runs_dir=tmp_path)
    result = navigator.run(slide, QUESTION, options=OPTIONS, run_dir=tmp_path / "run")
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    shown = [s.region for s in trajectory.steps if s.kind == "look"]
    blob = Region(x=4000, y=3000, width=400, height=300)
    assert len(shown) == 3
    assert all(r is not None and min(r.width, r.height) >= 1000 for r in shown)
    assert all(r is not None and r.intersect(blob) is not None for r in shown)
    assert len({r.as_tuple() for r in shown if r is not None}) > 1
