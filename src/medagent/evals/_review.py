"""A reviewer's grades of an eval run, and how far they agree with the automatic scoring.

A reviewer grades each item's answer (correct / partly / wrong) and its path (each step useful
or wasteful, plus a free comment). The web app keeps the grades in its database and writes the
run's grades to ``RUN/review.jsonl`` (one ``ReviewGrade`` a line, the same lines as its JSONL
export) after every save; ``eval report`` reads that file, so a reviewed run is reported with
its agreement table and nothing more has to be passed. A JSONL export downloaded from another
server can be put there by hand.

Agreement is measured on "correct or not": the automatic side is the item's correctness as the
report counts it (failed items are wrong), the reviewer's is ``correct`` against ``partly`` or
``wrong`` (a partly right answer is not a right one). Cohen's kappa corrects the percent
agreement for chance; it is undefined (``None``) when chance agreement is total, i.e. both
sides gave one and the same label to every item.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medagent._files import write_atomic
from medagent.evals._paired import _score_rows
from medagent.evals._records import EvalItem, ItemResult

__all__ = [
    "ANSWER_GRADES",
    "REVIEW_FILE",
    "STEP_GRADES",
    "AnswerGrade",
    "ReviewAgreement",
    "ReviewGrade",
    "StepGrade",
    "TaskAgreement",
    "cohen_kappa",
    "grades_csv",
    "grades_jsonl",
    "read_review_file",
    "review_agreement",
    "review_table",
    "write_review_file",
]

log = logging.getLogger("medagent.evals")

AnswerGrade = Literal["correct", "partly", "wrong"]
StepGrade = Literal["useful", "wasteful"]
ANSWER_GRADES: tuple[AnswerGrade, ...] = ("correct", "partly", "wrong")
STEP_GRADES: tuple[StepGrade, ...] = ("useful", "wasteful")
#: The run's grades as the app last saved them, beside ``results.jsonl``.
REVIEW_FILE = "review.jsonl"
#: A review file larger than this is not read (a grade line is well under 10 KB).
MAX_REVIEW_BYTES = 64 * 1024 * 1024
MAX_COMMENT_CHARS = 4000
MAX_STEP = 10_000
MAX_ITEM_CHARS = 512


class ReviewGrade(BaseModel):
    """One reviewer's grade of one item of one run: the answer, each step, a comment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run: str = Field(max_length=1024, description="the run folder, relative to the runs root")
    item: str = Field(min_length=1, max_length=MAX_ITEM_CHARS, description="the item's id")
    answer: AnswerGrade | None = Field(None, description="the answer's grade; None: not graded")
    steps: dict[int, StepGrade] = Field(
        default_factory=dict, description="step number → useful or wasteful (ungraded: absent)"
    )
    comment: str = Field("", max_length=MAX_COMMENT_CHARS)
    updated_at: float = Field(0.0, ge=0, description="when it was saved, Unix seconds")

    @field_validator("steps")
    @classmethod
    def _step_numbers(cls, steps: dict[int, StepGrade]) -> dict[int, StepGrade]:
        if len(steps) > MAX_STEP or any(not 1 <= step <= MAX_STEP for step in steps):
            raise ValueError(f"step numbers run from 1 to {MAX_STEP}")
        return dict(sorted(steps.items()))

    @property
    def useful(self) -> int:
        return sum(grade == "useful" for grade in self.steps.values())

    @property
    def wasteful(self) -> int:
        return sum(grade == "wasteful" for grade in self.steps.values())


def read_review_file(run_dir: Path) -> dict[str, ReviewGrade]:
    """The grades in ``RUN/review.jsonl`` by item id (the latest line per item); a missing
    file is no grades, and a line that is not a grade is skipped (and logged)."""
    path = run_dir / REVIEW_FILE
    try:
        if path.stat().st_size > MAX_REVIEW_BYTES:
            log.warning("%s is over %d bytes; not read", path, MAX_REVIEW_BYTES)
            return {}
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc.strerror or exc)
        return {}
    grades: dict[str, ReviewGrade] = {}
    skipped = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            grade = ReviewGrade.model_validate_json(line)
        except ValidationError:
            skipped += 1
            continue
        grades[grade.item] = grade
    if skipped:
        log.warning("%s: %d line(s) that are not grades were skipped", path, skipped)
    return grades


