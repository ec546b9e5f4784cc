"""GIANT's baselines (thumbnail, patches, random-region) run through ``GiantNavigator``.

Driven by the scripted backend (a test double) and generated slides; nothing here measures
a model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel

from medagent.agents.giant import (
    GiantConfig,
    GiantEvent,
    GiantNavigator,
    GiantResult,
    Method,
    Trajectory,
)
from medagent.agents.giant._baselines import PATCH_CONCURRENCY
from medagent.artifacts import ArtifactStore, to_jpeg
from medagent.imaging import (
    GuideStyle,
    Region,
    Renderer,
    draw_guides,
    iter_tissue_tiles,
    open_image,
    tissue_mask,
)
from medagent.models import (
    ChatModel,
    GenerateParams,
    Message,
    Reply,
    ScriptedModel,
    ToolSpec,
    UsageTotals,
)
from medagent.testing import write_pyramid_tiff

QUESTION = "Is there tumour on this slide?"
OPTIONS = ["normal", "tumor"]


def final(text: str, why: str = "what I see") -> dict[str, Any]:
    return {"json": {"reasoning": why, "answer": text}}


def look() -> dict[str, Any]:
    return {"json": {"reasoning": "show me more", "action": "look"}}


def run(
    model: ChatModel,
    slide: Path,
    run_dir: Path,
    method: Method,
    *,
    options: list[str] | None = OPTIONS,
    events: list[GiantEvent] | None = None,
    **config: Any,
) -> tuple[GiantResult, Trajectory]:
    navigator = GiantNavigator(
        model,
        GiantConfig(**config),
        method=method,
        runs_dir=run_dir.parent,
        on_event=events.append if events is not None else None,
    )
    result = navigator.run(slide, QUESTION, options=options, run_dir=run_dir)
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    return result, trajectory


def assert_images_only_from_user(model: ScriptedModel) -> None:
    for request in model.requests:
        for message in request.messages:
            assert message.role == "user" or not message.images


def request_image_sizes(model: ScriptedModel) -> list[tuple[int, int]]:
    sizes = []
    for request in model.requests:
        for message in request.messages:
            for part in message.images:
                assert part.artifact is not None
                sizes.append((part.artifact.width, part.artifact.height))
    return sizes


@pytest.fixture(scope="module")
def blank_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Glass only: no tissue anywhere."""
    path = tmp_path_factory.mktemp("baselines") / "blank.tif"
    return write_pyramid_tiff(path, Image.new("RGB", (1600, 1200), (242, 242, 240)), levels=2)


# -- thumbnail ----------------------------------------------------------------------------------


def test_thumbnail_one_plain_image_and_a_normalized_answer(nav_slide: Path, tmp_path: Path) -> None:
    events: list[GiantEvent] = []
    model = ScriptedModel([final("2")])
    result, trajectory = run(model, nav_slide, tmp_path / "run", "thumbnail", events=events)
    assert result.status == "answered" and result.answer == "2" and result.prediction == "tumor"
    assert len(model.requests) == 1 and request_image_sizes(model) == [(1024, 768)]
    (message,) = model.requests[0].messages
    assert message.role == "user" and model.requests[0].schema_name == "FinalAnswer"
    assert "Options:\n1. normal\n2. tumor" in message.text and "number" in message.text
    assert "8000 x 6000" in message.text and QUESTION in message.text
    # The image is the plain render of the whole slide: no guides, no scale bar.
    plain = Renderer(open_image(nav_slide)).overview(1024)
    (step,) = trajectory.steps
    assert step.kind == "thumbnail" and step.artifact is not None
    assert step.artifact.kind == "thumbnail"
    assert step.artifact.id == hashlib.sha256(to_jpeg(plain.image)).hexdigest()[:32]
    guided = draw_guides(plain.image, plain.region, GuideStyle())
    assert hashlib.sha256(to_jpeg(guided)).hexdigest()[:32] != step.artifact.id
    assert step.region == Region(x=0, y=0, width=8000, height=6000)
    assert step.action == {"reasoning": "what I see", "answer": "2"}
    assert step.images_sent == [step.artifact.id] and step.prompt_tokens > 0
    # The log: the question with the image, then the reply; the thumbnail is the overview.
    assert [m.role for m in trajectory.messages] == ["user", "assistant"]
    assert trajectory.overview == step.artifact
    assert [e.kind for e in events] == ["overview", "thinking", "answer", "done"]
    assert "base64" not in result.trajectory_path.read_text()
    assert result.html_path is not None and result.html_path.exists()


