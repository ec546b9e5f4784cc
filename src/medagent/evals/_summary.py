"""Scoring one item and summarizing a run: per-task scores with bootstrap error bars.

Failed and timed-out items count as wrong answers in the scores (a run cannot look better by
failing), and are counted separately too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medagent.evals._choices import closed_choices, closed_labels
from medagent.evals._metrics import (
    BootstrapResult,
    MetricFn,
    ScoreName,
    _bootstrap_mean_values,
    _bootstrap_values,
    _Floats,
    _pairs,
    _replicate,
    _statistics_kernel,
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    normalize_yes_no,
    yes_no_accuracy,
)
from medagent.evals._records import EvalItem, ItemResult, MetricType
from medagent.evals._text_metrics import (
    bleu_from_statistics,
    bleu_statistics,
    normalized_match,
    token_f1,
    token_recall,
)

__all__ = [
    "ConfusionMatrix",
    "OverallSummary",
    "RunStats",
    "RunSummary",
    "ScorableItem",
    "TaskSummary",
    "score_item",
    "summarize",
]


#: Free-text metric types scored item by item: the task's score is the mean of this function.
PER_ITEM_SCORES: dict[MetricType, tuple[ScoreName, Callable[[str, str | None], float]]] = {
    "open": ("token_f1", token_f1),
    "open_recall": ("token_recall", token_recall),
}


# -- one item ------------------------------------------------------------------------------------
class ScorableItem(Protocol):
    """What ``score_item`` reads from an item (``EvalItem`` has all of it)."""

    @property
    def answer(self) -> str | None: ...

    @property
    def metric(self) -> MetricType: ...

    @property
    def question(self) -> str: ...

    @property
    def metadata(self) -> dict[str, Any]: ...


def score_item(item: ScorableItem, prediction: str | None) -> tuple[bool | None, float | None]:
    """``(correct, score)`` for one prediction, by the item's metric type.

    - ``accuracy`` / ``balanced_accuracy``: correct = prediction == reference (exact strings;
      both are already normalized), no score.
    - ``yes_no``: correct when both normalize to the same yes/no (``normalize_yes_no``).
    - ``closed``: correct when both name the same yes/no or the same alternative of the
      question ("A or B?"), else on a normalized match (``closed_labels``); no score.
    - ``open``: correct = normalized match, score = SQuAD token F1.
    - ``open_recall``: correct = normalized match, score = token recall (LLaVA-Med).
    - ``open_bleu``: correct = normalized match, no score (BLEU is a corpus score: the task's
      summary computes it over all its items).
    - ``insight``: no correct, score = the insight F1 the insight method put in its prediction
      (a JSON object with ``f1``; it judged the insights itself), else ``None``.
    - no usable reference: ``(None, None)``.
    """
    if item.metric == "insight":
        return None, _insight_f1(prediction)
    reference = item.answer
    if reference is None:
        return None, None
    if item.metric == "yes_no":
        expected = normalize_yes_no(reference)
        if expected is None:
            return None, None
        return normalize_yes_no(prediction) == expected, None
    if item.metric == "closed":
        label, predicted = closed_labels(
            reference, prediction, closed_choices(item.question, item.metadata)
        )
        return predicted == label, None
    if item.metric in PER_ITEM_SCORES:
        per_item = PER_ITEM_SCORES[item.metric][1]
        return normalized_match(reference, prediction), per_item(reference, prediction)
    if item.metric == "open_bleu":
        return normalized_match(reference, prediction), None
    return prediction == reference, None


def _insight_f1(prediction: str | None) -> float | None:
    """The ``f1`` of an insight method's prediction (``{"f1": …, "recall": …, …}``)."""
    try:
        data = json.loads(prediction) if prediction else None
    except json.JSONDecodeError:
        return None
    value = data.get("f1") if isinstance(data, dict) else None
    return float(value) if isinstance(value, int | float) else None


# -- a run ---------------------------------------------------------------------------------------
class ConfusionMatrix(BaseModel):
    """Rows: reference labels; columns: predicted labels (``NO_ANSWER`` for none)."""

    model_config = ConfigDict(frozen=True)

    labels: list[str]
    matrix: list[list[int]]


class RunStats(BaseModel):
    """Counts and costs over a set of results; failed = status ``failed`` or ``timeout``."""

    model_config = ConfigDict(frozen=True)

    n: int
    n_ok: int
    n_failed: int
    n_timeout: int
    mean_steps: float
    prompt_tokens: int
    completion_tokens: int
    mean_tokens: float
    mean_latency_s: float
    total_latency_s: float
    cost_usd: float | None = Field(description="sum of the known costs; None when none is known")


class TaskSummary(RunStats):
    """One task's scores. ``score`` is the task's main metric over its scorable items."""

    task: str
    metric: MetricType
    n_scored: int = Field(description="items in the score (those with a usable reference)")
    n_missing: int = Field(description="items given to summarize that have no result")
    score_name: ScoreName
    score: float | None
    normalized_match: float | None = Field(None, description="open questions only")
    bootstrap: BootstrapResult | None = None
    confusion: ConfusionMatrix | None = None


