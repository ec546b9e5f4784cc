"""GIANT's published numbers in the report: marked, matched to tasks, never mixed with runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medagent.evals import (
    PUBLISHED,
    ItemResult,
    benchmark_of,
    load_run,
    published_for,
    render_html,
    render_markdown,
)


def test_the_table_holds_the_papers_numbers() -> None:
    table = {(p.method, p.benchmark): p.score for p in PUBLISHED}
    assert table == {
        ("GIANT (GPT-5)", "TCGA"): 32.3,
        ("GIANT (GPT-5)", "GTEx"): 53.7,
        ("GIANT (GPT-5)", "PANDA"): 23.2,
        ("GIANT (GPT-5)", "SlideBench"): 58.9,
        ("GIANT (GPT-5)", "ExpertVQA"): 57.0,
        ("thumbnail baseline", "TCGA"): 9.2,
        ("thumbnail baseline", "GTEx"): 36.5,
        ("thumbnail baseline", "PANDA"): 12.2,
        ("patch baseline", "TCGA"): 12.8,
        ("patch baseline", "GTEx"): 43.7,
        ("patch baseline", "PANDA"): 21.3,
    }
    assert all("GIANT paper" in p.source for p in PUBLISHED)


@pytest.mark.parametrize(
    ("task", "benchmark"),
    [
        ("tcga", "TCGA"),
        ("TCGA", "TCGA"),
        ("GTEx", "GTEx"),
        ("panda", "PANDA"),
        ("tcga_slidebench", "SlideBench"),
        ("SlideBench", "SlideBench"),
        ("tcga_expert_vqa", "ExpertVQA"),
        ("ExpertVQA", "ExpertVQA"),
        ("CHEST/CLOSED", None),
        ("tcga (accuracy)", None),
    ],
)
def test_tasks_map_to_benchmarks_whatever_their_case(task: str, benchmark: str | None) -> None:
    assert benchmark_of(task) == benchmark


def test_a_number_is_offered_only_for_the_metric_it_is() -> None:
    assert [p.score for p in published_for("TCGA", "balanced_accuracy")] == [32.3, 9.2, 12.8]
    assert published_for("tcga", "accuracy") == []
    assert [p.score for p in published_for("tcga_slidebench", "accuracy")] == [58.9]


def write_run(folder: Path, rows: list[tuple[str, str, str | None]]) -> Path:
    """A run folder of ``(task, id, prediction)`` rows, every reference "1"."""
    folder.mkdir()
    metric = {"tcga": "balanced_accuracy", "tcga_slidebench": "accuracy"}
    manifest = {"config": {"method": "giant", "model": "m", "dataset": "multipathqa"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    results = [
        ItemResult(
            id=item_id,
            task=task,
            status="ok",
            config_hash="h",
            prediction=prediction,
            reference="1",
            metadata={"metric": metric.get(task, "accuracy")},
        ).model_dump_json()
        for task, item_id, prediction in rows
    ]
    (folder / "results.jsonl").write_text("\n".join(results) + "\n")
    return folder


def test_published_rows_are_marked_and_in_no_mean(tmp_path: Path) -> None:
    run = write_run(
        tmp_path / "mine",
        [("tcga", "t1", "1"), ("tcga", "t2", "1"), ("tcga_slidebench", "s1", "2")],
    )
    report = render_markdown([load_run(run, replicates=0)])
    lines = report.splitlines()
    assert "| method | tcga | tcga_slidebench |" in lines
    assert "| mine (giant, m) | 100.0 | 0.0 |" in lines  # measured: nothing published in it
    assert "| GIANT (GPT-5) — published | 32.3 | 58.9 |" in lines
    assert "| thumbnail baseline — published | 9.2 | — |" in lines
    assert "| patch baseline — published | 12.8 | — |" in lines
    assert any(line.startswith("- published rows: GIANT paper") for line in lines)
    # The run's mean of tasks is its own: (100 + 0) / 2, whatever was published.
    assert "| **overall** | mean of tasks | 50.0 |" in lines
    # Published methods are not runs: no cost rows, no paired comparison against them.
    assert "Paired" not in report and "| GIANT (GPT-5) | tcga |" not in report
    assert "GIANT (GPT-5) — published" in render_html([load_run(run, replicates=0)])


def test_tasks_the_paper_has_not_get_no_published_rows(tmp_path: Path) -> None:
    run = write_run(tmp_path / "vqa", [("CHEST/CLOSED", "c1", "1")])
    report = render_markdown([load_run(run, replicates=0)])
    assert "published" not in report
