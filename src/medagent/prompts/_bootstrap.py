"""``BootstrapFewShot``: a teacher's successful runs on training examples become demos.

The teacher (the program itself with labeled demos, unless one is given) runs each training
example with tracing; when the metric accepts its answer, every predictor call it made becomes
a demo for that predictor. Examples that fail are retried in later rounds at a higher
temperature. Labeled examples (inputs and reference outputs) fill the remaining demo slots.
A teacher never sees the example it is answering among its own demos.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

from pydantic import Field

from medagent.models import ChatModel
from medagent.prompts._modules import Demo, Example, Predict, tracing
from medagent.prompts._optimizer import (
    BudgetedModel,
    BudgetExhausted,
    Metric,
    OptimizationResult,
    Optimizer,
    OptimizerConfig,
    ProgressFn,
    Session,
    _run_bounded,
    check_sets,
)
from medagent.prompts._program import Program

__all__ = ["BootstrapConfig", "BootstrapFewShot", "bootstrap_program", "labeled_demos", "zero_shot"]


def zero_shot(program: Program) -> Program:
    """A copy of ``program`` without demos: what every optimizer compares against."""
    bare = program.clone()
    for predictor in bare.predictors.values():
        predictor.demos = []
    return bare


def _fits(predictor: Predict, example: Example) -> bool:
    """Whether ``example`` has every input and output field ``predictor`` needs for a demo."""
    signature = predictor.signature
    needed = [f.name for f in signature.inputs if not f.optional]
    return all(example.inputs.get(n) is not None for n in needed) and all(
        n in example.outputs for n in signature.output_fields
    )


def labeled_demo(predictor: Predict, example: Example) -> Demo:
    names = {f.name for f in predictor.signature.inputs}
    return Demo(
        inputs={k: v for k, v in example.inputs.items() if k in names and v is not None},
        outputs={k: example.outputs[k] for k in predictor.signature.output_fields},
        source="labeled",
        example_id=example.id,
    )


def labeled_demos(
    predictor: Predict, examples: Sequence[Example], k: int, rng: random.Random | None
) -> list[Demo]:
    """Up to ``k`` examples as labeled demos; sampled with ``rng``, else the first ones."""
    fitting = [e for e in examples if _fits(predictor, e)]
    chosen = rng.sample(fitting, min(k, len(fitting))) if rng else fitting[:k]
    return [labeled_demo(predictor, e) for e in chosen]


def _success(score: float, threshold: float | None) -> bool:
    return score >= threshold if threshold is not None else score > 0


async def bootstrap_program(
    session: Session,
    student: Program,
    trainset: Sequence[Example],
    *,
    teacher_model: BudgetedModel,
    teacher_program: Program | None,
    max_bootstrapped_demos: int,
    max_labeled_demos: int,
    max_rounds: int,
    metric: Metric,
    metric_threshold: float | None,
    temperature: float,
    rng: random.Random,
    phase: str = "bootstrap",
) -> Program:
    """``student`` with bootstrapped demos, then labeled ones up to ``max_labeled_demos``.

    Stops early, keeping what it has, when the budget runs out.
    """
    teacher = (teacher_program or student).clone()
    if teacher_program is None:
        for predictor in teacher.predictors.values():
            predictor.demos = labeled_demos(predictor, trainset, max_labeled_demos, rng)
    found: dict[str, list[Demo]] = {name: [] for name in student.predictors}
    done: set[str] = set()
    attempted = 0
    total = len(trainset) * max_rounds

    async def attempt(example: Example, model: BudgetedModel) -> list[tuple[str, Demo]] | None:
        own = teacher.clone()
        for predictor in own.predictors.values():
            predictor.demos = [d for d in predictor.demos if d.example_id != example.id]
        names = {id(p): n for n, p in own.predictors.items()}
        with tracing() as trace:
            prediction = await own.forward(model, example.inputs)
        if not prediction.ok or not _success(metric(example, prediction), metric_threshold):
            return None
        return [
            (
                names[id(entry.predictor)],
                Demo(
                    inputs=entry.inputs,
                    outputs=entry.prediction.outputs,
                    reasoning=entry.prediction.reasoning,
                    source="bootstrapped",
                    example_id=example.id,
                ),
            )
            for entry in trace
            if id(entry.predictor) in names
        ]

    try:
        for round_index in range(max_rounds):
            # Round 0 samples as configured; later rounds retry failures with more randomness.
            model = (
                teacher_model
                if round_index == 0
                else teacher_model.sampling(temperature=temperature, seed=rng.randrange(2**31))
            )
            pending = [e for e in trainset if e.id not in done]
            while pending and len(done) < max_bootstrapped_demos:
                # No more attempts at once than demos still wanted: no calls wasted at the end.
                size = min(session.concurrency, max_bootstrapped_demos - len(done))
                chunk, pending = pending[:size], pending[size:]
                outcomes = await _run_bounded(
                    [functools.partial(attempt, e, model) for e in chunk], session.concurrency
                )
                for example, demos in zip(chunk, outcomes, strict=True):
                    if demos is not None and len(done) < max_bootstrapped_demos:
                        done.add(example.id)
                        for name, demo in demos:
                            found[name].append(demo)
                attempted += len(chunk)
                session.progress(phase, attempted, total)
    except BudgetExhausted:
        session.stopped = "budget"
    program = student.clone()
    rest = [e for e in trainset if e.id not in done]
    for name, predictor in program.predictors.items():
        demos = found[name][:max_bootstrapped_demos]
        room = max(0, max_labeled_demos - len(demos))
        predictor.demos = demos + labeled_demos(predictor, rest, room, rng)
    return program


class BootstrapConfig(OptimizerConfig):
    """``BootstrapFewShot``'s hyperparameters (``RandomSearch`` builds its demos with them too)."""

    max_bootstrapped_demos: int = Field(4, ge=0, description="teacher-made demos per predictor")
    max_labeled_demos: int = Field(16, ge=0, description="demos in all; labeled ones fill up")
    max_rounds: int = Field(1, ge=1, description="attempts per training example")
    metric_threshold: float | None = Field(
        None, description="a teacher run succeeds at this score or more; None: above 0"
    )
    teacher_temperature: float = Field(1.0, ge=0, description="sampling after the first round")


