"""The model layer: one async chat protocol over every backend, and structured output.

Backends: ``OpenAIBackend`` (any OpenAI-compatible server), ``VLLMBackend`` (in-process vLLM),
``TransformersBackend`` (in-process transformers), ``ScriptedModel`` (a test double).
"""

from medagent.models._cache import CachedModel, request_key
from medagent.models._endpoints import RetryPolicy
from medagent.models._factory import build_model
from medagent.models._messages import ImagePart, Message, TextPart, ToolCall, ToolSpec
from medagent.models._openai import OpenAIBackend
from medagent.models._scripted import RecordedRequest, ScriptedModel, ScriptedReply
from medagent.models._structured import (
    Structured,
    StructuredFailure,
    extract_json,
    generate_structured,
    parse_structured,
)
from medagent.models._sync import SyncChatModel
from medagent.models._transformers import TransformersBackend
from medagent.models._vllm import VLLMBackend
from medagent.models.base import (
    ChatModel,
    GenerateParams,
    Reply,
    StreamingChatModel,
    Usage,
    UsageTotals,
)

__all__ = [
    "CachedModel",
    "ChatModel",
    "GenerateParams",
    "ImagePart",
    "Message",
    "OpenAIBackend",
    "RecordedRequest",
    "Reply",
    "RetryPolicy",
    "ScriptedModel",
    "ScriptedReply",
    "StreamingChatModel",
    "Structured",
    "StructuredFailure",
    "SyncChatModel",
    "TextPart",
    "ToolCall",
    "ToolSpec",
    "TransformersBackend",
    "Usage",
    "UsageTotals",
    "VLLMBackend",
    "build_model",
    "extract_json",
    "generate_structured",
    "parse_structured",
    "request_key",
]
