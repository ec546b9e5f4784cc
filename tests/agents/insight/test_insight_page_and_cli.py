"""``insights.html`` (self-contained, escaped) and ``medagent insight`` end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cli_support import medagent
from medagent.agents.insight import InsightAgent, InsightConfig, InsightReport
from medagent.models import ScriptedModel


def write_script(path: Path, replies: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in replies) + "\n")
    return path


def test_the_page_is_self_contained_escaped_and_shows_evidence(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    model = ScriptedModel(
        [
            replies.roots(1, region={"x": 100, "y": 100, "width": 500, "height": 400}),
            replies.tool("zoom", image=1, region={"x": 0, "y": 0, "width": 900, "height": 700}),
            replies.tool("segment", image=1, method="tissue", region=None),
            replies.answer("<script>alert(1)</script> Tissue is <b>dense</b>."),
            replies.summary([1], text="A summary & more <img src=x>."),
        ]
    )
    report = InsightAgent(model, InsightConfig(roots=1, depth=1)).run(
        insight_slide, "Goal <i>x</i>", run_dir=tmp_path / "run"
    )
    page = report.html_path.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x>" not in page and "A summary &amp; more" in page
    assert "Goal &lt;i&gt;x&lt;/i&gt;" in page
    srcs = re.findall(r'src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert "Content-Security-Policy" in page
    assert "tissue count" in page and "area fraction" in page  # segment measurements
    assert "F1" in page and "#1" in page  # finding and evidence boxes on the overview
    # The report round-trips from its JSON.
    again = InsightReport.model_validate_json(report.json_path.read_text())
    assert again.insights[0].evidence[0].artifacts == report.insights[0].evidence[0].artifacts


def test_a_deleted_image_shows_as_missing_not_as_an_error(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    from medagent.agents.insight import render_insight_html
    from medagent.artifacts import ArtifactStore

    model = ScriptedModel(
        [
            replies.roots(1),
            replies.tool("zoom", image=1, region={"x": 0, "y": 0, "width": 900, "height": 700}),
            replies.answer("One."),
            replies.summary([1]),
        ]
    )
    report = InsightAgent(model, InsightConfig(roots=1, depth=1)).run(
        insight_slide, "Goal", run_dir=tmp_path / "run"
    )
    store = ArtifactStore(tmp_path / "run" / "artifacts")
    store.path(report.insights[0].evidence[0].artifacts[0]).unlink()
    assert "is missing" in render_insight_html(report, store)


def test_medagent_insight_runs_prints_and_writes_the_report(
    insight_slide: Path, tmp_path: Path, replies: Any
) -> None:
    script = write_script(
        tmp_path / "script.jsonl",
        [
            replies.roots(2),
            replies.tool("zoom", image=1, region={"x": 0, "y": 0, "width": 900, "height": 700}),
            replies.answer("Dense area top left."),
            replies.answer("Pale stroma."),
            replies.follow_up("Why dense?", nothing_new=True),
            replies.follow_up("What next?", kind="prescriptive"),
            replies.answer("Sample the dense area."),
            replies.follow_up("What next?", kind="prescriptive"),  # a repeat: branch 2 ends
            replies.summary([3, 1, 2], text="Two findings and a next step."),
        ],
    )
    out = tmp_path / "run"
    done = medagent(
        "insight",
        str(insight_slide),
        "--goal",
        "Characterize the tissue",
        "--roots",
        "2",
        "--depth",
        "3",
        "--adaptive",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "b1-d1" in done.stdout and "insight" in done.stdout
    assert "branch ends: nothing new" in done.stdout  # progress as it happens
    assert "#1" in done.stdout and "Sample the dense area." in done.stdout
    assert "completed" in done.stdout
    report = InsightReport.model_validate_json((out / "insights.json").read_text())
    assert [i.id for i in report.insights] == ["b2-d2", "b1-d1", "b2-d1"]
    assert (out / "insights.html").exists() and (out / "manifest.json").exists()
    assert (out / "events.jsonl").read_text().count('"type": "call"') == len(report.trace)


def test_medagent_insight_errors_are_one_line(tmp_path: Path, insight_slide: Path) -> None:
    missing = medagent(
        "insight", str(tmp_path / "nope.svs"), "--goal", "g", "--backend", "scripted"
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("error:") and "nope.svs" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    bad = medagent("insight", str(insight_slide), "--goal", "g", "--depth", "0")
    assert bad.returncode == 2 and "--depth" in bad.stderr
    down = medagent(
        "insight",
        str(insight_slide),
        "--goal",
        "g",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--max-retries",
        "0",
        "--timeout",
        "2",
        "--out",
        str(tmp_path / "down"),
    )
    assert down.returncode == 1, down.stdout + down.stderr
    assert "model_error" in down.stdout and "could not be reached" in down.stdout


def test_medagent_insight_help_teaches() -> None:
    shown = medagent("insight", "--help")
    assert shown.returncode == 0
    for text in ("--goal", "--roots", "--depth", "--adaptive", "--index", "--out", "insights.html"):
        assert text in shown.stdout
