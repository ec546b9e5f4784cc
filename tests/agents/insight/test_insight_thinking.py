"""A reasoning model's thinking on the insight page: in the trace, collapsed, escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medagent.agents.insight import InsightReport, ModuleCall, render_insight_html
from medagent.artifacts import ArtifactStore

THOUGHT = "Two <i>candidate</i> regions; the upper one is denser."


def test_thinking_is_shown_collapsed_per_attempt(tmp_path: Path) -> None:
    calls = [
        ModuleCall(
            module="root_finder",
            status="ok",
            outputs=["not json", '{"questions": []}'],
            thinking=["", THOUGHT],
            prompt_tokens=10,
            completion_tokens=20,
            reasoning_tokens=9,
        ),
        ModuleCall(module="summary", status="ok", outputs=["{}"]),
    ]
    report = InsightReport(run_id="r", run_dir=str(tmp_path), goal="Goal", trace=calls)
    page = render_insight_html(report, ArtifactStore(tmp_path / "artifacts"))
    assert page.count('<details class="thinking">') == 1
    thinking = page.split('<details class="thinking">', 1)[1].split("</details>", 1)[0]
    assert "attempt 2" in thinking and "attempt 1" not in thinking
    assert "Two &lt;i&gt;candidate&lt;/i&gt; regions" in thinking and "<i>" not in page
    assert "10+20 (9 thinking)" in page


def test_a_run_records_each_calls_thinking_and_reasoning_tokens(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    from medagent.agents.insight import InsightAgent, InsightConfig
    from medagent.models import ScriptedModel

    script = [replies.roots(1), replies.answer("Something is there."), replies.summary([1])]
    script[1] = {**script[1], "reasoning": THOUGHT}
    report = InsightAgent(ScriptedModel(script), InsightConfig(roots=1, depth=1)).run(
        insight_slide, "Describe the image.", run_dir=tmp_path / "run"
    )
    assert report.status == "completed", report.error
    thought = [call for call in report.trace if call.thinking]
    assert len(thought) == 1 and thought[0].thinking == [THOUGHT]
    assert thought[0].reasoning_tokens == len(THOUGHT.split())
    assert all(THOUGHT not in output for call in report.trace for output in call.outputs)
