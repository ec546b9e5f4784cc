"""Metrics: hand-computed values, agreement with scikit-learn, bootstrap, summaries, the judge."""

from __future__ import annotations

import math
import sys
import time
import warnings
from typing import Any

import numpy as np
import pytest
import sklearn.metrics as sklearn_metrics

from medagent.errors import DependencyMissingError
from medagent.evals._judge import JUDGE_MAX_REASON, JudgeVerdict, judge, matched
from medagent.evals._metrics import (
    NO_ANSWER,
    BootstrapResult,
    accuracy,
    balanced_accuracy,
    bootstrap,
    bootstrap_mean,
    confusion_matrix,
    macro_f1,
    normalize_yes_no,
    yes_no_accuracy,
)
from medagent.evals._records import EvalItem, ItemResult, MetricType
from medagent.evals._summary import score_item, summarize
from medagent.evals._text_metrics import (
    _rouge_scorer,
    bleu,
    corpus_bleu,
    exact_match,
    normalize_text,
    normalized_match,
    rouge_l,
    token_f1,
)
from medagent.models import ScriptedModel

SENTINEL = "__none__"  # how None predictions are shown to scikit-learn


def random_labels(seed: int, n: int = 200) -> tuple[list[str], list[str | None]]:
    """References over 5 classes; predictions over 7 (2 never true) with ~10% None."""
    rng = np.random.default_rng(seed)
    refs = [f"c{x}" for x in rng.integers(0, 5, n)]
    preds: list[str | None] = [f"c{x}" for x in rng.integers(0, 7, n)]
    for i in np.flatnonzero(rng.random(n) < 0.1):
        preds[i] = None
    return refs, preds


def with_sentinel(preds: list[str | None]) -> list[str]:
    return [SENTINEL if p is None else p for p in preds]


# -- classification ------------------------------------------------------------------------------
def test_accuracy_counts_none_predictions_wrong_and_skips_none_references() -> None:
    refs = ["a", "b", "c", None, "a"]
    preds = ["a", "x", None, "a", "a"]
    assert accuracy(refs, preds) == pytest.approx(2 / 4)


def test_metrics_reject_mismatched_lengths_and_nothing_to_score() -> None:
    with pytest.raises(ValueError, match="pair up"):
        accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="nothing to score"):
        balanced_accuracy([None, None], ["a", "b"])


def test_balanced_accuracy_by_hand() -> None:
    # class a: 2 of 3 right; class b: 1 of 1; "c" is never a reference and adds no class.
    refs = ["a", "a", "a", "b"]
    assert balanced_accuracy(refs, ["a", "a", "b", "b"]) == pytest.approx((2 / 3 + 1) / 2)
    assert balanced_accuracy(refs, ["a", "c", None, "b"]) == pytest.approx((1 / 3 + 1) / 2)
    # imbalanced: always answering the majority class is 50%, not 75%
    assert balanced_accuracy(refs, ["a"] * 4) == pytest.approx(0.5)
    assert accuracy(refs, ["a"] * 4) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", range(6))
