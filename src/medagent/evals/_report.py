"""Reports on finished runs: markdown for the terminal, one self-contained HTML file.

Several runs are shown side by side (same tasks in the same rows), then in the paper's layout
(methods as rows, beside the published numbers), with cost and time per correct answer, and
each later run paired against the first on the items both have. Plots are inline SVG, so the
HTML opens offline and needs no plotting library.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import get_args

from pydantic import BaseModel, ConfigDict, Field

from medagent.errors import InputError
from medagent.evals._annotations import annotation_summary
from medagent.evals._paired import PairedComparison, compare_runs, correct_counts
from medagent.evals._published import published_for
from medagent.evals._records import EvalItem, ItemResult, MetricType
from medagent.evals._review import ReviewAgreement, read_review_file, review_agreement, review_table
from medagent.evals._runner import load_results, read_manifest
from medagent.evals._summary import RunSummary, TaskSummary, summarize

__all__ = ["RunReport", "load_run", "render_html", "render_markdown"]


class RunReport(BaseModel):
    """One run directory, summarized."""

    model_config = ConfigDict(frozen=True)

    name: str
    run_dir: Path
    method: str
    model: str
    dataset: str
    summary: RunSummary
    notes: list[str] = Field(default_factory=list, description="one line each, for the user")
    budget_stop: str | None = Field(None, description="how the budget ended the run, if it did")
    review: ReviewAgreement | None = Field(None, description="a reviewer's grades (review.jsonl)")
    # Item by item, for paired comparisons and correct counts; not part of the summary's JSON.
    results: list[ItemResult] = Field(default_factory=list, exclude=True, repr=False)
    items: dict[str, EvalItem] = Field(default_factory=dict, exclude=True, repr=False)


def _budget_stop(manifest: dict[str, object] | None) -> str | None:
    """The line saying that the spend cap ended the run (manifest ``budget``), if it did."""
    budget = (manifest or {}).get("budget")
    if not isinstance(budget, dict) or not budget.get("stopped_run"):
        return None
    spent, cap = budget.get("spent_usd") or 0, budget.get("budget_usd") or 0
    return (
        f"the budget ended the run: ${spent:.4f} spent of ${cap:.2f}, "
        f"{budget.get('unfinished', '?')} item(s) unfinished; rerun with a higher "
        "--budget-usd to resume"
    )


def _metric(value: object) -> MetricType:
    # Results from another medagent version may name a metric this one does not know.
    return value if value in get_args(MetricType) else "accuracy"  # type: ignore[return-value]


def load_run(run_dir: str | Path, *, replicates: int = 1000, seed: int = 0) -> RunReport:
    """Read ``results.jsonl`` and ``manifest.json`` of a run folder and summarize it.

    Whatever ``eval run`` left (a run killed at any point, a manifest cut short by a crash,
    results of an older version) is reported, with notes; only a folder that is not a run, or
    holds no finished item, is an ``InputError``.
    """
    folder = Path(run_dir)
    manifest_path = folder / "manifest.json"
    results_path = folder / "results.jsonl"
    if not manifest_path.exists() and not results_path.exists():
        raise InputError(f"{folder} is not an evaluation run (no manifest.json)", path=str(folder))
    manifest, problem = read_manifest(manifest_path)
    notes = [] if problem is None else [f"{manifest_path} is damaged ({problem})"]
    if manifest is None and problem is None:
        notes.append(f"{folder} has no manifest.json: method, model and dataset are unknown")
    try:
        results = list(load_results(results_path).values())
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise InputError(f"cannot read {results_path}: {reason}", path=str(results_path)) from None
    if not results:
        raise InputError(f"{folder} has no finished items yet (results.jsonl is empty)")
    items = {
        r.id: EvalItem(
            id=r.id,
            task=r.task,
            question="",
            answer=r.reference,
            metric=_metric(r.metadata.get("metric", "accuracy")),
            metadata=r.metadata,
        )
        for r in results
    }
    config = (manifest or {}).get("config")
    config = config if isinstance(config, dict) else {}
    return RunReport(
        name=folder.name,
        run_dir=folder,
        method=str(config.get("method", "?")),
        model=str(config.get("model", "?")),
        dataset=str(config.get("dataset", "?")),
        summary=summarize(results, items, bootstrap_replicates=replicates, seed=seed),
        notes=notes,
        budget_stop=_budget_stop(manifest),
        review=review_agreement(results, read_review_file(folder), items),
        results=results,
        items=items,
    )


def _score(task: TaskSummary | None) -> str:
    if task is None or task.score is None:
        return "—"
    if task.bootstrap is not None:
        return f"{100 * task.bootstrap.mean:.1f} ± {100 * task.bootstrap.std:.1f}"
    return f"{100 * task.score:.1f}"


def _tasks(reports: list[RunReport]) -> list[str]:
    return sorted({task for r in reports for task in r.summary.tasks})


class _Section(BaseModel):
    """One table of a report with the lines under it; markdown and HTML are drawn from these."""

    title: str
    table: list[str]
    notes: list[str] = Field(default_factory=list)


def _scores(reports: list[RunReport]) -> _Section:
    header = "| task | metric | " + " | ".join(r.name for r in reports) + " |"
    lines = [header, "|" + "---|" * (len(reports) + 2)]
    for task in _tasks(reports):
        metric = next(r.summary.tasks[task].score_name for r in reports if task in r.summary.tasks)
        cells = [_score(r.summary.tasks.get(task)) for r in reports]
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    overall = []
    for r in reports:
        o = r.summary.overall
        overall.append(
            "—"
            if o.score is None
            else (
                f"{100 * o.bootstrap.mean:.1f} ± {100 * o.bootstrap.std:.1f}"
                if o.bootstrap
                else f"{100 * o.score:.1f}"
            )
        )
    lines.append("| **overall** | mean of tasks | " + " | ".join(overall) + " |")
    return _Section(title="Scores", table=lines)


def _runs(reports: list[RunReport]) -> _Section:
    lines = [
        "| run | method | model | items | failed | mean steps | tokens | mean latency | cost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        o = r.summary.overall
        cost = f"${o.cost_usd:.2f}" if o.cost_usd is not None else "—"
        lines.append(
            f"| {r.name} | {r.method} | {r.model} | {o.n} | {o.n_failed} | {o.mean_steps:.1f} | "
            f"{o.prompt_tokens + o.completion_tokens} | {o.mean_latency_s:.1f} s | {cost} |"
        )
    stops = [f"{r.name}: {r.budget_stop}" for r in reports if r.budget_stop]
    return _Section(title="Runs", table=lines, notes=stops)


def _paper(reports: list[RunReport]) -> _Section:
    """Methods as rows, tasks as columns; published numbers below, marked, in no mean."""
    tasks = _tasks(reports)
    lines = ["| method | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
    for r in reports:
        cells = [_score(r.summary.tasks.get(task)) for task in tasks]
        lines.append(f"| {r.name} ({r.method}, {r.model}) | " + " | ".join(cells) + " |")
    published: dict[str, dict[str, str]] = {}
    sources: set[str] = set()
    for task in tasks:
        metric = next(r.summary.tasks[task].score_name for r in reports if task in r.summary.tasks)
        for ref in published_for(task, metric):
            std = "" if ref.std is None else f" ± {ref.std:.1f}"
            published.setdefault(ref.method, {})[task] = f"{ref.score:.1f}{std}"
            sources.add(ref.source)
    for method, values in published.items():
        row = [values.get(task, "—") for task in tasks]
        lines.append(f"| {method} — published | " + " | ".join(row) + " |")
    notes = [
        f"published rows: {source}; a reference only, in no mean or comparison"
        for source in sorted(sources)
    ]
    return _Section(title="Paper layout (%, mean ± std)", table=lines, notes=notes)


def _per_correct(reports: list[RunReport]) -> _Section:
    """Tokens, dollars and seconds per correct answer: a task's totals over its correct count."""
    lines = [
        "| run | task | score | correct | tokens / correct | $ / correct | s / correct |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        counts = correct_counts(r.results, r.items)
        for name, task in sorted(r.summary.tasks.items()):
            correct = counts.get(name)
            if correct:
                tokens = f"{(task.prompt_tokens + task.completion_tokens) / correct:,.0f}"
                dollars = "—" if task.cost_usd is None else f"${task.cost_usd / correct:.4f}"
                seconds = f"{task.total_latency_s / correct:.1f}"
            else:
                tokens = dollars = seconds = "—"
            shown = "—" if correct is None else f"{correct}/{task.n_scored}"
            lines.append(
                f"| {r.name} | {name} | {_score(task)} | {shown} | {tokens} | {dollars} | "
                f"{seconds} |"
            )
    return _Section(title="Cost and time per correct answer", table=lines)


def _signed(value: float) -> str:
    return f"{100 * value:+.1f}".replace("-", "−")


def _paired(comparison: PairedComparison) -> _Section:
    a, b = comparison.a, comparison.b
    lines = [
        f"| task | metric | shared items | {a} | {b} | {b} − {a} | 95% CI | "
        f"only {a} right / only {b} right | McNemar p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for t in comparison.tasks:
        score_a = "—" if t.score_a is None else f"{100 * t.score_a:.1f}"
        score_b = "—" if t.score_b is None else f"{100 * t.score_b:.1f}"
        diff = ci = "—"
        if t.score_a is not None and t.score_b is not None:
            diff = _signed(t.score_b - t.score_a)
        if t.bootstrap is not None:
            ci = f"[{_signed(t.bootstrap.low)}, {_signed(t.bootstrap.high)}]"
        discordant = p = "—"
        if t.mcnemar is not None:
            discordant = f"{t.mcnemar.b} / {t.mcnemar.c}"
            p = "< 0.001" if t.mcnemar.p_value < 0.001 else f"{t.mcnemar.p_value:.3f}"
        lines.append(
            f"| {t.task} | {t.score_name} | {t.n_shared} | {score_a} | {score_b} | {diff} | "
            f"{ci} | {discordant} | {p} |"
        )
        for name, count, ids in ((a, t.n_only_a, t.only_a), (b, t.n_only_b, t.only_b)):
            if count:
                more = ", …" if count > len(ids) else ""
                notes.append(
                    f"{t.task}: {count} item(s) only in {name}, not compared: "
                    f"{', '.join(ids)}{more}"
                )
    for name, tasks in ((a, comparison.tasks_only_a), (b, comparison.tasks_only_b)):
        notes += [f"{task}: only in {name}, not compared" for task in tasks]
    notes += [
        f"{task}: scored with different metrics in {a} and {b}, not compared"
        for task in comparison.tasks_other_metric
    ]
    return _Section(
        title=f"Paired: {b} against {a} (shared items; differences in points)",
        table=lines,
        notes=notes,
    )


def _annotations(reports: list[RunReport]) -> _Section | None:
    """Per run and task, how the views met pathologists' annotations (``eval run
    --annotations``); ``None`` when no item has them."""
    lines = [
        "| run | task | items | views on annotation | reached one | first step | "
        "annotated area seen closely |",
        "|---|---|---|---|---|---|---|",
    ]
    thresholds = set()
    for r in reports:
        for t in annotation_summary(r.results):
            share = "—" if t.steps_on_annotation is None else f"{100 * t.steps_on_annotation:.1f}%"
            first = "—" if t.first_step is None else f"{t.first_step:.1f}"
            area = "—" if t.area_viewed is None else f"{100 * t.area_viewed:.1f}%"
            lines.append(
                f"| {r.name} | {t.task} | {t.items} | {share} | {100 * t.reached:.1f}% | "
                f"{first} | {area} |"
            )
            thresholds.add(t.max_downsample)
    if len(lines) == 2:
        return None
    limit = ", ".join("mixed" if d is None else f"{d:g}" for d in sorted(thresholds, key=str))
    return _Section(
        title="Views against annotations",
        table=lines,
        notes=[
            "means over items whose slide has annotations; first step over items that reached "
            f"one; seen closely: at most {limit} level-0 pixels per pixel shown"
        ],
    )


def _sections(reports: list[RunReport]) -> list[_Section]:
    sections = [_scores(reports), _runs(reports), _paper(reports), _per_correct(reports)]
    for first, later in ((reports[0], r) for r in reports[1:]):
        comparison = compare_runs(
            (first.name, first.results, first.items),
            (later.name, later.results, later.items),
            replicates=first.summary.bootstrap_replicates,
            seed=first.summary.seed,
        )
        sections.append(_paired(comparison))
    reviewed = [(r.name, r.review) for r in reports if r.review is not None]
    if reviewed:
        table, notes = review_table(reviewed)
        sections.append(
            _Section(title="Reviewer against automatic scoring", table=table, notes=notes)
        )
    annotated = _annotations(reports)
    if annotated is not None:
        sections.append(annotated)
    return sections


def render_markdown(reports: list[RunReport]) -> str:
    """Per-task scores (mean ± std over bootstrap replicates, in %) and costs, runs as columns;
    the paper's layout with published rows; cost and time per correct answer; and each later
    run paired against the first (difference, paired bootstrap 95% CI, exact McNemar p)."""
    blocks = []
    for index, section in enumerate(_sections(reports)):
        # The first two tables keep the layout they always had; the others say what they are.
        head = [] if index < 2 else [f"## {section.title}", ""]
        notes = ["", *(f"- {note}" for note in section.notes)] if section.notes else []
        blocks.append("\n".join([*head, *section.table, *notes]))
    return "\n\n".join(blocks) + "\n"


_COLOURS = ["#2b6cb0", "#dd6b20", "#2f855a", "#9b2c2c", "#6b46c1", "#975a16"]


def _bars(reports: list[RunReport]) -> str:
    """Grouped bars per task with ± std error bars, as inline SVG."""
    tasks = _tasks(reports)
    group, bar, top, height, left = 24 + 22 * len(reports), 18, 20, 220, 44
    width = left + group * max(1, len(tasks)) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 90}" '
        'font-family="sans-serif" font-size="11">'
    ]
    for tick in (0, 25, 50, 75, 100):
        y = top + height - height * tick / 100
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y}" y2="{y}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{tick}</text>'
        )
    for t_index, task in enumerate(tasks):
        x0 = left + t_index * group + 12
        for r_index, report in enumerate(reports):
            summary = report.summary.tasks.get(task)
            if summary is None or summary.score is None:
                continue
            mean = summary.bootstrap.mean if summary.bootstrap else summary.score
            std = summary.bootstrap.std if summary.bootstrap else 0.0
            x = x0 + r_index * 22
            y = top + height * (1 - mean)
            colour = _COLOURS[r_index % len(_COLOURS)]
            parts.append(
                f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{height * mean:.1f}" '
                f'fill="{colour}"><title>{html.escape(report.name)} {html.escape(task)}: '
                f"{100 * mean:.1f} ± {100 * std:.1f}</title></rect>"
            )
            if std:
                hi, lo = (
                    top + height * (1 - min(1.0, mean + std)),
                    top + height * (1 - max(0.0, mean - std)),
                )
                parts.append(
                    f'<line x1="{x + bar / 2}" x2="{x + bar / 2}" y1="{hi:.1f}" '
                    f'y2="{lo:.1f}" stroke="#222"/>'
                )
        parts.append(
            f'<text x="{x0}" y="{top + height + 14}" transform="rotate(30 {x0} '
            f'{top + height + 14})">{html.escape(task)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _confusion(task: TaskSummary) -> str:
    if task.confusion is None:
        return ""
    labels, matrix = task.confusion.labels, task.confusion.matrix
    peak = max((v for row in matrix for v in row), default=1) or 1
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    rows = []
    for label, row in zip(labels, matrix, strict=True):
        cells = "".join(
            f'<td style="background: rgba(43,108,176,{v / peak:.2f})">{v}</td>' for v in row
        )
        rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return (
        f"<details><summary>confusion matrix: {html.escape(task.task)}</summary>"
        f'<table class="cm"><tr><th>reference \\ predicted</th>{head}</tr>'
        + "".join(rows)
        + "</table></details>"
    )


def _table(markdown_lines: list[str]) -> str:
    rows = [line.strip("|").split("|") for line in markdown_lines if not line.startswith("|-")]
    out = ["<table>"]
    for index, cells in enumerate(rows):
        tag = "th" if index == 0 else "td"
        out.append(
            "<tr>"
            + "".join(f"<{tag}>{html.escape(c.strip().replace('**', ''))}</{tag}>" for c in cells)
            + "</tr>"
        )
    out.append("</table>")
    return "".join(out)


def render_html(reports: list[RunReport]) -> str:
    """A self-contained page: the markdown tables as HTML, score bars, confusion matrices."""
    legend = "".join(
        f'<span style="color:{_COLOURS[i % len(_COLOURS)]}">■</span> {html.escape(r.name)} '
        f"({html.escape(r.method)}, {html.escape(r.model)}) "
        for i, r in enumerate(reports)
    )
    matrices = "".join(
        f"<h3>{html.escape(r.name)}</h3>" + "".join(_confusion(t) for t in r.summary.tasks.values())
        for r in reports
    )
    body = []
    for index, section in enumerate(_sections(reports)):
        body.append(f"<h2>{html.escape(section.title)}</h2>{_table(section.table)}")
        if index == 0:
            body.append(f"<p>{legend}</p>{_bars(reports)}")
        body.append("".join(f"<p>{html.escape(note)}</p>" for note in section.notes))
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:"
        "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th{background:#f4f4f4}.cm td{min-width:2em;text-align:center}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">"
        f"<title>medagent evaluation report</title><style>{style}</style></head><body>"
        "<h1>Evaluation report</h1><p>Scores are % (mean ± std over bootstrap replicates); "
        "failed items count as wrong.</p>"
        + "".join(body)
        + f"<h2>Confusion matrices</h2>{matrices}</body></html>"
    )