def grades_jsonl(grades: Iterable[ReviewGrade]) -> str:
    """One grade a line, in the form ``read_review_file`` reads."""
    return "".join(grade.model_dump_json() + "\n" for grade in grades)


def write_review_file(run_dir: Path, grades: Iterable[ReviewGrade]) -> Path:
    """Replace ``RUN/review.jsonl`` with ``grades`` in one step (``OSError`` is the caller's)."""
    path = run_dir / REVIEW_FILE
    write_atomic(path, grades_jsonl(grades))
    return path


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a leading ``= + - @`` (or tab, CR) would make
    a comment a formula, so such cells get a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


CSV_COLUMNS = (
    "run",
    "item",
    "task",
    "answer_grade",
    "automatic",
    "prediction",
    "reference",
    "steps_useful",
    "steps_wasteful",
    "step_grades",
    "comment",
    "updated_at",
)


def grades_csv(
    grades: Iterable[ReviewGrade], results: Mapping[str, ItemResult] | None = None
) -> str:
    """The grades as CSV, one row an item, with the automatic result beside each
    (``automatic``: correct / wrong / blank when the item has no notion of correct)."""
    results = results or {}
    correct = _automatic(list(results.values()))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for grade in grades:
        result = results.get(grade.item)
        auto = correct.get(grade.item)
        writer.writerow(
            _cell(value)
            for value in (
                grade.run,
                grade.item,
                result.task if result else "",
                grade.answer or "",
                "" if auto is None else ("correct" if auto else "wrong"),
                result.prediction if result else "",
                result.reference if result else "",
                grade.useful,
                grade.wasteful,
                ";".join(f"{step}:{value}" for step, value in grade.steps.items()),
                grade.comment,
                f"{grade.updated_at:.3f}",
            )
        )
    return buffer.getvalue()


def _automatic(
    results: Sequence[ItemResult], items: Mapping[str, EvalItem] | None = None
) -> dict[str, bool]:
    """Each item's correctness as the report counts it (absent: no notion of correct)."""
    found: dict[str, bool] = {}
    for row in _score_rows(results, items).values():
        found.update(row.correct)
    return found


