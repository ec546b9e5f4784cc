"""The Visual Root Finder, the Follow-up Question Composer and the final summary.

(The Analytical Insight Agent, which uses tools, lives in ``_investigate``.)
"""

from __future__ import annotations

from medagent.agents.insight._context import RunContext, normalize_question
from medagent.agents.insight._outputs import (
    FindingOut,
    FollowUps,
    SummaryOutput,
    root_schema,
)
from medagent.agents.insight._report import Finding, Insight, InsightEvent, QuestionRecord
from medagent.errors import MedagentError
from medagent.tools import overview, zoom

__all__ = ["compose", "find_roots", "rank_insights", "show_overviews", "summarize"]


def _finding(run: RunContext, found: FindingOut) -> Finding:
    """The finding, its region clamped to its image and shown as a crop; a region that lies
    outside the image is dropped (the text stays)."""
    if not 1 <= found.image <= len(run.sources):
        return Finding(text=found.description, image=1)
    source = run.sources[found.image - 1]
    if found.region is None:
        return Finding(text=found.description, image=found.image)
    inside = found.region.region().clamp(source.slide.dimensions)
    if inside is None:
        return Finding(text=found.description, image=found.image)
    try:
        view = zoom(
            source.tools,
            x=inside.x,
            y=inside.y,
            width=inside.width,
            height=inside.height,
            long_side=min(source.tools.policy.long_side, 512),
        )
    except MedagentError:
        return Finding(text=found.description, image=found.image, region=inside)
    return Finding(
        text=found.description, image=found.image, region=view.region, artifact=view.artifact
    )


def show_overviews(run: RunContext) -> None:
    """Render each image's overview (with level-0 guides) once, for every module to show."""
    for source in run.sources:
        if source.overview is None:
            shown = overview(source.tools, long_side=source.tools.policy.long_side)
            source.overview = shown.artifact


async def find_roots(run: RunContext) -> list[QuestionRecord] | None:
    """Salient findings and k root questions; ``None`` when the model gave no valid reply."""
    show_overviews(run)
    k = run.config.roots
    messages = run.request("root_finder", *run.images_intro(), goal=run.goal, k=k)
    value = await run.call("root_finder", messages, root_schema(k))
    if value is None:
        return None
    run.findings = [_finding(run, found) for found in value.findings]
    records: list[QuestionRecord] = []
    seen: set[str] = set()
    for question in value.questions:
        key = normalize_question(question)
        if not key or key in seen:
            continue  # the same question twice would grow two identical branches
        seen.add(key)
        branch = len(records) + 1
        records.append(
            QuestionRecord(
                id=f"b{branch}-d1", branch=branch, depth=1, kind="root", question=question.strip()
            )
        )
    run.questions.extend(records)
    run.emit(
        InsightEvent(
            kind="roots",
            text=f"{len(run.findings)} findings; root questions: "
            + " | ".join(r.question for r in records),
        )
    )
    return records


def _asked(run: RunContext) -> set[str]:
    return {normalize_question(q.question) for q in run.questions}


