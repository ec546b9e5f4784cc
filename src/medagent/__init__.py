"""medagent: agents that read medical images with vision-language models.

The public SDK surface; everything here is stable API. Subpackages (``medagent.models``,
``medagent.artifacts``, ``medagent.testing``) hold the rest.
"""

from typing import TYPE_CHECKING

from medagent._version import __version__
from medagent.artifacts import ArtifactRef, ArtifactStore
from medagent.errors import (
    BudgetExhaustedError,
    ConfigError,
    DependencyMissingError,
    InputError,
    MedagentError,
    ModelError,
    ModelResponseError,
    ModelTimeoutError,
    ModelUnavailableError,
)
from medagent.models import (
    ChatModel,
    GenerateParams,
    Message,
    Reply,
    Structured,
    StructuredFailure,
    SyncChatModel,
    ToolSpec,
    build_model,
    generate_structured,
)
from medagent.settings import Settings

if TYPE_CHECKING:
    from medagent._trace import Tracing
    from medagent.agents.giant import GiantConfig, GiantNavigator, GiantResult
    from medagent.agents.insight import InsightAgent, InsightConfig, InsightReport

_LAZY = {
    # The agents pull in LangGraph (~0.5 s); load them when first used.
    "GiantConfig": "medagent.agents.giant",
    "GiantNavigator": "medagent.agents.giant",
    "GiantResult": "medagent.agents.giant",
    "InsightAgent": "medagent.agents.insight",
    "InsightConfig": "medagent.agents.insight",
    "InsightReport": "medagent.agents.insight",
    # OpenTelemetry is imported only when a Tracing is made; the class itself is light.
    "Tracing": "medagent._trace",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medagent' has no attribute {name!r}")


__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "BudgetExhaustedError",
    "ChatModel",
    "ConfigError",
    "DependencyMissingError",
    "GenerateParams",
    "GiantConfig",
    "GiantNavigator",
    "GiantResult",
    "InputError",
    "InsightAgent",
    "InsightConfig",
    "InsightReport",
    "MedagentError",
    "Message",
    "ModelError",
    "ModelResponseError",
    "ModelTimeoutError",
    "ModelUnavailableError",
    "Reply",
    "Settings",
    "Structured",
    "StructuredFailure",
    "SyncChatModel",
    "ToolSpec",
    "Tracing",
    "__version__",
    "build_model",
    "generate_structured",
]
