"""Scores for closed questions, bootstrap intervals, per-item scoring and run summaries.

Conventions shared by every function here:

- Arguments come as ``(references, predictions)``, like scikit-learn's ``(y_true, y_pred)``.
- A ``None`` prediction (a failed item, no answer) is a wrong answer. It is not a class: it
  never adds a label to balanced accuracy or macro F1 (it only lowers its reference class's
  recall), and it appears in a confusion matrix as the column ``NO_ANSWER``.
- A ``None`` reference cannot be scored: the pair is left out.
- Labels are compared as exact strings; predictions and references are expected to be already
  normalized the same way (the dataset loaders and answer parsers do it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from medagent.evals._text_metrics import normalize_text

__all__ = [
    "BootstrapResult",
    "MetricFn",
    "NO_ANSWER",
    "ScoreName",
    "accuracy",
    "balanced_accuracy",
    "bootstrap",
    "bootstrap_mean",
    "confusion_matrix",
    "macro_f1",
    "normalize_yes_no",
    "yes_no_accuracy",
]

NO_ANSWER = "<no answer>"
"""The confusion-matrix column that counts ``None`` predictions."""

MetricFn = Callable[[Sequence[str | None], Sequence[str | None]], float]
"""A metric over ``(references, predictions)``, like every classification metric here."""

ScoreName = Literal[
    "balanced_accuracy", "accuracy", "token_f1", "token_recall", "bleu", "judge_score"
]
"""Which number a task summary's ``score`` is."""

_Codes = npt.NDArray[np.int64]
_Floats = npt.NDArray[np.float64]
_Kernel = Callable[[_Codes], _Floats]
# Resample at most this many (replicate, item) cells at once: bounds memory for big data sets.
_BLOCK_CELLS = 2_000_000


def _pairs(
    references: Sequence[str | None], predictions: Sequence[str | None]
) -> tuple[list[str], list[str | None]]:
    if len(references) != len(predictions):
        raise ValueError(
            f"{len(references)} references but {len(predictions)} predictions; "
            "they must pair up one to one"
        )
    kept = [(r, p) for r, p in zip(references, predictions, strict=True) if r is not None]
    return [r for r, _ in kept], [p for _, p in kept]


def _scorable(
    references: Sequence[str | None], predictions: Sequence[str | None]
) -> tuple[list[str], list[str | None]]:
    refs, preds = _pairs(references, predictions)
    if not refs:
        raise ValueError("nothing to score: no item has a reference")
    return refs, preds


def _label_key(label: str) -> tuple[int, int, str]:
    # Numeric labels (1-based option indices, ISUP grades) in numeric order: 1, 2, ..., 10.
    return (0, int(label), label) if label.isdecimal() else (1, 0, label)


def _encode(refs: list[str], preds: list[str | None]) -> tuple[_Codes, _Codes, int]:
    """Integer codes over refs ∪ answered preds; a ``None`` prediction is -1 (matches nothing)."""
    labels = sorted(set(refs) | {p for p in preds if p is not None}, key=_label_key)
    index = {label: i for i, label in enumerate(labels)}
    ref_codes = np.array([index[r] for r in refs], dtype=np.int64)
    pred_codes = np.array([-1 if p is None else index[p] for p in preds], dtype=np.int64)
    return ref_codes, pred_codes, len(labels)


def accuracy(references: Sequence[str | None], predictions: Sequence[str | None]) -> float:
    """Fraction of scorable items whose prediction equals the reference."""
    refs, preds = _scorable(references, predictions)
    return sum(p == r for r, p in zip(refs, preds, strict=True)) / len(refs)


def balanced_accuracy(references: Sequence[str | None], predictions: Sequence[str | None]) -> float:
    """Mean recall over the classes present in the references.

    Predicting a label that no reference has only costs the recall of the true class, as in
    ``sklearn.metrics.balanced_accuracy_score`` (which this equals).
    """
    refs, preds = _scorable(references, predictions)
    ref_codes, pred_codes, k = _encode(refs, preds)
    return float(_balanced_kernel(ref_codes, pred_codes, k)(_identity(len(refs)))[0])


def macro_f1(references: Sequence[str | None], predictions: Sequence[str | None]) -> float:
    """Unweighted mean F1 over the labels in references ∪ (non-``None``) predictions.

    A label only ever predicted scores F1 = 0 and counts, as in scikit-learn's
    ``f1_score(average="macro")`` with its default labels; a ``None`` prediction adds no label.
    """
    refs, preds = _scorable(references, predictions)
    ref_codes, pred_codes, k = _encode(refs, preds)
    return float(_macro_f1_kernel(ref_codes, pred_codes, k)(_identity(len(refs)))[0])


