"""What every optimizer shares: a call budget, bounded parallel scoring, a log of candidates.

An optimizer never talks to the caller's model directly: it goes through a `BudgetedModel`
that counts calls and refuses the one past ``budget`` (`BudgetExhausted`), so a search stops
where it was told to and returns the best program it had fully scored by then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError, MedagentError
from medagent.models import (
    ChatModel,
    GenerateParams,
    Message,
    Reply,
    ToolSpec,
    UsageTotals,
    image_cap,
)
from medagent.prompts._compiled import CompiledProgram
from medagent.prompts._modules import Example, Prediction
from medagent.prompts._program import Program

__all__ = [
    "BudgetExhausted",
    "BudgetedModel",
    "CallBudget",
    "CandidateRecord",
    "Evaluation",
    "Metric",
    "OptimizationResult",
    "Optimizer",
    "OptimizerConfig",
    "ProgressEvent",
    "Session",
    "evaluate",
]

Metric = Callable[[Example, Prediction], float]
"""Scores one prediction against its example, 0..1 (a failed prediction is never passed)."""


class BudgetExhausted(MedagentError):
    """The optimizer used every model call it was allowed."""


class CallBudget:
    """Counts model calls; ``take`` refuses the call past ``max_calls`` (None: no limit)."""

    def __init__(self, max_calls: int | None) -> None:
        if max_calls is not None and max_calls < 1:
            raise ConfigError(f"the budget must be at least 1 model call, not {max_calls}")
        self.max_calls = max_calls
        self.used = 0

    @property
    def remaining(self) -> int | None:
        return None if self.max_calls is None else self.max_calls - self.used

    def take(self) -> None:
        if self.max_calls is not None and self.used >= self.max_calls:
            raise BudgetExhausted(f"the budget of {self.max_calls} model calls is spent")
        self.used += 1


class BudgetedModel:
    """A ChatModel that spends ``budget`` on every call; may override temperature and seed."""

    def __init__(
        self,
        model: ChatModel,
        budget: CallBudget,
        *,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.model = model
        self.budget = budget
        self.temperature = temperature
        self.seed = seed
        self.name = model.name
        self.usage_totals: UsageTotals = model.usage_totals
        self.image_long_side = image_cap(model)  # agents size their views by the wrapped cap

    def sampling(self, *, temperature: float, seed: int | None) -> BudgetedModel:
        """The same model and budget, sampling at ``temperature`` (bootstrap retries)."""
        return BudgetedModel(self.model, self.budget, temperature=temperature, seed=seed)

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> Reply:
        self.budget.take()
        params = params or GenerateParams()
        if self.temperature is not None:
            params = params.model_copy(update={"temperature": self.temperature, "seed": self.seed})
        return await self.model.generate(
            messages, schema=schema, tools=tools, params=params, artifacts=artifacts
        )

    async def aclose(self) -> None:
        return None  # the caller owns the model


class Evaluation(BaseModel):
    """A program's mean score over examples; failed predictions score 0."""

    model_config = ConfigDict(frozen=True)

    score: float
    scores: dict[str, float]
    failed: int = Field(description="examples without a valid prediction")

    @property
    def n(self) -> int:
        return len(self.scores)


async def _run_bounded(
    jobs: Sequence[Callable[[], Any]], concurrency: int
) -> list[Any]:  # list of the jobs' results, in order
    slots = asyncio.Semaphore(concurrency)
    results: list[Any] = [None] * len(jobs)

    async def one(index: int) -> None:
        async with slots:
            results[index] = await jobs[index]()

    try:
        async with asyncio.TaskGroup() as group:
            for index in range(len(jobs)):
                group.create_task(one(index))
    except* BudgetExhausted as caught:
        raise caught.exceptions[0] from None
    return results