async def compose(run: RunContext, branch: int, depth: int) -> QuestionRecord | None:
    """The next question of ``branch`` (to be asked at ``depth + 1``), or ``None`` to stop it.

    The composer proposes one candidate per kind and picks one. A candidate that repeats an
    asked question is never asked. In adaptive mode the branch stops when the composer says
    nothing is new or its pick is a repeat; otherwise the first new candidate stands in for a
    repeated pick, and the branch stops only when no candidate is new.
    """
    chain = [i for i in run.insights if i.branch == branch]
    others = [i for i in run.insights if i.branch != branch]
    messages = run.request(
        "composer",
        goal=run.goal,
        chain="\n".join(f"- {i.question} → {i.text}" for i in chain) or "- (none)",
        others="\n".join(f"- {i.text}" for i in others) or "- (none)",
        asked="\n".join(f"- {q.question}" for q in run.questions),
    )
    value = await run.call(
        "composer",
        messages,
        FollowUps,
        branch=branch,
        depth=depth + 1,
    )
    if value is None:
        run.emit(InsightEvent(kind="stop", text="no valid follow-up", branch=branch, depth=depth))
        return None
    candidates = value.candidates()
    asked = _asked(run)

    def new(question: str) -> bool:
        return bool(question) and normalize_question(question) not in asked

    kind = value.choice
    if run.config.adaptive and (value.nothing_new or not new(candidates[kind])):
        run.emit(InsightEvent(kind="stop", text="nothing new", branch=branch, depth=depth))
        return None
    if not new(candidates[kind]):
        fresh = [k for k, q in candidates.items() if new(q)]
        if not fresh:
            run.emit(InsightEvent(kind="stop", text="no new question", branch=branch, depth=depth))
            return None
        kind = fresh[0]
    record = QuestionRecord(
        id=f"b{branch}-d{depth + 1}",
        branch=branch,
        depth=depth + 1,
        kind=kind,
        question=candidates[kind],
        parent=chain[-1].id if chain else None,
        candidates=dict(candidates),
    )
    run.questions.append(record)
    run.emit(
        InsightEvent(kind="followup", text=f"{kind}: {record.question}", branch=branch, depth=depth)
    )
    return record


def _merge(keep: Insight, dropped: list[Insight]) -> Insight:
    return keep.model_copy(
        update={
            "evidence": [*keep.evidence, *(e for d in dropped for e in d.evidence)],
            "merged": [*keep.merged, *(d.id for d in dropped)],
        }
    )


def rank_insights(insights: list[Insight], summary: SummaryOutput | None = None) -> list[Insight]:
    """De-duplicated and ranked insights: ``rank`` set, duplicates' evidence merged in.

    Insights with the same normalized text are always one. The summary's duplicate groups and
    ranking (insight numbers, 1-based) are applied where they name existing insights (others
    are ignored); insights it does not rank follow, by confidence, then amount of evidence,
    then the order they were found.
    """
    n = len(insights)
    owner = list(range(n))  # index of the insight each one is folded into

    def root(i: int) -> int:
        while owner[i] != i:
            i = owner[i]
        return i

    by_text: dict[str, int] = {}
    for index, insight in enumerate(insights):
        key = normalize_question(insight.text)
        if key in by_text:
            owner[index] = root(by_text[key])
        else:
            by_text[key] = index
    for group in summary.duplicates if summary is not None else []:
        valid = [g - 1 for g in group if 1 <= g <= n]
        for other in valid[1:]:
            a, b = root(valid[0]), root(other)
            if a != b:
                owner[b] = a
    kept = [i for i in range(n) if root(i) == i]
    folded = {
        i: _merge(insights[i], [insights[j] for j in range(n) if j != i and root(j) == i])
        for i in kept
    }
    order: list[int] = []
    for number in summary.ranking if summary is not None else []:
        if not 1 <= number <= n:
            continue
        index = root(number - 1)
        if index not in order:
            order.append(index)
    rest = sorted(
        (i for i in kept if i not in order),
        key=lambda i: (-folded[i].confidence, -len(folded[i].evidence), i),
    )
    return [
        folded[i].model_copy(update={"rank": rank})
        for rank, i in enumerate([*order, *rest], start=1)
    ]


async def summarize(run: RunContext, *, ask_model: bool) -> bool:
    """Set ``run.ranked`` and ``run.summary``; ``False`` when the summary reply was invalid.

    Without ``ask_model`` (the model is unreachable) the ranking is the deterministic one and
    the summary stays empty.
    """
    if not run.insights:
        run.ranked = []
        return True
    parsed: SummaryOutput | None = None
    if ask_model:
        listing = "\n".join(
            f"{number}. ({i.kind}, confidence {i.confidence:.0%}) {i.text}"
            for number, i in enumerate(run.insights, start=1)
        )
        messages = run.request("summary", goal=run.goal, insights=listing)
        parsed = await run.call("summary", messages, SummaryOutput)
    run.ranked = rank_insights(run.insights, parsed)
    run.summary = parsed.summary if parsed is not None else ""
    return parsed is not None or not ask_model
