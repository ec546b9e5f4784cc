"""GIANT with a "where to look" hint: before the first turn an image-text model maps where each
``look_for`` prompt fits on the tissue, and the map (text and heat-map image) goes with the
overview. The stand-in scorer rates redness; a tiny real CLIP runs the same path through the
CLI. Accuracy needs real pathology weights; these tests check the plumbing and coordinates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cli_support import medagent
from medagent.agents.giant import GiantConfig, GiantNavigator, Trajectory
from medagent.errors import ConfigError
from medagent.models import ImagePart, ScriptedModel
from medagent.testing import write_pyramid_tiff
from scorer_support import RednessScorer

ANSWER = {"json": {"reasoning": "red area", "action": "answer", "answer": "1"}}


@pytest.fixture(scope="module")
def red_corner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Purple tissue everywhere, a red (eosin-like) block at the top left (level-0 0..1500)."""
    pixels = np.full((3000, 4000, 3), (150, 90, 190), np.uint8)
    pixels[:1500, :1500] = (210, 70, 110)
    path = tmp_path_factory.mktemp("where") / "red.tif"
    return write_pyramid_tiff(path, Image.fromarray(pixels), mpp=0.5, levels=3)


def test_the_hint_goes_with_the_overview_and_points_at_the_red_block(
    red_corner: Path, tmp_path: Path
) -> None:
    model = ScriptedModel([ANSWER])
    events: list[Any] = []
    navigator = GiantNavigator(
        model,
        GiantConfig(look_for=["red tissue", "blue tissue"]),
        runs_dir=tmp_path,
        scorer=RednessScorer(),
        on_event=events.append,
    )
    result = navigator.run(red_corner, "Is there a red area?", options=["yes", "no"])
    assert result.status == "answered"

    first_user = next(m for m in model.requests[0].messages if m.role == "user")
    assert len([p for p in first_user.content if isinstance(p, ImagePart)]) == 2
    assert "A hint where to look, not a diagnosis" in first_user.text
    assert "red tissue" in first_user.text

    meta: dict[str, Any] = {}
    for line in (result.run_dir / "events.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("type") == "meta":
            meta.update(record["meta"])
    hint = meta["where_to_look"]
    for hit in hint["top"]:  # every best tile lies inside the red block, in level-0 pixels
        box = hit["region"]
        assert box["x"] + box["width"] <= 1500 and box["y"] + box["height"] <= 1500
    assert [e.kind for e in events][:2] == ["overview", "where_to_look"]
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    assert trajectory.where_to_look is not None
    assert result.html_path is not None
    page = result.html_path.read_text()
    assert "Where to look" in page and "A hint where to look" in page


def test_without_look_for_nothing_is_scored(red_corner: Path, tmp_path: Path) -> None:
    class Refusing(RednessScorer):
        def embed_images(self, images: Any) -> Any:
            raise AssertionError("scored without look_for")

    model = ScriptedModel([ANSWER])
    navigator = GiantNavigator(model, GiantConfig(), runs_dir=tmp_path, scorer=Refusing())
    assert navigator.run(red_corner, "Red?", options=["yes", "no"]).status == "answered"
    first_user = next(m for m in model.requests[0].messages if m.role == "user")
    assert len(first_user.images) == 1


def test_look_for_without_a_scorer_is_refused_at_once() -> None:
    with pytest.raises(ConfigError, match="look_for needs an image-text model"):
        GiantNavigator(ScriptedModel([]), GiantConfig(look_for=["tumour", "normal"]))


def test_a_failed_map_is_logged_and_the_run_goes_on(red_corner: Path, tmp_path: Path) -> None:
    model = ScriptedModel([ANSWER])
    # One prompt: the tool needs two to share scores between, so the hint fails, readably.
    navigator = GiantNavigator(
        model, GiantConfig(look_for=["red tissue"]), runs_dir=tmp_path, scorer=RednessScorer()
    )
    result = navigator.run(red_corner, "Red?", options=["yes", "no"])
    assert result.status == "answered"
    log = (result.run_dir / "events.jsonl").read_text()
    assert "where_to_look_failed" in log


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--look-for", "tumour"], "--look-for needs --zero-shot"),
        (["--zero-shot", "plip"], "add --look-for PROMPT"),
        (["--look-for", "x" * 201, "--zero-shot", "plip"], "--look-for"),
    ],
)
def test_cli_refuses_half_a_hint_in_one_line(
    red_corner: Path, options: list[str], words: str
) -> None:
    done = medagent(
        "ask", str(red_corner), "Red?", "--backend", "scripted", "--script", "none.jsonl", *options
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.hf
def test_cli_look_for_with_a_tiny_clip(red_corner: Path, tmp_path: Path) -> None:
    from medagent.testing import build_tiny_clip

    clip = build_tiny_clip(tmp_path / "clip")
    script = tmp_path / "answer.jsonl"
    script.write_text(json.dumps(ANSWER) + "\n")
    done = medagent(
        "ask",
        str(red_corner),
        "Is there a red area?",
        "--options",
        "yes;no",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--look-for",
        "tumour",
        "--look-for",
        "normal tissue",
        "--zero-shot",
        "hf",
        "--zero-shot-model",
        str(clip),
        "--out",
        str(tmp_path / "run"),
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "where to look" in done.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["look_for"] == ["tumour", "normal tissue"]
