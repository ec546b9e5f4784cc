"""Each optimizer finds the prompt that makes a keyword-conditional model right, within budget.

The student model (a scripted test double) answers right only when a keyword is in its prompt,
so zero-shot scores 0 and an optimizer that does nothing cannot score higher.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prompt_support import (
    KEYWORD,
    asked_number,
    keyword_model,
    oracle_model,
)
from pydantic import ValidationError

from medagent.errors import DependencyMissingError
from medagent.evals import vqa_metric
from medagent.models import RecordedRequest
from medagent.prompts import (
    BootstrapConfig,
    BootstrapFewShot,
    Example,
    InstructionSearch,
    InstructionSearchConfig,
    OptimizerConfig,
    ProgressEvent,
    RandomSearch,
    RandomSearchConfig,
    vqa_program,
)

Examples = Callable[..., list[Example]]


async def test_bootstrap_turns_teacher_successes_into_demos(examples: Examples) -> None:
    trainset, valset = examples([1, 2, 3, 4]), examples([10, 11, 12])
    student, teacher = keyword_model(), oracle_model()
    events: list[ProgressEvent] = []
    optimizer = BootstrapFewShot(
        vqa_metric,
        BootstrapConfig(max_bootstrapped_demos=2, max_labeled_demos=2),
        on_progress=events.append,
    )
    result = await optimizer.compile(
        vqa_program("cot"), model=student, trainset=trainset, valset=valset, teacher=teacher
    )
    assert result.baseline_score == 0.0
    assert result.best_score == 1.0 > result.baseline_score
    demos = result.program.predictor("answer").demos
    assert [d.source for d in demos] == ["bootstrapped", "bootstrapped"]
    assert [d.example_id for d in demos] == ["q1", "q2"]
    # Traced inputs and outputs, the teacher's reasoning included.
    assert demos[0].outputs == {"answer": "finding 1 answer"}
    assert demos[0].reasoning is not None and KEYWORD in demos[0].reasoning
    assert len(demos[0].inputs["images"]) == 1
    assert len(teacher.requests) == 2  # stopped once it had enough demos
    assert [c.label for c in result.candidates] == ["zero-shot", "bootstrap"]
    assert {e.phase for e in events} >= {"zero-shot", "bootstrap"}


async def test_bootstrap_retries_failures_at_a_higher_temperature(examples: Examples) -> None:
    trainset, valset = examples([1, 2]), examples([10, 11])
    for rounds, expected in ((1, 0.0), (2, 1.0)):
        teacher = oracle_model(min_temperature=0.5)  # wrong when greedy
        result = await BootstrapFewShot(
            vqa_metric,
            BootstrapConfig(max_bootstrapped_demos=2, max_labeled_demos=0, max_rounds=rounds),
        ).compile(
            vqa_program("cot"),
            model=keyword_model(),
            trainset=trainset,
            valset=valset,
            teacher=teacher,
        )
        assert result.best_score == expected, rounds
        temperatures = [r.params.temperature for r in teacher.requests]
        assert temperatures == [0.0, 0.0] + [1.0, 1.0] * (rounds - 1)


async def test_teacher_never_sees_the_example_it_answers(examples: Examples) -> None:
    # Labeled demos fill the teacher's prompt; the keyword sits in example 1's question only.
    trainset = examples([1, 2, 3, 4], keyword_in={1})
    student = keyword_model()
    result = await BootstrapFewShot(
        vqa_metric, BootstrapConfig(max_bootstrapped_demos=4, max_labeled_demos=4)
    ).compile(vqa_program(), model=student, trainset=trainset)
    for request in student.requests:
        asked = asked_number(request)
        demo_turns = [m.text for m in request.messages[:-1] if m.role == "user"]
        assert len(demo_turns) == 3
        assert all(f"finding {asked}?" not in text for text in demo_turns)
    demos = result.program.predictor("answer").demos
    assert sorted(d.example_id or "" for d in demos) == ["q1", "q2", "q3", "q4"]


async def test_random_search_keeps_the_best_candidate_and_reports_all(
    examples: Examples,
) -> None:
    trainset = examples([1, 2, 3, 4, 5, 6], keyword_in={4})
    valset = examples([10, 11, 12, 13])
    config = RandomSearchConfig(
        num_candidates=6, max_bootstrapped_demos=2, max_labeled_demos=3, seed=1
    )
    result = await RandomSearch(vqa_metric, config).compile(
        vqa_program(), model=keyword_model(), trainset=trainset, valset=valset
    )
    labels = [c.label for c in result.candidates]
    assert labels[:3] == ["zero-shot", "labeled", "bootstrap"]
    assert len(labels) == 6 and all(c.full and c.score is not None for c in result.candidates)
    assert result.baseline_score == 0.0
    assert result.best_score == 1.0 > result.baseline_score
    best = max(result.candidates, key=lambda c: c.score or 0.0)
    assert result.best_score == best.score
    demos = result.program.predictor("answer").demos
    assert any(KEYWORD in d.inputs["question"] for d in demos)


def proposer(instructions: list[str]) -> Callable[[RecordedRequest], dict[str, Any]]:
    """Answers the data summary, then each instruction proposal in turn."""
    queue = list(instructions)

    def respond(request: RecordedRequest) -> dict[str, Any]:
        if request.schema_name == "DatasetSummary":
            return {"json": {"summary": "SUMMARY: radiology questions with short answers."}}
        assert request.schema_name == "InstructionProposal"
        return {"json": {"instruction": queue.pop(0)}}

    return respond


async def test_instruction_search_finds_the_instruction_that_works(examples: Examples) -> None:
    trainset, valset = examples([1, 2, 3, 4]), examples([10, 11, 12, 13, 14, 15])
    model = keyword_model(
        other=proposer(["Answer briefly.", f"Apply the {KEYWORD} rule, then answer."])
    )
    config = InstructionSearchConfig(
        num_instructions=3,
        num_demo_sets=2,
        num_trials=10,
        minibatch_size=3,
        full_eval_every=2,
        max_bootstrapped_demos=1,
        max_labeled_demos=2,
    )
    result = await InstructionSearch(vqa_metric, config).compile(
        vqa_program(), model=model, trainset=trainset, valset=valset
    )
    assert result.baseline_score == 0.0
    assert result.best_score == 1.0 > result.baseline_score
    assert KEYWORD in result.program.predictor("answer").instructions
    minibatches = [c for c in result.candidates if not c.full]
    assert minibatches and all(c.examples == 3 for c in minibatches)
    assert any(c.full and c.label.startswith("full evaluation") for c in result.candidates)
    # The proposer saw the data summary, the program's description, demos and a tip.
    proposals = [r for r in model.requests if r.schema_name == "InstructionProposal"]
    assert len(proposals) == 2
    text = proposals[0].messages[-1].text
    assert "SUMMARY: radiology questions" in text
    assert "Answers a question about medical images" in text
    assert "Example 1:" in text and "Tip: " in text


@pytest.mark.parametrize(
    ("name", "budget"), [("bootstrap", 10), ("random-search", 6), ("instruction-search", 8)]
)
async def test_budget_is_never_exceeded(name: str, budget: int, examples: Examples) -> None:
    # Budgets chosen to run out while a candidate is being scored (4 validation examples).
    trainset, valset = examples([1, 2, 3, 4]), examples([10, 11, 12, 13])
    model = keyword_model(other=proposer(["a", "b", "c", "d"]))
    common: dict[str, Any] = {"budget": budget, "concurrency": 3}
    if name == "bootstrap":
        result = await BootstrapFewShot(vqa_metric, BootstrapConfig(**common)).compile(
            vqa_program(), model=model, trainset=trainset, valset=valset
        )
    elif name == "random-search":
        result = await RandomSearch(vqa_metric, RandomSearchConfig(**common)).compile(
            vqa_program(), model=model, trainset=trainset, valset=valset
        )
    else:
        config = InstructionSearchConfig(
            num_instructions=2, num_demo_sets=1, num_trials=5, **common
        )
        result = await InstructionSearch(vqa_metric, config).compile(
            vqa_program(), model=model, trainset=trainset, valset=valset
        )
    assert len(model.requests) == result.calls == budget
    assert result.stopped == "budget"
    assert result.candidates[0].label == "zero-shot" and result.candidates[0].score == 0.0
    assert len(result.candidates) == 2
    assert result.candidates[-1].score is None  # the candidate the budget ran out on
    assert result.best_score == (0.0 if name != "bootstrap" else None)


async def test_instruction_search_without_optuna_says_how_to_install(
    examples: Examples, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_optuna(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "optuna" or name.startswith("optuna."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    with pytest.raises(DependencyMissingError, match=r"pip install 'medagent\[optimize\]'"):
        await InstructionSearch(vqa_metric).compile(
            vqa_program(), model=keyword_model(), trainset=examples([1]), valset=examples([2])
        )


@pytest.mark.parametrize(
    ("optimizer", "config"),
    [
        (BootstrapFewShot, BootstrapConfig(max_labeled_demos=0, metric_threshold=0.5, seed=3)),
        (RandomSearch, RandomSearchConfig(num_candidates=3, teacher_temperature=0.7, budget=9)),
        (InstructionSearch, InstructionSearchConfig(num_instructions=2, num_trials=2, seed=5)),
    ],
)
async def test_recorded_settings_are_the_config(
    optimizer: type[BootstrapFewShot | RandomSearch | InstructionSearch],
    config: OptimizerConfig,
    examples: Examples,
    tmp_path: Path,
) -> None:
    """What the compiled file says configured the run is exactly the config, every field."""
    built = optimizer(vqa_metric, config)  # type: ignore[arg-type]
    assert built.settings() == config.model_dump(mode="json")
    assert set(built.settings()) == set(type(config).model_fields)
    model = keyword_model(other=proposer(["a", "b"]))
    result = await built.compile(
        vqa_program(), model=model, trainset=examples([1, 2]), valset=examples([10])
    )
    assert result.settings == config.model_dump(mode="json")
    saved = result.save(tmp_path / "program.json")
    assert saved.optimizer == {"name": optimizer.name, "settings": result.settings}


def test_config_is_frozen_and_checked() -> None:
    config = RandomSearchConfig()
    with pytest.raises(ValidationError):
        config.num_candidates = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="num_candidates"):
        RandomSearchConfig(num_candidates=0)
    with pytest.raises(ValidationError, match="maxrounds"):
        BootstrapConfig(maxrounds=2)  # type: ignore[call-arg]