def cohen_kappa(pairs: Sequence[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of two raters' yes/no labels; ``None`` with no pairs or when chance
    agreement is 1 (both raters gave one and the same label throughout)."""
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(a == b for a, b in pairs) / n
    a_yes = sum(a for a, _ in pairs) / n
    b_yes = sum(b for _, b in pairs) / n
    chance = a_yes * b_yes + (1 - a_yes) * (1 - b_yes)
    if chance >= 1.0:
        return None
    return (observed - chance) / (1 - chance)


class TaskAgreement(BaseModel):
    """Reviewer against automatic scoring on the items of one task (or all: ``task="all"``)."""

    model_config = ConfigDict(frozen=True)

    task: str
    n: int = Field(description="items with both a reviewer's answer grade and an automatic one")
    counts: dict[str, dict[str, int]] = Field(
        description="automatic (correct / wrong) → reviewer grade (correct / partly / wrong)"
    )
    agree: int = Field(description="items where 'correct or not' is the same on both sides")
    percent: float | None = Field(description="agree / n, in %")
    kappa: float | None = Field(description="Cohen's kappa; None when undefined")


class ReviewAgreement(BaseModel):
    """A run's review: how many items and steps were graded, and the agreement tables."""

    model_config = ConfigDict(frozen=True)

    graded: int = Field(description="items with an answer grade")
    reviewed: int = Field(description="items with any grade, comment or step grade")
    useful_steps: int
    wasteful_steps: int
    not_in_run: int = Field(0, description="grades for items the run's results lack")
    no_automatic: int = Field(0, description="graded items the automatic scoring cannot call")
    overall: TaskAgreement
    tasks: list[TaskAgreement] = Field(default_factory=list)


def _table(task: str, pairs: list[tuple[bool, AnswerGrade]]) -> TaskAgreement:
    counts = {
        side: dict.fromkeys(ANSWER_GRADES, 0) for side in ("correct", "wrong")
    }  # automatic → reviewer
    for auto, grade in pairs:
        counts["correct" if auto else "wrong"][grade] += 1
    binary = [(auto, grade == "correct") for auto, grade in pairs]
    agree = sum(a == b for a, b in binary)
    return TaskAgreement(
        task=task,
        n=len(pairs),
        counts=counts,
        agree=agree,
        percent=100.0 * agree / len(pairs) if pairs else None,
        kappa=cohen_kappa(binary),
    )


def review_agreement(
    results: Sequence[ItemResult],
    grades: Mapping[str, ReviewGrade],
    items: Mapping[str, EvalItem] | None = None,
) -> ReviewAgreement | None:
    """The agreement of ``grades`` with the automatic scoring of ``results``; ``None`` when
    nothing was reviewed."""
    if not grades:
        return None
    by_id = {r.id: r for r in results}
    automatic = _automatic(results, items)
    per_task: dict[str, list[tuple[bool, AnswerGrade]]] = {}
    no_automatic = 0
    for item, grade in grades.items():
        if grade.answer is None or item not in by_id:
            continue
        if item not in automatic:
            no_automatic += 1
            continue
        per_task.setdefault(by_id[item].task, []).append((automatic[item], grade.answer))
    everything = [pair for pairs in per_task.values() for pair in pairs]
    return ReviewAgreement(
        graded=sum(g.answer is not None for g in grades.values()),
        reviewed=len(grades),
        useful_steps=sum(g.useful for g in grades.values()),
        wasteful_steps=sum(g.wasteful for g in grades.values()),
        not_in_run=sum(item not in by_id for item in grades),
        no_automatic=no_automatic,
        overall=_table("all", everything),
        tasks=[_table(task, pairs) for task, pairs in sorted(per_task.items())],
    )


def review_table(runs: Sequence[tuple[str, ReviewAgreement]]) -> tuple[list[str], list[str]]:
    """Markdown table lines and notes for the report: per run and task, the items graded by
    both sides, the counts (automatic correct/wrong × reviewer correct/partly/wrong), percent
    agreement and Cohen's kappa."""
    lines = [
        "| run | task | items | auto ✓: rev correct / partly / wrong | "
        "auto ✗: rev correct / partly / wrong | agreement | Cohen's κ |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, review in runs:
        for row in [*review.tasks, review.overall]:
            right, wrong = (
                " / ".join(str(row.counts[side][g]) for g in ANSWER_GRADES)
                for side in ("correct", "wrong")
            )
            percent = "—" if row.percent is None else f"{row.percent:.1f}% ({row.agree}/{row.n})"
            kappa = "—" if row.kappa is None else f"{row.kappa:.2f}"
            task = "**all**" if row.task == "all" else row.task
            lines.append(f"| {name} | {task} | {row.n} | {right} | {wrong} | {percent} | {kappa} |")
        notes.append(
            f"{name}: {review.graded} answer(s) graded, {review.reviewed} item(s) reviewed; "
            f"steps: {review.useful_steps} useful, {review.wasteful_steps} wasteful"
        )
        if review.not_in_run:
            notes.append(f"{name}: {review.not_in_run} grade(s) for items not in results.jsonl")
        if review.no_automatic:
            notes.append(
                f"{name}: {review.no_automatic} graded item(s) the automatic scoring cannot "
                "call correct or wrong (no reference, or a judged metric), left out"
            )
    notes.append(
        "agreement on 'correct or not': a reviewer's 'partly' counts as not correct; "
        "failed items are automatically wrong; κ is undefined (—) when both sides gave "
        "every item the same label"
    )
    return lines, notes
