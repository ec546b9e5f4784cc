"""GIANT: a VLM navigates a gigapixel image (a slide, a radiograph) as its expert reader would,
and its baselines.

``GiantNavigator(model).run(slide, question)`` → ``GiantResult`` (answer, status, trajectory).
``build_graph(RunContext(...))`` is the bare navigation graph (for LangGraph Studio).
"""

from medagent.agents.giant._actions import (
    AnswerAction,
    FinalAnswer,
    GiantAction,
    LookAction,
    RandomAction,
    ZoomAction,
)
from medagent.agents.giant._config import GiantConfig, Method
from medagent.agents.giant._graph import (
    GiantEvent,
    GiantState,
    RunContext,
    Visit,
    Visits,
    build_graph,
)
from medagent.agents.giant._navigator import (
    GiantNavigator,
    GiantResult,
    giant_program,
    prompt_hashes,
)
from medagent.agents.giant._trajectory import RunLog, Status, StepRecord, Trajectory

__all__ = [
    "AnswerAction",
    "FinalAnswer",
    "GiantAction",
    "GiantConfig",
    "GiantEvent",
    "GiantNavigator",
    "GiantResult",
    "GiantState",
    "LookAction",
    "Method",
    "RandomAction",
    "RunContext",
    "RunLog",
    "Status",
    "StepRecord",
    "Trajectory",
    "Visit",
    "Visits",
    "ZoomAction",
    "build_graph",
    "giant_program",
    "prompt_hashes",
]
