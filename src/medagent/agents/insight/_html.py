"""``insights.html``: one self-contained page per run — the insights with their evidence.

Like GIANT's trajectory page it opens offline from a copied run folder: no scripts, styles,
fonts or images from elsewhere, every image a ``data:`` URL from the artifact store, and
everything a model wrote escaped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from medagent.agents._page import CSP, escape, image_tag, missing_image
from medagent.agents.insight._report import (
    Evidence,
    Insight,
    InsightReport,
    ModuleCall,
    QuestionRecord,
    SourceImage,
)
from medagent.artifacts import ArtifactStore, data_url, to_jpeg
from medagent.errors import InputError
from medagent.imaging import Region, draw_boxes, modality

__all__ = ["render_insight_html"]

_STATUS_COLOURS = {
    "completed": "#1b7f3b",
    "partial": "#c46a00",
    "failed": "#b3261e",
    "model_error": "#b3261e",
    "timeout": "#8e24aa",
}

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:16px;
color:#202124;background:#fafafa}
h1{font-size:20px;margin:0 0 8px}h2{font-size:17px;margin:24px 0 8px}h3{font-size:15px;margin:8px 0}
header,section,article{background:#fff;border:1px solid #ddd;border-radius:6px;
padding:12px 16px;margin-bottom:12px}
.status{display:inline-block;color:#fff;border-radius:4px;padding:2px 8px;font-weight:600}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0}
dl.facts dt{color:#5f6368}dl.facts dd{margin:0}
.summary{font-size:15px;background:#f1f3f4;padding:8px 12px;border-radius:4px;white-space:pre-wrap}
.insight-text{font-size:16px;font-weight:600}
.badge{background:#e8eaed;border-radius:4px;padding:1px 6px;font-size:12px;margin-left:6px}
.bar{display:inline-block;height:8px;background:#1a73e8;border-radius:4px;vertical-align:middle}
.evidence{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:8px}
.card{border:1px solid #ddd;border-radius:4px;padding:6px;font-size:13px}
.card img{max-width:100%;height:auto;border:1px solid #ccc;margin:2px 0}
.overviews{display:flex;gap:16px;flex-wrap:wrap}.overviews figure{margin:0;flex:0 1 600px}
img{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:2px 6px}
.error{color:#b3261e;white-space:pre-wrap}.muted{color:#5f6368}
pre{white-space:pre-wrap;word-break:break-word;background:#f8f9fa;padding:8px;margin:4px 0}
.missing{border:1px dashed #b3261e;color:#b3261e;padding:12px;font-size:12px}
"""


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    """A ``<dl>``; values must already be escaped (some carry markup)."""
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _header(report: InsightReport) -> str:
    colour = _STATUS_COLOURS.get(report.status, "#5f6368")
    rows: list[tuple[str, str]] = [
        (
            "status",
            f'<span class="status" style="background:{colour}">{escape(report.status)}</span>',
        )
    ]
    if report.error:
        rows.append(("error", f'<span class="error">{escape(report.error)}</span>'))
    answered = sum(q.status == "answered" for q in report.questions)
    rows += [
        ("insights", f"{len(report.insights)} (from {answered} answered questions)"),
        ("questions", str(len(report.questions))),
        ("model", escape(report.model)),
        ("images", "<br>".join(escape(s.path) for s in report.sources)),
        ("model calls", str(len(report.trace))),
        ("tokens", f"{report.prompt_tokens} prompt + {report.completion_tokens} completion"),
        ("elapsed", f"{report.elapsed_s:.1f} s"),
        ("run id", escape(report.run_id)),
    ]
    summary = (
        f'<p class="summary">{escape(report.summary)}</p>'
        if report.summary
        else '<p class="muted">No summary was written.</p>'
    )
    config = escape(json.dumps(report.config, indent=2, ensure_ascii=False))
    return (
        f"<header><h1>{escape(report.goal)}</h1>{summary}{_facts(rows)}"
        f"<details><summary>configuration</summary><pre>{config}</pre></details></header>"
    )


