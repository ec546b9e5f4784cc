"""What a navigation leaves behind: an append-only run log and the trajectory built from it.

The conversation and step records go to ``events.jsonl`` as they happen (one line each), not
into the LangGraph checkpoint: checkpoints then stay a few hundred bytes per step instead of
re-storing the whole history, and a killed run still shows what it finished.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medagent.artifacts import ArtifactRef
from medagent.imaging import Region, VolumeAxis
from medagent.models import Message
from medagent.tools import SlideFacts, VolumeFacts

__all__ = ["RunLog", "SliceInfo", "Status", "StepRecord", "Trajectory", "VolumeInfo"]

Status = Literal[
    "running",  # not finished (or killed; resume it)
    "answered",  # the model answered while exploring
    "answered_at_limit",  # the model answered on the last turn
    "no_answer",  # the last turn produced no valid answer
    "model_error",  # the model could not be reached (after retries)
    "timeout",  # the per-question time limit ran out
    "budget_exhausted",  # the spend cap stopped it before the next model call
]


class SliceInfo(BaseModel):
    """The slice of a CT/MR volume a step looked at."""

    model_config = ConfigDict(frozen=True)

    axis: VolumeAxis
    index: int
    count: int = Field(description="slices along this axis")
    position_mm: float = Field(description="patient coordinate of the slice's centre, mm")
    patient_axis: str = Field(description="the patient axis the position is along: x, y or z")
    window: str = Field(description="the display window, in words")

    def label(self) -> str:
        """E.g. "axial slice 12 of 0-39 (z = -10.0 mm)"."""
        return (
            f"{self.axis} slice {self.index} of 0-{self.count - 1} "
            f"({self.patient_axis} = {self.position_mm:+.1f} mm)"
        )


class VolumeInfo(VolumeFacts):
    """The CT/MR volume a run navigated: where it was read from, its shape and spacing."""

    path: str

    def to_text(self) -> str:
        slices, rows, cols = self.shape
        d_slice, d_row, d_col = self.spacing_mm
        return (
            f"{self.modality.upper()} volume of {slices} slices of {cols} x {rows} px, voxels "
            f"{d_col:.3g} x {d_row:.3g} x {d_slice:.3g} mm (column x row x slice), "
            f"{self.plane} acquisition, values in {self.unit}"
        )


class StepRecord(BaseModel):
    """One turn: what was sent, what came back, what was done."""

    model_config = ConfigDict(frozen=True)

    step: int
    kind: Literal[
        "zoom", "look", "slice", "answer", "final", "invalid", "rejected", "patch", "thumbnail"
    ]
    sent_messages: int = Field(description="how many conversation messages were sent")
    images_sent: list[str] = Field(default_factory=list, description="artifact ids sent")
    outputs: list[str] = Field(default_factory=list, description="raw model text per attempt")
    thinking: list[str] = Field(
        default_factory=list,
        description="a reasoning model's thinking per attempt, beside outputs ('' for none)",
    )
    errors: list[str] = Field(default_factory=list, description="why attempts were refused")
    action: dict[str, Any] | None = None
    requested: Region | None = None
    region: Region | None = None
    clamped: bool = False
    level: int | None = None
    mpp: float | None = None
    artifact: ArtifactRef | None = None
    slice: SliceInfo | None = Field(None, description="a volume's slice this step looked at")
    notes: list[str] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = Field(0, description="of the completion tokens, those spent thinking")
    model_s: float = 0.0
    tool_s: float = 0.0

    @property
    def reasoning(self) -> str:
        """The reasoning the action states (its ``reasoning`` field), not the model's thinking."""
        return str((self.action or {}).get("reasoning", ""))


class WhereToLook(BaseModel):
    """The zero-shot hint shown with the overview (``GiantConfig.look_for``)."""

    artifact: ArtifactRef = Field(description="the heat map of the first prompt")
    text: str = Field(description="the hint as the model read it")


class Trajectory(BaseModel):
    """A whole run, as written to ``trajectory.json`` (ids, never pixels)."""

    run_id: str
    method: str
    question: str
    options: list[str] | None = None
    slide_path: str
    slide: SlideFacts = Field(description="the image; for a volume, its first axial slice")
    volume: VolumeInfo | None = Field(None, description="the CT/MR volume navigated, if any")
    model: str
    config: dict[str, Any]
    overview: ArtifactRef | None = None
    where_to_look: WhereToLook | None = None
    messages: list[Message] = Field(default_factory=list)
    steps: list[StepRecord] = Field(default_factory=list)
    status: Status = "running"
    answer: str | None = None
    prediction: str | None = None
    votes: dict[str, int] | None = None
    error: str | None = None
    started_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished_at: str | None = None
    elapsed_s: float = 0.0

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.steps)

    @property
    def reasoning_tokens(self) -> int:
        return sum(s.reasoning_tokens for s in self.steps)


class RunLog:
    """The append-only ``events.jsonl`` of a run directory, read back on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[Message] = []
        self.steps: list[StepRecord] = []
        self.meta: dict[str, Any] = {}
        #: Per step, how a look the model asked for was asked (replies, errors, tokens): kept
        #: here, not in the checkpointed state, until the look's step record is written.
        self.asked: dict[int, dict[str, Any]] = {}
        if path.exists():
            self._load()

    def _load(self) -> None:
        messages: dict[int, Message] = {}
        steps: dict[int, StepRecord] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: the step is redone on resume
            if event["type"] == "message":
                messages[event["index"]] = Message.model_validate(event["message"])
            elif event["type"] == "step":
                steps[event["step"]] = StepRecord.model_validate(event["record"])
            elif event["type"] == "meta":
                self.meta.update(event["meta"])
            elif event["type"] == "asked":
                self.asked[event["step"]] = event["asked"]
        self.messages = [messages[i] for i in sorted(messages)]
        self.steps = [steps[i] for i in sorted(steps)]

    def truncate(self, message_count: int, step: int) -> None:
        """Forget what a killed node wrote after the last checkpoint; it will run again."""
        self.messages = self.messages[:message_count]
        self.steps = [s for s in self.steps if s.step <= step]

    def _append(self, event: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event, ensure_ascii=False) + "\n")

    def add_message(self, message: Message) -> None:
        self._append(
            {
                "type": "message",
                "index": len(self.messages),
                "message": message.model_dump(mode="json"),
            }
        )
        self.messages.append(message)

    def add_step(self, record: StepRecord) -> None:
        self._append(
            {"type": "step", "step": record.step, "record": record.model_dump(mode="json")}
        )
        self.steps = [s for s in self.steps if s.step != record.step] + [record]

    def add_asked(self, step: int, asked: dict[str, Any]) -> None:
        """Record how the look of ``step`` was asked for, for the ``look`` node's step record."""
        self._append({"type": "asked", "step": step, "asked": asked})
        self.asked[step] = asked

    def set_meta(self, **meta: Any) -> None:
        self._append({"type": "meta", "meta": meta})
        self.meta.update(meta)
