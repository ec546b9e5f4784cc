"""The insight agent with the zero_shot tool: offered with an image-text model, and only then.

The stand-in scorer rates redness, so on a slide with a red block the best regions must lie in
that block: the plumbing and the coordinates are what these tests check (accuracy needs real
pathology weights). A tiny random CLIP runs the same path through ``medagent insight``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cli_support import medagent
from medagent.agents.insight import InsightAgent, InsightConfig, InsightReport
from medagent.agents.insight._outputs import ZeroShotAction
from medagent.agents.insight._tools import execute
from medagent.artifacts import ArtifactStore
from medagent.imaging import Region, open_image
from medagent.models import ScriptedModel
from medagent.testing import write_pyramid_tiff
from scorer_support import RednessScorer

WIDTH, HEIGHT, RED = 4000, 3000, 1500
PROMPTS = ["red tissue", "blue tissue"]
TOP_LINE = re.compile(r"^\d+\. \(x=(-?\d+), y=(-?\d+), w=(\d+), h=(\d+)\)", re.MULTILINE)


@pytest.fixture(scope="module")
def red_corner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Purple tissue everywhere, a red (eosin-like) block at the top left (level-0 0..1500)."""
    pixels = np.full((HEIGHT, WIDTH, 3), (150, 90, 190), np.uint8)
    pixels[:RED, :RED] = (210, 70, 110)
    path = tmp_path_factory.mktemp("insight-zero-shot") / "red.tif"
    return write_pyramid_tiff(path, Image.fromarray(pixels), mpp=0.5, levels=3)


def roots() -> dict[str, Any]:
    return {
        "json": {
            "findings": [{"description": "a red area", "image": 1, "region": None}],
            "questions": ["Where is the red tissue?"],
        }
    }


def tool(action: str, **arguments: Any) -> dict[str, Any]:
    return {"json": {"reasoning": f"use {action}", "action": action, **arguments}}


def answer(text: str) -> dict[str, Any]:
    return {
        "json": {
            "reasoning": "the heat map",
            "action": "answer",
            "answer": text,
            "insight": text,
            "confidence": 60,
        }
    }


SUMMARY = {"json": {"summary": "Red top left.", "ranking": [1], "duplicates": []}}


def top_regions(text: str) -> list[Region]:
    """The best regions the tool listed, as the model read them."""
    return [
        Region(x=int(x), y=int(y), width=int(w), height=int(h))
        for x, y, w, h in TOP_LINE.findall(text)
    ]


def test_the_agent_calls_zero_shot_and_keeps_the_heat_map_as_evidence(
    red_corner: Path, tmp_path: Path
) -> None:
    part = {"x": 0, "y": 0, "width": 2400, "height": 2400}
    model = ScriptedModel(
        [
            roots(),
            tool("zero_shot", image=1, prompts=PROMPTS),
            tool("zero_shot", image=1, prompts=PROMPTS, region=part),
            answer("The red tissue is at the top left."),
            SUMMARY,
        ]
    )
    agent = InsightAgent(
        model, InsightConfig(roots=1, depth=1), runs_dir=tmp_path, scorer=RednessScorer()
    )
    report = agent.run(red_corner, "Find the red tissue.", run_dir=tmp_path / "run")

    assert report.status == "completed", report.error
    assert model.remaining == 0
    opening = next(r for r in model.requests if r.schema_name == "InsightAction")
    assert '"action": "zero_shot"' in opening.messages[-1].text  # offered in the prompt
    assert "against 2 to 5 short text prompts" in opening.messages[-1].text
    steps = report.questions[0].steps
    assert [(s.tool, s.ok) for s in steps] == [("zero_shot", True), ("zero_shot", True)]
    assert steps[1].arguments["prompts"] == PROMPTS and steps[1].arguments["region"] == part

    whole, within = report.insights[0].evidence
    store = ArtifactStore(tmp_path / "run" / "artifacts")
    for evidence, area in ((whole, Region(x=0, y=0, width=WIDTH, height=HEIGHT)), (within, None)):
        assert evidence.tool == "zero_shot" and "A hint where to look" in evidence.text
        assert len(evidence.artifacts) == 1 and store.path(evidence.artifacts[0]).exists()
        shares = {m.name: m.value for m in evidence.measurements}
        assert shares["red tissue share"] + shares["blue tissue share"] == pytest.approx(100)
        assert shares["tiles_scored"] > 0
        best = top_regions(evidence.text)
        assert best, evidence.text
        scored = evidence.region
        assert scored is not None
        if area is not None:
            assert scored == area
        else:
            assert scored.x_end <= part["width"] and scored.y_end <= part["height"]
        for region in best:  # every best region is a tile inside the scored area and the slide
            assert scored.x <= region.x and region.x_end <= scored.x_end
            assert scored.y <= region.y and region.y_end <= scored.y_end
            assert region.x_end <= WIDTH and region.y_end <= HEIGHT
        assert best[0].x_end <= RED and best[0].y_end <= RED  # the reddest tile is in the block

    # The overlay is the image shown with the tool's result, in a user message.
    after = [r for r in model.requests if r.schema_name == "InsightAction"][1]
    shown = [p.artifact.id for p in after.messages[-1].images if p.artifact is not None]
    assert shown == [whole.artifacts[0].id]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["inputs"]["zero_shot"] == "redness-stub"


