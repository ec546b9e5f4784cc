"""``trajectory.html``: one self-contained page per run, for reading a navigation after the fact.

The page must open from a copied run folder, offline, years later: no external scripts, styles,
fonts or images, and no JavaScript; every image is a ``data:`` URL read from the artifact store.
Everything the model (or the question's author) wrote is untrusted and goes through
``html.escape`` — a reasoning that contains ``<script>`` must show as text, not run. A volume's
page names the slice of every step (the overview is then the slice montage).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from medagent.agents._page import CSP, escape, image_tag, missing_image
from medagent.agents.giant._trajectory import StepRecord, Trajectory
from medagent.artifacts import ArtifactStore, data_url, to_jpeg
from medagent.errors import InputError
from medagent.imaging import ModalityKind, Region, draw_boxes, modality

__all__ = ["render_trajectory_html"]

_STATUS_COLOURS = {
    "answered": "#1b7f3b",
    "answered_at_limit": "#6b8e23",
    "no_answer": "#c46a00",
    "model_error": "#b3261e",
    "timeout": "#8e24aa",
    "running": "#5f6368",
}

# Defence in depth: even if something escaped ``html.escape``, the page may not run scripts or
# fetch anything; images come only from data: URLs.
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:16px;
color:#202124;background:#fafafa}
h1{font-size:20px;margin:0 0 8px}h2{font-size:17px;margin:24px 0 8px}
header,section.overview,article.step,section.patches{background:#fff;border:1px solid #ddd;
border-radius:6px;padding:12px 16px;margin-bottom:12px}
.status{display:inline-block;color:#fff;border-radius:4px;padding:2px 8px;font-weight:600}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0}
dl.facts dt{color:#5f6368}dl.facts dd{margin:0}
.row{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
.row figure{margin:0;flex:0 1 560px}.row .text{flex:1 1 360px;min-width:280px}
img{max-width:100%;height:auto;border:1px solid #ccc}
.overview img{max-width:min(100%,1000px)}
.reasoning{white-space:pre-wrap;background:#f1f3f4;padding:8px;border-radius:4px}
.answer{font-weight:600}
.error{color:#b3261e;white-space:pre-wrap}
.badge{background:#e8eaed;border-radius:4px;padding:1px 6px;font-size:12px;margin-left:6px}
.badge.warn{background:#fde293}
.missing{border:1px dashed #b3261e;color:#b3261e;padding:12px;font-size:12px}
pre{white-space:pre-wrap;word-break:break-word;background:#f8f9fa;padding:8px;margin:4px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
.card{border:1px solid #ddd;border-radius:4px;padding:4px;font-size:12px}
.card img{width:100%}.card details{font-size:12px}
.muted{color:#5f6368}
"""


def _boxes(steps: Iterable[StepRecord]) -> list[tuple[int, Region]]:
    """Every region a step showed, with its step number (the label drawn on the overview)."""
    return [(s.step, s.region) for s in steps if s.region is not None]


def _montage(trajectory: Trajectory, artifacts: ArtifactStore) -> str:
    """A volume's overview: the montage, then which slice each step looked at."""
    ref = trajectory.overview
    image = image_tag(artifacts, ref, "slice montage") if ref is not None else ""
    looked = [(s, s.slice) for s in trajectory.steps if s.slice is not None]
    legend = "".join(
        f'<li><a href="#step-{s.step}">step {s.step}</a>: {escape(at.label())}'
        + (f", {escape(s.region)}" if s.region is not None else "")
        + "</li>"
        for s, at in looked
    )
    return (
        f'<section class="overview"><h2>Overview</h2><figure style="margin:0">{image}'
        '<figcaption class="muted">montage of axial slices, each tile labelled with its slice '
        "number</figcaption></figure>"
        + (
            f"<details open><summary>{len(looked)} slices looked at</summary>"
            f"<ul>{legend}</ul></details>"
            if looked
            else ""
        )
        + "</section>"
    )