def _overview(
    source: SourceImage, number: int, boxes: list[tuple[str, Region]], artifacts: ArtifactStore
) -> str:
    ref = source.overview
    if ref is None:
        return ""
    if ref.region is None or not boxes:
        image = image_tag(artifacts, ref, f"image {number}")
    else:
        try:
            drawn = draw_boxes(
                artifacts.get(ref),
                ref.region,
                [region for _, region in boxes],
                labels=[label for label, _ in boxes],
            )
        except (InputError, KeyError) as exc:
            image = missing_image(ref.id, str(exc))
        else:
            src = data_url(to_jpeg(drawn), "image/jpeg")
            image = (
                f'<img src="{escape(src)}" alt="image {number} with findings and evidence" '
                f'width="{drawn.width}" height="{drawn.height}">'
            )
    spacing = modality(source.modality).spacing(source.mpp)
    return (
        f"<figure>{image}<figcaption class='muted'>image {number}: {escape(source.path)} "
        f"({modality(source.modality).name}, {source.width} × {source.height} px, {spacing}); "
        "F = finding, "
        "#n = evidence of the insight ranked n</figcaption></figure>"
    )


def _overviews(report: InsightReport, artifacts: ArtifactStore) -> str:
    parts = []
    for number, source in enumerate(report.sources, start=1):
        boxes = [
            (f"F{i}", f.region)
            for i, f in enumerate(report.findings, start=1)
            if f.region is not None and f.image == number
        ]
        # Evidence over (nearly) the whole image would only frame the picture: left out.
        whole = 0.95 * source.width * source.height
        boxes += [
            (f"#{insight.rank}", e.region)
            for insight in report.insights
            for e in insight.evidence
            if e.region is not None and e.image == number and e.region.area < whole
        ]
        parts.append(_overview(source, number, boxes, artifacts))
    findings = "".join(
        f"<li><b>F{i}</b> (image {f.image}{', ' + escape(f.region) if f.region else ''}): "
        f"{escape(f.text)}</li>"
        for i, f in enumerate(report.findings, start=1)
    )
    crops = "".join(
        image_tag(artifacts, f.artifact, f"finding {i}")
        for i, f in enumerate(report.findings, start=1)
        if f.artifact is not None
    )
    return (
        f'<section><h2>Images and salient findings</h2><div class="overviews">{"".join(parts)}'
        f"</div><ol>{findings}</ol>"
        + (f'<div class="evidence">{crops}</div>' if crops else "")
        + "</section>"
    )


def _evidence(item: Evidence, artifacts: ArtifactStore) -> str:
    shown = [a for a in item.artifacts if a.kind != "mask"]
    images = "".join(image_tag(artifacts, ref, f"{item.tool} result") for ref in shown)
    rows = "".join(
        f"<tr><td>{escape(m.name.replace('_', ' '))}</td><td>{escape(m.formatted)}</td></tr>"
        for m in item.measurements
    )
    table = f"<table><tr><th>measure</th><th>value</th></tr>{rows}</table>" if rows else ""
    where = f" — {escape(item.region)}" if item.region is not None else ""
    neighbours = (
        f"<p class='muted'>similar cases: {escape(', '.join(item.neighbours))}</p>"
        if item.neighbours
        else ""
    )
    return (
        f'<div class="card"><b>{escape(item.tool)}</b> on image {item.image}{where}{images}{table}'
        f"{neighbours}<details><summary>result</summary><pre>{escape(item.text)}</pre></details></div>"
    )


def _insight(insight: Insight, artifacts: ArtifactStore) -> str:
    width = round(100 * insight.confidence)
    badges = "".join(
        f'<span class="badge">{escape(text)}</span>' for text in (insight.kind, insight.id)
    )
    if insight.merged:
        badges += f'<span class="badge">also {escape(", ".join(insight.merged))}</span>'
    evidence = "".join(_evidence(e, artifacts) for e in insight.evidence)
    return (
        f'<article id="insight-{escape(insight.id)}"><h3>#{insight.rank} {badges}</h3>'
        f'<p class="insight-text">{escape(insight.text)}</p>'
        f"<p>confidence {width}% <span class='bar' style='width:{width}px'></span></p>"
        f"{_facts([('question', escape(insight.question)), ('answer', escape(insight.answer))])}"
        + (
            f'<div class="evidence">{evidence}</div>'
            if evidence
            else '<p class="muted">No tool evidence: answered from the overview.</p>'
        )
        + "</article>"
    )


def _question(record: QuestionRecord) -> str:
    steps = "".join(
        f"<li>{escape(s.tool)} {'ok' if s.ok else 'failed'}: {escape(s.text[:300])}</li>"
        for s in record.steps
    )
    candidates = "".join(
        f"<li>{escape(k)}: {escape(q)}</li>" for k, q in record.candidates.items() if q
    )
    return (
        f"<li><b>{escape(record.id)}</b> [{escape(record.kind)}, {escape(record.status)}] "
        f"{escape(record.question)}"
        + (f'<br><span class="error">{escape(record.error)}</span>' if record.error else "")
        + (
            f"<details><summary>candidates</summary><ul>{candidates}</ul></details>"
            if candidates
            else ""
        )
        + (
            f"<details><summary>{len(record.steps)} tool calls</summary><ul>{steps}</ul></details>"
            if steps
            else ""
        )
        + "</li>"
    )


def _thinking(call: ModuleCall) -> str:
    """A reasoning model's thinking on each attempt, collapsed: it can run for pages."""
    thoughts = [(i, t) for i, t in enumerate(call.thinking, start=1) if t]
    if not thoughts:
        return ""
    attempts = "".join(
        f"<p class='muted'>attempt {i}</p><pre>{escape(thought)}</pre>" for i, thought in thoughts
    )
    return f'<details class="thinking"><summary>thinking</summary>{attempts}</details>'


def _trace(calls: list[ModuleCall]) -> str:
    rows = "".join(
        f"<tr><td>{i}</td><td>{escape(c.module)}</td><td>{c.branch or ''}</td>"
        f"<td>{c.depth or ''}</td>"
        f"<td>{c.step or ''}</td><td>{escape(c.status)}</td><td>{len(c.outputs)}</td>"
        f"<td>{c.prompt_tokens}+{c.completion_tokens}"
        + (f" ({c.reasoning_tokens} thinking)" if c.reasoning_tokens else "")
        + f"</td><td>{c.model_s:.2f}</td><td>{_thinking(c)}"
        f"<details><summary>output</summary><pre>{escape(chr(10).join(c.outputs))}</pre>"
        + "".join(f'<p class="error">refused: {escape(err)}</p>' for err in c.errors)
        + "</details></td></tr>"
        for i, c in enumerate(calls, start=1)
    )
    return (
        "<section><h2>Trace</h2><details><summary>every model call</summary><table><tr>"
        "<th>#</th><th>module</th><th>branch</th><th>depth</th><th>turn</th><th>status</th>"
        "<th>attempts</th><th>tokens</th><th>s</th><th></th></tr>"
        f"{rows}</table></details></section>"
    )


def render_insight_html(report: InsightReport, artifacts: ArtifactStore) -> str:
    """The report as one offline HTML page: summary, images, ranked insights, questions, trace."""
    insights = "".join(_insight(i, artifacts) for i in report.insights) or (
        '<p class="muted">No insights.</p>'
    )
    branches = sorted({q.branch for q in report.questions})
    tree = "".join(
        f"<h3>Branch {b}</h3><ol>"
        + "".join(
            _question(q) for q in sorted(report.questions, key=lambda q: q.depth) if q.branch == b
        )
        + "</ol>"
        for b in branches
    )
    body = (
        _header(report)
        + _overviews(report, artifacts)
        + f"<section><h2>Insights, most important first</h2>{insights}</section>"
        + f"<section><h2>Questions</h2>{tree or '<p class=muted>none</p>'}</section>"
        + _trace(report.trace)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{escape('medagent insights: ' + report.goal[:80])}</title><style>{_CSS}</style>"
        f"</head><body>{body}</body></html>\n"
    )
