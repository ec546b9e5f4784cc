"""The insight agent's options: one frozen object, recorded in every run's manifest."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from medagent.retrieval import AdaptiveK

__all__ = ["InsightConfig"]


class InsightConfig(BaseModel):
    """How an insight run goes. Defaults follow MedInsightAgent / AgentPoirot where they say.

    ``depth`` counts the questions of one branch, its root question included: 3 roots at depth
    4 ask at most 12 questions (3 root questions, then 3 rounds of one follow-up per branch).
    """

    model_config = ConfigDict(frozen=True)

    roots: int = Field(3, ge=1, le=8, description="root questions, one branch each (k)")
    depth: int = Field(4, ge=1, le=10, description="questions per branch, the root included (p)")
    adaptive: bool = Field(
        False, description="end a branch early when the composer finds nothing new"
    )
    max_steps: int = Field(
        6, ge=1, le=30, description="model turns per question, the final answer included"
    )
    long_side: int = Field(1000, ge=64, le=4096, description="long side of every image sent")
    max_images_in_context: int | None = Field(
        None, ge=1, description="images kept: the latest, and from 2 on the overview and latest N-1"
    )
    max_corrections: int = Field(2, ge=0, le=10, description="re-asks per call on invalid output")
    temperature: float = Field(0.0, ge=0)
    seed: int | None = 0
    max_tokens: int = Field(1024, ge=16, description="tokens per model reply")
    timeout_s: float = Field(1800.0, gt=0, description="time limit for the whole run")
    report_candidates: int = Field(
        10, ge=1, le=50, description="reports retrieved before the adaptive cut"
    )
    report_k: AdaptiveK = Field(
        default_factory=AdaptiveK, description="how many retrieved reports to keep"
    )
