"""Is run B better than run A? Paired statistics over the items two runs share.

Two runs over the same questions are compared item by item, not as two independent samples:
the paired bootstrap resamples the shared items once per replicate and scores both runs on
that same resample, so the interval of the difference is as narrow as the data allow. For
accuracy-type metrics the exact McNemar test looks only at the items where the runs disagree.

Items are scored exactly as ``summarize`` scores them (failed items are wrong, references
normalized by the task's metric type), so a run's score over all its items here equals its
score in the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medagent.evals._choices import closed_labels
from medagent.evals._metrics import (
    MetricFn,
    ScoreName,
    _Floats,
    _index_blocks,
    _Kernel,
    _mean_kernel,
    _prepare,
    _scorable,
    _statistics_kernel,
    accuracy,
    balanced_accuracy,
    normalize_yes_no,
)
from medagent.evals._records import EvalItem, ItemResult, MetricType
from medagent.evals._summary import PER_ITEM_SCORES, _choices, _groups, _reference
from medagent.evals._text_metrics import bleu_from_statistics, bleu_statistics, normalized_match

__all__ = [
    "McNemarResult",
    "PairedBootstrap",
    "PairedComparison",
    "PairedTask",
    "compare_runs",
    "correct_counts",
    "mcnemar",
    "paired_bootstrap",
    "paired_bootstrap_mean",
]

_ACCURACY_TYPES: frozenset[MetricType] = frozenset(
    {"accuracy", "balanced_accuracy", "yes_no", "closed"}
)
_LISTED = 10  # ids shown of the items present in one run only


class PairedBootstrap(BaseModel):
    """The difference ``B − A`` of a metric on shared items, with its paired bootstrap.

    ``low`` / ``high``: the 2.5th and 97.5th percentiles of the replicate differences.
    """

    model_config = ConfigDict(frozen=True)

    difference: float = Field(description="B − A on the items as they are")
    std: float = Field(description="sample std (ddof = 1) of the replicate differences")
    low: float
    high: float
    replicates: int


class McNemarResult(BaseModel):
    """Exact McNemar test: ``b`` items only A got right, ``c`` only B; two-sided p."""

    model_config = ConfigDict(frozen=True)

    b: int
    c: int
    p_value: float


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemarResult:
    """The exact (binomial) McNemar test on paired correctness.

    Under "neither run is better", each discordant item is a fair coin: p is the two-sided
    ``scipy.stats.binomtest(min(b, c), b + c, 0.5)``; no discordant item gives p = 1.
    """
    if len(correct_a) != len(correct_b):
        raise ValueError(f"{len(correct_a)} and {len(correct_b)} items: they must pair up")
    b = sum(bool(x) and not bool(y) for x, y in zip(correct_a, correct_b, strict=True))
    c = sum(bool(y) and not bool(x) for x, y in zip(correct_a, correct_b, strict=True))
    if b + c == 0:
        return McNemarResult(b=0, c=0, p_value=1.0)
    from scipy.stats import binomtest  # scipy comes with scikit-image, a core dependency

    return McNemarResult(b=b, c=c, p_value=float(binomtest(min(b, c), b + c, 0.5).pvalue))


def _paired(kernel_a: _Kernel, kernel_b: _Kernel, n: int, replicates: int, seed: int) -> _Floats:
    # One resample of item indices per replicate, scored for both runs: that is the pairing.
    blocks = [kernel_b(idx) - kernel_a(idx) for idx in _index_blocks(n, replicates, seed)]
    return np.concatenate(blocks)


def _summarize(observed: float, differences: _Floats) -> PairedBootstrap:
    low, high = np.percentile(differences, [2.5, 97.5])
    return PairedBootstrap(
        difference=observed,
        std=float(differences.std(ddof=1)) if differences.size > 1 else 0.0,
        low=float(low),
        high=float(high),
        replicates=int(differences.size),
    )


def _kernel(metric_fn: MetricFn, refs: list[str], preds: list[str | None]) -> _Kernel:
    prepared = _prepare(metric_fn, refs, preds)
    if prepared is None:
        raise ValueError("paired_bootstrap takes this module's metrics (accuracy, ...) only")
    return prepared[1]


def paired_bootstrap(
    metric_fn: MetricFn,
    references: Sequence[str | None],
    predictions_a: Sequence[str | None],
    predictions_b: Sequence[str | None],
    replicates: int = 1000,
    seed: int = 0,
) -> PairedBootstrap:
    """Paired bootstrap of ``metric(B) − metric(A)`` over the same items.

    Replicate r scores both runs on the r-th resample ``rng.integers(0, n, size=n)`` of
    ``rng = numpy.random.default_rng(seed)`` (the resamples ``bootstrap`` draws), so the
    metric itself — balanced accuracy included — is recomputed on each resample. Items with a
    ``None`` reference are left out first.
    """
    refs, preds_a = _scorable(references, predictions_a)
    _, preds_b = _scorable(references, predictions_b)
    return _paired_labels(metric_fn, refs, preds_a, refs, preds_b, replicates, seed)


def _paired_labels(
    metric_fn: MetricFn,
    refs_a: list[str],
    preds_a: list[str | None],
    refs_b: list[str],
    preds_b: list[str | None],
    replicates: int,
    seed: int,
) -> PairedBootstrap:
    kernel_a, kernel_b = _kernel(metric_fn, refs_a, preds_a), _kernel(metric_fn, refs_b, preds_b)
    observed = metric_fn(refs_b, preds_b) - metric_fn(refs_a, preds_a)
    return _summarize(observed, _paired(kernel_a, kernel_b, len(refs_a), replicates, seed))


def paired_bootstrap_mean(
    values_a: Sequence[float],
    values_b: Sequence[float],
    replicates: int = 1000,
    seed: int = 0,
) -> PairedBootstrap:
    """Paired bootstrap of ``mean(B) − mean(A)`` over per-item scores (token F1, judge)."""
    if len(values_a) != len(values_b) or not values_a:
        raise ValueError(f"{len(values_a)} and {len(values_b)} values: they must pair up")
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    observed = float(b.mean() - a.mean())
    return _summarize(observed, _paired(_mean_kernel(a), _mean_kernel(b), len(a), replicates, seed))


# -- two runs ------------------------------------------------------------------------------------
@dataclass
class _Scored:
    """One task row of one run, item by item, scored as ``summarize`` scores it."""

    metric: MetricType
    present: set[str] = field(default_factory=set)
    labels: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    correct: dict[str, bool] = field(default_factory=dict)
    statistics: dict[str, list[int]] = field(default_factory=dict)  # corpus-level metrics


def _score_rows(
    results: Sequence[ItemResult], items: Mapping[str, EvalItem] | None
) -> dict[str, _Scored]:
    latest = {(r.task, r.id): r for r in results}
    rows: dict[str, _Scored] = {}
    for name, (metric, group) in _groups(list(latest.values()), items).items():
        row = rows[name] = _Scored(metric)
        for r in group.results:
            row.present.add(r.id)
            # Failed and timed-out items are wrong answers, as in the report.
            pred = r.prediction if r.status == "ok" else None
            ref = _reference(r, items)
            if metric == "insight":
                row.values[r.id] = (r.score or 0.0) if r.status == "ok" else 0.0
                continue
            if ref is None:
                continue
            if metric in PER_ITEM_SCORES:
                row.values[r.id] = PER_ITEM_SCORES[metric][1](ref, pred)
                row.correct[r.id] = normalized_match(ref, pred)
                continue
            if metric == "open_bleu":
                row.statistics[r.id] = bleu_statistics(ref, pred)
                row.correct[r.id] = normalized_match(ref, pred)
                continue
            label: tuple[str | None, str | None]
            if metric == "closed":
                label = closed_labels(ref, pred, _choices(r, items))
            elif metric == "yes_no":
                label = normalize_yes_no(ref), normalize_yes_no(pred)
            else:
                label = ref, pred
            if label[0] is not None:
                row.labels[r.id] = (label[0], label[1])
                row.correct[r.id] = label[0] == label[1]
    return rows


def correct_counts(
    results: Sequence[ItemResult], items: Mapping[str, EvalItem] | None = None
) -> dict[str, int | None]:
    """Correct answers per task row (as ``summarize`` names rows); ``None`` where the task's
    metric has no notion of correct (judged insights)."""
    return {
        name: (None if row.metric == "insight" else sum(row.correct.values()))
        for name, row in _score_rows(results, items).items()
    }


class PairedTask(BaseModel):
    """One task, run B against run A on the items both have."""

    model_config = ConfigDict(frozen=True)

    task: str
    metric: MetricType
    score_name: ScoreName
    n_shared: int = Field(description="items both runs have and that can be scored")
    score_a: float | None = Field(description="A's main metric on the shared items")
    score_b: float | None
    bootstrap: PairedBootstrap | None = None
    mcnemar: McNemarResult | None = Field(None, description="accuracy-type metrics only")
    n_only_a: int = 0
    n_only_b: int = 0
    only_a: list[str] = Field(default_factory=list, description=f"the first {_LISTED} ids")
    only_b: list[str] = Field(default_factory=list, description=f"the first {_LISTED} ids")


class PairedComparison(BaseModel):
    """Run B against run A, task by task; tasks only one run has are named, not compared."""

    model_config = ConfigDict(frozen=True)

    a: str
    b: str
    tasks: list[PairedTask]
    tasks_only_a: list[str] = Field(default_factory=list)
    tasks_only_b: list[str] = Field(default_factory=list)
    tasks_other_metric: list[str] = Field(
        default_factory=list, description="scored with different metric types in the two runs"
    )


def _score_name(metric: MetricType) -> ScoreName:
    names: dict[MetricType, ScoreName] = {
        "balanced_accuracy": "balanced_accuracy",
        "open_bleu": "bleu",
        "insight": "judge_score",
    }
    names.update({name: score for name, (score, _) in PER_ITEM_SCORES.items()})
    return names.get(metric, "accuracy")


def _compare_task(name: str, a: _Scored, b: _Scored, replicates: int, seed: int) -> PairedTask:
    only_a, only_b = sorted(a.present - b.present), sorted(b.present - a.present)
    per_item = a.metric == "insight" or a.metric in PER_ITEM_SCORES
    keyed_a = a.values if per_item else a.statistics if a.metric == "open_bleu" else a.labels
    keyed_b = b.values if per_item else b.statistics if b.metric == "open_bleu" else b.labels
    shared = sorted(set(keyed_a) & set(keyed_b))
    score_a = score_b = None
    paired: PairedBootstrap | None = None
    if shared and a.metric == "open_bleu":
        stats_a = np.array([a.statistics[i] for i in shared], dtype=np.float64)
        stats_b = np.array([b.statistics[i] for i in shared], dtype=np.float64)
        score_a = bleu_from_statistics(stats_a.sum(axis=0))
        score_b = bleu_from_statistics(stats_b.sum(axis=0))
        if replicates:
            kernel_a = _statistics_kernel(stats_a, bleu_from_statistics)
            kernel_b = _statistics_kernel(stats_b, bleu_from_statistics)
            differences = _paired(kernel_a, kernel_b, len(shared), replicates, seed)
            paired = _summarize(score_b - score_a, differences)
    elif shared and per_item:
        values_a, values_b = [a.values[i] for i in shared], [b.values[i] for i in shared]
        score_a, score_b = float(np.mean(values_a)), float(np.mean(values_b))
        if replicates:
            paired = paired_bootstrap_mean(values_a, values_b, replicates, seed)
    elif shared:
        metric_fn = balanced_accuracy if a.metric == "balanced_accuracy" else accuracy
        refs_a, preds_a = [a.labels[i][0] for i in shared], [a.labels[i][1] for i in shared]
        refs_b, preds_b = [b.labels[i][0] for i in shared], [b.labels[i][1] for i in shared]
        score_a, score_b = metric_fn(refs_a, preds_a), metric_fn(refs_b, preds_b)
        if replicates:
            paired = _paired_labels(metric_fn, refs_a, preds_a, refs_b, preds_b, replicates, seed)
    test = None
    if shared and a.metric in _ACCURACY_TYPES:
        test = mcnemar([a.correct[i] for i in shared], [b.correct[i] for i in shared])
    return PairedTask(
        task=name,
        metric=a.metric,
        score_name=_score_name(a.metric),
        n_shared=len(shared),
        score_a=score_a,
        score_b=score_b,
        bootstrap=paired,
        mcnemar=test,
        n_only_a=len(only_a),
        n_only_b=len(only_b),
        only_a=only_a[:_LISTED],
        only_b=only_b[:_LISTED],
    )


def compare_runs(
    a: tuple[str, Sequence[ItemResult], Mapping[str, EvalItem] | None],
    b: tuple[str, Sequence[ItemResult], Mapping[str, EvalItem] | None],
    replicates: int = 1000,
    seed: int = 0,
) -> PairedComparison:
    """Run ``b`` against run ``a`` — each ``(name, results, items)`` — on their shared ids.

    Per task row: both runs' main metric on the shared items, the paired bootstrap of
    B − A (``replicates`` resamples from ``seed``; 0 skips it), the exact McNemar test for
    accuracy-type metrics, and the items only one run has (a count and the first ids).
    """
    rows_a, rows_b = _score_rows(a[1], a[2]), _score_rows(b[1], b[2])
    both = sorted(set(rows_a) & set(rows_b))
    # Rows scored differently (runs of two medagent versions) cannot be paired item by item.
    comparable = [name for name in both if rows_a[name].metric == rows_b[name].metric]
    return PairedComparison(
        a=a[0],
        b=b[0],
        tasks=[
            _compare_task(name, rows_a[name], rows_b[name], replicates, seed) for name in comparable
        ],
        tasks_only_a=sorted(set(rows_a) - set(rows_b)),
        tasks_only_b=sorted(set(rows_b) - set(rows_a)),
        tasks_other_metric=[name for name in both if name not in comparable],
    )