def test_balanced_accuracy_equals_sklearn(seed: int) -> None:
    refs, preds = random_labels(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        expected = sklearn_metrics.balanced_accuracy_score(refs, with_sentinel(preds))
    assert balanced_accuracy(refs, preds) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_by_hand() -> None:
    # a: tp 1, 2 refs, 1 pred -> 2/3; b: tp 1, 1 ref, 2 preds -> 2/3; c only predicted -> 0.
    # The None prediction adds no class; it only misses its "a".
    refs = ["a", "a", "b", "b"]
    preds = ["a", None, "b", "c"]
    f1_a = 2 * 1 / (2 + 1)
    f1_b = 2 * 1 / (2 + 1)
    assert macro_f1(refs, preds) == pytest.approx((f1_a + f1_b + 0.0) / 3)


@pytest.mark.parametrize("seed", range(6))
def test_macro_f1_equals_sklearn(seed: int) -> None:
    refs, preds = random_labels(seed)
    answered = [p for p in preds if p is not None]
    labels = sorted(set(refs) | set(answered))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = sklearn_metrics.f1_score(
            refs, with_sentinel(preds), labels=labels, average="macro", zero_division=0
        )
        # without None predictions the default labels of scikit-learn are ours too
        full = [p if p is not None else r for r, p in zip(refs, preds, strict=True)]
        expected_full = sklearn_metrics.f1_score(refs, full, average="macro")
    assert macro_f1(refs, preds) == pytest.approx(expected, abs=1e-12)
    assert macro_f1(refs, full) == pytest.approx(expected_full, abs=1e-12)


def test_confusion_matrix_by_hand() -> None:
    labels, matrix = confusion_matrix(["2", "10", "2", None, "1"], ["2", "2", None, "1", "3"])
    assert labels == ["1", "2", "3", "10", NO_ANSWER]  # numeric order, then no-answer
    assert matrix == [
        [0, 0, 1, 0, 0],  # 1 -> 3
        [0, 1, 0, 0, 1],  # 2 -> 2, 2 -> none
        [0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0],  # 10 -> 2
        [0, 0, 0, 0, 0],
    ]
    labels, matrix = confusion_matrix(["a", "b"], ["b", "b"], labels=["b", "a"])
    assert (labels, matrix) == (["b", "a"], [[1, 0], [1, 0]])
    with pytest.raises(ValueError, match="unique"):
        confusion_matrix(["a"], ["a"], labels=["a", "a"])


@pytest.mark.parametrize("seed", range(4))
def test_confusion_matrix_equals_sklearn(seed: int) -> None:
    refs, preds = random_labels(seed)
    labels, matrix = confusion_matrix(refs, preds)
    assert labels[-1] == NO_ANSWER
    sk_labels = [SENTINEL if label == NO_ANSWER else label for label in labels]
    expected = sklearn_metrics.confusion_matrix(refs, with_sentinel(preds), labels=sk_labels)
    assert matrix == expected.tolist()
    assert sum(map(sum, matrix)) == len(refs)
    # explicit labels leave out pairs outside them, as scikit-learn does
    subset = ["c0", "c1", "c6"]
    _, partial = confusion_matrix(refs, preds, labels=subset)
    expected_partial = sklearn_metrics.confusion_matrix(refs, with_sentinel(preds), labels=subset)
    assert partial == expected_partial.tolist()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("Yes, it is.", "yes"),
        ("  **YES** ", "yes"),
        ("No", "no"),
        ("no - benign", "no"),
        ("No, there is no tumor.", "no"),
        ("Not sure", None),
        ("Probably yes", None),
        ("yes/no", None),
        ("nope", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_yes_no(text: str | None, expected: str | None) -> None:
    assert normalize_yes_no(text) == expected


def test_yes_no_accuracy_normalizes_both_sides() -> None:
    refs = ["yes", "No", "yes", "maybe", "no"]
    preds = ["Yes, clearly.", "no.", "It is", "yes", None]
    # "maybe" is no yes/no reference and drops out; "It is" and None are wrong.
    assert yes_no_accuracy(refs, preds) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="yes or a no"):
        yes_no_accuracy(["maybe"], ["yes"])


# -- bootstrap -----------------------------------------------------------------------------------
def test_bootstrap_is_seeded_and_deterministic() -> None:
    refs, preds = random_labels(0, n=300)
    first = bootstrap(balanced_accuracy, refs, preds, replicates=200, seed=7)
    again = bootstrap(balanced_accuracy, refs, preds, replicates=200, seed=7)
    other = bootstrap(balanced_accuracy, refs, preds, replicates=200, seed=8)
    assert first == again
    assert first.mean != other.mean and first.std != other.std
    assert first.replicates == 200
    assert first.low <= first.mean <= first.high


def test_bootstrap_resamples_items_with_replacement() -> None:
    # Reproduce the replicates by hand: one row of item indices per replicate.
    refs = ["a", "b", "a", "a", "b", "c", "c", "a"]
    preds = ["a", "a", "a", "b", "b", "c", "a", None]
    n, replicates = len(refs), 50
    rows = np.random.default_rng(3).integers(0, n, size=(replicates, n), dtype=np.int64)
    hand = [accuracy([refs[i] for i in row], [preds[i] for i in row]) for row in rows]
    result = bootstrap(accuracy, refs, preds, replicates=replicates, seed=3)
    assert result.mean == pytest.approx(np.mean(hand))
    assert result.std == pytest.approx(np.std(hand, ddof=1))
    assert result.low == pytest.approx(np.percentile(hand, 2.5))


@pytest.mark.parametrize("metric", [accuracy, balanced_accuracy, macro_f1, yes_no_accuracy])
def test_vectorised_bootstrap_equals_calling_the_metric_per_replicate(metric: Any) -> None:
    if metric is yes_no_accuracy:
        rng = np.random.default_rng(5)
        refs = [["yes", "no"][x] for x in rng.integers(0, 2, 150)]
        preds: list[str | None] = [
            ["Yes.", "no", "unsure", None][x] for x in rng.integers(0, 4, 150)
        ]
    else:
        refs, preds = random_labels(5, n=150)
    fast = bootstrap(metric, refs, preds, replicates=100, seed=11)
    slow = bootstrap(lambda r, p: metric(r, p), refs, preds, replicates=100, seed=11)
    assert fast.mean == pytest.approx(slow.mean, abs=1e-12)
    assert fast.std == pytest.approx(slow.std, abs=1e-12)
    assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high), abs=1e-12)


