"""Scoring predicted insights against reference insights: recall, precision, F1, novelty.

For n predicted insights P and m reference insights R, a *matcher* decides for each pair
whether prediction p states reference r (MedInsightBench: a G-Eval style judge scores the pair
1–10 and a score above 5 is a match; ROUGE-L above a threshold is the cheap alternative — both
live with the eval harness, see ``medagent.evals._methods.insight_matcher``). Then

- recall    = |{r ∈ R : some p matches r}| / m — the share of reference insights found;
- precision = |{p ∈ P : p matches some r}| / n — the share of predictions that are in R;
- F1        = 2 · precision · recall / (precision + recall), 0 when both are 0;
- novelty   = |{p ∈ P : p matches no r}| / n — the share of predicted insights the reference
  set does not contain: what the analysis says beyond the references, right or wrong (a
  matcher cannot tell a discovery from an error; read novelty next to precision). Over the
  same predictions novelty = 1 − precision; predictions should be de-duplicated first (the
  agent's ranked insights are), or one insight said twice counts twice.

With no predictions every score is 0. A pair the matcher could not judge counts as no match
and is counted in ``unjudged``. Every pair is judged (n · m matcher calls), predictions in
order, each against every reference in order — the order a scripted judge must follow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from medagent.errors import ConfigError

__all__ = ["InsightReference", "InsightScore", "Matcher", "PairVerdict", "score_insights"]


class InsightReference(BaseModel):
    """A reference insight: its text and, when known, the question it answers."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    text: str = Field(min_length=1)
    question: str | None = None


class PairVerdict(BaseModel):
    """Whether one prediction states one reference, with the matcher's score and reason."""

    model_config = ConfigDict(frozen=True)

    matched: bool
    score: float | None = Field(None, description="judge 1..10, or ROUGE-L 0..1; None: unjudged")
    reason: str | None = None


Matcher = Callable[[str, str, str], Awaitable[PairVerdict]]
"""``await matcher(question, reference, candidate)``: does the candidate state the reference?"""


class PairScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    prediction: int = Field(description="0-based index into the predictions")
    reference: int = Field(description="0-based index into the references")
    verdict: PairVerdict


class InsightScore(BaseModel):
    """The four scores and the matches behind them (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    recall: float
    precision: float
    f1: float
    novelty: float
    n_predicted: int
    n_reference: int
    matched_predictions: list[int] = Field(description="predictions matching some reference")
    matched_references: list[int] = Field(description="references some prediction matches")
    unjudged: int = Field(0, description="pairs without a verdict (counted as no match)")
    pairs: list[PairScore] = Field(default_factory=list)


async def score_insights(
    predicted: Sequence[str],
    references: Sequence[str | InsightReference],
    matcher: Matcher,
    *,
    goal: str = "",
    concurrency: int = 4,
) -> InsightScore:
    """Match every prediction against every reference and score (see the module docstring).

    The question given to the matcher is the reference's own question, else ``goal``.
    ``concurrency`` bounds the matcher calls in flight (1 keeps them strictly in order).
    """
    refs = [r if isinstance(r, InsightReference) else InsightReference(text=r) for r in references]
    if not refs:
        raise ConfigError("scoring insights needs at least one reference insight")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
    gate = asyncio.Semaphore(concurrency)

    async def judge_pair(p: int, r: int) -> PairScore:
        async with gate:
            verdict = await matcher(refs[r].question or goal, refs[r].text, predicted[p])
        return PairScore(prediction=p, reference=r, verdict=verdict)

    pairs = list(
        await asyncio.gather(
            *(judge_pair(p, r) for p in range(len(predicted)) for r in range(len(refs)))
        )
    )
    hits = [pair for pair in pairs if pair.verdict.matched]
    matched_predictions = sorted({pair.prediction for pair in hits})
    matched_references = sorted({pair.reference for pair in hits})
    n, m = len(predicted), len(refs)
    precision = len(matched_predictions) / n if n else 0.0
    recall = len(matched_references) / m
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return InsightScore(
        recall=recall,
        precision=precision,
        f1=f1,
        novelty=(n - len(matched_predictions)) / n if n else 0.0,
        n_predicted=n,
        n_reference=m,
        matched_predictions=matched_predictions,
        matched_references=matched_references,
        unjudged=sum(pair.verdict.score is None for pair in pairs),
        pairs=pairs,
    )
