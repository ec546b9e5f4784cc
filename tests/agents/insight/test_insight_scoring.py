"""Insight recall, precision, F1 and novelty; the insight method in the eval harness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medagent.agents.insight import InsightConfig, InsightReference, score_insights
from medagent.errors import ConfigError
from medagent.evals import (
    EvalRunner,
    InsightMethod,
    RunConfig,
    insight_matcher,
    load_insight,
    load_results,
    make_method,
    score_item,
    summarize,
)
from medagent.models import ScriptedModel


def verdict(score: int) -> dict[str, Any]:
    return {"json": {"score": score, "reason": f"scored {score}"}}


PREDICTED = [
    "Dense lymphocytic infiltrate at the invasive front.",
    "Central necrosis covers about a third of the tumour.",
    "The slide is stained with H&E.",
]
REFERENCES = [
    InsightReference(text="Lymphocytes crowd the tumour border.", question="Immune cells?"),
    InsightReference(text="There is central necrosis."),
]


async def test_judge_matches_give_recall_precision_f1_and_novelty() -> None:
    # Pairs in order p0r0, p0r1, p1r0, p1r1, p2r0, p2r1; 5 is not a match (above 5 is).
    judge = ScriptedModel([verdict(s) for s in (8, 2, 3, 6, 1, 5)])
    score = await score_insights(
        PREDICTED, REFERENCES, insight_matcher("judge", judge), goal="Characterize the tumour."
    )
    assert score.matched_predictions == [0, 1] and score.matched_references == [0, 1]
    assert score.recall == 1.0
    assert score.precision == pytest.approx(2 / 3)
    assert score.f1 == pytest.approx(0.8)
    assert score.novelty == pytest.approx(1 / 3)  # the stain insight is not in the references
    assert score.unjudged == 0 and len(score.pairs) == 6
    first, second = judge.requests[0].messages[1].text, judge.requests[1].messages[1].text
    assert "Immune cells?" in first and PREDICTED[0] in first and REFERENCES[0].text in first
    assert "Characterize the tumour." in second  # no question of its own: the goal
    assert "insights about the same case" in first  # the insight rubric


async def test_an_unusable_verdict_is_no_match_and_is_counted() -> None:
    judge = ScriptedModel([{"text": "maybe"}] * 3 + [verdict(9)])
    score = await score_insights(PREDICTED[:1], REFERENCES, insight_matcher("judge", judge))
    assert score.unjudged == 1
    assert score.matched_references == [1]
    assert (score.recall, score.precision, score.novelty) == (0.5, 1.0, 0.0)


async def test_the_rouge_matcher_needs_no_model() -> None:
    score = await score_insights(
        ["There is central necrosis.", "Mitoses are frequent."],
        ["There is central necrosis.", "Lymphocytes crowd the border."],
        insight_matcher("rouge"),
    )
    assert score.matched_predictions == [0] and score.matched_references == [0]
    assert (score.recall, score.precision, score.f1, score.novelty) == (0.5, 0.5, 0.5, 0.5)
    assert score.pairs[0].verdict.score == pytest.approx(1.0)


async def test_no_predictions_score_zero_and_references_are_required() -> None:
    score = await score_insights([], ["Anything."], insight_matcher("rouge"))
    assert (score.recall, score.precision, score.f1, score.novelty) == (0, 0, 0, 0)
    with pytest.raises(ConfigError, match="at least one reference"):
        await score_insights(["x"], [], insight_matcher("rouge"))
    with pytest.raises(ConfigError, match="needs a model"):
        insight_matcher("judge")


def test_score_item_reads_the_f1_of_an_insight_prediction() -> None:
    from medagent.evals import EvalItem

    item = EvalItem(id="c", task="insight", question="goal", metric="insight")
    assert score_item(item, json.dumps({"f1": 0.25, "recall": 0.5})) == (None, 0.25)
    assert score_item(item, "not json") == (None, None)
    assert score_item(item, None) == (None, None)


def cases_file(folder: Path, image: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    case = {
        "id": "case-1",
        "goal": "Characterize the tissue.",
        "images": [os.path.relpath(image, folder)],
        "insights": [
            {"text": "Tissue covers most of the image.", "question": "How much tissue?"},
            {"text": "Nuclei are crowded."},
        ],
    }
    path = folder / "cases.jsonl"
    path.write_text(json.dumps(case) + "\n")
    return path


async def test_the_insight_method_runs_the_agent_and_judges_its_insights(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    dataset = load_insight(cases_file(tmp_path / "data", insight_slide))
    model = ScriptedModel(
        [
            replies.roots(2),
            replies.answer("Tissue fills most of the slide."),
            replies.answer("The slide is H&E."),
            replies.summary([1, 2]),
            # The judge: 2 insights x 2 references, in order.
            verdict(9),
            verdict(2),
            verdict(3),
            verdict(1),
        ]
    )
    method = InsightMethod(InsightConfig(roots=2, depth=1))
    config = RunConfig(
        dataset="insight",
        data_path="cases.jsonl",
        dataset_sha256=dataset.source_sha256,
        method="insight",
        method_params=method.params(),
        backend="scripted",
        model="scripted",
    )
    runner = EvalRunner(model, method, config, tmp_path / "run", concurrency=1)
    outcome = await runner.run(dataset.items)

    assert outcome.ok == 1 and model.remaining == 0
    result = load_results(tmp_path / "run" / "results.jsonl")["case-1"]
    assert result.status == "ok" and result.agent_status == "completed"
    assert result.score == pytest.approx(0.5)  # recall 1/2, precision 1/2
    assert json.loads(result.prediction or "")["novelty"] == 0.5
    item_dir = tmp_path / "run" / "items" / "case-1"
    scores = json.loads((item_dir / "insight_scores.json").read_text())
    assert scores["matched_references"] == [0] and len(scores["pairs"]) == 4
    assert (item_dir / "insights.html").exists()
    summary = summarize([result], {i.id: i for i in dataset.items}, bootstrap_replicates=0)
    assert summary.tasks["insight"].score == pytest.approx(0.5)


def test_make_method_builds_the_insight_method() -> None:
    from medagent.agents.giant import GiantConfig

    method = make_method("insight", giant=GiantConfig(seed=4, timeout_s=100))
    assert isinstance(method, InsightMethod)
    assert method.config.seed == 4 and method.config.timeout_s == pytest.approx(80)
    assert method.params()["matcher"] == "judge"


@pytest.mark.slow
def test_eval_run_with_the_insight_dataset_and_method(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    data = cases_file(tmp_path / "data", insight_slide)
    # The CLI's defaults: 3 roots x depth 4 = 12 questions, 9 follow-ups, then the judge.
    script = [replies.roots(3)]
    script += [replies.answer(f"Insight b{b}-d1.") for b in (1, 2, 3)]
    for d in (2, 3, 4):
        script += [replies.follow_up(f"Follow-up b{b}-d{d}?") for b in (1, 2, 3)]
        script += [replies.answer(f"Insight b{b}-d{d}.") for b in (1, 2, 3)]
    script.append(replies.summary(list(range(1, 13))))
    script += [verdict(7 if i == 0 else 2) for i in range(12 * 2)]
    (tmp_path / "script.jsonl").write_text("\n".join(json.dumps(r) for r in script) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "medagent",
            "eval",
            "run",
            "--dataset",
            "insight",
            "--data",
            str(data),
            "--method",
            "insight",
            "--backend",
            "scripted",
            "--script",
            str(tmp_path / "script.jsonl"),
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = load_results(tmp_path / "run" / "results.jsonl")["case-1"]
    # One insight matches one of two references: recall 1/2, precision 1/12.
    assert result.score == pytest.approx(2 * (1 / 12) * 0.5 / (1 / 12 + 0.5))


@pytest.mark.slow
def test_eval_run_passes_roots_depth_and_the_rouge_matcher_to_the_insight_method(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    """1 root x depth 2 = 2 questions, and ROUGE matching: no judge replies are scripted, so a
    run that ignored the flags would run out of script and fail."""
    data = cases_file(tmp_path / "data", insight_slide)
    script = [
        replies.roots(1),
        replies.answer("Tissue covers most of the image."),
        replies.follow_up("Are the nuclei crowded?"),
        replies.answer("The stroma is pink."),
        replies.summary([1, 2]),
    ]
    (tmp_path / "script.jsonl").write_text("\n".join(json.dumps(r) for r in script) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    args = ["--dataset", "insight", "--data", str(data), "--method", "insight"]
    args += ["--roots", "1", "--depth", "2", "--matcher", "rouge", "--backend", "scripted"]
    args += ["--script", str(tmp_path / "script.jsonl"), "--out", str(tmp_path / "run")]
    done = subprocess.run(
        [sys.executable, "-m", "medagent", "eval", "run", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = load_results(tmp_path / "run" / "results.jsonl")["case-1"]
    assert result.status == "ok", result.error
    # one of two predictions matches one of two references: recall 1/2, precision 1/2
    assert result.score == pytest.approx(0.5)