def test_without_a_scorer_zero_shot_is_not_offered(red_corner: Path, tmp_path: Path) -> None:
    model = ScriptedModel(
        [
            roots(),
            tool("zero_shot", image=1, prompts=PROMPTS),  # not in the schema: corrected
            answer("Answered from the overview."),
            SUMMARY,
        ]
    )
    agent = InsightAgent(model, InsightConfig(roots=1, depth=1), runs_dir=tmp_path)
    report = agent.run(red_corner, "Find the red tissue.", run_dir=tmp_path / "run")

    assert report.status == "completed", report.error
    opening = next(r for r in model.requests if r.schema_name == "InsightAction")
    assert "zero_shot" not in opening.messages[-1].text
    call = report.calls("insight_agent")[0]
    assert call.status == "ok" and len(call.errors) == 1  # one refused reply, then the answer
    assert report.questions[0].steps == []

    # Called anyway (as a hand-written program could), the tool says what is missing.
    with open_image(red_corner) as slide:
        run = agent.run_context([slide], "goal", tmp_path / "direct")
        assert "zero_shot" not in run.tools
        action = ZeroShotAction(reasoning="", action="zero_shot", prompts=PROMPTS)
        step, shown = execute(action, run.sources, 1, agent.config)
    assert not step.ok and shown is None
    assert "needs an image-text model" in step.text


def test_zero_shot_is_not_offered_for_images_without_tissue(tmp_path: Path) -> None:
    path = tmp_path / "radiograph.png"
    Image.fromarray(np.full((300, 400), 120, np.uint8), mode="L").save(path)
    agent = InsightAgent(ScriptedModel([]), runs_dir=tmp_path, scorer=RednessScorer())
    with open_image(path) as image:
        assert "zero_shot" not in agent.run_context([image], "goal", tmp_path / "run").tools


def test_the_action_takes_the_tools_limits() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        ZeroShotAction(reasoning="", action="zero_shot", prompts=["tumour"])
    with pytest.raises(ValueError, match="at most 200"):
        ZeroShotAction(reasoning="", action="zero_shot", prompts=["x" * 201, "normal"])
    with pytest.raises(ValueError, match="at most 5"):
        ZeroShotAction(reasoning="", action="zero_shot", prompts=[str(i) for i in range(6)])


def test_cli_help_lists_the_options_and_half_of_them_is_one_line(red_corner: Path) -> None:
    shown = medagent("insight", "--help")
    assert shown.returncode == 0
    assert "--zero-shot" in shown.stdout and "--zero-shot-model" in shown.stdout
    half = medagent(
        "insight",
        str(red_corner),
        "--goal",
        "g",
        "--backend",
        "scripted",
        "--script",
        "none.jsonl",
        "--zero-shot-model",
        "somewhere",
    )
    assert half.returncode == 2, half.stdout + half.stderr
    assert "needs --zero-shot EMBEDDER" in half.stderr
    assert len(half.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.hf
def test_cli_insight_with_a_tiny_clip(red_corner: Path, tmp_path: Path) -> None:
    from medagent.testing import build_tiny_clip

    clip = build_tiny_clip(tmp_path / "clip")
    script = tmp_path / "script.jsonl"
    replies = [
        roots(),
        tool("zero_shot", image=1, prompts=["tumour", "normal tissue"]),
        answer("A hint only: random weights."),
        SUMMARY,
    ]
    script.write_text("\n".join(json.dumps(r) for r in replies) + "\n")
    out = tmp_path / "run"
    done = medagent(
        "insight",
        str(red_corner),
        "--goal",
        "Find the tumour.",
        "--roots",
        "1",
        "--depth",
        "1",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--zero-shot",
        "hf",
        "--zero-shot-model",
        str(clip),
        "--out",
        str(out),
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "zero_shot: Zero-shot scores" in done.stdout  # the step, as it happens
    report = InsightReport.model_validate_json((out / "insights.json").read_text())
    (evidence,) = report.insights[0].evidence
    assert evidence.tool == "zero_shot" and evidence.artifacts
    best = top_regions(evidence.text)
    assert best, evidence.text
    for region in best:
        assert region.x >= 0 and region.x_end <= WIDTH
        assert region.y >= 0 and region.y_end <= HEIGHT
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["zero_shot"]
