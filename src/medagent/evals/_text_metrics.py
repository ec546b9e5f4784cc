"""Scores for free-text answers: exact / normalized match, token F1 and recall, BLEU, ROUGE-L.

Match, token F1 and token recall are implemented here (a few lines each, and they must behave
exactly as documented); BLEU and ROUGE-L come from the packages everybody reports with
(``sacrebleu``, ``rouge-score``), imported only when called so the core install does not need them.

Every function takes the reference first (like the classification metrics) and accepts
``None`` for the prediction (a failed item, or no answer), which scores as a complete miss.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from medagent.errors import DependencyMissingError

__all__ = [
    "BLEU_STATISTICS",
    "bleu",
    "bleu_from_statistics",
    "bleu_statistics",
    "corpus_bleu",
    "exact_match",
    "normalize_text",
    "normalized_match",
    "rouge_l",
    "token_f1",
    "token_recall",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_EXTRA = "eval"  # the optional extra that will provide sacrebleu / rouge-score


def _is_punctuation(char: str) -> bool:
    # All Unicode punctuation (P*), not only ASCII: answers copied from reports contain
    # typographic quotes and dashes that SQuAD's ASCII-only set would keep.
    return unicodedata.category(char).startswith("P")


def normalize_text(text: str) -> str:
    """SQuAD-style normalization: lowercase, drop punctuation and articles, collapse spaces.

    Punctuation is deleted, not replaced by a space (as in SQuAD), so ``"non-small"`` becomes
    ``"nonsmall"`` on both sides of a comparison.
    """
    lowered = text.lower()
    no_punct = "".join(c for c in lowered if not _is_punctuation(c))
    no_articles = _ARTICLES.sub(" ", no_punct)
    return " ".join(no_articles.split())


def exact_match(reference: str, prediction: str | None) -> bool:
    """Equality after stripping surrounding whitespace only (case and punctuation count)."""
    return prediction is not None and prediction.strip() == reference.strip()


def normalized_match(reference: str, prediction: str | None) -> bool:
    """Equality after ``normalize_text`` on both sides."""
    return prediction is not None and normalize_text(prediction) == normalize_text(reference)


def token_f1(reference: str, prediction: str | None) -> float:
    """SQuAD token F1 over the normalized, whitespace-split tokens (multiset overlap).

    Two empty answers score 1.0 (as SQuAD v2 scores "no answer" against "no answer"); one empty
    side scores 0.0.
    """
    if prediction is None:
        return 0.0
    predicted = normalize_text(prediction).split()
    gold = normalize_text(reference).split()
    if not predicted or not gold:
        return float(predicted == gold)
    overlap = sum((Counter(predicted) & Counter(gold)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted)
    recall = overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def token_recall(reference: str, prediction: str | None) -> float:
    """The share of the reference's tokens found in the prediction (multiset, normalized).

    Open-question recall as LLaVA-Med reports it on VQA-RAD, SLAKE and PathVQA (and MMed-RAG
    after it): a long answer that contains the reference scores 1.0, which token F1 would
    penalise for its length. An empty reference scores 1.0 against an empty prediction.
    """
    if prediction is None:
        return 0.0
    gold = normalize_text(reference).split()
    predicted = normalize_text(prediction).split()
    if not gold:
        return float(not predicted)
    return sum((Counter(predicted) & Counter(gold)).values()) / len(gold)


def _sacrebleu() -> Any:
    try:
        import sacrebleu
    except ImportError:
        raise DependencyMissingError("sacrebleu", _EXTRA, "BLEU") from None
    return sacrebleu


def bleu(reference: str | Sequence[str], prediction: str | None) -> float:
    """Sentence BLEU in [0, 1] (sacrebleu: 13a tokenization, exp smoothing, effective order).

    Sentence-level BLEU is noisy; report ``corpus_bleu`` for a data set and use this one for a
    per-item score. ``reference`` may be several acceptable references.
    """
    references = [reference] if isinstance(reference, str) else list(reference)
    if prediction is None or not prediction.strip():
        return 0.0
    score = _sacrebleu().sentence_bleu(prediction, references).score
    return float(score) / 100.0


def corpus_bleu(references: Sequence[str], predictions: Sequence[str | None]) -> float:
    """Corpus BLEU in [0, 1] (sacrebleu defaults), one reference per prediction.

    ``None`` predictions are scored as empty strings.
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; "
            "they must pair up one to one"
        )
    if not predictions:
        raise ValueError("corpus BLEU of an empty corpus is undefined")
    hypotheses = [p or "" for p in predictions]
    score = _sacrebleu().corpus_bleu(hypotheses, [list(references)]).score
    return float(score) / 100.0


@lru_cache(maxsize=2)
def _rouge_scorer(use_stemmer: bool) -> Any:
    # Building a scorer (and its Porter stemmer) costs more than scoring one pair; keep two.
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise DependencyMissingError("rouge-score", _EXTRA, "ROUGE-L") from None
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l(reference: str, prediction: str | None, *, use_stemmer: bool = False) -> float:
    """ROUGE-L F-measure in [0, 1] (``rouge-score``, longest common subsequence of tokens).

    rouge-score's tokenizer keeps only ASCII letters and digits: text in other scripts scores
    0.0. ``use_stemmer`` applies the Porter stemmer (common for summaries, off by default).
    """
    if prediction is None:
        return 0.0
    scores = _rouge_scorer(use_stemmer).score(reference, prediction)
    return float(scores["rougeL"].fmeasure)


#: Corpus BLEU's sufficient statistics per item, in this order: matched n-grams for n = 1..4,
#: candidate n-grams for n = 1..4, prediction length, reference length. They add up over
#: items, so a bootstrap resamples rows of them instead of re-tokenizing every replicate.
BLEU_STATISTICS = 10
_ORDER = 4


@lru_cache(maxsize=1)
def _tokenize_13a() -> Any:
    _sacrebleu()
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()  # type: ignore[no-untyped-call]


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu_statistics(reference: str, prediction: str | None) -> list[int]:
    """One item's contribution to corpus BLEU (`BLEU_STATISTICS` counts, 13a tokens)."""
    tokenize = _tokenize_13a()
    candidate = tokenize(prediction or "").split()
    gold = tokenize(reference).split()
    matched, totals = [], []
    for n in range(1, _ORDER + 1):
        grams = _ngrams(candidate, n)
        matched.append(sum((grams & _ngrams(gold, n)).values()))
        totals.append(max(len(candidate) - n + 1, 0))
    return [*matched, *totals, len(candidate), len(gold)]


def bleu_from_statistics(statistics: Any) -> float:
    """Corpus BLEU in [0, 1] from summed `bleu_statistics` (sacrebleu's formula and its
    default exponential smoothing, so it equals ``corpus_bleu`` on the same items)."""
    from sacrebleu.metrics.bleu import BLEU

    counts = [round(float(value)) for value in statistics]
    score = BLEU.compute_bleu(
        counts[:_ORDER],
        counts[_ORDER : 2 * _ORDER],
        counts[2 * _ORDER],
        counts[2 * _ORDER + 1],
        smooth_method="exp",
    )
    return float(score.score) / 100.0
