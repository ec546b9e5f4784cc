"""Open-question metrics as the benchmark papers define them: token recall and corpus BLEU-4.

Each is checked against a reference computation (sacrebleu's own corpus BLEU, a numpy
bootstrap loop) on random data, through `summarize` and `compare_runs` as a report uses them.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from medagent.evals import EvalItem, ItemResult, summarize
from medagent.evals._paired import compare_runs
from medagent.evals._summary import score_item
from medagent.evals._text_metrics import (
    bleu_from_statistics,
    bleu_statistics,
    corpus_bleu,
    token_recall,
)

WORDS = [
    "the",
    "tumor",
    "is",
    "a",
    "high",
    "grade",
    "carcinoma",
    "with",
    "necrosis",
    ",",
    "and",
    "mitoses",
    ".",
    "yes",
    "no",
    "left",
]


@pytest.mark.parametrize(
    ("reference", "prediction", "expected"),
    [
        ("left lung", "The lesion is in the left lung.", 1.0),
        ("left upper lobe", "left lobe", 2 / 3),
        ("squamous cell carcinoma", "adenocarcinoma", 0.0),
        ("yes yes", "yes", 0.5),  # a multiset: one 'yes' found of two
        ("left lung", None, 0.0),
        ("", "", 1.0),
    ],
)
def test_token_recall(reference: str, prediction: str | None, expected: float) -> None:
    assert token_recall(reference, prediction) == pytest.approx(expected)


def random_corpus(rng: random.Random, n: int) -> tuple[list[str], list[str | None]]:
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(1, 15))) for _ in range(n)]
    preds: list[str | None] = [
        None if rng.random() < 0.1 else " ".join(rng.choices(WORDS, k=rng.randint(0, 15)))
        for _ in range(n)
    ]
    return refs, preds


@pytest.mark.parametrize("seed", range(5))
def test_bleu_from_summed_statistics_is_sacrebleus_corpus_bleu(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(40):
        refs, preds = random_corpus(rng, rng.randint(1, 12))
        totals = np.sum([bleu_statistics(r, p) for r, p in zip(refs, preds, strict=True)], axis=0)
        assert bleu_from_statistics(totals) == pytest.approx(corpus_bleu(refs, preds), abs=1e-12)


def items_and_results(
    metric: str, refs: list[str], preds: list[str | None]
) -> tuple[dict[str, EvalItem], list[ItemResult]]:
    items, results = {}, []
    for i, (ref, pred) in enumerate(zip(refs, preds, strict=True)):
        item = EvalItem(id=f"q{i:02d}", task="open", question="?", answer=ref, metric=metric)  # type: ignore[arg-type]
        items[item.id] = item
        results.append(
            ItemResult(
                id=item.id,
                task="open",
                status="ok" if pred is not None else "failed",
                config_hash="h",
                prediction=pred,
                reference=ref,
                metadata={"metric": metric},
            )
        )
    return items, results


def test_open_recall_task_score_is_the_mean_recall() -> None:
    refs = ["left lung", "left upper lobe", "no"]
    preds: list[str | None] = ["in the left lung", "left lobe", None]
    items, results = items_and_results("open_recall", refs, preds)
    task = summarize(results, items, bootstrap_replicates=200).tasks["open"]
    assert task.score_name == "token_recall"
    assert task.score == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    assert task.normalized_match == 0.0
    assert score_item(items["q00"], "in the left lung") == (False, 1.0)


def test_open_bleu_task_score_and_bootstrap_equal_a_sacrebleu_loop() -> None:
    refs, preds = random_corpus(random.Random(11), 30)
    items, results = items_and_results("open_bleu", refs, preds)
    task = summarize(results, items, bootstrap_replicates=300, seed=4).tasks["open"]
    assert task.score_name == "bleu"
    assert task.score == pytest.approx(corpus_bleu(refs, preds))
    indices = np.random.default_rng(4).integers(0, 30, size=(300, 30))
    loop = [corpus_bleu([refs[i] for i in row], [preds[i] for i in row]) for row in indices]
    assert task.bootstrap is not None
    assert task.bootstrap.mean == pytest.approx(np.mean(loop))
    assert (task.bootstrap.low, task.bootstrap.high) == pytest.approx(
        tuple(np.percentile(loop, [2.5, 97.5]))
    )
    assert score_item(items["q00"], refs[0]) == (True, None)  # a corpus score has no item score


def test_paired_open_bleu_equals_a_sacrebleu_loop() -> None:
    rng = random.Random(2)
    refs, preds_a = random_corpus(rng, 25)
    _, preds_b = random_corpus(rng, 25)
    items, results_a = items_and_results("open_bleu", refs, preds_a)
    _, results_b = items_and_results("open_bleu", refs, preds_b)
    comparison = compare_runs(("A", results_a, items), ("B", results_b, items), 200, seed=9)
    (task,) = comparison.tasks
    assert task.score_name == "bleu" and task.n_shared == 25 and task.mcnemar is None
    assert task.score_a == pytest.approx(corpus_bleu(refs, preds_a))
    assert task.score_b == pytest.approx(corpus_bleu(refs, preds_b))
    indices = np.random.default_rng(9).integers(0, 25, size=(200, 25))
    differences = [
        corpus_bleu([refs[i] for i in row], [preds_b[i] for i in row])
        - corpus_bleu([refs[i] for i in row], [preds_a[i] for i in row])
        for row in indices
    ]
    assert task.bootstrap is not None
    assert (task.bootstrap.low, task.bootstrap.high) == pytest.approx(
        tuple(np.percentile(differences, [2.5, 97.5]))
    )


def test_paired_open_recall_is_a_per_item_mean() -> None:
    refs = ["left lung", "right kidney", "liver"]
    items, results_a = items_and_results("open_recall", refs, ["left", "kidney", "liver"])
    _, results_b = items_and_results("open_recall", refs, ["left lung", "right kidney", None])
    (task,) = compare_runs(("A", results_a, items), ("B", results_b, items), 100).tasks
    assert task.score_name == "token_recall"
    assert task.score_a == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert task.score_b == pytest.approx(2 / 3)