def test_thumbnail_correction_then_valid(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([{"text": "It is clearly tumour."}, final("tumor")])
    result, trajectory = run(model, nav_slide, tmp_path / "run", "thumbnail")
    assert result.status == "answered" and result.prediction == "tumor"
    assert len(model.requests) == 2
    retry = model.requests[1].messages
    assert [m.role for m in retry] == ["user", "assistant", "user"]
    assert "could not be used" in retry[2].text and not retry[2].images
    (step,) = trajectory.steps
    assert len(step.outputs) == 2 and len(step.errors) == 1
    assert trajectory.messages[-1].text == json.dumps(
        {"reasoning": "what I see", "answer": "tumor"}
    )


def test_thumbnail_no_answer_after_max_corrections(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([{"text": "hmm"}] * 3)
    result, trajectory = run(model, nav_slide, tmp_path / "run", "thumbnail", max_corrections=2)
    assert result.status == "no_answer" and result.answer is None
    assert len(model.requests) == 3
    assert result.error is not None and "3 attempt(s)" in result.error
    (step,) = trajectory.steps
    assert step.kind == "thumbnail" and step.action is None and len(step.errors) == 3


def test_thumbnail_model_error_is_recorded(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([{"text": "hmm"}, {"error": "timeout"}])
    result, trajectory = run(model, nav_slide, tmp_path / "run", "thumbnail")
    assert result.status == "model_error" and "scripted timeout" in (result.error or "")
    (step,) = trajectory.steps
    assert step.kind == "invalid" and step.outputs == ["hmm"] and step.artifact is not None


# -- patches ------------------------------------------------------------------------------------


def test_patches_are_tissue_tiles_at_full_resolution(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([final("2")] * 30)
    result, trajectory = run(model, nav_slide, tmp_path / "run", "patches")
    assert result.status == "answered" and result.prediction == "tumor"
    assert result.votes == {"tumor": 30}
    assert len(model.requests) == 30 and request_image_sizes(model) == [(224, 224)] * 30
    assert_images_only_from_user(model)
    mask = tissue_mask(open_image(nav_slide))
    store = ArtifactStore(result.run_dir / "artifacts")
    assert [s.step for s in trajectory.steps] == list(range(1, 31))
    for step in trajectory.steps:
        assert step.kind == "patch" and step.level == 0 and step.region is not None
        assert (step.region.width, step.region.height) == (224, 224)
        assert mask.fraction(step.region) >= 0.5
        assert step.artifact is not None and step.artifact.region == step.region
        assert store.get(step.artifact).size == (224, 224)
    assert len({s.region for s in trajectory.steps}) == 30
    text = model.requests[0].messages[0].text
    assert "small field of view" in text and "about 56 µm" in text
    assert "Options:\n1. normal\n2. tumor" in text
    # A map of where the patches came from, for the reader; never sent to the model.
    assert trajectory.overview is not None and trajectory.overview.kind == "overview"
    assert result.html_path is not None and result.html_path.exists()


def test_patch_sampling_follows_the_seed(nav_slide: Path, tmp_path: Path) -> None:
    def regions(seed: int, name: str) -> list[Region | None]:
        model = ScriptedModel([final("1")] * 5)
        _, trajectory = run(model, nav_slide, tmp_path / name, "patches", patches=5, seed=seed)
        return [s.region for s in trajectory.steps]

    first = regions(0, "a")
    assert regions(0, "b") == first
    assert regions(1, "c") != first


def test_patch_votes_tie_goes_to_the_first_seen(nav_slide: Path, tmp_path: Path) -> None:
    replies = [final("1"), final("tumor"), final("perhaps"), final("normal"), final("2")]
    model = ScriptedModel(replies)
    result, trajectory = run(model, nav_slide, tmp_path / "run", "patches", patches=5)
    assert result.status == "answered"
    assert result.votes == {"normal": 2, "tumor": 2}  # "perhaps" matches no option
    # The answer is the first raw answer that voted for the winner.
    assert result.answer == "1" and result.prediction == "normal"
    assert trajectory.steps[2].notes == ["prediction: none matched"]


def test_patches_without_options_vote_on_cleaned_text(nav_slide: Path, tmp_path: Path) -> None:
    replies = [final("Grade 2."), final("grade 3"), final("grade 2")]
    model = ScriptedModel(replies)
    result, _ = run(model, nav_slide, tmp_path / "run", "patches", patches=3, options=None)
    assert result.votes == {"grade 2": 2, "grade 3": 1} and result.prediction == "grade 2"


def test_no_valid_vote_is_no_answer(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([final("maybe"), {"text": "no idea"}])
    result, _ = run(model, nav_slide, tmp_path / "run", "patches", patches=2, max_corrections=0)
    assert result.status == "no_answer" and result.answer is None and result.votes == {}
    assert "1 gave no valid reply, 1 answered but matched no option" in (result.error or "")


def test_fewer_tissue_tiles_than_wanted_uses_all(no_spacing_tiff: Path, tmp_path: Path) -> None:
    slide = open_image(no_spacing_tiff)
    tiles = list(iter_tissue_tiles(slide, tissue_mask(slide), tile_px=224, level=0))
    assert 0 < len(tiles) < 30
    model = ScriptedModel([final("2")] * len(tiles))
    result, trajectory = run(model, no_spacing_tiff, tmp_path / "run", "patches")
    assert result.status == "answered" and len(model.requests) == len(tiles)
    assert {s.region for s in trajectory.steps} == {t.region for t in tiles}
    assert "pixel spacing unknown" in model.requests[0].messages[0].text


def test_slide_without_tissue_says_so(blank_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([])
    result, trajectory = run(model, blank_slide, tmp_path / "run", "patches")
    assert result.status == "no_answer" and not model.requests and not trajectory.steps
    assert result.error is not None and result.error.startswith("no tissue patches")
    assert "1600x1200" in result.error


def test_model_error_midway_keeps_finished_patches_and_resumes(
    nav_slide: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    model = ScriptedModel([final("1"), final("2"), {"error": "server_error"}])
    result, trajectory = run(model, nav_slide, run_dir, "patches", patches=6)
    assert result.status == "model_error" and result.answer is None
    assert result.error is not None and result.error.startswith("model error on patch 3 of 6")
    assert result.votes == {"normal": 1, "tumor": 1}
    assert len(model.requests) == 3  # no new patch is asked after the error
    on_disk = json.loads((run_dir / "trajectory.json").read_text())
    assert [s["kind"] for s in on_disk["steps"]] == ["patch", "patch", "invalid"]
    assert "HTTP 500" in on_disk["steps"][2]["errors"][-1]
    first_regions = [s.region for s in trajectory.steps]
    # Rerunning in the same folder asks only for what is missing.
    again = ScriptedModel([final("2")] * 4)
    result, trajectory = run(again, nav_slide, run_dir, "patches", patches=6)
    assert result.status == "answered" and len(again.requests) == 4
    assert result.votes == {"tumor": 5, "normal": 1}
    assert [s.kind for s in trajectory.steps] == ["patch"] * 6
    assert [s.step for s in trajectory.steps] == list(range(1, 7))
    assert [s.region for s in trajectory.steps][:3] == first_regions
    assert [m.role for m in trajectory.messages] == ["user", "assistant"] * 6


class RegionModel:
    """Answers from the patch's position, after a delay that scrambles the reply order."""

    name = "region-model"

    def __init__(self) -> None:
        self.usage_totals = UsageTotals()
        self.in_flight = 0
        self.most_in_flight = 0

    async def aclose(self) -> None:
        return None

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> Reply:
        (part,) = messages[0].images
        assert part.artifact is not None and part.artifact.region is not None
        region = part.artifact.region
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(((region.x * 7 + region.y) % 13) / 1000)
        self.in_flight -= 1
        text = json.dumps({"reasoning": "position", "answer": f"{region.x},{region.y}"})
        return Reply(text=text)


def test_concurrent_patches_are_recorded_in_patch_order(nav_slide: Path, tmp_path: Path) -> None:
    model = RegionModel()
    result, trajectory = run(model, nav_slide, tmp_path / "run", "patches", options=None)
    assert result.status == "answered"
    assert 1 < model.most_in_flight <= PATCH_CONCURRENCY
    assert [s.step for s in trajectory.steps] == list(range(1, 31))
    for step in trajectory.steps:
        assert step.region is not None and step.action is not None
        assert step.action["answer"] == f"{step.region.x},{step.region.y}"
    # The messages follow the same order as the steps.
    shown = [m.images[0].artifact for m in trajectory.messages if m.role == "user"]
    assert shown == [s.artifact for s in trajectory.steps]


class StallingModel:
    """Answers the first ``answers`` requests at once, then never answers again."""

    name = "stalling-model"

    def __init__(self, answers: int) -> None:
        self.usage_totals = UsageTotals()
        self.answers = answers
        self.calls = 0

    async def aclose(self) -> None:
        return None

    async def generate(self, messages: Sequence[Message], **kwargs: Any) -> Reply:
        self.calls += 1
        if self.calls > self.answers:
            await asyncio.Event().wait()
        return Reply(text=json.dumps({"reasoning": "seen", "answer": "2"}))


def test_patches_time_out_keeping_what_finished(nav_slide: Path, tmp_path: Path) -> None:
    model = StallingModel(answers=3)
    result, trajectory = run(model, nav_slide, tmp_path / "run", "patches", timeout_s=0.5)
    assert result.status == "timeout" and result.answer is None
    assert result.error is not None and "(3 of 30 patches done)" in result.error
    assert result.votes == {"tumor": 3}
    assert [s.step for s in trajectory.steps] == [1, 2, 3]


# -- random-region (implemented in _graph.py) ---------------------------------------------------


def test_random_regions_are_large_and_mostly_tissue(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([look()] * 6 + [final("2")])
    result, trajectory = run(
        model, nav_slide, tmp_path / "run", "random-region", max_steps=7, seed=5
    )
    assert result.status == "answered_at_limit" and result.prediction == "tumor"
    looks = [s for s in trajectory.steps if s.kind == "look"]
    assert len(looks) == 6
    mask = tissue_mask(open_image(nav_slide))
    for step in looks:
        assert step.region is not None
        assert min(step.region.width, step.region.height) >= 1000
        assert mask.fraction(step.region) >= 0.25
    assert len({s.region for s in looks}) > 1
    assert_images_only_from_user(model)
