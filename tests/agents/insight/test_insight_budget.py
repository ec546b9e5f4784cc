"""Insight under a spend cap: the report's status is ``budget_exhausted``, found is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medagent.agents.insight import InsightAgent, InsightConfig
from medagent.models import Prices, ScriptedModel, Spend, SpendCap


def test_the_cap_gives_budget_exhausted_not_model_error(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    script = [replies.roots(1), replies.answer("Insight one."), replies.summary([1])]
    model = SpendCap(
        ScriptedModel(script),
        Spend(Prices(input_per_million=0.0, output_per_million=1e6), budget_usd=5.0),
    )
    agent = InsightAgent(model, InsightConfig(roots=1, depth=1), runs_dir=tmp_path)
    report = agent.run(insight_slide, "Characterize the tissue.", run_dir=tmp_path / "run")
    assert report.status == "budget_exhausted"
    assert report.error is not None and "rerun with a higher --budget-usd" in report.error
