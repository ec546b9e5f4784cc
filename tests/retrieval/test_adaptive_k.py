"""Adaptive k on crafted similarity lists: the exact k each rule must give."""

from __future__ import annotations

import math

import pytest

from medagent.retrieval._adaptive_k import AdaptiveK, select_k


@pytest.mark.parametrize(
    ("scores", "gamma", "expected"),
    [
        ([0.9, 0.88, 0.5, 0.49], 0.1, 2),  # log(0.88/0.5) = 0.57 is the first gap > 0.1
        ([0.9, 0.5, 0.49], 0.1, 1),
        ([0.9, 0.89, 0.88, 0.87, 0.86], 0.1, 5),  # no gap: all (k_max 5)
        ([0.9, 0.8, 0.7], 0.2, 3),  # gaps 0.118, 0.134 < 0.2
        ([0.9, 0.8, 0.7], 0.12, 2),  # 0.118 < 0.12 < 0.134
    ],
)
def test_gap_rule(scores: list[float], gamma: float, expected: int) -> None:
    assert select_k(scores, AdaptiveK(rule="gap", gamma=gamma)) == expected


def test_gap_rule_boundary_is_strict() -> None:
    gap = math.log(0.9 / 0.6)
    assert select_k([0.9, 0.6, 0.59], AdaptiveK(rule="gap", gamma=gap)) == 3
    assert select_k([0.9, 0.6, 0.59], AdaptiveK(rule="gap", gamma=gap - 1e-9)) == 1


@pytest.mark.parametrize(
    ("scores", "ratio", "expected"),
    [
        ([0.9, 0.8, 0.61, 0.59, 0.3], 1.5, 3),  # 0.9/0.61 = 1.475 < 1.5 <= 0.9/0.59
        ([0.9, 0.3], 1.5, 1),
        ([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], 1.5, 5),  # capped at k_max
    ],
)
def test_ratio_rule(scores: list[float], ratio: float, expected: int) -> None:
    assert select_k(scores, AdaptiveK(rule="ratio", ratio=ratio)) == expected


def test_fixed_rule_and_edge_cases() -> None:
    assert select_k([0.9, 0.5, 0.1, 0.05], AdaptiveK(rule="fixed", k=2)) == 2
    assert select_k([0.9], AdaptiveK(rule="fixed", k=3)) == 1
    assert select_k([]) == 0
    assert select_k([-0.1, -0.2]) == 0
    assert select_k([0.5, 0.4, -0.1], AdaptiveK(rule="gap", gamma=5)) == 2
    with pytest.raises(ValueError, match="descending"):
        select_k([0.1, 0.9])