async def evaluate(
    program: Program,
    model: ChatModel,
    examples: Sequence[Example],
    metric: Metric,
    *,
    concurrency: int = 4,
    on_example: Callable[[str, float], None] | None = None,
) -> Evaluation:
    """Score ``program`` on ``examples``, ``concurrency`` at a time."""
    if not examples:
        raise ConfigError("nothing to evaluate: no examples")

    def job(example: Example) -> Callable[[], Any]:
        async def run() -> tuple[float, bool]:
            prediction = await program.forward(model, example.inputs)
            score = float(metric(example, prediction)) if prediction.ok else 0.0
            if on_example is not None:
                on_example(example.id, score)
            return score, prediction.ok

        return run

    outcomes = await _run_bounded([job(e) for e in examples], concurrency)
    scores = {e.id: s for e, (s, _) in zip(examples, outcomes, strict=True)}
    return Evaluation(
        score=sum(scores.values()) / len(scores),
        scores=scores,
        failed=sum(1 for _, ok in outcomes if not ok),
    )


class CandidateRecord(BaseModel):
    """One program the optimizer tried, and how it scored."""

    model_config = ConfigDict(frozen=True)

    index: int
    label: str = Field(description="what it is: zero-shot, labeled, bootstrap, trial 3, ...")
    score: float | None = Field(description="None when the budget ran out before it was scored")
    examples: int = Field(description="validation examples it was scored on")
    full: bool = Field(description="scored on the whole validation set (not a minibatch)")
    instructions: dict[str, str]
    demos: dict[str, int]
    calls: int = Field(description="model calls spent so far, when it was scored")
    settings: dict[str, Any] = Field(default_factory=dict)


class ProgressEvent(BaseModel):
    """What a progress bar shows: the phase, how far it is, calls spent, the best full score."""

    model_config = ConfigDict(frozen=True)

    phase: str
    done: int
    total: int | None
    calls: int
    budget: int | None
    best: float | None


ProgressFn = Callable[[ProgressEvent], None]