def _overview(trajectory: Trajectory, artifacts: ArtifactStore) -> str:
    ref = trajectory.overview
    if ref is None:
        return '<p class="muted">No overview was recorded.</p>'
    if trajectory.volume is not None:
        return _montage(trajectory, artifacts)
    boxes = _boxes(trajectory.steps)
    if ref.region is None or not boxes:
        image = image_tag(artifacts, ref, "overview")
    else:
        try:
            drawn = draw_boxes(
                artifacts.get(ref),
                ref.region,
                [region for _, region in boxes],
                labels=[str(step) for step, _ in boxes],
            )
        except (InputError, KeyError) as exc:
            image = missing_image(ref.id, str(exc))
        else:
            src = data_url(to_jpeg(drawn), "image/jpeg")
            image = (
                f'<img src="{escape(src)}" alt="overview with the regions looked at" '
                f'width="{drawn.width}" height="{drawn.height}">'
            )
    legend = "".join(
        f'<li><a href="#step-{step}">step {step}</a>: {escape(region)}</li>'
        for step, region in boxes
    )
    shows = f"shows {escape(ref.region)}" if ref.region is not None else "region unknown"
    return (
        f'<section class="overview"><h2>Overview</h2><figure style="margin:0">{image}'
        f'<figcaption class="muted">{shows}; boxes are numbered by step</figcaption></figure>'
        + (
            f"<details><summary>{len(boxes)} regions</summary><ul>{legend}</ul></details>"
            if boxes
            else ""
        )
        + "</section>"
    )


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    """A ``<dl>``; values must already be escaped (some carry markup)."""
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _header(trajectory: Trajectory) -> str:
    t = trajectory
    colour = _STATUS_COLOURS.get(t.status, "#5f6368")
    slide = t.slide
    spacing = modality(slide.modality).spacing(slide.mpp_x)
    rows: list[tuple[str, str]] = [
        ("status", f'<span class="status" style="background:{colour}">{escape(t.status)}</span>'),
        ("answer", f'<span class="answer">{escape(t.answer)}</span>' if t.answer else "—"),
        ("prediction", escape(t.prediction) if t.prediction else "—"),
    ]
    if t.votes:
        ranked = sorted(t.votes.items(), key=lambda kv: (-kv[1], kv[0]))
        rows.append(("votes", ", ".join(f"{escape(k)}: {v}" for k, v in ranked)))
    if t.error:
        rows.append(("error", f'<span class="error">{escape(t.error)}</span>'))
    rows += [
        ("method", escape(t.method)),
        ("model", escape(t.model)),
        ("slide" if t.volume is None else "volume", escape(t.slide_path)),
        (
            (
                "slide size",
                f"{slide.width} × {slide.height} px, {slide.level_count} levels, {spacing}"
                + (f", {slide.objective_power:g}×" if slide.objective_power else ""),
            )
            if t.volume is None
            else ("volume size", escape(t.volume.to_text()))
        ),
        ("steps", str(len(t.steps))),
        ("tokens", _tokens(t.prompt_tokens, t.completion_tokens, t.reasoning_tokens)),
        ("elapsed", f"{t.elapsed_s:.1f} s"),
        (
            "started",
            escape(t.started_at)
            + (f" — finished {escape(t.finished_at)}" if t.finished_at else ""),
        ),
        ("run id", escape(t.run_id)),
    ]
    options = ""
    if t.options:
        options = "<ol>" + "".join(f"<li>{escape(o)}</li>" for o in t.options) + "</ol>"
    config = escape(json.dumps(t.config, indent=2, default=str, ensure_ascii=False))
    return (
        f"<header><h1>{escape(t.question)}</h1>{options}{_facts(rows)}"
        f"<details><summary>configuration</summary><pre>{config}</pre></details></header>"
    )


def _thinking(record: StepRecord, index: int) -> str:
    """A reasoning model's thinking before attempt ``index``, collapsed: it can run for pages."""
    thought = record.thinking[index] if index < len(record.thinking) else ""
    if not thought:
        return ""
    return (
        f'<details class="thinking"><summary>thinking ({len(thought.split())} words)</summary>'
        f"<pre>{escape(thought)}</pre></details>"
    )


def _outputs(record: StepRecord) -> str:
    """Raw model outputs (each after its thinking) and refused attempts, collapsed: long, and
    rarely needed."""
    if not record.outputs:
        return ""
    attempts = "".join(
        f"<p class='muted'>attempt {i}</p>{_thinking(record, i - 1)}<pre>{escape(text)}</pre>"
        for i, text in enumerate(record.outputs, start=1)
    )
    summary = f"raw output ({len(record.outputs)} attempt{'s' if len(record.outputs) > 1 else ''})"
    return f"<details><summary>{summary}</summary>{attempts}</details>"


def _tokens(prompt: int, completion: int, reasoning: int) -> str:
    thought = f" ({reasoning} thinking)" if reasoning else ""
    return f"{prompt} prompt + {completion} completion{thought}"


def _errors(record: StepRecord) -> str:
    return "".join(f'<p class="error">refused: {escape(error)}</p>' for error in record.errors)


