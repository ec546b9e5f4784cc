"""Benchmark answer formats normalized into predictions."""

from __future__ import annotations

import pytest

from medagent.agents.base import majority_vote, normalize_answer

ORGANS = ["Lung", "Liver", "Colon - Transverse"]


@pytest.mark.parametrize(
    ("answer", "options", "expected"),
    [
        ("2", ORGANS, "Liver"),
        ("2.", ORGANS, "Liver"),
        ("Option 3", ORGANS, "Colon - Transverse"),
        ("3) Colon - Transverse", ORGANS, "Colon - Transverse"),
        ("liver", ORGANS, "Liver"),
        ("The tissue is from the lung.", ORGANS, "Lung"),
        ("7", ORGANS, None),
        ("kidney", ORGANS, None),
        ('{"isup_grade": 3}', None, "3"),
        ('```json\n{"isup_grade": "4"}\n```', None, "4"),
        ('{"answer": 1}', ORGANS, "Lung"),
        ("  Adenocarcinoma. ", None, "adenocarcinoma"),
    ],
)
def test_normalize(answer: str, options: list[str] | None, expected: str | None) -> None:
    assert normalize_answer(answer, options) == expected


def test_majority_vote_breaks_ties_by_first_seen() -> None:
    assert majority_vote(["b", "a", "a", "b", None]) == ("b", {"b": 2, "a": 2})
    assert majority_vote([None, None]) == (None, {})