class OptimizationResult(BaseModel):
    """The optimized program, the zero-shot and best scores, and every candidate tried."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    program: Program
    optimizer: str
    settings: dict[str, Any]
    baseline_score: float | None
    best_score: float | None
    candidates: list[CandidateRecord]
    calls: int
    budget: int | None
    stopped: str | None = Field(None, description="why the search ended early, if it did")

    def save(self, path: str | Path, *, model: str | None = None) -> CompiledProgram:
        """Write the program with this report (optimizer, scores, candidates) as JSON."""
        return self.program.save(
            Path(path),
            optimizer={"name": self.optimizer, "settings": self.settings},
            scores={
                "zero_shot": self.baseline_score,
                "best": self.best_score,
                "calls": self.calls,
                "budget": self.budget,
                "stopped": self.stopped,
            },
            candidates=[c.model_dump(mode="json") for c in self.candidates],
            model=model,
        )


class Session:
    """One ``compile`` call's state: the budgeted model, the candidate log, the best program."""

    def __init__(
        self,
        model: ChatModel,
        metric: Metric,
        *,
        budget: int | None,
        concurrency: int,
        on_progress: ProgressFn | None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
        self.budget = CallBudget(budget)
        self.model = BudgetedModel(model, self.budget)
        self.metric = metric
        self.concurrency = concurrency
        self.on_progress = on_progress or (lambda event: None)
        self.candidates: list[CandidateRecord] = []
        self.best: Program | None = None
        self.best_score: float | None = None
        self.baseline_score: float | None = None
        self.stopped: str | None = None
        self._cache: dict[tuple[str, str], float] = {}

    def wrap(self, model: ChatModel | None) -> BudgetedModel:
        """``model`` (a teacher, a proposer) spending the same budget; None: the student."""
        return self.model if model is None else BudgetedModel(model, self.budget)

    def progress(self, phase: str, done: int, total: int | None) -> None:
        self.on_progress(
            ProgressEvent(
                phase=phase,
                done=done,
                total=total,
                calls=self.budget.used,
                budget=self.budget.max_calls,
                best=self.best_score,
            )
        )

    async def score(
        self,
        program: Program,
        examples: Sequence[Example],
        label: str,
        *,
        full: bool = True,
        key: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> float:
        """Score and log a candidate; a full score may make it the best.

        With ``key``, example scores are remembered, so a candidate seen again (TPE proposes
        repeats) costs no calls for the examples already scored. When the budget runs out
        midway, the candidate is logged without a score and `BudgetExhausted` propagates.
        """
        known = {
            e.id: self._cache[(key, e.id)]
            for e in examples
            if key is not None and (key, e.id) in self._cache
        }
        todo = [e for e in examples if e.id not in known]
        done = [len(known)]
        self.progress(label, done[0], len(examples))

        def on_example(example_id: str, value: float) -> None:
            if key is not None:
                self._cache[(key, example_id)] = value
            done[0] += 1
            self.progress(label, done[0], len(examples))

        record = {
            "index": len(self.candidates),
            "label": label,
            "examples": len(examples),
            "full": full,
            "instructions": {n: p.instructions for n, p in program.predictors.items()},
            "demos": {n: len(p.demos) for n, p in program.predictors.items()},
            "settings": dict(settings or {}),
        }
        try:
            if todo:
                evaluation = await evaluate(
                    program,
                    self.model,
                    todo,
                    self.metric,
                    concurrency=self.concurrency,
                    on_example=on_example,
                )
                known.update(evaluation.scores)
        except BudgetExhausted:
            self.candidates.append(CandidateRecord(**record, score=None, calls=self.budget.used))
            raise
        score = sum(known.values()) / len(examples)
        self.candidates.append(CandidateRecord(**record, score=score, calls=self.budget.used))
        if full and (self.best_score is None or score > self.best_score):
            self.best, self.best_score = program, score
            self.progress(label, done[0], len(examples))
        return score

    def result(self, name: str, settings: dict[str, Any], fallback: Program) -> OptimizationResult:
        return OptimizationResult(
            program=self.best or fallback,
            optimizer=name,
            settings=settings,
            baseline_score=self.baseline_score,
            best_score=self.best_score,
            candidates=self.candidates,
            calls=self.budget.used,
            budget=self.budget.max_calls,
            stopped=self.stopped,
        )


class OptimizerConfig(BaseModel):
    """The hyperparameters every optimizer takes; each optimizer's config adds its own.

    Frozen, and the one place they live: the optimizer reads them from here and the compiled
    file records exactly this (``Optimizer.settings``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    budget: int | None = Field(
        None, ge=1, description="model calls in all, at most; None: no limit"
    )
    seed: int = Field(0, description="seeds sampling, shuffles and the search")
    concurrency: int = Field(4, ge=1, description="model calls in flight at once")


ConfigT = TypeVar("ConfigT", bound=OptimizerConfig)


class Optimizer(Generic[ConfigT]):
    """An optimizer: a metric, its frozen config, and where progress goes."""

    name = "optimizer"

    def __init__(
        self, metric: Metric, config: ConfigT, *, on_progress: ProgressFn | None = None
    ) -> None:
        self.metric = metric
        self.config = config
        self.on_progress = on_progress

    def settings(self) -> dict[str, Any]:
        """What configured this run, for the compiled file."""
        return self.config.model_dump(mode="json")

    def session(self, model: ChatModel) -> Session:
        return Session(
            model,
            self.metric,
            budget=self.config.budget,
            concurrency=self.config.concurrency,
            on_progress=self.on_progress,
        )


def check_sets(
    trainset: Sequence[Example], valset: Sequence[Example] | None, needs_val: bool
) -> None:
    """One-line errors for empty or overlapping example sets."""
    if not trainset:
        raise ConfigError("the training set is empty; give at least one example")
    if needs_val and not valset:
        raise ConfigError("this optimizer scores candidates on a validation set; give one")
    ids = [e.id for e in trainset]
    if len(set(ids)) != len(ids):
        raise ConfigError("training example ids repeat; each example needs its own id")
