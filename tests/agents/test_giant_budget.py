"""GIANT under a spend cap: ``budget_exhausted`` (not a model error), and a rerun resumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli_support import medagent
from medagent.agents.giant import GiantConfig, GiantNavigator
from medagent.models import Prices, ScriptedModel, Spend, SpendCap

DOLLAR_PER_TOKEN = Prices(input_per_million=0.0, output_per_million=1e6)
CONFIG = GiantConfig(max_tokens=100)  # a call's worst case: $100


def zoom(x: int, y: int, w: int, h: int) -> dict[str, Any]:
    return {
        "json": {"reasoning": "closer", "action": "zoom", "x": x, "y": y, "width": w, "height": h}
    }


ANSWER = {"json": {"reasoning": "clear", "action": "answer", "answer": "2"}}


def test_the_cap_stops_giant_and_a_bigger_budget_resumes_the_run(
    nav_slide: Path, tmp_path: Path
) -> None:
    first = ScriptedModel([zoom(2000, 1500, 4000, 3000), zoom(3000, 2000, 1000, 800), ANSWER])
    capped = SpendCap(first, Spend(DOLLAR_PER_TOKEN, budget_usd=105.0))  # one call fits
    navigator = GiantNavigator(capped, CONFIG, runs_dir=tmp_path)
    result = navigator.run(nav_slide, "Tumour?", options=["no", "yes"], run_dir=tmp_path / "r")
    assert result.status == "budget_exhausted" and len(first.requests) == 1
    assert result.error is not None and "--budget-usd" in result.error
    assert result.steps == 1 and result.answer is None

    second = ScriptedModel([zoom(3000, 2000, 1000, 800), ANSWER])
    more = GiantNavigator(SpendCap(second, Spend(DOLLAR_PER_TOKEN, 1000.0)), CONFIG)
    resumed = more.run(nav_slide, "Tumour?", options=["no", "yes"], run_dir=tmp_path / "r")
    assert resumed.status == "answered" and resumed.prediction == "yes"
    assert resumed.steps == 3 and second.remaining == 0  # step 1 was not asked again


def test_the_cap_stops_a_baseline_with_its_own_status(nav_slide: Path, tmp_path: Path) -> None:
    model = SpendCap(ScriptedModel([ANSWER]), Spend(DOLLAR_PER_TOKEN, budget_usd=50.0))
    navigator = GiantNavigator(model, CONFIG, method="thumbnail", runs_dir=tmp_path)
    result = navigator.run(nav_slide, "Tumour?", options=["no", "yes"], run_dir=tmp_path / "t")
    assert result.status == "budget_exhausted" and "--budget-usd" in (result.error or "")


def test_ask_with_a_budget_prints_one_line_and_exits_3(nav_slide: Path, tmp_path: Path) -> None:
    script = tmp_path / "replies.jsonl"
    script.write_text(json.dumps(ANSWER) + "\n")
    done = medagent(
        "ask", str(nav_slide), "Tumour?", "--options", "no;yes", "--backend", "scripted",
        "--script", str(script), "--out", str(tmp_path / "run"),
        "--budget-usd", "0.5", "--price-out", "1000000",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "budget_exhausted" in done.stdout and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "budget" in line]
    assert len(lines) == 1 and "--budget-usd" in lines[0] and str(tmp_path / "run") in lines[0]