def _step(record: StepRecord, artifacts: ArtifactStore, kind: ModalityKind) -> str:
    badges = f'<span class="badge">{escape(record.kind)}</span>'
    if record.slice is not None:
        badges += f'<span class="badge">{escape(record.slice.axis)} {record.slice.index}</span>'
    if record.clamped:
        badges += '<span class="badge warn">clamped</span>'
    answer = (record.action or {}).get("answer")
    rows: list[tuple[str, str]] = []
    if answer is not None:
        rows.append(("answer", f'<span class="answer">{escape(answer)}</span>'))
    if record.slice is not None:
        rows.append(("slice", escape(f"{record.slice.label()}, {record.slice.window}")))
    if record.requested is not None and record.requested != record.region:
        rows.append(("requested", escape(record.requested)))
    if record.region is not None:
        rows.append(("shown", escape(record.region) + (" (clamped)" if record.clamped else "")))
    if record.level is not None:
        rows.append(("level", str(record.level)))
    if record.mpp is not None:
        rows.append(("spacing", escape(modality(kind).spacing(record.mpp))))
    rows += [
        (
            "tokens",
            _tokens(record.prompt_tokens, record.completion_tokens, record.reasoning_tokens),
        ),
        ("time", f"model {record.model_s:.2f} s, tool {record.tool_s:.2f} s"),
        ("context", f"{record.sent_messages} messages, {len(record.images_sent)} images"),
    ]
    notes = "".join(f"<li>{escape(note)}</li>" for note in record.notes)
    figure = (
        f"<figure>{image_tag(artifacts, record.artifact, f'step {record.step}')}</figure>"
        if record.artifact is not None
        else ""
    )
    reasoning = f'<p class="reasoning">{escape(record.reasoning)}</p>' if record.reasoning else ""
    return (
        f'<article class="step" id="step-{record.step}"><h2>Step {record.step}{badges}</h2>'
        f'<div class="row">{figure}<div class="text">{reasoning}{_facts(rows)}'
        + (f"<ul>{notes}</ul>" if notes else "")
        + f"{_errors(record)}{_outputs(record)}</div></div></article>"
    )


def _patch_card(record: StepRecord, artifacts: ArtifactStore) -> str:
    """A small card: the patch, its answer; the rest folded away (a baseline has dozens)."""
    image = (
        image_tag(artifacts, record.artifact, f"patch {record.step}")
        if record.artifact is not None
        else '<div class="missing">no image</div>'
    )
    answer = (record.action or {}).get("answer")
    shown = escape(record.region) if record.region is not None else ""
    details = f'<p class="reasoning">{escape(record.reasoning)}</p>' if record.reasoning else ""
    details += f'<p class="muted">{shown}</p>{_errors(record)}{_outputs(record)}'
    return (
        f'<div class="card" id="step-{record.step}">{image}<div><b>#{record.step}</b> '
        + (f'<span class="answer">{escape(answer)}</span>' if answer is not None else "no answer")
        + f"</div><details><summary>details</summary>{details}</details></div>"
    )


def _sections(
    steps: list[StepRecord], artifacts: ArtifactStore, kind: ModalityKind
) -> Iterator[str]:
    """Steps in order; consecutive patch steps share one compact grid."""
    patches: list[StepRecord] = []

    def flush() -> Iterator[str]:
        if patches:
            cards = "".join(_patch_card(p, artifacts) for p in patches)
            yield (
                f'<section class="patches"><h2>Patches: steps {patches[0].step}–'
                f'{patches[-1].step} ({len(patches)})</h2><div class="grid">{cards}</div></section>'
            )
            patches.clear()

    for record in steps:
        if record.kind == "patch":
            patches.append(record)
            continue
        yield from flush()
        yield _step(record, artifacts, kind)
    yield from flush()


def _where_to_look(trajectory: Trajectory, artifacts: ArtifactStore) -> str:
    hint = trajectory.where_to_look
    if hint is None:
        return ""
    return (
        '<section class="overview"><h2>Where to look (zero-shot hint)</h2>'
        f'<figure style="margin:0">{image_tag(artifacts, hint.artifact, "zero-shot heat map")}'
        f"<figcaption><pre>{escape(hint.text)}</pre></figcaption></figure></section>"
    )


def render_trajectory_html(trajectory: Trajectory, artifacts: ArtifactStore) -> str:
    """The run as one offline HTML page: header, overview with numbered boxes, every step."""
    title = f"medagent {trajectory.method}: {trajectory.question[:80]}"
    body = (
        _header(trajectory)
        + _overview(trajectory, artifacts)
        + _where_to_look(trajectory, artifacts)
        + "".join(
            _sections(
                sorted(trajectory.steps, key=lambda s: s.step), artifacts, trajectory.slide.modality
            )
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )
