"""The insight loop with a scripted model: its shape, adaptive stops, failures, ranking."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from medagent.agents.insight import (
    Insight,
    InsightAgent,
    InsightConfig,
    InsightReport,
    SummaryOutput,
    action_schema,
    rank_insights,
)
from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError, InputError, SlideOpenError
from medagent.models import GenerateParams, Message, Reply, ScriptedModel


def loop_script(replies: Any, roots: int, depth: int) -> list[dict[str, Any]]:
    """Replies for a run where every question is answered at once and every branch goes on."""
    script = [replies.roots(roots)]
    script += [replies.answer(f"Insight b{b}-d1.") for b in range(1, roots + 1)]
    for d in range(2, depth + 1):
        script += [replies.follow_up(f"Follow-up b{b}-d{d}?") for b in range(1, roots + 1)]
        script += [replies.answer(f"Insight b{b}-d{d}.") for b in range(1, roots + 1)]
    script.append(replies.summary(list(range(roots * depth, 0, -1))))
    return script


def run(
    model: ScriptedModel,
    images: Any,
    tmp_path: Path,
    goal: str = "Characterize the tissue.",
    **config: Any,
) -> InsightReport:
    agent = InsightAgent(model, InsightConfig(**config), runs_dir=tmp_path)
    return agent.run(images, goal, run_dir=tmp_path / "run")


@pytest.mark.parametrize(("roots", "depth"), [(3, 4), (2, 1), (1, 3)])
def test_k_roots_times_depth_p_makes_the_expected_module_calls(
    insight_slide: Path, tmp_path: Path, replies: Any, roots: int, depth: int
) -> None:
    model = ScriptedModel(loop_script(replies, roots, depth))
    report = run(model, insight_slide, tmp_path, roots=roots, depth=depth)

    assert report.status == "completed", report.error
    assert model.remaining == 0
    assert len(report.calls("root_finder")) == 1
    assert len(report.calls("insight_agent")) == roots * depth
    assert len(report.calls("composer")) == roots * (depth - 1)
    assert len(report.calls("summary")) == 1
    assert len(report.trace) == 1 + roots * depth + roots * (depth - 1) + 1
    ids = {f"b{b}-d{d}" for b in range(1, roots + 1) for d in range(1, depth + 1)}
    assert {q.id for q in report.questions} == ids
    assert {i.id for i in report.insights} == ids
    # The summary ranked the insights in reverse order of discovery.
    assert [i.rank for i in report.insights] == list(range(1, roots * depth + 1))
    assert report.insights[0].id == f"b{roots}-d{depth}"
    for insight in report.insights:
        assert insight.text == f"Insight {insight.id}."
        assert insight.confidence == pytest.approx(0.7)
        assert insight.parent == (
            None if insight.depth == 1 else f"b{insight.branch}-d{insight.depth - 1}"
        )
        assert insight.kind == ("root" if insight.depth == 1 else "diagnostic")
    assert report.summary == "Summary."
    assert json.loads(report.json_path.read_text())["goal"] == "Characterize the tissue."
    assert report.html_path.exists()


def test_follow_ups_see_the_insights_so_far(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    model = ScriptedModel(loop_script(replies, 2, 2))
    run(model, insight_slide, tmp_path, roots=2, depth=2)
    composer = [r for r in model.requests if r.schema_name == "FollowUps"]
    first = composer[0].messages[-1].text
    assert "Root question 1? → Insight b1-d1." in first  # its own line of questions
    assert "- Insight b2-d1." in first  # the other branch's insight
    assert "- Root question 2?" in first  # questions already asked
    follow_up = next(
        r
        for r in model.requests
        if r.schema_name == "InsightAction" and "Follow-up b1-d2?" in r.messages[1].text
    )
    assert 'follows up the earlier insight "Insight b1-d1."' in follow_up.messages[1].text


def test_adaptive_mode_stops_a_branch_when_the_composer_finds_nothing_new(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    model = ScriptedModel(
        [
            replies.roots(2),
            replies.answer("One."),
            replies.answer("Two."),
            replies.follow_up("More on one?", nothing_new=True),  # branch 1 ends
            replies.follow_up("More on two?"),
            replies.answer("Two, deeper."),
            replies.follow_up("Root question 1?"),  # a repeat: branch 2 ends too
            replies.summary([1, 2, 3]),
        ]
    )
    report = run(model, insight_slide, tmp_path, roots=2, depth=4, adaptive=True)

    assert report.status == "completed", report.error
    assert model.remaining == 0
    assert len(report.calls("composer")) == 3
    assert len(report.calls("insight_agent")) == 3
    assert [q.id for q in report.questions] == ["b1-d1", "b2-d1", "b2-d2"]


def test_fixed_depth_goes_on_past_nothing_new_but_never_repeats_a_question(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    model = ScriptedModel(
        [
            replies.roots(1),
            replies.answer("One."),
            replies.follow_up("Why one?", nothing_new=True),  # ignored: the depth is fixed
            replies.answer("Because."),
            replies.follow_up(
                "root QUESTION 1", kind="descriptive", others={"prescriptive": "What next?"}
            ),
            replies.answer("Next."),
            replies.summary([]),
        ]
    )
    report = run(model, insight_slide, tmp_path, roots=1, depth=3)

    assert report.status == "completed", report.error
    assert [(q.kind, q.question) for q in report.questions] == [
        ("root", "Root question 1?"),
        ("diagnostic", "Why one?"),
        ("prescriptive", "What next?"),  # the picked repeat was replaced by a new candidate
    ]
    assert report.questions[2].candidates["descriptive"] == "root QUESTION 1"
    # No ranking from the summary: by confidence, then the order found.
    assert [i.id for i in report.insights] == ["b1-d1", "b1-d2", "b1-d3"]


def test_tools_run_and_their_results_become_evidence(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    model = ScriptedModel(
        [
            replies.roots(1, region={"x": 200, "y": 300, "width": 800, "height": 600}),
            replies.tool("zoom", image=1, region={"x": 0, "y": 0, "width": 1200, "height": 900}),
            replies.tool("zoom", image=1, region={"x": 9000, "y": 9000, "width": 10, "height": 10}),
            replies.tool(
                "measure", image=1, kind="distance", points=[{"x": 0, "y": 0}, {"x": 300, "y": 400}]
            ),
            replies.tool("zoom", image=3, region={"x": 0, "y": 0, "width": 10, "height": 10}),
            replies.answer("The dense area is 250 µm from the corner."),
            replies.summary([1]),
        ]
    )
    report = run(model, insight_slide, tmp_path, roots=1, depth=1)

    assert report.status == "completed", report.error
    steps = report.questions[0].steps
    assert [(s.tool, s.ok) for s in steps] == [
        ("zoom", True),
        ("zoom", False),
        ("measure", True),
        ("zoom", False),
    ]
    assert "bad_region" in steps[1].text and "there is no image 3" in steps[3].text
    (insight,) = report.insights
    zoomed, measured = insight.evidence
    assert zoomed.region is not None and zoomed.region.width == 1200
    assert ArtifactStore(tmp_path / "run" / "artifacts").path(zoomed.artifacts[0]).exists()
    assert measured.measurements[0].value == pytest.approx(250.0)  # 500 px at 0.5 µm/px
    assert measured.measurements[0].unit == "µm"
    # The finding's region was shown as a crop.
    assert report.findings[0].artifact is not None
    # A failed call is explained to the model, and the crop reached it in a user message.
    agent_requests = [r for r in model.requests if r.schema_name == "InsightAction"]
    assert "Tool zoom failed (bad_region)" in agent_requests[2].messages[-1].text
    assert agent_requests[1].messages[-1].images  # the first zoom's crop


def test_the_last_turn_asks_for_the_answer_only(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    model = ScriptedModel(
        [
            replies.roots(1),
            replies.tool("tissue", image=1, region=None),
            replies.final("Mostly tissue."),
            replies.summary([1]),
        ]
    )
    report = run(model, insight_slide, tmp_path, roots=1, depth=1, max_steps=2)

    assert report.status == "completed", report.error
    last = [r for r in model.requests if r.schema_name == "InsightAnswer"]
    assert len(last) == 1 and "This is your last turn" in last[0].messages[-1].text
    (evidence,) = report.insights[0].evidence
    assert evidence.tool == "tissue"
    assert {m.name for m in evidence.measurements} == {"tissue_fraction", "tissue_pieces"}


def test_malformed_outputs_get_corrections_then_an_explicit_failure(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    bad = {"text": "I think it is a tumour."}
    model = ScriptedModel(
        [
            bad,  # the root finder answers in prose once...
            replies.roots(2),  # ...and corrects itself
            bad,
            {"json": {"action": "answer"}},
            bad,  # question 1: three invalid replies (1 + 2 corrections): it fails
            replies.answer("Two."),
            replies.follow_up("Why two?"),  # only branch 2 goes on
            replies.answer("Because."),
            {"text": "no summary"},
            {"text": "still none"},
            {"text": "never"},
        ]
    )
    report = run(model, insight_slide, tmp_path, roots=2, depth=2)

    assert model.remaining == 0
    assert report.status == "partial"
    assert "unanswered: b1-d1" in (report.error or "")
    assert report.summary == ""  # the summary failed: the ranking falls back to confidence
    assert [i.id for i in report.insights] == ["b2-d1", "b2-d2"]
    first = report.calls("root_finder")[0]
    assert first.status == "ok" and len(first.outputs) == 2 and "no JSON object" in first.errors[0]
    correction = model.requests[1].messages[-1].text
    assert "could not be used" in correction and "RootFinding" in correction
    failed = report.questions[0]
    assert failed.status == "invalid_output" and failed.error
    assert report.calls("insight_agent")[0].status == "invalid_output"
    assert report.calls("summary")[0].status == "invalid_output"


def test_a_root_finder_that_never_answers_validly_fails_the_run(
    insight_slide: Path, tmp_path: Path
) -> None:
    model = ScriptedModel([{"text": "?"}] * 3)
    report = run(model, insight_slide, tmp_path, roots=3, depth=2)
    assert report.status == "failed"
    assert "root finder" in (report.error or "")
    assert not report.insights and report.html_path.exists()


def test_an_unreachable_model_ends_the_run_with_what_was_found(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    model = ScriptedModel([replies.roots(2), replies.answer("One."), {"error": "timeout"}])
    report = run(model, insight_slide, tmp_path, roots=2, depth=2)
    assert report.status == "model_error"
    assert "could not be reached" in (report.error or "")
    assert [i.id for i in report.insights] == ["b1-d1"]
    assert report.questions[1].status == "model_error"
    assert not report.calls("summary")  # no summary request to a model that is down


class SlowModel(ScriptedModel):
    async def generate(self, messages: Sequence[Message], **kwargs: Any) -> Reply:
        await asyncio.sleep(0.3)
        return await super().generate(messages, **kwargs)


def test_the_time_limit_keeps_what_was_found(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    model = SlowModel([replies.roots(1), replies.answer("One."), replies.follow_up("More?")] * 3)
    report = run(model, insight_slide, tmp_path, roots=1, depth=4, timeout_s=0.75)
    assert report.status == "timeout"
    assert [i.id for i in report.insights] == ["b1-d1"]
    assert report.json_path.exists()


def test_a_plain_image_gets_region_tools_but_no_tissue_tools(
    radiograph: Path, tmp_path: Path, replies: Any
) -> None:
    model = ScriptedModel(
        [
            replies.roots(1, region={"x": 200, "y": 150, "width": 120, "height": 100}),
            replies.tool(
                "measure", image=1, kind="distance", points=[{"x": 0, "y": 0}, {"x": 30, "y": 40}]
            ),
            replies.answer("A bright oval focus about 50 px across."),
            replies.summary([1]),
        ]
    )
    report = run(model, radiograph, tmp_path, roots=1, depth=1)
    assert report.status == "completed", report.error
    assert report.sources[0].kind == "image" and report.sources[0].mpp is None
    (measured,) = report.insights[0].evidence
    assert (measured.measurements[0].value, measured.measurements[0].unit) == (50.0, "px")
    opening = model.requests[1].messages[1].text
    assert '"action": "zoom"' in opening and '"action": "tissue"' not in opening
    assert "pixel spacing unknown" in opening


def test_the_action_schema_offers_only_the_run_s_tools() -> None:
    schema = json.dumps(action_schema(["zoom", "measure"]).model_json_schema())
    assert "ZoomAction" in schema and "MeasureAction" in schema and "AnswerAction" in schema
    assert "SegmentAction" not in schema and "ReportsAction" not in schema


def _insight(identifier: str, text: str, confidence: float, evidence: int = 0) -> Insight:
    from medagent.agents.insight import Evidence

    return Insight(
        id=identifier,
        branch=1,
        depth=1,
        kind="root",
        question="?",
        answer="a",
        text=text,
        confidence=confidence,
        evidence=[
            Evidence(step=i, tool="zoom", image=1, text=f"{identifier}{i}") for i in range(evidence)
        ],
    )


def test_ranking_merges_duplicates_and_their_evidence() -> None:
    insights = [
        _insight("b1-d1", "Dense infiltrate.", 0.5, evidence=1),
        _insight("b2-d1", "dense  infiltrate", 0.9, evidence=1),  # same text, normalized
        _insight("b3-d1", "Necrosis at the centre.", 0.6),
        _insight("b1-d2", "Central necrosis.", 0.8, evidence=2),
        _insight("b2-d2", "Mitoses are frequent.", 0.4),
    ]
    ranked = rank_insights(insights)
    assert [i.id for i in ranked] == ["b1-d2", "b3-d1", "b1-d1", "b2-d2"]
    assert ranked[2].merged == ["b2-d1"] and len(ranked[2].evidence) == 2
    # The summary's groups (numbers out of range are ignored) and ranking take precedence.
    summary = SummaryOutput(summary="s", ranking=[5, 99, 2], duplicates=[[4, 3, 42]])
    ranked = rank_insights(insights, summary)
    assert [(i.id, i.rank) for i in ranked] == [("b2-d2", 1), ("b1-d1", 2), ("b1-d2", 3)]
    assert ranked[2].merged == ["b3-d1"]


@pytest.mark.parametrize(
    ("images", "goal", "error", "match"),
    [
        ("missing.svs", "goal", InputError, "missing.svs"),
        ("slide", "  ", ConfigError, "goal is empty"),
        ([], "goal", ConfigError, "no image given"),
        ("not-an-image.png", "goal", SlideOpenError, "not-an-image.png"),
    ],
)
def test_bad_input_is_one_error_before_any_model_call(
    insight_slide: Path, tmp_path: Path, images: Any, goal: str, error: type[Exception], match: str
) -> None:
    (tmp_path / "not-an-image.png").write_text("hello")
    given = insight_slide if images == "slide" else images
    if isinstance(given, str):
        given = tmp_path / given
    model = ScriptedModel([])
    with pytest.raises(error, match=match) as raised:
        InsightAgent(model).run(given, goal, run_dir=tmp_path / "run")
    assert "\n" not in str(raised.value)
    assert not model.requests


def test_the_sdk_exports_the_agent() -> None:
    import medagent

    assert medagent.InsightAgent is InsightAgent and "InsightAgent" in medagent.__all__
    import medagent.agents.insight as package

    assert package.__all__ == sorted(package.__all__)
    assert all(hasattr(package, name) for name in package.__all__)


def test_requests_are_greedy_and_bounded(insight_slide: Path, tmp_path: Path, replies: Any) -> None:
    model = ScriptedModel(loop_script(replies, 1, 1))
    run(model, insight_slide, tmp_path, roots=1, depth=1, max_tokens=333, seed=7)
    assert all(
        r.params == GenerateParams(max_tokens=333, temperature=0.0, seed=7) for r in model.requests
    )
    assert isinstance(model.requests[0].messages[1].images[0].artifact, BaseModel)
