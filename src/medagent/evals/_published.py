"""Published reference numbers, shown beside measured runs and never mixed with them.

A report puts these rows under the measured ones, marked "published", so a reader sees at once
how far a run is from the paper; they enter no mean, no bootstrap and no comparison.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from medagent.evals._metrics import ScoreName

__all__ = ["PUBLISHED", "PublishedResult", "benchmark_of", "published_for"]

_GIANT = "GIANT paper (arXiv 2511.19652), headline results on MultiPathQA"


class PublishedResult(BaseModel):
    """One published number: a method on a benchmark, in % (mean over bootstrap replicates)."""

    model_config = ConfigDict(frozen=True)

    method: str = Field(description="as the paper names it, with its model")
    benchmark: str = Field(description="the paper's column name, e.g. 'TCGA'")
    score_name: ScoreName = Field(description="the metric the number is")
    score: float = Field(description="in %")
    std: float | None = Field(None, description="in %, when the source gives it")
    source: str


def _giant(method: str, benchmark: str, score: float) -> PublishedResult:
    # MultiPathQA scores TCGA, GTEx and PANDA by balanced accuracy, the VQA sets by accuracy.
    balanced = benchmark in ("TCGA", "GTEx", "PANDA")
    return PublishedResult(
        method=method,
        benchmark=benchmark,
        score_name="balanced_accuracy" if balanced else "accuracy",
        score=score,
        source=_GIANT,
    )


PUBLISHED: tuple[PublishedResult, ...] = (
    _giant("GIANT (GPT-5)", "TCGA", 32.3),
    _giant("GIANT (GPT-5)", "GTEx", 53.7),
    _giant("GIANT (GPT-5)", "PANDA", 23.2),
    _giant("GIANT (GPT-5)", "SlideBench", 58.9),
    _giant("GIANT (GPT-5)", "ExpertVQA", 57.0),
    _giant("thumbnail baseline", "TCGA", 9.2),
    _giant("thumbnail baseline", "GTEx", 36.5),
    _giant("thumbnail baseline", "PANDA", 12.2),
    _giant("patch baseline", "TCGA", 12.8),
    _giant("patch baseline", "GTEx", 43.7),
    _giant("patch baseline", "PANDA", 21.3),
)
"""GIANT's published MultiPathQA numbers: the agent and its two single-call baselines."""

# Task names as datasets spell them (MultiPathQA's benchmark_name, short forms), squeezed to
# lower-case letters and digits.
_ALIASES: dict[str, str] = {
    "tcga": "TCGA",
    "gtex": "GTEx",
    "panda": "PANDA",
    "slidebench": "SlideBench",
    "tcgaslidebench": "SlideBench",
    "expertvqa": "ExpertVQA",
    "tcgaexpertvqa": "ExpertVQA",
}


def benchmark_of(task: str) -> str | None:
    """The published benchmark a task is (case and punctuation ignored), or ``None``."""
    return _ALIASES.get(re.sub(r"[^a-z0-9]", "", task.lower()))


def published_for(task: str, score_name: ScoreName) -> list[PublishedResult]:
    """Published numbers comparable with a measured task: same benchmark, same metric."""
    benchmark = benchmark_of(task)
    return [p for p in PUBLISHED if p.benchmark == benchmark and p.score_name == score_name]
