"""``InstructionSearch``: propose instructions with a model, then search (instruction, demo set)
per predictor with optuna's TPE sampler (MIPRO-like).

1. Demo sets per predictor, built as ``RandomSearch`` builds its candidates (set 0 is none).
2. Instruction candidates per predictor: the current instructions, plus proposals from a model
   given a summary of the data (itself asked of the model), the program's description, the
   step's fields, example demos and a tip drawn at random.
3. Trials: TPE picks an instruction and a demo set for every predictor; the program is scored
   on a random minibatch of the validation set. Every ``full_eval_every`` trials, the
   combination with the best mean minibatch score so far is scored on the whole validation
   set. The best fully scored program wins (the zero-shot program is scored first).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from medagent.errors import DependencyMissingError
from medagent.models import ChatModel, Message, Structured, generate_structured
from medagent.prompts._bootstrap import zero_shot
from medagent.prompts._modules import Demo, Example, Predict
from medagent.prompts._optimizer import (
    BudgetedModel,
    BudgetExhausted,
    Metric,
    OptimizationResult,
    Optimizer,
    OptimizerConfig,
    ProgressFn,
    Session,
    check_sets,
)
from medagent.prompts._program import Program
from medagent.prompts._random_search import demo_candidates
from medagent.prompts._templates import load_template

__all__ = [
    "DatasetSummary",
    "InstructionProposal",
    "InstructionSearch",
    "InstructionSearchConfig",
    "load_optuna",
]

_SHOWN_EXAMPLES = 8
_SHOWN_DEMOS = 3


class DatasetSummary(BaseModel):
    """The proposer's description of the training data."""

    summary: str = Field(min_length=1, max_length=2000)


class InstructionProposal(BaseModel):
    """One proposed instruction."""

    instruction: str = Field(min_length=1, max_length=4000)


def load_optuna() -> Any:
    """optuna, imported only when instruction search runs (it is the ``optimize`` extra)."""
    try:
        import optuna
    except ImportError:
        raise DependencyMissingError(
            "optuna", "optimize", "the instruction-search optimizer"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _image_fields(program: Program) -> set[str]:
    return {f.name for p in program.predictors.values() for f in p.signature.inputs if f.is_image}


def _describe(values: dict[str, Any], images: set[str]) -> str:
    """Inputs or outputs as text for the proposer: images are counted, not sent."""
    parts = []
    for key, value in values.items():
        if value is None:
            continue
        if key in images:
            count = len(value) if isinstance(value, list | tuple) else 1
            parts.append(f"{key}: [{count} image(s)]")
        elif isinstance(value, list | tuple):
            parts.append(f"{key}: {'; '.join(str(v) for v in value)}")
        else:
            parts.append(f"{key}: {value}")
    return "\n".join(parts)


def _demo_text(demos: Sequence[Demo], images: set[str]) -> str:
    if not demos:
        return "(none)"
    return "\n\n".join(
        f"Example {i}:\n{_describe(d.inputs, images)}\n"
        + (f"reasoning: {d.reasoning}\n" if d.reasoning else "")
        + f"answer: {json.dumps(d.outputs, ensure_ascii=False)}"
        for i, d in enumerate(demos[:_SHOWN_DEMOS], start=1)
    )


class InstructionSearchConfig(OptimizerConfig):
    """``InstructionSearch``'s hyperparameters."""

    num_instructions: int = Field(5, ge=1, description="per predictor, the current one included")
    num_demo_sets: int = Field(5, ge=1, description="demo sets, zero-shot included")
    num_trials: int = Field(20, ge=1, description="TPE trials")
    minibatch_size: int = Field(25, ge=1, description="validation examples per trial")
    full_eval_every: int = Field(5, ge=1, description="trials between full evaluations")
    max_bootstrapped_demos: int = Field(4, ge=0, description="teacher-made demos per predictor")
    max_labeled_demos: int = Field(4, ge=0, description="demos in all; labeled ones fill up")
    metric_threshold: float | None = Field(
        None, description="a teacher run succeeds at this score or more; None: above 0"
    )


class InstructionSearch(Optimizer[InstructionSearchConfig]):
    """Instructions proposed by a model and demo sets, searched together with TPE.

    ``num_instructions`` candidates per predictor (the current one included), ``num_demo_sets``
    demo sets (zero-shot included), ``num_trials`` minibatch trials of ``minibatch_size``
    validation examples, a full evaluation every ``full_eval_every`` trials. ``prompt_model``
    proposes (default: the model being optimized). Needs ``pip install 'medagent[optimize]'``.
    """

    name = "instruction-search"

    def __init__(
        self,
        metric: Metric,
        config: InstructionSearchConfig | None = None,
        *,
        on_progress: ProgressFn | None = None,
    ) -> None:
        super().__init__(metric, config or InstructionSearchConfig(), on_progress=on_progress)

    # -- proposals -------------------------------------------------------------------------
    async def _summary(
        self,
        proposer: BudgetedModel,
        program: Program,
        trainset: Sequence[Example],
        rng: random.Random,
    ) -> str:
        shown = rng.sample(list(trainset), min(_SHOWN_EXAMPLES, len(trainset)))
        images = _image_fields(program)
        examples = "\n\n".join(
            f"Example {i}:\n{_describe(e.inputs, images)}\nanswer: {json.dumps(e.outputs)}"
            for i, e in enumerate(shown, start=1)
        )
        prompt = load_template("optimize/summarize").render(examples=examples)
        result = await generate_structured(proposer, [Message.user(prompt)], DatasetSummary)
        return result.value.summary if isinstance(result, Structured) else "(not available)"

    async def _propose(
        self,
        session: Session,
        proposer: BudgetedModel,
        program: Program,
        name: str,
        predictor: Predict,
        demo_sets: list[list[Demo]],
        summary: str,
        rng: random.Random,
    ) -> list[str]:
        tips = [t.strip() for t in load_template("optimize/tips").text.splitlines() if t.strip()]
        signature = predictor.signature
        found = [predictor.instructions]
        for index in range(self.config.num_instructions - 1):
            demos = demo_sets[1 + index % (len(demo_sets) - 1)] if len(demo_sets) > 1 else []
            prompt = load_template("optimize/propose").render(
                program=program.description or program.name,
                step=name,
                task=signature.description or signature.name,
                inputs=", ".join(
                    f"{f.name} ({predictor.input_descriptions.get(f.name) or f.kind})"
                    for f in signature.inputs
                ),
                outputs=", ".join(
                    f"{n} ({predictor.output_descriptions.get(n) or 'see instructions'})"
                    for n in signature.output_fields
                ),
                summary=summary,
                current=predictor.instructions,
                demos=_demo_text(demos, _image_fields(program)),
                tip=rng.choice(tips),
            )
            result = await generate_structured(
                proposer, [Message.user(prompt)], InstructionProposal
            )
            session.progress(
                f"proposing instructions ({name})", index + 1, self.config.num_instructions - 1
            )
            if isinstance(result, Structured):
                text = result.value.instruction.strip()
                if text and text not in found:
                    found.append(text)
        return found

    # -- search ----------------------------------------------------------------------------
    async def compile(
        self,
        program: Program,
        *,
        model: ChatModel,
        trainset: Sequence[Example],
        valset: Sequence[Example],
        teacher: ChatModel | None = None,
        prompt_model: ChatModel | None = None,
    ) -> OptimizationResult:
        """The best program scored on the whole of ``valset``."""
        check_sets(trainset, valset, needs_val=True)
        optuna = load_optuna()
        session = self.session(model)
        rng = random.Random(self.config.seed)
        names = list(program.predictors)
        instructions: dict[str, list[str]] = {}
        demo_sets: dict[str, list[list[Demo]]] = {n: [] for n in names}
        try:
            session.baseline_score = await session.score(
                zero_shot(program), valset, "zero-shot", key="i0-d0" * len(names)
            )
            async for _, built in demo_candidates(
                session,
                program,
                trainset,
                count=self.config.num_demo_sets,
                teacher=teacher,
                max_bootstrapped_demos=self.config.max_bootstrapped_demos,
                max_labeled_demos=self.config.max_labeled_demos,
                max_rounds=1,
                metric=self.metric,
                metric_threshold=self.config.metric_threshold,
                teacher_temperature=1.0,
                seed=self.config.seed,
            ):
                for name in names:
                    demo_sets[name].append(built.predictors[name].demos)
            if session.stopped is not None:
                return session.result(self.name, self.settings(), zero_shot(program))
            proposer = session.wrap(prompt_model)
            summary = await self._summary(proposer, program, trainset, rng)
            for name in names:
                instructions[name] = await self._propose(
                    session,
                    proposer,
                    program,
                    name,
                    program.predictors[name],
                    demo_sets[name],
                    summary,
                    rng,
                )
            await self._search(optuna, session, program, valset, instructions, demo_sets, rng)
        except BudgetExhausted:
            session.stopped = "budget"
        return session.result(self.name, self.settings(), zero_shot(program))

    async def _search(
        self,
        optuna: Any,
        session: Session,
        program: Program,
        valset: Sequence[Example],
        instructions: dict[str, list[str]],
        demo_sets: dict[str, list[list[Demo]]],
        rng: random.Random,
    ) -> None:
        names = list(program.predictors)
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.config.seed)
        )
        # The zero-shot program is the first trial, with its full score.
        study.enqueue_trial({f"{n}.{k}": 0 for n in names for k in ("instruction", "demos")})
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        choices: dict[str, dict[str, tuple[int, int]]] = {}
        fully: set[str] = set()

        def build(choice: dict[str, tuple[int, int]]) -> Program:
            candidate = program.clone()
            for name, (i, d) in choice.items():
                candidate.predictors[name].instructions = instructions[name][i]
                candidate.predictors[name].demos = list(demo_sets[name][d])
            return candidate

        def key_of(choice: dict[str, tuple[int, int]]) -> str:
            return "".join(f"i{i}-d{d}" for i, d in choice.values())

        first = True
        for number in range(1, self.config.num_trials + 1):
            trial = study.ask()
            choice = {
                name: (
                    trial.suggest_categorical(
                        f"{name}.instruction", list(range(len(instructions[name])))
                    ),
                    trial.suggest_categorical(f"{name}.demos", list(range(len(demo_sets[name])))),
                )
                for name in names
            }
            key = key_of(choice)
            choices[key] = choice
            if first:
                # Already scored on the whole validation set: tell TPE, spend nothing.
                first = False
                fully.add(key)
                study.tell(trial, session.baseline_score)
                continue
            batch = (
                list(valset)
                if self.config.minibatch_size >= len(valset)
                else rng.sample(list(valset), self.config.minibatch_size)
            )
            full = len(batch) == len(valset)
            score = await session.score(
                build(choice),
                batch,
                f"trial {number}",
                full=full,
                key=key,
                settings={"choice": {n: list(c) for n, c in choice.items()}},
            )
            study.tell(trial, score)
            sums[key] = sums.get(key, 0.0) + (score or 0.0)
            counts[key] = counts.get(key, 0) + 1
            if full:
                fully.add(key)
            if number % self.config.full_eval_every == 0 or number == self.config.num_trials:
                waiting = [k for k in sums if k not in fully]
                if waiting:
                    best = max(waiting, key=lambda k: sums[k] / counts[k])
                    fully.add(best)
                    await session.score(
                        build(choices[best]),
                        valset,
                        f"full evaluation after trial {number}",
                        key=best,
                        settings={"choice": {n: list(c) for n, c in choices[best].items()}},
                    )
