"""The MedInsightAgent loop as a LangGraph graph.

    roots → investigate → compose → investigate → … → summarize

``roots`` finds salient findings and k root questions (one branch each); ``investigate``
answers every open question of the current depth with the tool-using insight agent;
``compose`` proposes and picks one follow-up per answered branch; the loop ends at depth p,
or earlier when no branch has a question left (adaptive mode stops branches that have
nothing new). ``summarize`` de-duplicates and ranks the insights. Branches are worked in
order, one model call at a time, so a run is repeatable with a greedy model.

The nodes are module-level functions of ``(state, run)``; ``build_graph`` binds the run.
"""

from __future__ import annotations

from functools import partial
from typing import Literal, TypedDict

from langgraph.graph import END, START, StateGraph

from medagent._trace import traced_step
from medagent.agents.insight._context import RunContext
from medagent.agents.insight._investigate import investigate
from medagent.agents.insight._modules import compose, find_roots, summarize
from medagent.errors import ModelError

__all__ = ["GraphStatus", "InsightState", "build_graph"]

GraphStatus = Literal["running", "failed", "model_error", "budget_exhausted", "timeout"]
"""How the loop stands: ``running`` until the run cannot go on (or ran out of time)."""

_Node = Literal["investigate", "compose", "summarize"]


class InsightState(TypedDict, total=False):
    """Control state only: the depth reached, the questions open at it, how the run stands.
    The records (questions, insights, the trace) live in the ``RunContext``; every node
    replaces the fields it returns, none accumulates."""

    depth: int
    open: list[str]  # ids of the questions to answer at this depth
    status: GraphStatus
    error: str | None


def _unreachable(exc: ModelError) -> InsightState:
    return {"status": "model_error", "error": f"the model could not be reached: {exc}"}


async def roots(state: InsightState, run: RunContext) -> InsightState:
    """The salient findings and the root questions: one open question per branch."""
    try:
        records = await find_roots(run)
    except ModelError as exc:
        return _unreachable(exc)
    if records is None:
        return {
            "status": "failed",
            "error": "the root finder gave no valid reply (see the trace)",
            "open": [],
        }
    return {"status": "running", "depth": 1, "open": [r.id for r in records]}


async def investigate_open(state: InsightState, run: RunContext) -> InsightState:
    """Answer each open question in turn; its insight is added to the run's records."""
    records = {q.id: q for q in run.questions}
    found = {i.id: i for i in run.insights}
    for question_id in state.get("open", []):
        record = records[question_id]
        parent = found.get(record.parent) if record.parent else None
        try:
            insight = await investigate(run, record, parent)
        except ModelError as exc:
            record.status = "model_error"
            record.error = str(exc)
            return _unreachable(exc)
        if insight is not None:
            run.insights.append(insight)
            found[insight.id] = insight
    return {"open": []}


async def compose_next(state: InsightState, run: RunContext) -> InsightState:
    """One follow-up per branch answered at this depth, to be asked one level deeper."""
    depth = state["depth"]
    answered = [q for q in run.questions if q.depth == depth and q.status == "answered"]
    following: list[str] = []
    for record in answered:
        try:
            follow_up = await compose(run, record.branch, depth)
        except ModelError as exc:
            return _unreachable(exc)
        if follow_up is not None:
            following.append(follow_up.id)
    return {"depth": depth + 1, "open": following}


async def summarize_all(state: InsightState, run: RunContext) -> InsightState:
    """Rank the insights (with the model's summary unless the model is unreachable)."""
    try:
        await summarize(run, ask_model=state.get("status") != "model_error")
    except ModelError as exc:
        await summarize(run, ask_model=False)
        return _unreachable(exc)
    return {}


def after_roots(state: InsightState) -> _Node:
    return "investigate" if state.get("open") else "summarize"


def after_investigate(state: InsightState, run: RunContext) -> _Node:
    if state.get("status") != "running" or state["depth"] >= run.config.depth:
        return "summarize"
    return "compose"


def after_compose(state: InsightState) -> _Node:
    if state.get("status") != "running" or not state.get("open"):
        return "summarize"
    return "investigate"


def build_graph(run: RunContext) -> StateGraph[InsightState]:
    """The graph for one run (compile it, then ``ainvoke(InsightState())``)."""
    graph: StateGraph[InsightState] = StateGraph(InsightState)
    graph.add_node("roots", traced_step("insight", "roots", partial(roots, run=run)))
    graph.add_node(
        "investigate", traced_step("insight", "investigate", partial(investigate_open, run=run))
    )
    graph.add_node("compose", traced_step("insight", "compose", partial(compose_next, run=run)))
    graph.add_node(
        "summarize", traced_step("insight", "summarize", partial(summarize_all, run=run))
    )
    graph.add_edge(START, "roots")
    graph.add_conditional_edges("roots", after_roots, ["investigate", "summarize"])
    graph.add_conditional_edges(
        "investigate", partial(after_investigate, run=run), ["compose", "summarize"]
    )
    graph.add_conditional_edges("compose", after_compose, ["investigate", "summarize"])
    graph.add_edge("summarize", END)
    return graph
