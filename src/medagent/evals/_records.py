"""The two records every part of an evaluation agrees on: an item to run, a result to keep."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EvalItem", "ItemResult", "MetricType", "ResultStatus"]

MetricType = Literal[
    "accuracy",  # one correct option / label; accuracy over items
    "balanced_accuracy",  # classification over labels; mean per-class recall
    "open",  # free text: normalized match and SQuAD token F1 (the task's score)
    "open_recall",  # free text: share of reference tokens in the answer (LLaVA-Med's recall)
    "open_bleu",  # free text: corpus BLEU-4 over the task (generation benchmarks)
    "yes_no",  # closed yes/no questions
    "closed",  # closed questions: yes/no, or one of the alternatives named ("A or B?")
    "insight",  # insight recall/precision against reference insights (judge)
]
ResultStatus = Literal["ok", "failed", "timeout"]


class EvalItem(BaseModel):
    """One question of a dataset, whatever it came from."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="unique within the dataset; results are keyed by it")
    task: str = Field(description="sub-task for per-task scores, e.g. 'tcga' or 'CHEST/CLOSED'")
    slide: str | None = Field(None, description="whole-slide image path (slide questions)")
    images: list[str] = Field(default_factory=list, description="image paths (image questions)")
    question: str
    options: list[str] | None = None
    answer: str | None = Field(
        None, description="the reference answer, normalized like predictions"
    )
    metric: MetricType = "accuracy"
    metadata: dict[str, Any] = Field(default_factory=dict)


class ItemResult(BaseModel):
    """One finished item, as one line of ``results.jsonl``."""

    id: str
    task: str
    status: ResultStatus
    config_hash: str = Field(description="the run configuration it was produced with")
    answer: str | None = Field(None, description="the raw answer")
    prediction: str | None = Field(None, description="the normalized prediction")
    reference: str | None = None
    correct: bool | None = Field(None, description="for closed questions")
    score: float | None = Field(None, description="for open questions / judged items, 0..1")
    agent_status: str | None = Field(None, description="e.g. GIANT's answered / no_answer")
    error: str | None = None
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float | None = None
    cached_calls: int = 0
    trajectory: str | None = Field(None, description="path of the item's trajectory, run-relative")
    finished_at: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
