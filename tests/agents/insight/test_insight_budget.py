"""Insight under a spend cap: the report's status is ``budget_exhausted``, found is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli_support import medagent
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


def test_insight_cli_with_a_budget_exits_3(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    script = tmp_path / "replies.jsonl"
    script.write_text(json.dumps(replies.roots(1)) + "\n")
    done = medagent(
        "insight", str(insight_slide), "--goal", "Characterize.", "--roots", "1", "--depth", "1",
        "--backend", "scripted", "--script", str(script), "--out", str(tmp_path / "run"),
        "--budget-usd", "0.5", "--price-out", "1000000",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "the budget ended the run" in done.stderr and "Traceback" not in done.stderr
