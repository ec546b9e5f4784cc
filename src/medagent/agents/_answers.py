"""Turning a model's free-text answer into a normalized prediction for scoring.

MultiPathQA answers come as a 1-based option index (TCGA, SlideBench, ExpertVQA), an option's
label (GTEx) or an ISUP grade in JSON (PANDA). Models answer loosely ("Option 3", "3. Lung
adenocarcinoma", '{"isup_grade": 2}'); the raw answer is always kept next to the prediction.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from medagent.models import extract_json

__all__ = ["majority_vote", "normalize_answer"]

_LEADING_NUMBER = re.compile(
    r"^\s*(?:option|answer|choice)?\s*[:#(]?\s*(\d+)\s*(?:[).:\-]|$|\s)", re.IGNORECASE
)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip(".").strip().lower()


def normalize_answer(answer: str, options: Sequence[str] | None = None) -> str | None:
    """The prediction: the chosen option's text, an ISUP grade, or the cleaned answer.

    With options, a number 1..n or the text of an option (exact, or contained once) selects
    it; an answer matching no option gives ``None`` (counted wrong, never guessed).
    """
    try:
        data = extract_json(answer)
    except ValueError:
        data = None
    if isinstance(data, dict):
        if "isup_grade" in data:
            try:
                return str(int(data["isup_grade"]))
            except (TypeError, ValueError):
                return None
        if isinstance(data.get("answer"), str | int):
            return normalize_answer(str(data["answer"]), options)
    if not options:
        return _clean(answer) or None
    number = _LEADING_NUMBER.match(answer)
    if number and 1 <= int(number.group(1)) <= len(options):
        return options[int(number.group(1)) - 1]
    wanted = _clean(answer)
    for option in options:
        if _clean(option) == wanted:
            return option
    contained = [o for o in options if _clean(o) and _clean(o) in wanted]
    if len(contained) == 1:
        return contained[0]
    return None


def majority_vote(predictions: Sequence[str | None]) -> tuple[str | None, dict[str, int]]:
    """The most frequent prediction; ties go to the one seen first (deterministic)."""
    counts = Counter(p for p in predictions if p is not None)
    if not counts:
        return None, {}
    best = max(counts.values())
    for prediction in predictions:
        if prediction is not None and counts[prediction] == best:
            return prediction, dict(counts)
    return None, dict(counts)
