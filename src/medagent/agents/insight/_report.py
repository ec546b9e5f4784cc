"""What an insight run leaves behind: the ``InsightReport`` and the records it is made of.

Records hold artifact ids and level-0 regions, never pixels, so ``insights.json`` stays small
and the HTML page reads the images from the run's artifact store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medagent.agents.insight._outputs import QuestionKind, ToolName
from medagent.artifacts import ArtifactRef
from medagent.imaging import ModalityKind, Region

__all__ = [
    "CallStatus",
    "Evidence",
    "Finding",
    "Insight",
    "InsightEvent",
    "InsightReport",
    "Measurement",
    "ModuleCall",
    "ModuleName",
    "QuestionRecord",
    "SourceImage",
    "Status",
    "ToolStep",
]

Status = Literal[
    "completed",  # every branch ran to its depth (or stopped adaptively), every question answered
    "partial",  # some questions (or the summary) gave no valid output; the insights found are kept
    "failed",  # no insight at all: the root finder or every question failed
    "model_error",  # the model could not be reached (after retries); what was found is kept
    "timeout",  # the run's time limit ran out; what was found is kept
    "budget_exhausted",  # the spend cap stopped it before the next model call; found is kept
]
ModuleName = Literal["root_finder", "insight_agent", "composer", "summary"]
CallStatus = Literal["ok", "invalid_output", "model_error"]


class Measurement(BaseModel):
    """One number a tool measured, with its unit ("" for counts)."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float
    unit: str

    @property
    def formatted(self) -> str:
        """The value with its unit, e.g. ``361`` or ``15.9 µm²``."""
        value = f"{self.value:,.0f}" if abs(self.value) >= 1000 else f"{self.value:.4g}"
        return f"{value} {self.unit}" if self.unit else value

    def to_text(self) -> str:
        return f"{self.name.replace('_', ' ')} {self.formatted}"


class Evidence(BaseModel):
    """A tool result an insight rests on: where, what images, what numbers, which neighbours."""

    model_config = ConfigDict(frozen=True)

    step: int
    tool: ToolName
    image: int = Field(description="which input image, 1-based")
    text: str = Field(description="the result as the model read it")
    region: Region | None = None
    artifacts: list[ArtifactRef] = Field(default_factory=list)
    measurements: list[Measurement] = Field(default_factory=list)
    neighbours: list[str] = Field(default_factory=list, description="ids of similar cases")


class ToolStep(BaseModel):
    """One turn of the insight agent that called a tool (it may have failed)."""

    model_config = ConfigDict(frozen=True)

    step: int
    tool: ToolName
    arguments: dict[str, Any]
    ok: bool
    text: str
    evidence: Evidence | None = None
    tool_s: float = 0.0


class Insight(BaseModel):
    """One insight: what was asked, what was found, on what evidence, how sure."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="b<branch>-d<depth>, e.g. b2-d1 for the second root question")
    branch: int
    depth: int
    kind: QuestionKind
    question: str
    answer: str
    text: str = Field(description="the insight")
    confidence: float = Field(ge=0, le=1)
    evidence: list[Evidence] = Field(default_factory=list)
    parent: str | None = Field(None, description="the insight this question followed up")
    rank: int | None = Field(None, description="1 = most important, after de-duplication")
    merged: list[str] = Field(default_factory=list, description="duplicates folded into this one")


class Finding(BaseModel):
    """A salient visual finding of the root finder, with its crop when it named a region."""

    model_config = ConfigDict(frozen=True)

    text: str
    image: int
    region: Region | None = None
    artifact: ArtifactRef | None = None


class QuestionRecord(BaseModel):
    """A question asked (or proposed and dropped), with how it went."""

    id: str
    branch: int
    depth: int
    kind: QuestionKind
    question: str
    parent: str | None = None
    candidates: dict[str, str] = Field(
        default_factory=dict, description="the composer's four candidates this one was picked from"
    )
    status: Literal["pending", "answered", "invalid_output", "model_error", "timeout"] = "pending"
    error: str | None = None
    steps: list[ToolStep] = Field(default_factory=list)
    insight: str | None = Field(None, description="the insight's text, before de-duplication")


class ModuleCall(BaseModel):
    """One call of a module to the model (with its correction rounds)."""

    model_config = ConfigDict(frozen=True)

    module: ModuleName
    branch: int | None = None
    depth: int | None = None
    step: int | None = None
    status: CallStatus
    outputs: list[str] = Field(default_factory=list, description="raw text per attempt")
    thinking: list[str] = Field(
        default_factory=list,
        description="a reasoning model's thinking per attempt, beside outputs ('' for none)",
    )
    errors: list[str] = Field(default_factory=list, description="why attempts were refused")
    parsed: dict[str, Any] | None = None
    images_sent: list[str] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = Field(0, description="of the completion tokens, those spent thinking")
    model_s: float = 0.0


class SourceImage(BaseModel):
    """An input image as the agent saw it."""

    model_config = ConfigDict(frozen=True)

    path: str
    kind: Literal["slide", "image"]
    width: int
    height: int
    mpp: float | None
    modality: ModalityKind = "image"
    overview: ArtifactRef | None = None


class InsightReport(BaseModel):
    """A whole run, as written to ``insights.json``: goal, ranked insights, summary, trace."""

    run_id: str
    run_dir: str
    goal: str
    status: Status = "completed"
    error: str | None = None
    summary: str = ""
    insights: list[Insight] = Field(
        default_factory=list, description="de-duplicated, most important first"
    )
    findings: list[Finding] = Field(default_factory=list)
    questions: list[QuestionRecord] = Field(default_factory=list)
    sources: list[SourceImage] = Field(default_factory=list)
    trace: list[ModuleCall] = Field(default_factory=list)
    model: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    started_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished_at: str | None = None
    elapsed_s: float = 0.0

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.trace)

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.trace)

    @property
    def json_path(self) -> Path:
        return Path(self.run_dir) / "insights.json"

    @property
    def html_path(self) -> Path:
        return Path(self.run_dir) / "insights.html"

    def calls(self, module: ModuleName) -> list[ModuleCall]:
        """The trace entries of one module, in order."""
        return [c for c in self.trace if c.module == module]


class InsightEvent(BaseModel):
    """Progress as a run goes, for a CLI or a web page."""

    kind: Literal["roots", "question", "tool", "insight", "failed", "followup", "stop", "done"]
    text: str = ""
    branch: int | None = None
    depth: int | None = None
    artifact_id: str | None = None