def confusion_matrix(
    references: Sequence[str | None],
    predictions: Sequence[str | None],
    labels: Sequence[str] | None = None,
) -> tuple[list[str], list[list[int]]]:
    """``(labels, matrix)``: ``matrix[i][j]`` counts items of reference ``labels[i]`` predicted
    as ``labels[j]``.

    Default labels: references ∪ predictions, numeric labels in numeric order, then the others
    alphabetically, then ``NO_ANSWER`` when some prediction is ``None``. With explicit
    ``labels``, pairs whose reference or prediction is not listed are not counted (as in
    scikit-learn); list ``NO_ANSWER`` to count ``None`` predictions.
    """
    refs, preds = _pairs(references, predictions)
    answers = [NO_ANSWER if p is None else p for p in preds]
    if labels is None:
        found = sorted(set(refs) | {p for p in preds if p is not None}, key=_label_key)
        labels = found + ([NO_ANSWER] if NO_ANSWER in answers else [])
    index = {label: i for i, label in enumerate(labels)}
    if len(index) != len(labels):
        raise ValueError(f"labels must be unique, got {list(labels)}")
    matrix = [[0] * len(labels) for _ in labels]
    for ref, answer in zip(refs, answers, strict=True):
        if ref in index and answer in index:
            matrix[index[ref]][index[answer]] += 1
    return list(labels), matrix


def normalize_yes_no(text: str | None) -> Literal["yes", "no"] | None:
    """``"yes"`` or ``"no"`` when the answer's first word is one of them, else ``None``.

    ``"Yes."``, ``"yes, it is"``, ``"**No**"`` and ``"NO - benign"`` are recognised;
    ``"Not sure"``, ``"yes/no"`` and ``"Probably yes"`` are not (the first word decides).
    """
    if text is None:
        return None
    words = normalize_text(text).split()
    if not words:
        return None
    first = words[0]
    return "yes" if first == "yes" else "no" if first == "no" else None


def _yes_no_pairs(
    references: Sequence[str | None], predictions: Sequence[str | None]
) -> tuple[list[str], list[str | None]]:
    refs, preds = _pairs(references, predictions)
    kept = [
        (ref, normalize_yes_no(pred))
        for ref, pred in ((normalize_yes_no(r), p) for r, p in zip(refs, preds, strict=True))
        if ref is not None
    ]
    if not kept:
        raise ValueError("nothing to score: no reference is a yes or a no")
    return [r for r, _ in kept], [p for _, p in kept]


def yes_no_accuracy(references: Sequence[str | None], predictions: Sequence[str | None]) -> float:
    """Accuracy after ``normalize_yes_no`` on both sides.

    A prediction that is neither yes nor no is wrong; a reference that is neither is left out.
    """
    refs, preds = _yes_no_pairs(references, predictions)
    return accuracy(refs, preds)


class BootstrapResult(BaseModel):
    """A metric's distribution over bootstrap replicates: mean ± std and a 95% interval."""

    model_config = ConfigDict(frozen=True)

    mean: float
    std: float
    low: float
    high: float
    replicates: int

    @classmethod
    def from_values(cls, values: npt.ArrayLike) -> BootstrapResult:
        """Summarize replicate values; ``std`` is the sample standard deviation (ddof = 1)."""
        array = np.asarray(values, dtype=np.float64)
        if array.size == 0:
            raise ValueError("no bootstrap replicates to summarize")
        low, high = np.percentile(array, [2.5, 97.5])
        return cls(
            mean=float(array.mean()),
            std=float(array.std(ddof=1)) if array.size > 1 else 0.0,
            low=float(low),
            high=float(high),
            replicates=int(array.size),
        )


def _identity(n: int) -> _Codes:
    return np.arange(n, dtype=np.int64)[None, :]


def _index_blocks(n: int, replicates: int, seed: int) -> Iterator[_Codes]:
    """Resampled item indices, shape (block, n), for ``replicates`` replicates in all."""
    if replicates < 1:
        raise ValueError(f"replicates must be at least 1, got {replicates}")
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, replicates, block):
        rows = min(block, replicates - start)
        yield rng.integers(0, n, size=(rows, n), dtype=np.int64)


def _per_class(codes: _Codes, k: int, weights: _Floats | None = None) -> _Floats:
    """Counts (or weight sums) of each code 0..k-1 in each row of ``codes``: shape (rows, k)."""
    rows = codes.shape[0]
    flat = (codes + np.arange(rows, dtype=np.int64)[:, None] * k).ravel()
    counts = np.bincount(flat, weights=weights, minlength=rows * k)
    return counts.reshape(rows, k).astype(np.float64)


def _mean_over_present(values: _Floats, present: npt.NDArray[np.bool_]) -> _Floats:
    totals: _Floats = np.where(present, values, 0.0).sum(axis=1)
    means: _Floats = totals / present.sum(axis=1)
    return means