class BootstrapFewShot(Optimizer[BootstrapConfig]):
    """Demos from a teacher's successful runs, topped up with labeled examples.

    ``max_rounds`` attempts per example (rounds after the first sample at
    ``teacher_temperature``); success is ``metric >= metric_threshold`` (default: above 0).
    With a validation set, the zero-shot and compiled programs are both scored for the report.
    """

    name = "bootstrap"

    def __init__(
        self,
        metric: Metric,
        config: BootstrapConfig | None = None,
        *,
        on_progress: ProgressFn | None = None,
    ) -> None:
        super().__init__(metric, config or BootstrapConfig(), on_progress=on_progress)

    async def compile(
        self,
        program: Program,
        *,
        model: ChatModel,
        trainset: Sequence[Example],
        valset: Sequence[Example] | None = None,
        teacher: ChatModel | None = None,
        teacher_program: Program | None = None,
    ) -> OptimizationResult:
        """The program with demos; ``teacher`` (a stronger model) defaults to ``model``."""
        check_sets(trainset, valset, needs_val=False)
        session = self.session(model)
        rng = random.Random(self.config.seed)
        try:
            if valset:
                session.baseline_score = await session.score(
                    zero_shot(program), valset, "zero-shot"
                )
        except BudgetExhausted:
            session.stopped = "budget"
            return session.result(self.name, self.settings(), zero_shot(program))
        compiled = await bootstrap_program(
            session,
            program,
            trainset,
            teacher_model=session.wrap(teacher),
            teacher_program=teacher_program,
            max_bootstrapped_demos=self.config.max_bootstrapped_demos,
            max_labeled_demos=self.config.max_labeled_demos,
            max_rounds=self.config.max_rounds,
            metric=self.metric,
            metric_threshold=self.config.metric_threshold,
            temperature=self.config.teacher_temperature,
            rng=rng,
        )
        if valset and session.stopped is None:
            try:
                await session.score(compiled, valset, "bootstrap")
            except BudgetExhausted:
                session.stopped = "budget"
        result = session.result(self.name, self.settings(), compiled)
        # Bootstrapping is the method: its program is the result, scored or not.
        scores = [c.score for c in session.candidates if c.label == "bootstrap"]
        return result.model_copy(
            update={"program": compiled, "best_score": scores[0] if scores else None}
        )
