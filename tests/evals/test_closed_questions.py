"""Closed questions as VQA-RAD asks them: yes/no and "A or B?" in one task, one metric.

Cases: the alternatives parsed from two-way, comma-list and "what is denser, A or B"
questions (and none from questions without "or"); which alternative an answer names (none when
it names two); ``score_item`` and ``summarize`` for the ``closed`` metric; the VQA-RAD loader
giving every CLOSED question that metric, so no task mixes two.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medagent.evals import EvalItem, ItemResult, load_vqarad, score_item, summarize
from medagent.evals._choices import closed_choices, parse_choices, pick_choice


@pytest.mark.parametrize(
    ("question", "choices"),
    [
        ("Is the trachea deviated to the right or left?", ["right", "left"]),
        ("Is this an AP or PA film?", ["ap", "pa"]),
        ("Was this MRI taken with or without contrast?", ["with", "without"]),
        ("Is this a T1 weighted, T2 weighted, or FLAIR image?", ["t1", "t2", "flair"]),
        ("What is denser, the lesion or the surrounding tissue?", ["lesion", "surrounding"]),
        ("Which is highlighted in this image, white or gray matter?", ["white", "gray"]),
        ("Was this a contrast CT or a non-contrast CT?", ["contrast", "noncontrast"]),
        (
            "Is the primary abnormality more or less dense than surrounding matter?",
            ["more", "less"],
        ),
        ("Is there a pneumothorax?", None),
        ("Is this an infectious process?", None),
        ("Is it left or left?", None),  # nothing tells the alternatives apart
    ],
)
def test_parse_choices(question: str, choices: list[str] | None) -> None:
    assert parse_choices(question) == choices


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("Left", "left"),
        ("The trachea is deviated to the left.", "left"),
        ("left or right, hard to say", None),  # two alternatives: none
        ("midline", None),
        ("leftward", None),  # whole words only
        (None, None),
    ],
)
def test_pick_choice_names_one_alternative_or_none(text: str | None, named: str | None) -> None:
    assert pick_choice(text, ["right", "left"]) == named


def test_choices_given_in_metadata_win_over_the_wording() -> None:
    choices = closed_choices("Which is it?", {"choices": ["Gray matter", "White matter"]})
    assert choices == ["gray matter", "white matter"]
    assert pick_choice("It is the white matter.", choices) == "white matter"
    assert closed_choices("Is it X or Y?", {"choices": ["", "x"]}) == ["x", "y"]  # unusable


def closed(question: str, answer: str) -> EvalItem:
    return EvalItem(id="c", task="ABD/CLOSED", question=question, answer=answer, metric="closed")


@pytest.mark.parametrize(
    ("question", "answer", "prediction", "correct"),
    [
        ("Is there free air?", "yes", "Yes, under the diaphragm.", True),
        ("Is there free air?", "yes", "no", False),
        ("Is the trachea deviated to the right or left?", "left", "To the left.", True),
        ("Is the trachea deviated to the right or left?", "left", "right", False),
        ("Is the trachea deviated to the right or left?", "left", "left or right", False),
        ("Is the trachea deviated to the right or left?", "left", None, False),
        ("Was oral or IV contrast used?", "both", "Both.", True),  # neither: normalized match
        ("Was oral or IV contrast used?", "both", "oral", False),
        ("Do you expect plaques elsewhere?", "maybe", "maybe", True),
    ],
)
def test_score_item_for_closed_questions(
    question: str, answer: str, prediction: str | None, correct: bool
) -> None:
    assert score_item(closed(question, answer), prediction) == (correct, None)


def test_summarize_scores_yes_no_and_choice_questions_as_one_task() -> None:
    questions = {
        "1": ("Is there free air?", "yes", "yes"),
        "2": ("Is the lesion on the left or right?", "right", "On the right side."),
        "3": ("Is the lesion on the left or right?", "left", "right"),
        "4": ("Was oral or IV contrast used?", "both", "both"),
    }
    items = {
        key: EvalItem(id=key, task="ABD/CLOSED", question=q, answer=a, metric="closed")
        for key, (q, a, _) in questions.items()
    }
    results = [
        ItemResult(id=key, task="ABD/CLOSED", status="ok", config_hash="h", prediction=p)
        for key, (_, _, p) in questions.items()
    ]
    summary = summarize(results, items, bootstrap_replicates=20)
    task = summary.tasks["ABD/CLOSED"]
    assert (task.metric, task.score_name, task.n_scored) == ("closed", "accuracy", 4)
    assert task.score == pytest.approx(3 / 4)
    assert task.confusion is not None
    assert set(task.confusion.labels) >= {"yes", "left", "right", "both"}


def test_summarize_rescores_closed_results_from_their_recorded_choices() -> None:
    # A report knows no questions: the runner keeps each closed item's choices with its result.
    result = ItemResult(
        id="1",
        task="t",
        status="ok",
        config_hash="h",
        prediction="the left one",
        reference="left",
        metadata={"metric": "closed", "choices": ["left", "right"]},
    )
    item = EvalItem(id="1", task="t", question="", answer="left", metric="closed", metadata={})
    summary = summarize([result], {"1": item}, bootstrap_replicates=0)
    assert summary.tasks["t"].score == 1.0


def test_vqarad_gives_every_closed_question_one_metric(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").touch()
    base = {"image_name": "a.jpg", "image_organ": "ABD"}
    records = [
        {
            **base,
            "qid": 1,
            "question": "Is there ascites?",
            "answer": "No",
            "answer_type": "CLOSED",
        },
        {**base, "qid": 2, "question": "Left or right?", "answer": "Left", "answer_type": "CLOSED"},
        {**base, "qid": 3, "question": "What organ?", "answer": "Liver", "answer_type": "OPEN"},
    ]
    (tmp_path / "testset.json").write_text(json.dumps(records))
    metrics = {item.id: (item.task, item.metric) for item in load_vqarad(tmp_path).items}
    assert metrics == {
        "1": ("ABD/CLOSED", "closed"),
        "2": ("ABD/CLOSED", "closed"),
        "3": ("ABD/OPEN", "open"),
    }
