"""GIANT: a VLM navigates a gigapixel image (a slide, a radiograph) or a CT/MR volume as its
expert reader would, and its baselines.

``GiantNavigator(model).run(slide, question)`` → ``GiantResult`` (answer, status, trajectory);
a ``Volume`` (or a series folder) is navigated from a slice montage with one more action,
``slice``.
``build_graph(RunContext(...))`` is the bare navigation graph (for LangGraph Studio).
"""

from medagent.agents.giant._actions import (
    AnswerAction,
    FinalAnswer,
    GiantAction,
    LookAction,
    RandomAction,
    SliceAction,
    VolumeAction,
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
    Source,
    giant_program,
    open_source,
    prompt_hashes,
)
from medagent.agents.giant._trajectory import (
    RunLog,
    SliceInfo,
    Status,
    StepRecord,
    Trajectory,
    VolumeInfo,
)
from medagent.agents.giant._volume import SliceAt, check_volume_run

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
    "SliceAction",
    "SliceAt",
    "SliceInfo",
    "Source",
    "Status",
    "StepRecord",
    "Trajectory",
    "Visit",
    "Visits",
    "VolumeAction",
    "VolumeInfo",
    "ZoomAction",
    "build_graph",
    "check_volume_run",
    "giant_program",
    "open_source",
    "prompt_hashes",
]