def _mean_kernel(values: _Floats) -> _Kernel:
    return lambda idx: values[idx].mean(axis=1)


def _balanced_kernel(ref_codes: _Codes, pred_codes: _Codes, k: int) -> _Kernel:
    hit = (ref_codes == pred_codes).astype(np.float64)

    def kernel(idx: _Codes) -> _Floats:
        support = _per_class(ref_codes[idx], k)
        correct = _per_class(ref_codes[idx], k, hit[idx].ravel())
        present = support > 0
        return _mean_over_present(correct / np.where(present, support, 1.0), present)

    return kernel


def _macro_f1_kernel(ref_codes: _Codes, pred_codes: _Codes, k: int) -> _Kernel:
    hit = (ref_codes == pred_codes).astype(np.float64)

    def kernel(idx: _Codes) -> _Floats:
        support = _per_class(ref_codes[idx], k)
        true_pos = _per_class(ref_codes[idx], k, hit[idx].ravel())
        preds = pred_codes[idx]
        # None predictions (-1) go to an extra column k that is then dropped.
        predicted = _per_class(np.where(preds < 0, k, preds), k + 1)[:, :k]
        denominator = support + predicted
        present = denominator > 0
        return _mean_over_present(2 * true_pos / np.where(present, denominator, 1.0), present)

    return kernel


def _prepare(
    metric_fn: MetricFn, refs: list[str], preds: list[str | None]
) -> tuple[int, _Kernel] | None:
    """The vectorised equivalent of one of this module's metrics, over how many items."""
    if metric_fn is accuracy:
        hits = np.array([p == r for r, p in zip(refs, preds, strict=True)], dtype=np.float64)
        return len(refs), _mean_kernel(hits)
    if metric_fn is yes_no_accuracy:
        yes_no_refs, yes_no_preds = _yes_no_pairs(refs, preds)
        return _prepare(accuracy, yes_no_refs, yes_no_preds)
    if metric_fn is balanced_accuracy:
        return len(refs), _balanced_kernel(*_encode(refs, preds))
    if metric_fn is macro_f1:
        return len(refs), _macro_f1_kernel(*_encode(refs, preds))
    return None


def bootstrap(
    metric_fn: MetricFn,
    references: Sequence[str | None],
    predictions: Sequence[str | None],
    replicates: int = 1000,
    seed: int = 0,
) -> BootstrapResult:
    """Resample the scorable items with replacement ``replicates`` times and score each sample.

    Deterministic: the same data, ``replicates`` and ``seed`` give identical numbers. The
    metrics of this module (accuracy, balanced accuracy, macro F1, yes/no accuracy) are
    computed for all replicates at once with numpy; any other ``metric_fn`` is called once per
    replicate on the resampled lists (same resamples, slower). Items with a ``None`` reference
    are left out before resampling.
    """
    return BootstrapResult.from_values(
        _bootstrap_values(metric_fn, references, predictions, replicates, seed)
    )


def bootstrap_mean(
    values: Sequence[float], replicates: int = 1000, seed: int = 0
) -> BootstrapResult:
    """Bootstrap of the mean of per-item scores (token F1, judge scores, 0/1 correctness)."""
    return BootstrapResult.from_values(_bootstrap_mean_values(values, replicates, seed))


def _bootstrap_values(
    metric_fn: MetricFn,
    references: Sequence[str | None],
    predictions: Sequence[str | None],
    replicates: int,
    seed: int,
) -> _Floats:
    refs, preds = _scorable(references, predictions)
    prepared = _prepare(metric_fn, refs, preds)
    if prepared is not None:
        n, kernel = prepared
    else:
        n = len(refs)

        def kernel(idx: _Codes) -> _Floats:
            values = [metric_fn([refs[i] for i in row], [preds[i] for i in row]) for row in idx]
            return np.array(values, dtype=np.float64)

    return _replicate(kernel, n, replicates, seed)


def _bootstrap_mean_values(values: Sequence[float], replicates: int, seed: int) -> _Floats:
    if not values:
        raise ValueError("nothing to score: no per-item values")
    array = np.asarray(values, dtype=np.float64)
    return _replicate(_mean_kernel(array), len(array), replicates, seed)


def _statistics_kernel(statistics: _Floats, score: Callable[[_Floats], float]) -> _Kernel:
    """Resamples of a metric computed from per-item statistics that add up (corpus BLEU)."""

    def kernel(idx: _Codes) -> _Floats:
        sums = statistics[idx].sum(axis=1)
        return np.array([score(row) for row in sums], dtype=np.float64)

    return kernel


def _replicate(kernel: _Kernel, n: int, replicates: int, seed: int) -> _Floats:
    return np.concatenate([kernel(idx) for idx in _index_blocks(n, replicates, seed)])
