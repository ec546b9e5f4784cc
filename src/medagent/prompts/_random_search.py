"""``RandomSearch``: several few-shot programs, each scored on the validation set; the best wins.

The candidates, in order: zero-shot; labeled demos only; bootstrapped demos from the training
set as given; then bootstrapped demos from seeded shuffles of it, each with a random number of
demos (1 to ``max_bootstrapped_demos``). Every candidate's score is logged; ties keep the
earlier (simpler) one.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence

from pydantic import Field

from medagent.models import ChatModel
from medagent.prompts._bootstrap import BootstrapConfig, bootstrap_program, labeled_demos, zero_shot
from medagent.prompts._modules import Example
from medagent.prompts._optimizer import (
    BudgetExhausted,
    Metric,
    OptimizationResult,
    Optimizer,
    ProgressFn,
    Session,
    check_sets,
)
from medagent.prompts._program import Program

__all__ = ["RandomSearch", "RandomSearchConfig", "demo_candidates"]


async def demo_candidates(
    session: Session,
    program: Program,
    trainset: Sequence[Example],
    *,
    count: int,
    teacher: ChatModel | None,
    max_bootstrapped_demos: int,
    max_labeled_demos: int,
    max_rounds: int,
    metric: Metric,
    metric_threshold: float | None,
    teacher_temperature: float,
    seed: int,
) -> AsyncIterator[tuple[str, Program]]:
    """Up to ``count`` programs differing in demos, in the order described above, one at a time
    (so each can be scored before the next one spends calls on bootstrapping).

    Ends early when the budget runs out while bootstrapping (``session.stopped`` says so).
    """
    yield "zero-shot", zero_shot(program)
    if count > 1:
        labeled = program.clone()
        rng = random.Random(seed)
        for predictor in labeled.predictors.values():
            predictor.demos = labeled_demos(predictor, trainset, max_labeled_demos, rng)
        yield "labeled", labeled
    for index in range(count - 2):
        examples = list(trainset)
        demos = max_bootstrapped_demos
        label = "bootstrap"
        rng = random.Random(seed + index)
        if index > 0:
            rng.shuffle(examples)
            demos = rng.randint(1, max(1, max_bootstrapped_demos))
            label = f"bootstrap, shuffle {index}, {demos} demos"
        built = await bootstrap_program(
            session,
            program,
            examples,
            teacher_model=session.wrap(teacher),
            teacher_program=None,
            max_bootstrapped_demos=demos,
            max_labeled_demos=max_labeled_demos,
            max_rounds=max_rounds,
            metric=metric,
            metric_threshold=metric_threshold,
            temperature=teacher_temperature,
            rng=rng,
            phase=f"demos for candidate {index + 3}/{count}",
        )
        if session.stopped is not None:
            return
        yield label, built


class RandomSearchConfig(BootstrapConfig):
    """``RandomSearch``'s hyperparameters: bootstrapping's, and how many programs to try."""

    num_candidates: int = Field(10, ge=1, description="programs tried, the fixed three included")


class RandomSearch(Optimizer[RandomSearchConfig]):
    """Bootstrap few-shot with random search over demo sets (``num_candidates`` programs in all,
    the three fixed ones included), scored on the validation set."""

    name = "random-search"

    def __init__(
        self,
        metric: Metric,
        config: RandomSearchConfig | None = None,
        *,
        on_progress: ProgressFn | None = None,
    ) -> None:
        super().__init__(metric, config or RandomSearchConfig(), on_progress=on_progress)

    async def compile(
        self,
        program: Program,
        *,
        model: ChatModel,
        trainset: Sequence[Example],
        valset: Sequence[Example],
        teacher: ChatModel | None = None,
    ) -> OptimizationResult:
        """The best-scoring candidate on ``valset`` (the zero-shot program if none beats it)."""
        check_sets(trainset, valset, needs_val=True)
        session = self.session(model)
        candidates = demo_candidates(
            session,
            program,
            trainset,
            count=self.config.num_candidates,
            teacher=teacher,
            max_bootstrapped_demos=self.config.max_bootstrapped_demos,
            max_labeled_demos=self.config.max_labeled_demos,
            max_rounds=self.config.max_rounds,
            metric=self.metric,
            metric_threshold=self.config.metric_threshold,
            teacher_temperature=self.config.teacher_temperature,
            seed=self.config.seed,
        )
        try:
            async for label, candidate in candidates:
                score = await session.score(candidate, valset, label)
                if label == "zero-shot":
                    session.baseline_score = score
        except BudgetExhausted:
            session.stopped = "budget"
        return session.result(self.name, self.settings(), zero_shot(program))
