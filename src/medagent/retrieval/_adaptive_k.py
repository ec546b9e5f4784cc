"""How many retrieved contexts to keep: MMed-RAG's adaptive rules, or a fixed k.

Too few reports starve the model; too many drown the relevant one in noise. Both rules cut the
sorted similarity list where it falls off:

- ``gap`` (the paper): with S1 >= S2 >= ..., u_i = log(S_i / S_{i+1}); keep the first i items,
  where i is the first position whose u_i exceeds gamma (no such gap: keep all, up to k_max).
- ``ratio`` (the released code): keep the candidates with S1 / S_i < T, at most k_max.
- ``fixed``: the first k.

Similarities must be positive for the log and the ratio; non-positive ones are never kept.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AdaptiveK", "select_k"]


class AdaptiveK(BaseModel):
    """The rule and its parameter. Defaults: gap rule, gamma 0.1, at most 5 contexts."""

    model_config = ConfigDict(frozen=True)

    rule: Literal["gap", "ratio", "fixed"] = "gap"
    gamma: float = Field(0.1, gt=0, description="gap rule: cut where log(S_i/S_i+1) > gamma")
    ratio: float = Field(1.5, gt=1, description="ratio rule: keep while S1/S_i < T")
    k: int = Field(3, ge=1, description="fixed rule: how many")
    k_max: int = Field(5, ge=1, description="never more than this many")


def select_k(similarities: Sequence[float], rule: AdaptiveK | None = None) -> int:
    """How many of the (descending) ``similarities`` to keep."""
    rule = rule or AdaptiveK()
    if any(a < b for a, b in itertools.pairwise(similarities)):
        raise ValueError("similarities must be sorted in descending order")
    scores = [s for s in similarities[: rule.k_max] if s > 0]
    if not scores:
        return 0
    if rule.rule == "fixed":
        return min(rule.k, len(scores))
    if rule.rule == "ratio":
        return sum(1 for s in scores if scores[0] / s < rule.ratio)
    for index in range(len(scores) - 1):
        if math.log(scores[index] / scores[index + 1]) > rule.gamma:
            return index + 1
    return len(scores)