def test_bootstrap_std_matches_the_binomial_standard_error() -> None:
    n = 1000
    refs = ["a"] * n
    preds = ["a"] * 700 + ["b"] * 300
    result = bootstrap(accuracy, refs, preds, replicates=1000, seed=0)
    assert result.mean == pytest.approx(0.7, abs=0.005)
    assert result.std == pytest.approx(math.sqrt(0.7 * 0.3 / n), rel=0.15)
    perfect = bootstrap(accuracy, ["x", "y"], ["x", "y"], replicates=20)
    assert (perfect.mean, perfect.std, perfect.low, perfect.high) == (1.0, 0.0, 1.0, 1.0)


def test_bootstrap_of_1000_items_1000_times_is_fast() -> None:
    refs, preds = random_labels(1, n=1000)
    for metric in (accuracy, balanced_accuracy):
        started = time.perf_counter()
        bootstrap(metric, refs, preds, replicates=1000, seed=0)
        assert time.perf_counter() - started < 1.0


def test_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        bootstrap(accuracy, ["a"], ["a"], replicates=0)
    with pytest.raises(ValueError, match="nothing to score"):
        bootstrap_mean([])


def test_bootstrap_mean_of_per_item_scores() -> None:
    values = [0.0, 0.5, 1.0, 1.0]
    result = bootstrap_mean(values, replicates=500, seed=2)
    assert result.mean == pytest.approx(0.625, abs=0.03)
    assert bootstrap_mean(values, replicates=500, seed=2) == result
    assert BootstrapResult.from_values([0.5]).std == 0.0


# -- open answers --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Cat  sat.", "cat sat"),
        ("An adenocarcinoma, grade 2!", "adenocarcinoma grade 2"),
        ("non-small-cell", "nonsmallcell"),
        ("“Quoted” — text", "quoted text"),
        ("theatre", "theatre"),  # articles only as whole words
        ("", ""),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_matches() -> None:
    assert exact_match("Adenocarcinoma", " Adenocarcinoma\n")
    assert not exact_match("Adenocarcinoma", "adenocarcinoma")
    assert normalized_match("Adenocarcinoma", "an adenocarcinoma.")
    assert not normalized_match("adenocarcinoma", "squamous")
    assert not exact_match("a", None) and not normalized_match("a", None)


def test_token_f1_by_hand() -> None:
    # gold: cat sat; predicted: cat sat down -> precision 2/3, recall 1
    assert token_f1("The cat sat", "cat sat down") == pytest.approx(0.8)
    # multiset overlap: x once (not twice) and y once -> 2 of 3 on each side
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("the", "a") == 1.0  # both empty after normalization
    assert token_f1("cat", "") == 0.0
    assert token_f1("cat", None) == 0.0