class OverallSummary(RunStats):
    """Every result together; ``score`` is the unweighted mean of the tasks' main metrics.

    Tasks without a score (nothing scorable) are left out of the mean. The mean mixes whatever
    the tasks measure (balanced accuracy, accuracy, token F1): read it with the per-task rows.
    """

    n_tasks: int
    score: float | None
    bootstrap: BootstrapResult | None = Field(
        None, description="mean over tasks of each replicate (every task resampled alike)"
    )


class RunSummary(BaseModel):
    """What ``summarize`` returns: per-task summaries (by task name) and the whole run."""

    model_config = ConfigDict(frozen=True)

    tasks: dict[str, TaskSummary]
    overall: OverallSummary
    bootstrap_replicates: int
    seed: int


def _run_stats(results: Sequence[ItemResult]) -> dict[str, Any]:
    n = len(results)
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    latency = sum(r.latency_s for r in results)
    costs = [r.cost_usd for r in results if r.cost_usd is not None]
    return {
        "n": n,
        "n_ok": sum(r.status == "ok" for r in results),
        "n_failed": sum(r.status != "ok" for r in results),
        "n_timeout": sum(r.status == "timeout" for r in results),
        "mean_steps": sum(r.steps for r in results) / n if n else 0.0,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "mean_tokens": (prompt + completion) / n if n else 0.0,
        "mean_latency_s": latency / n if n else 0.0,
        "total_latency_s": latency,
        "cost_usd": sum(costs) if costs else None,
    }


def _classification(metric: MetricType) -> tuple[MetricFn, ScoreName]:
    if metric == "balanced_accuracy":
        return balanced_accuracy, "balanced_accuracy"
    if metric == "yes_no":
        return yes_no_accuracy, "accuracy"
    return accuracy, "accuracy"


def _summarize_task(
    task: str,
    metric: MetricType,
    results: list[ItemResult],
    references: list[str | None],
    choices: list[list[str] | None],
    n_missing: int,
    replicates: int,
    seed: int,
) -> tuple[TaskSummary, _Floats | None]:
    # Failed and timed-out items are wrong answers: their prediction is None whatever they hold.
    preds = [r.prediction if r.status == "ok" else None for r in results]
    fields: dict[str, Any] = {"score": None}
    replicate_values: _Floats | None = None
    if metric == "open_bleu":
        refs, answers = _pairs(references, preds)
        pairs = list(zip(refs, answers, strict=True))
        fields["score_name"] = "bleu"
        fields["n_scored"] = len(pairs)
        if pairs:
            statistics = np.array([bleu_statistics(r, a) for r, a in pairs], dtype=np.float64)
            fields["score"] = bleu_from_statistics(statistics.sum(axis=0))
            fields["normalized_match"] = sum(normalized_match(r, a) for r, a in pairs) / len(pairs)
            if replicates:
                kernel = _statistics_kernel(statistics, bleu_from_statistics)
                replicate_values = _replicate(kernel, len(pairs), replicates, seed)
    elif metric == "insight" or metric in PER_ITEM_SCORES:
        if metric == "insight":
            # Judged items carry their own 0..1 score; a failed or unjudged item scores 0.
            values = [(r.score or 0.0) if r.status == "ok" else 0.0 for r in results]
            fields["score_name"] = "judge_score"
        else:
            refs, answers = _pairs(references, preds)
            fields["score_name"], per_item = PER_ITEM_SCORES[metric]
            values = [per_item(r, a) for r, a in zip(refs, answers, strict=True)]
            matches = [normalized_match(r, a) for r, a in zip(refs, answers, strict=True)]
            fields["normalized_match"] = sum(matches) / len(matches) if matches else None
        fields["n_scored"] = len(values)
        if values:
            fields["score"] = sum(values) / len(values)
            if replicates:
                replicate_values = _bootstrap_mean_values(values, replicates, seed)
    else:
        metric_fn, fields["score_name"] = _classification(metric)
        if metric == "closed":
            # Score and tabulate labels: yes/no, the alternative named, or the answer itself.
            triples = zip(references, preds, choices, strict=True)
            labelled = [closed_labels(r, a, c) for r, a, c in triples if r is not None]
            refs, answers = [r for r, _ in labelled], [a for _, a in labelled]
        else:
            refs, answers = _pairs(references, preds)
        if metric == "yes_no":
            # Score and tabulate the normalized answers; references neither yes nor no drop out.
            kept = [
                (normalize_yes_no(r), normalize_yes_no(a))
                for r, a in zip(refs, answers, strict=True)
            ]
            refs = [r for r, _ in kept if r is not None]
            answers = [a for r, a in kept if r is not None]
        fields["n_scored"] = len(refs)
        if refs:
            fields["score"] = metric_fn(refs, answers)
            labels, matrix = confusion_matrix(refs, answers)
            fields["confusion"] = ConfusionMatrix(labels=labels, matrix=matrix)
            if replicates:
                replicate_values = _bootstrap_values(metric_fn, refs, answers, replicates, seed)
    if replicate_values is not None:
        fields["bootstrap"] = BootstrapResult.from_values(replicate_values)
    summary = TaskSummary(
        **_run_stats(results), **fields, task=task, metric=metric, n_missing=n_missing
    )
    return summary, replicate_values


