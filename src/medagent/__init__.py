"""medagent: agents that read medical images with vision-language models.

The public SDK surface; everything here is stable API. Subpackages (``medagent.models``,
``medagent.artifacts``, ``medagent.testing``) hold the rest.
"""

from medagent._version import __version__
from medagent.artifacts import ArtifactRef, ArtifactStore
from medagent.errors import (
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

__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "ChatModel",
    "ConfigError",
    "DependencyMissingError",
    "GenerateParams",
    "InputError",
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
    "__version__",
    "build_model",
    "generate_structured",
]
