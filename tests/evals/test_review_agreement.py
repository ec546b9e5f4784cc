"""A reviewer's grades against automatic scoring: Cohen's kappa, counts, the review file."""

from __future__ import annotations

from pathlib import Path

import pytest

from medagent.evals import (
    ItemResult,
    ReviewGrade,
    cohen_kappa,
    read_review_file,
    review_agreement,
    write_review_file,
)


def _result(
    item: str, task: str, correct: bool | None, status: str = "ok", reference: str | None = "yes"
) -> ItemResult:
    return ItemResult(
        id=item,
        task=task,
        status=status,
        config_hash="h",
        prediction=None if status != "ok" else ("yes" if correct else "no"),
        reference=reference,
        correct=correct,
        metadata={"metric": "yes_no"},
    )


def test_cohen_kappa_known_values() -> None:
    # The textbook 2x2 table: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no → κ = 0.4.
    pairs = [(True, True)] * 20 + [(True, False)] * 5 + [(False, True)] * 10 + [(False, False)] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert cohen_kappa([(True, True), (False, False)]) == pytest.approx(1.0)
    assert cohen_kappa([(True, False), (False, True)]) == pytest.approx(-1.0)
    assert cohen_kappa([(True, True)] * 4) is None  # one label throughout: undefined
    assert cohen_kappa([]) is None


def test_agreement_counts_per_task_and_overall() -> None:
    results = [
        _result("a", "t1", True),
        _result("b", "t1", False),
        _result("c", "t2", True),
        _result("d", "t2", None, status="failed"),  # failed: automatically wrong
        _result("e", "t2", True),
        _result("f", "t2", None, reference=None),  # nothing to score against
    ]
    grades = {
        "a": ReviewGrade(run="r", item="a", answer="correct", steps={1: "useful"}),
        "b": ReviewGrade(run="r", item="b", answer="correct"),
        "c": ReviewGrade(run="r", item="c", answer="partly", steps={1: "wasteful", 2: "useful"}),
        "d": ReviewGrade(run="r", item="d", answer="wrong"),
        "e": ReviewGrade(run="r", item="e", comment="steps only, no answer grade"),
        "f": ReviewGrade(run="r", item="f", answer="correct"),
        "zz": ReviewGrade(run="r", item="zz", answer="wrong"),  # not in the run
    }
    review = review_agreement(results, grades)
    assert review is not None
    assert (review.graded, review.reviewed, review.not_in_run) == (6, 7, 1)
    assert review.no_automatic == 1
    assert (review.useful_steps, review.wasteful_steps) == (2, 1)
    overall = review.overall
    assert overall.n == 4 and overall.agree == 2  # a and d agree; b and c do not
    assert overall.counts == {
        "correct": {"correct": 1, "partly": 1, "wrong": 0},
        "wrong": {"correct": 1, "partly": 0, "wrong": 1},
    }
    assert overall.percent == pytest.approx(50.0)
    assert overall.kappa == pytest.approx(0.0)
    assert [(t.task, t.n, t.agree) for t in review.tasks] == [("t1", 2, 1), ("t2", 2, 1)]
    assert review_agreement(results, {}) is None


def test_the_review_file_round_trips_and_skips_bad_lines(tmp_path: Path) -> None:
    grades = [
        ReviewGrade(run="r", item="tcga:1/2", answer="partly", steps={2: "useful", 1: "wasteful"}),
        ReviewGrade(run="r", item="b", answer=None, comment='ünïcode, "quotes"\nand lines'),
    ]
    write_review_file(tmp_path, grades)
    with (tmp_path / "review.jsonl").open("a") as handle:
        handle.write('{"run": "r", "item": "c", "answer": "maybe"}\nnot json\n')
    read = read_review_file(tmp_path)
    assert list(read) == ["tcga:1/2", "b"]
    assert read["tcga:1/2"].steps == {1: "wasteful", 2: "useful"}
    assert read["b"] == grades[1]
    assert read_review_file(tmp_path / "missing") == {}


def test_grades_refuse_bad_values() -> None:
    with pytest.raises(ValueError):
        ReviewGrade(run="r", item="a", answer="maybe")
    with pytest.raises(ValueError):
        ReviewGrade(run="r", item="a", steps={0: "useful"})
    with pytest.raises(ValueError):
        ReviewGrade(run="r", item="", answer="wrong")
