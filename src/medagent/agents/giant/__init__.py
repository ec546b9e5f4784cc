"""GIANT: a VLM navigates a gigapixel slide like a pathologist, and its baselines.

``GiantNavigator(model).run(slide, question)`` → ``GiantResult`` (answer, status, trajectory).
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
from medagent.agents.giant._graph import GiantEvent, GiantState
from medagent.agents.giant._navigator import GiantNavigator, GiantResult, giant_program
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
    "RunLog",
    "Status",
    "StepRecord",
    "Trajectory",
    "ZoomAction",
    "giant_program",
]