def _reference(result: ItemResult, items: Mapping[str, EvalItem] | None) -> str | None:
    if result.reference is not None or items is None or result.id not in items:
        return result.reference
    return items[result.id].answer


def _choices(result: ItemResult, items: Mapping[str, EvalItem] | None) -> list[str] | None:
    item = (items or {}).get(result.id)
    if item is None:
        return closed_choices("", result.metadata)
    return closed_choices(item.question, {**result.metadata, **item.metadata})


@dataclass
class _Group:
    """The results and items of one row: a task, or one metric type of a task that mixes."""

    results: list[ItemResult] = field(default_factory=list)
    items: list[EvalItem] = field(default_factory=list)


def _groups(
    results: Sequence[ItemResult], items: Mapping[str, EvalItem] | None
) -> dict[str, tuple[MetricType, _Group]]:
    """Rows by name: the task, or ``"TASK (METRIC)"`` for each metric of a task that mixes."""
    groups: dict[tuple[str, MetricType], _Group] = {}
    for item in (items or {}).values():
        groups.setdefault((item.task, item.metric), _Group()).items.append(item)
    metrics: dict[str, set[MetricType]] = {}
    for task, metric in groups:
        metrics.setdefault(task, set()).add(metric)
    for result in results:
        own = (items or {}).get(result.id)
        known = metrics.get(result.task, set())
        if own is not None and own.task == result.task:
            metric = own.metric
        else:
            metric = next(iter(known)) if len(known) == 1 else "accuracy"
        groups.setdefault((result.task, metric), _Group()).results.append(result)
        metrics.setdefault(result.task, set()).add(metric)
    return {
        (task if len(metrics[task]) == 1 else f"{task} ({metric})"): (metric, group)
        for (task, metric), group in sorted(groups.items())
    }


def summarize(
    results: Sequence[ItemResult],
    items: Mapping[str, EvalItem] | None = None,
    bootstrap_replicates: int = 1000,
    seed: int = 0,
) -> RunSummary:
    """Scores, bootstrap intervals and costs per task and for the whole run.

    Main metric by the task's metric type: balanced accuracy (``balanced_accuracy``),
    accuracy (``accuracy``, ``yes_no``, ``closed``), mean token F1 (``open``) or token recall
    (``open_recall``) or corpus BLEU-4 (``open_bleu``), each with the normalized-match rate,
    mean judge score from ``ItemResult.score`` (``insight``). Predictions are
    rescored from ``reference`` / ``prediction``, not taken from ``correct``.

    - Failed and timed-out items count as wrong answers (``None`` predictions) in every score,
      as GIANT counts them, and are also counted in ``n_failed`` / ``n_timeout``.
    - Items without a reference (none in the result, none in ``items``) are left out of the
      score (``n_scored`` says how many counted).
    - Metric types and missing references come from ``items`` (by id); without ``items``
      every task is scored as ``accuracy``. Items without a result are counted in
      ``n_missing`` only.
    - A task whose items have different metric types (a hand-written dataset, or a run made
      before VQA-RAD's closed questions had one metric) is reported as one row per metric
      type, named ``"TASK (METRIC)"``: a report never fails on a run.
    - Results repeated for the same id (a rerun) count once: the last one wins.
    - Each task's bootstrap uses ``bootstrap_replicates`` and ``seed`` as ``bootstrap`` (or
      ``bootstrap_mean`` over per-item scores) would, so it can be reproduced item by item;
      0 replicates skips bootstrapping.
    """
    latest = {(r.task, r.id): r for r in results}
    tasks: dict[str, TaskSummary] = {}
    replicate_sets: list[_Floats] = []
    for name, (metric, group) in _groups(list(latest.values()), items).items():
        done = {r.id for r in group.results}
        summary, values = _summarize_task(
            name,
            metric,
            group.results,
            [_reference(r, items) for r in group.results],
            [_choices(r, items) for r in group.results],
            sum(i.id not in done for i in group.items),
            bootstrap_replicates,
            seed,
        )
        tasks[name] = summary
        if values is not None:
            replicate_sets.append(values)
    scores = [t.score for t in tasks.values() if t.score is not None]
    overall = OverallSummary(
        **_run_stats(list(latest.values())),
        n_tasks=len(tasks),
        score=sum(scores) / len(scores) if scores else None,
        bootstrap=BootstrapResult.from_values(np.mean(replicate_sets, axis=0))
        if replicate_sets and len(replicate_sets) == len(scores)
        else None,
    )
    return RunSummary(
        tasks=tasks, overall=overall, bootstrap_replicates=bootstrap_replicates, seed=seed
    )
