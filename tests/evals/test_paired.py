"""``eval report A B``: paired bootstrap, exact McNemar, items one run lacks, cost per correct."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli_support import medagent
from eval_support import vqa_items
from medagent.evals import (
    EvalItem,
    ItemResult,
    accuracy,
    balanced_accuracy,
    compare_runs,
    load_run,
    mcnemar,
    paired_bootstrap,
    paired_bootstrap_mean,
    render_html,
    render_markdown,
    summarize,
)


def exact_mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar: twice the smaller binomial tail of n = b + c fair coins."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / (1 << n)
    return min(1.0, 2 * tail)


def loop_balanced(refs: np.ndarray, preds: np.ndarray) -> float:
    recalls = [np.mean(preds[refs == label] == label) for label in np.unique(refs)]
    return float(np.mean(recalls))


def loop_accuracy(refs: np.ndarray, preds: np.ndarray) -> float:
    return float(np.mean(refs == preds))


def random_labels(seed: int, n: int) -> tuple[list[str], list[str | None], list[str | None]]:
    rng = np.random.default_rng(seed)
    refs = [f"c{k}" for k in rng.integers(0, 4, n)]

    def guess(skill: float) -> list[str | None]:
        out: list[str | None] = []
        for ref in refs:
            roll = rng.random()
            out.append(None if roll < 0.1 else ref if roll < skill else f"c{rng.integers(0, 5)}")
        return out

    return refs, guess(0.4), guess(0.6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mcnemar_p_is_the_exact_binomial_sum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    a = [bool(x) for x in rng.random(n) < 0.5]
    b = [bool(x) for x in rng.random(n) < 0.6]
    result = mcnemar(a, b)
    assert result.b == sum(x and not y for x, y in zip(a, b, strict=True))
    assert result.c == sum(y and not x for x, y in zip(a, b, strict=True))
    assert result.p_value == pytest.approx(exact_mcnemar(result.b, result.c), rel=1e-9)


def test_mcnemar_without_discordant_items_is_one() -> None:
    assert mcnemar([True, False], [True, False]).p_value == 1.0


@pytest.mark.parametrize(
    ("metric_fn", "reference"), [(balanced_accuracy, loop_balanced), (None, loop_accuracy)]
)
@pytest.mark.parametrize("seed", [0, 7])
def test_paired_bootstrap_equals_a_numpy_loop(metric_fn: Any, reference: Any, seed: int) -> None:
    metric = metric_fn or accuracy
    refs, preds_a, preds_b = random_labels(seed, 60)
    got = paired_bootstrap(metric, refs, preds_a, preds_b, replicates=1200, seed=seed)

    r = np.array(refs, dtype=object)
    a = np.array(preds_a, dtype=object)
    b = np.array(preds_b, dtype=object)
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(1200):  # one resample per replicate, the same one for both runs
        idx = rng.integers(0, len(refs), size=len(refs))
        differences.append(reference(r[idx], b[idx]) - reference(r[idx], a[idx]))
    assert got.replicates == 1200
    assert got.difference == pytest.approx(reference(r, b) - reference(r, a))
    assert got.low == pytest.approx(np.percentile(differences, 2.5))
    assert got.high == pytest.approx(np.percentile(differences, 97.5))
    assert got.std == pytest.approx(np.std(differences, ddof=1))


def test_paired_bootstrap_of_per_item_scores_equals_a_numpy_loop() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.random(40), rng.random(40)
    got = paired_bootstrap_mean(list(a), list(b), replicates=1000, seed=3)
    loop = np.random.default_rng(3)
    differences = []
    for _ in range(1000):
        idx = loop.integers(0, 40, size=40)
        differences.append(b[idx].mean() - a[idx].mean())
    assert got.difference == pytest.approx(b.mean() - a.mean())
    assert (got.low, got.high) == pytest.approx(tuple(np.percentile(differences, [2.5, 97.5])))


def result(item_id: str, prediction: str | None, **fields: Any) -> ItemResult:
    values: dict[str, Any] = {
        "id": item_id,
        "task": "tcga",
        "status": "ok",
        "config_hash": "h",
        "prediction": prediction,
        "reference": "1",
        "metadata": {"metric": "balanced_accuracy"},
    }
    values.update(fields)
    return ItemResult(**values)


def write_run(folder: Path, results: list[ItemResult], method: str = "giant") -> Path:
    folder.mkdir(parents=True)
    manifest = {"config": {"method": method, "model": "m", "dataset": "multipathqa"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    lines = [r.model_dump_json() for r in results]
    (folder / "results.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_items_in_one_run_only_are_listed_not_dropped(tmp_path: Path) -> None:
    a = [result(f"x{i}", "1") for i in range(4)] + [result("only-a", "1")]
    b = [result(f"x{i}", "2") for i in range(4)] + [result(f"only-b{i}", "1") for i in range(12)]
    b.append(result("g0", "yes", task="gtex"))  # a whole task only B has
    comparison = compare_runs(("A", a, None), ("B", b, None), replicates=200)
    (task,) = comparison.tasks
    assert (task.n_shared, task.n_only_a, task.n_only_b) == (4, 1, 12)
    assert task.only_a == ["only-a"] and len(task.only_b) == 10
    assert comparison.tasks_only_b == ["gtex"]

    runs = [write_run(tmp_path / "A", a), write_run(tmp_path / "B", b)]
    report = render_markdown([load_run(run, replicates=200) for run in runs])
    assert "- tcga: 1 item(s) only in A, not compared: only-a" in report
    assert "- tcga: 12 item(s) only in B, not compared: only-b0, only-b1" in report
    assert report.count("…") == 1  # 12 ids, 10 shown
    assert "- gtex: only in B, not compared" in report


def test_paired_scores_are_the_report_scores_and_failed_items_are_wrong() -> None:
    refs, preds_a, preds_b = random_labels(11, 50)
    # Shared items are resampled in the order of their ids: zero-padded, that is this order.
    a = [
        result(f"i{k:02d}", p, reference=r)
        for k, (r, p) in enumerate(zip(refs, preds_a, strict=True))
    ]
    b = [
        result(f"i{k:02d}", p, reference=r)
        for k, (r, p) in enumerate(zip(refs, preds_b, strict=True))
    ]
    b[0] = result("i00", refs[0], reference=refs[0], status="failed")  # right, but failed
    items = {
        r.id: EvalItem(id=r.id, task="tcga", question="", metric="balanced_accuracy") for r in a
    }
    comparison = compare_runs(("A", a, items), ("B", b, items), replicates=300, seed=4)
    (task,) = comparison.tasks
    assert task.score_a == pytest.approx(summarize(a, items, 0).tasks["tcga"].score)
    assert task.score_b == pytest.approx(summarize(b, items, 0).tasks["tcga"].score)
    assert task.score_name == "balanced_accuracy" and task.mcnemar is not None
    expected = paired_bootstrap(
        balanced_accuracy, refs, preds_a, [None, *preds_b[1:]], replicates=300, seed=4
    )
    assert task.bootstrap == expected


def test_cost_and_time_per_correct_are_totals_over_correct(tmp_path: Path) -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 50, "latency_s": 2.0, "cost_usd": 0.01}
    a = [result(f"x{i}", "1" if i < 2 else "2", **usage) for i in range(4)]
    b = [result(f"x{i}", "2", prompt_tokens=10, latency_s=1.0) for i in range(4)]  # none right
    runs = [write_run(tmp_path / "A", a), write_run(tmp_path / "B", b, method="thumbnail")]
    report = render_markdown([load_run(run, replicates=100) for run in runs])
    # A: 600 tokens, $0.04, 8 s over 2 correct; B: nothing correct, no prices recorded
    rows = {line.split(" | ")[0]: line for line in report.splitlines() if "| tcga |" in line}
    assert rows["| A"].endswith("| 2/4 | 300 | $0.0200 | 4.0 |")
    assert rows["| B"].endswith("| 0.0 ± 0.0 | 0/4 | — | — | — |")
    assert "| tcga | balanced_accuracy | 4 | 50.0 | 0.0 | −50.0 |" in report


def test_eval_report_a_b_end_to_end(tmp_path: Path) -> None:
    """Two scripted runs of yes/no items: A answers 2 of 5 right, B all 6; B has one more."""
    data = vqa_items(tmp_path / "data", 6)

    def run(name: str, answers: list[str], *extra: str) -> Path:
        script = tmp_path / f"{name}.jsonl"
        script.write_text("".join(json.dumps({"json": {"answer": a}}) + "\n" for a in answers))
        out = tmp_path / name
        done = medagent(
            "eval", "run", "--dataset", "jsonl", "--data", str(data), "--method", "vqa",
            "--backend", "scripted", "--script", str(script), "--concurrency", "1",
            "--out", str(out), *extra,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return out

    base = run("base", ["yes", "yes", "no", "no", "no"], "--limit", "5")
    new = run("new", ["yes"] * 6)
    report = medagent("eval", "report", str(base), str(new), "--out", str(tmp_path / "r.md"))
    assert report.returncode == 0, report.stdout + report.stderr
    # 5 shared items: 40 % against 100 %; 3 discordant, all for B: p = 2 / 2**3
    line = "| demo | accuracy | 5 | 40.0 | 100.0 | +60.0 | [+"
    assert line in report.stdout and "| 0 / 3 | 0.250 |" in report.stdout
    assert "- demo: 1 item(s) only in new, not compared: q5" in report.stdout
    assert report.stdout.count("## Paired: new against base") == 1
    assert (tmp_path / "r.md").read_text().startswith("| task | metric | base | new |")

    page_report = medagent("eval", "report", str(base), str(new), "--out", str(tmp_path / "r.html"))
    assert page_report.returncode == 0, page_report.stderr
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!doctype html>") and "<h2>Paired: new against base" in page
    assert "q5" in page and "0.250" in page


def test_report_help_teaches_the_paired_comparison() -> None:
    shown = medagent("eval", "report", "--help")
    assert shown.returncode == 0
    for phrase in ("paired bootstrap", "McNemar", "published", "per correct", ".md"):
        assert phrase in shown.stdout, phrase


def test_html_report_of_two_runs_is_self_contained(tmp_path: Path) -> None:
    a = [result(f"x{i}", "1") for i in range(3)]
    b = [result(f"x{i}", "2") for i in range(3)]
    runs = [write_run(tmp_path / "A", a), write_run(tmp_path / "B", b)]
    page = render_html([load_run(run, replicates=50) for run in runs])
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "<h2>Paired: B against A" in page and "3 / 0" in page