def test_bleu_from_sacrebleu() -> None:
    sentence = "the tumour invades the muscularis propria"
    assert bleu(sentence, sentence) == pytest.approx(1.0)
    assert bleu(sentence, "completely unrelated words here") == pytest.approx(0.0, abs=0.05)
    partial = bleu(sentence, "the tumour invades the submucosa")
    assert 0.2 < partial < 0.9
    assert bleu(sentence, None) == 0.0
    assert corpus_bleu([sentence, "no tumour"], [sentence, "no tumour"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pair up"):
        corpus_bleu([sentence], [])


def test_rouge_l_from_rouge_score() -> None:
    # longest common subsequence: w y z, 3 of 4 tokens on each side -> P = R = 3/4
    assert rouge_l("w x y z", "w y q z") == pytest.approx(0.75)
    assert rouge_l("w x y z", "w x y z") == pytest.approx(1.0)
    assert rouge_l("w x y z", None) == 0.0
    assert rouge_l("tumours invading", "tumour invades", use_stemmer=True) == pytest.approx(1.0)


def test_missing_packages_name_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    with pytest.raises(DependencyMissingError, match="sacrebleu") as info:
        bleu("a b", "a b")
    assert info.value.package == "sacrebleu"
    _rouge_scorer.cache_clear()
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    with pytest.raises(DependencyMissingError, match="rouge-score"):
        rouge_l("a b", "a b")
    _rouge_scorer.cache_clear()


# -- one item ------------------------------------------------------------------------------------
def item(answer: str | None, metric: MetricType, task: str = "t", id: str = "i") -> EvalItem:
    return EvalItem(id=id, task=task, question="q?", answer=answer, metric=metric)


@pytest.mark.parametrize(
    ("metric", "answer", "prediction", "expected"),
    [
        ("accuracy", "2", "2", (True, None)),
        ("accuracy", "2", "3", (False, None)),
        ("accuracy", "2", None, (False, None)),
        ("balanced_accuracy", "Lung", "lung", (False, None)),  # already normalized: exact
        ("yes_no", "yes", "Yes, it is.", (True, None)),
        ("yes_no", "no", "yes", (False, None)),
        ("yes_no", "no", "unclear", (False, None)),
        ("yes_no", "maybe", "yes", (None, None)),
        ("open", "The left lung", "left lung.", (True, 1.0)),
        ("open", "left lung", "right lung", (False, 0.5)),
        ("open", "left lung", None, (False, 0.0)),
        ("insight", "anything", "anything", (None, None)),
        ("accuracy", None, "2", (None, None)),
    ],
)
def test_score_item(
    metric: MetricType, answer: str | None, prediction: str | None, expected: tuple[Any, Any]
) -> None:
    assert score_item(item(answer, metric), prediction) == expected


# -- summaries -----------------------------------------------------------------------------------
def result(
    id: str,
    task: str,
    prediction: str | None,
    reference: str | None,
    status: str = "ok",
    **extra: Any,
) -> ItemResult:
    return ItemResult.model_validate(
        {
            "id": id,
            "task": task,
            "status": status,
            "config_hash": "h",
            "prediction": prediction,
            "reference": reference,
            **extra,
        }
    )


def test_summarize_scores_each_task_and_counts_failures() -> None:
    items = {
        "g1": item("lung", "balanced_accuracy", "gtex", "g1"),
        "g2": item("lung", "balanced_accuracy", "gtex", "g2"),
        "g3": item("skin", "balanced_accuracy", "gtex", "g3"),
        "g4": item("lung", "balanced_accuracy", "gtex", "g4"),
        "g5": item("skin", "balanced_accuracy", "gtex", "g5"),  # never run
        "s1": item("1", "accuracy", "slidebench", "s1"),
        "s2": item("2", "accuracy", "slidebench", "s2"),
        "o1": item("left lung", "open", "vqa", "o1"),
        "o2": item("yes", "open", "vqa", "o2"),
    }
    results = [
        result("g1", "gtex", "lung", None, steps=4, prompt_tokens=100, completion_tokens=10),
        result("g2", "gtex", "lung", "lung", steps=6, latency_s=2.0, cost_usd=0.5),
        result("g3", "gtex", "skin", None, status="failed", error="boom"),  # right but failed
        result("g4", "gtex", None, None, status="timeout", latency_s=4.0),
        result("s1", "slidebench", "1", "1"),
        result("s2", "slidebench", "1", "2", status="ok"),
        result("s2", "slidebench", "2", "2", status="ok"),  # a rerun: the last one counts
        result("o1", "vqa", "the right lung", None),
        result("o2", "vqa", "Yes.", None),
    ]
    summary = summarize(results, items, bootstrap_replicates=200, seed=1)
    assert list(summary.tasks) == ["gtex", "slidebench", "vqa"]

    gtex = summary.tasks["gtex"]
    assert (gtex.n, gtex.n_ok, gtex.n_failed, gtex.n_timeout) == (4, 2, 2, 1)
    assert (gtex.n_scored, gtex.n_missing) == (4, 1)
    assert gtex.score_name == "balanced_accuracy"
    # lung: 2 of 3 right (the timeout is wrong); skin: 0 of 1 (failed counts wrong)
    assert gtex.score == pytest.approx((2 / 3 + 0) / 2)
    assert gtex.confusion is not None
    assert gtex.confusion.labels == ["lung", "skin", NO_ANSWER]
    assert gtex.confusion.matrix == [[2, 0, 1], [0, 0, 1], [0, 0, 0]]
    assert gtex.mean_steps == pytest.approx(10 / 4)
    assert (gtex.prompt_tokens, gtex.completion_tokens) == (100, 10)
    assert gtex.mean_tokens == pytest.approx(110 / 4)
    assert gtex.mean_latency_s == pytest.approx(6.0 / 4)
    assert gtex.cost_usd == pytest.approx(0.5)
    refs = ["lung", "lung", "skin", "lung"]
    preds: list[str | None] = ["lung", "lung", None, None]
    assert gtex.bootstrap == bootstrap(balanced_accuracy, refs, preds, replicates=200, seed=1)

    bench = summary.tasks["slidebench"]
    assert (bench.n, bench.score, bench.score_name) == (2, 1.0, "accuracy")
    assert bench.cost_usd is None

    vqa = summary.tasks["vqa"]
    assert vqa.score_name == "token_f1"
    assert vqa.score == pytest.approx(0.75)
    assert vqa.normalized_match == pytest.approx(0.5)
    assert vqa.confusion is None

    overall = summary.overall
    assert (overall.n, overall.n_tasks, overall.n_failed) == (8, 3, 2)
    assert overall.score == pytest.approx((1 / 3 + 1.0 + 0.75) / 3)  # unweighted over tasks
    assert overall.bootstrap is not None
    assert overall.bootstrap.replicates == 200
    # the replicate-wise mean over tasks has the mean of the tasks' bootstrap means
    task_means = [t.bootstrap.mean for t in summary.tasks.values() if t.bootstrap is not None]
    assert overall.bootstrap.mean == pytest.approx(sum(task_means) / 3)


def test_summarize_open_task_token_f1_by_hand() -> None:
    items = {"o1": item("left lung", "open", "vqa", "o1"), "o2": item("yes", "open", "vqa", "o2")}
    results = [result("o1", "vqa", "the right lung", None), result("o2", "vqa", "Yes.", None)]
    vqa = summarize(results, items, bootstrap_replicates=100, seed=4).tasks["vqa"]
    # "left lung" vs "right lung": precision 1/2, recall 1/2 -> F1 0.5; "yes" vs "Yes." -> 1
    assert vqa.score == pytest.approx(0.75)
    assert vqa.bootstrap == bootstrap_mean([0.5, 1.0], replicates=100, seed=4)


def test_summarize_yes_no_and_insight_tasks() -> None:
    items = {
        "y1": item("yes", "yes_no", "closed", "y1"),
        "y2": item("no", "yes_no", "closed", "y2"),
        "y3": item("no", "yes_no", "closed", "y3"),
        "i1": item(None, "insight", "insights", "i1"),
        "i2": item(None, "insight", "insights", "i2"),
    }
    results = [
        result("y1", "closed", "Yes, it is.", None),
        result("y2", "closed", "No.", None),
        result("y3", "closed", "perhaps", None),
        result("i1", "insights", "text", None, score=0.8),
        result("i2", "insights", "text", None, status="failed", score=0.9),
    ]
    summary = summarize(results, items, bootstrap_replicates=50)
    closed = summary.tasks["closed"]
    assert closed.score == pytest.approx(2 / 3)
    assert closed.confusion is not None
    assert closed.confusion.labels == ["no", "yes", NO_ANSWER]
    assert closed.confusion.matrix == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    insights = summary.tasks["insights"]
    assert insights.score_name == "judge_score"
    assert insights.score == pytest.approx(0.4)  # the failed item's 0.9 counts as 0


def test_summarize_without_items_scores_accuracy_from_result_references() -> None:
    results = [result("1", "t", "a", "a"), result("2", "t", "b", "a"), result("3", "t", "b", None)]
    summary = summarize(results, bootstrap_replicates=0)
    task = summary.tasks["t"]
    assert (task.metric, task.n, task.n_scored, task.score) == ("accuracy", 3, 2, 0.5)
    assert task.bootstrap is None and summary.overall.bootstrap is None


def test_summarize_splits_a_task_with_two_metric_types_into_one_row_each() -> None:
    items = {"1": item("x", "accuracy", "t", "1"), "2": item("x y", "open", "t", "2")}
    results = [result("1", "t", "x", "x"), result("2", "t", "x", None)]
    summary = summarize(results, items, bootstrap_replicates=0)
    assert list(summary.tasks) == ["t (accuracy)", "t (open)"]
    assert summary.tasks["t (accuracy)"].score == 1.0
    assert summary.tasks["t (open)"].score == pytest.approx(2 / 3)  # token F1 of "x" vs "x y"


def test_summary_round_trips_as_json() -> None:
    summary = summarize([result("1", "t", "a", "a")], bootstrap_replicates=10)
    assert type(summary).model_validate_json(summary.model_dump_json()) == summary


# -- judge ---------------------------------------------------------------------------------------
async def test_judge_returns_the_verdict_and_shows_everything_to_the_model() -> None:
    model = ScriptedModel([{"json": {"score": 8, "reason": "Same diagnosis."}}])
    verdict = await judge(
        model,
        "What is the diagnosis?",
        "lung adenocarcinoma",
        "adenocarcinoma of the lung",
        rubric="Grade must match exactly.",
    )
    assert verdict == JudgeVerdict(score=8, reason="Same diagnosis.")
    assert matched(verdict)
    request = model.requests[0]
    assert request.schema_name == "JudgeVerdict"
    prompt = "\n".join(m.text for m in request.messages)
    for part in (
        "What is the diagnosis?",
        "lung adenocarcinoma",
        "adenocarcinoma of the lung",
        "Grade must match exactly.",
        "JudgeVerdict",
    ):
        assert part in prompt
    assert request.params.temperature == 0.0


async def test_judge_corrects_an_out_of_range_score_then_gives_up() -> None:
    model = ScriptedModel(
        [{"json": {"score": 11, "reason": "x"}}, {"json": {"score": 6, "reason": "ok"}}]
    )
    assert await judge(model, "q", "r", "c") == JudgeVerdict(score=6, reason="ok")
    assert "score" in model.requests[1].messages[-1].text

    bad = ScriptedModel([{"json": {"score": 0, "reason": "x"}}] * 3)
    assert await judge(bad, "q", "r", "c") is None
    assert len(bad.requests) == 3
    too_long = ScriptedModel([{"json": {"score": 5, "reason": "x" * (JUDGE_MAX_REASON + 1)}}])
    assert await judge(too_long, "q", "r", "c", max_retries=0) is None


async def test_judge_returns_none_on_model_errors() -> None:
    model = ScriptedModel([{"error": "timeout"}])
    assert await judge(model, "q", "r", "c") is None


@pytest.mark.parametrize(
    ("score", "threshold", "expected"), [(5, 5, False), (6, 5, True), (10, 9, True), (1, 0, True)]
)
def test_matched_means_strictly_above_the_threshold(
    score: int, threshold: int, expected: bool
) -> None:
    assert matched(JudgeVerdict(score=score, reason=""), threshold) is expected
    assert not matched(None)


def test_verdict_scores_are_bounded() -> None:
    with pytest.raises(ValueError):
        JudgeVerdict(score=0, reason="")
    with pytest.raises(ValueError):
        JudgeVerdict(score=11, reason="")
