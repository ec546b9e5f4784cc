"""--budget-usd in evaluations: the cap ends a run cleanly, a rerun with more resumes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_support import medagent
from eval_support import vqa_items
from medagent.errors import ConfigError
from medagent.evals import (
    EvalRunner,
    RunConfig,
    load_results,
    load_run,
    make_method,
    render_markdown,
)
from medagent.models import Prices, ScriptedModel, Spend, SpendCap

YES = {"json": {"answer": "yes"}}  # 2 output tokens (scripted replies count words)
THOUSANDTH = Prices(input_per_million=0.0, output_per_million=1000.0)  # $0.001 a token


def config() -> RunConfig:
    return RunConfig(
        dataset="jsonl", data_path="x", dataset_sha256="0", method="vqa", backend="s", model="s"
    )


def budget_for(full_calls: int) -> float:
    """A budget that admits ``full_calls`` calls of 2 tokens, each checked at its worst case."""
    worst = make_method("vqa").generate_params.max_tokens * 0.001  # type: ignore[attr-defined]
    return worst + full_calls * 0.002 - 0.001


async def run(tmp_path: Path, budget: float, concurrency: int) -> tuple[EvalRunner, object]:
    from medagent.evals import load_dataset

    items = load_dataset("jsonl", vqa_items(tmp_path / "data", 5)).items
    spend = Spend(THOUSANDTH, budget)
    runner = EvalRunner(
        SpendCap(ScriptedModel([YES] * 10), spend),
        make_method("vqa"),
        config(),
        tmp_path / "run",
        concurrency=concurrency,
        spend=spend,
    )
    return runner, await runner.run(items)


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_the_cap_keeps_finished_items_and_a_bigger_budget_resumes(
    tmp_path: Path, concurrency: int
) -> None:
    runner, outcome = await run(tmp_path, budget_for(4), concurrency)
    assert outcome.stopped_by_budget and outcome.unfinished == 1  # type: ignore[attr-defined]
    assert (outcome.ok, outcome.failed) == (4, 0)  # type: ignore[attr-defined]
    results = load_results(tmp_path / "run" / "results.jsonl")
    assert len(results) == 4 and all(r.status == "ok" for r in results.values())
    assert runner.spend is not None and runner.spend.spent_usd <= budget_for(4)
    budget = json.loads((tmp_path / "run" / "manifest.json").read_text())["budget"]
    assert budget["stopped_run"] and budget["unfinished"] == 1
    assert budget["spent_usd"] == pytest.approx(0.008)
    report = render_markdown([load_run(tmp_path / "run")])
    assert "the budget ended the run" in report and "--budget-usd" in report
    assert any("budget ended the run" in note for note in outcome.notes)  # type: ignore[attr-defined]

    _, again = await run(tmp_path, 10.0, concurrency)
    assert (again.ran, again.skipped, again.stopped_by_budget) == (1, 4, False)  # type: ignore[attr-defined]
    assert len(load_results(tmp_path / "run" / "results.jsonl")) == 5
    report = render_markdown([load_run(tmp_path / "run")])
    assert "budget ended" not in report


def test_a_budget_cannot_be_shared_by_ray_workers(tmp_path: Path) -> None:
    spend = Spend(THOUSANDTH, 1.0)
    with pytest.raises(ConfigError, match="--executor local"):
        EvalRunner(
            ScriptedModel([]), make_method("vqa"), config(), tmp_path, spend=spend, executor="ray"
        )


def test_eval_run_stops_on_the_budget_with_exit_3_and_resumes(tmp_path: Path) -> None:
    data = vqa_items(tmp_path / "data", 3)
    script = tmp_path / "replies.jsonl"
    script.write_text("\n".join(json.dumps(YES) for _ in range(6)) + "\n")
    base = [
        "eval", "run", "--dataset", "jsonl", "--data", str(data), "--method", "vqa",
        "--out", str(tmp_path / "run"), "--backend", "scripted", "--script", str(script),
        "--concurrency", "1", "--price-out", "1000",
    ]  # fmt: skip
    first = medagent(*base, "--budget-usd", f"{budget_for(2):.4f}")
    assert first.returncode == 3, first.stderr
    assert "the budget ended the run" in first.stderr and "Traceback" not in first.stderr
    assert len(load_results(tmp_path / "run" / "results.jsonl")) == 2
    second = medagent(*base, "--budget-usd", "5")
    assert second.returncode == 0, second.stderr
    assert len(load_results(tmp_path / "run" / "results.jsonl")) == 3


def test_a_budget_on_an_unpriced_model_is_one_line(tmp_path: Path) -> None:
    data = vqa_items(tmp_path / "data", 1)
    done = medagent(
        "eval", "run", "--dataset", "jsonl", "--data", str(data), "--method", "vqa",
        "--out", str(tmp_path / "run"), "--backend", "openai", "--model", "my-served-model",
        "--base-url", "http://127.0.0.1:9/v1", "--budget-usd", "1",
    )  # fmt: skip
    assert done.returncode == 2 and "--price-in" in done.stderr
    assert "Traceback" not in done.stderr
