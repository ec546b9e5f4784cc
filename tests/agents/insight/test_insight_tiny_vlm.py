"""The insight agent through the in-process transformers backend with the tiny real VLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from medagent.agents.insight import InsightAgent, InsightConfig, InsightReport
from medagent.models import TransformersBackend
from medagent.testing import build_tiny_vlm


@pytest.mark.slow
@pytest.mark.hf
def test_tiny_vlm_runs_the_whole_loop_with_valid_outputs(
    insight_slide: Path, tmp_path: Path
) -> None:
    folder = build_tiny_vlm(tmp_path / "tiny-vlm")
    model = TransformersBackend(folder)
    config = InsightConfig(roots=1, depth=2, max_steps=2, max_tokens=1500, long_side=256)
    report = InsightAgent(model, config, runs_dir=tmp_path).run(
        insight_slide, "Characterize the tissue."
    )
    # Constrained decoding: every module's reply parsed at the first attempt.
    assert report.trace and all(c.status == "ok" and len(c.outputs) == 1 for c in report.trace)
    assert report.status == "completed", report.error
    assert len(report.calls("root_finder")) == 1 and len(report.calls("summary")) == 1
    assert 1 <= len(report.calls("insight_agent")) <= 4  # depth 2 x at most 2 turns
    assert len(report.calls("composer")) == 1
    assert report.insights and all(0 <= i.confidence <= 1 for i in report.insights)
    for step in (s for q in report.questions for s in q.steps):
        assert step.text  # every tool call the random model made ran and was reported
    saved = InsightReport.model_validate_json(report.json_path.read_text())
    assert saved.insights == report.insights
    assert report.html_path.read_text().startswith("<!DOCTYPE html>")
