"""The MedInsightAgent loop as a LangGraph graph.

    roots → investigate → compose → investigate → … → summarize

``roots`` finds salient findings and k root questions (one branch each); ``investigate``
answers every open question of the current depth with the tool-using insight agent;
``compose`` proposes and picks one follow-up per answered branch; the loop ends at depth p,
or earlier when no branch has a question left (adaptive mode stops branches that have
nothing new). ``summarize`` de-duplicates and ranks the insights. Branches are worked in
order, one model call at a time, so a run is repeatable with a greedy model.
"""

from __future__ import annotations

from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from medagent.agents.insight._context import ModelDown, RunContext
from medagent.agents.insight._investigate import investigate
from medagent.agents.insight._modules import compose, find_roots, summarize

__all__ = ["InsightState", "build_graph"]


class InsightState(TypedDict, total=False):
    """Control state: the depth reached, the questions open at it, how the run stands."""

    depth: int
    open: list[str]  # ids of the questions to answer at this depth
    status: str  # "running", or "failed" / "model_error" once the run cannot go on
    error: str | None


def build_graph(run: RunContext) -> StateGraph[InsightState]:
    """The graph for one run (compile it, then ``ainvoke(InsightState())``)."""

    async def roots(state: InsightState) -> InsightState:
        try:
            records = await find_roots(run)
        except ModelDown as exc:
            return {"status": "model_error", "error": f"the model could not be reached: {exc}"}
        if records is None:
            return {
                "status": "failed",
                "error": "the root finder gave no valid reply (see the trace)",
                "open": [],
            }
        return {"status": "running", "depth": 1, "open": [r.id for r in records]}

    async def investigate_open(state: InsightState) -> InsightState:
        records = {q.id: q for q in run.questions}
        found = {i.id: i for i in run.insights}
        for question_id in state.get("open", []):
            record = records[question_id]
            parent = found.get(record.parent) if record.parent else None
            try:
                insight = await investigate(run, record, parent)
            except ModelDown as exc:
                record.status = "model_error"
                record.error = str(exc)
                return {"status": "model_error", "error": f"the model could not be reached: {exc}"}
            if insight is not None:
                run.insights.append(insight)
                found[insight.id] = insight
        return {"open": []}

    async def compose_next(state: InsightState) -> InsightState:
        depth = state["depth"]
        answered = [q for q in run.questions if q.depth == depth and q.status == "answered"]
        following: list[str] = []
        for record in answered:
            try:
                follow_up = await compose(run, record.branch, depth)
            except ModelDown as exc:
                return {"status": "model_error", "error": f"the model could not be reached: {exc}"}
            if follow_up is not None:
                following.append(follow_up.id)
        return {"depth": depth + 1, "open": following}

    async def summarize_all(state: InsightState) -> InsightState:
        try:
            await summarize(run, ask_model=state.get("status") != "model_error")
        except ModelDown as exc:
            await summarize(run, ask_model=False)
            return {"status": "model_error", "error": f"the model could not be reached: {exc}"}
        return {}

    def after_roots(state: InsightState) -> str:
        return "investigate" if state.get("open") else "summarize"

    def after_investigate(state: InsightState) -> str:
        if state.get("status") != "running" or state["depth"] >= run.config.depth:
            return "summarize"
        return "compose"

    def after_compose(state: InsightState) -> str:
        if state.get("status") != "running" or not state.get("open"):
            return "summarize"
        return "investigate"

    graph: StateGraph[InsightState] = StateGraph(InsightState)
    graph.add_node("roots", roots)
    graph.add_node("investigate", investigate_open)
    graph.add_node("compose", compose_next)
    graph.add_node("summarize", summarize_all)
    graph.add_edge(START, "roots")
    graph.add_conditional_edges("roots", after_roots, ["investigate", "summarize"])
    graph.add_conditional_edges("investigate", after_investigate, ["compose", "summarize"])
    graph.add_conditional_edges("compose", after_compose, ["investigate", "summarize"])
    graph.add_edge("summarize", END)
    return graph
