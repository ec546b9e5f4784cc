"""MedInsightAgent: multi-step insights in medical images for an analysis goal.

``InsightAgent(model).run(images, goal)`` → ``InsightReport``: a Visual Root Finder poses k
root questions, a tool-using Analytical Insight Agent answers each as an insight with evidence,
a Follow-up Question Composer asks deeper questions to depth p; the insights come back
de-duplicated and ranked. ``score_insights`` scores them against reference insights;
``insight_program()`` holds each module's prompt, to edit or tune and pass back as ``prompts``.
"""

from medagent.agents.insight._agent import InsightAgent, prompt_hashes
from medagent.agents.insight._config import InsightConfig
from medagent.agents.insight._graph import InsightState, build_graph
from medagent.agents.insight._html import render_insight_html
from medagent.agents.insight._modules import rank_insights
from medagent.agents.insight._outputs import (
    FollowUps,
    InsightAnswer,
    QuestionKind,
    RootFinding,
    SummaryOutput,
    ToolName,
    action_schema,
    root_schema,
)
from medagent.agents.insight._prompts import insight_program
from medagent.agents.insight._report import (
    Evidence,
    Finding,
    Insight,
    InsightEvent,
    InsightReport,
    Measurement,
    ModuleCall,
    ModuleName,
    QuestionRecord,
    SourceImage,
    Status,
    ToolStep,
)
from medagent.agents.insight._scoring import (
    InsightReference,
    InsightScore,
    Matcher,
    PairVerdict,
    score_insights,
)

__all__ = [
    "Evidence",
    "Finding",
    "FollowUps",
    "Insight",
    "InsightAgent",
    "InsightAnswer",
    "InsightConfig",
    "InsightEvent",
    "InsightReference",
    "InsightReport",
    "InsightScore",
    "InsightState",
    "Matcher",
    "Measurement",
    "ModuleCall",
    "ModuleName",
    "PairVerdict",
    "QuestionKind",
    "QuestionRecord",
    "RootFinding",
    "SourceImage",
    "Status",
    "SummaryOutput",
    "ToolName",
    "ToolStep",
    "action_schema",
    "build_graph",
    "insight_program",
    "prompt_hashes",
    "rank_insights",
    "render_insight_html",
    "root_schema",
    "score_insights",
]
