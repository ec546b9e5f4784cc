"""Closed questions: answered yes or no, or by naming one of the alternatives the question offers.

VQA-RAD's closed questions are mostly yes/no, but some are choices without listed options:
"Is the trachea deviated to the right or left?", "Is this a T1 weighted, T2 weighted, or FLAIR
image?". One task holds both kinds, so one metric (``closed``) scores both: a yes/no reference
is compared after ``normalize_yes_no``; a reference that names one alternative is compared by
the alternative each side names; anything else (``"both"``, ``"maybe"``) by normalized match.

The alternatives are the words that tell them apart — ``["right", "left"]``,
``["t1", "t2", "flair"]`` — so "The trachea is deviated to the left." names ``left``, and an
answer naming two alternatives names none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from medagent.evals._metrics import normalize_yes_no
from medagent.evals._text_metrics import normalize_text, normalized_match

__all__ = ["closed_choices", "closed_labels", "parse_choices", "pick_choice"]

_OR = re.compile(r"\bor\b", re.IGNORECASE)


def _words(text: str) -> list[str]:
    return normalize_text(text).split()


def _segments(question: str) -> list[str] | None:
    """The question's alternatives as text, or ``None`` when it offers none."""
    text = question.strip().rstrip("?").strip()
    found = list(_OR.finditer(text))
    if not found:
        return None
    last = found[-1]
    before, after = text[: last.start()], text[last.end() :]
    right = after.split(",")[0]
    if before.rstrip().endswith(","):
        # "A, B, or C": every comma-separated part before the "or" is an alternative.
        left = [part for part in before.split(",") if part.strip()]
    else:
        # "Is it A or B", "What is denser, A or B": the part after the last comma.
        left = [before.split(",")[-1]]
    return [*left, right]


def parse_choices(question: str) -> list[str] | None:
    """The words that tell a closed question's alternatives apart, or ``None``.

    Each alternative is keyed by its distinctive word nearest the "or" (the last one of the
    alternatives before it, the first one of the alternative after it): "Is this an AP or PA
    film?" gives ``["ap", "pa"]``; "Was this MRI taken with or without contrast?" gives
    ``["with", "without"]``. ``None`` when the question has no "or", or its alternatives
    cannot be told apart by a word.
    """
    segments = _segments(question)
    if segments is None:
        return None
    words = [_words(segment) for segment in segments]
    keys: list[str] = []
    for index, own in enumerate(words):
        others = {w for j, other in enumerate(words) if j != index for w in other}
        distinct = [w for w in own if w not in others]
        if not distinct:
            return None
        keys.append(distinct[0] if index == len(words) - 1 else distinct[-1])
    return keys if len(set(keys)) == len(keys) else None


def pick_choice(text: str | None, choices: list[str]) -> str | None:
    """The one alternative ``text`` names (as whole words); ``None`` for none or several."""
    if text is None:
        return None
    words = f" {' '.join(_words(text))} "
    named = [choice for choice in choices if f" {choice} " in words]
    return named[0] if len(named) == 1 else None


def closed_choices(question: str, metadata: Mapping[str, Any]) -> list[str] | None:
    """An item's alternatives: ``metadata["choices"]`` when given, else parsed from its text."""
    given = metadata.get("choices")
    if isinstance(given, list):
        cleaned = [normalize_text(c) for c in given if isinstance(c, str)]
        if all(cleaned) and len(cleaned) >= 2:
            return cleaned
    return parse_choices(question)


def closed_labels(
    reference: str, prediction: str | None, choices: list[str] | None
) -> tuple[str, str | None]:
    """``(reference label, prediction label)`` of a closed question; equal labels are right.

    The labels are yes/no for a yes/no reference, the named alternative when the reference
    names one, else the normalized reference (and the prediction's label is that too only on a
    normalized match). A prediction that names nothing expected is ``None``.
    """
    expected = normalize_yes_no(reference)
    if expected is not None:
        return expected, normalize_yes_no(prediction)
    chosen = pick_choice(reference, choices or [])
    if chosen is not None:
        return chosen, pick_choice(prediction, choices or [])
    label = normalize_text(reference)
    return label, label if normalized_match(reference, prediction) else None
