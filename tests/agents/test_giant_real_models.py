"""GIANT through the in-process transformers backend with the tiny real-architecture VLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from medagent.agents.giant import GiantConfig, GiantNavigator, Trajectory
from medagent.models import TransformersBackend
from medagent.testing import build_tiny_vlm


@pytest.mark.slow
@pytest.mark.hf
def test_tiny_vlm_navigates_with_valid_actions(nav_slide: Path, tmp_path: Path) -> None:
    folder = build_tiny_vlm(tmp_path / "tiny-vlm")
    model = TransformersBackend(folder)
    navigator = GiantNavigator(model, GiantConfig(max_steps=3, max_tokens=1200), runs_dir=tmp_path)
    result = navigator.run(nav_slide, "Is there tumour?", options=["no", "yes"])
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    # Constrained decoding: every turn parsed on the first attempt, the run ended with an answer.
    assert result.status in ("answered", "answered_at_limit"), result.error
    assert trajectory.steps and all(not s.errors for s in trajectory.steps)
    assert all(s.kind in ("zoom", "answer", "final") for s in trajectory.steps)
    assert len(trajectory.steps) <= 3
    for step in trajectory.steps:
        if step.kind == "zoom":
            assert step.region is not None and step.artifact is not None
