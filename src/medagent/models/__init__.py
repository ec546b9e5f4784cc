"""The model layer: one async chat protocol over every backend, and structured output.

Backends: ``OpenAIBackend`` (any OpenAI-compatible server), ``VLLMBackend`` (in-process vLLM),
``TransformersBackend`` (in-process transformers), ``ScriptedModel`` (a test double).
"""

from medagent.models._cache import CachedModel, request_key
from medagent.models._check import context_row, preset_row, run_checks
from medagent.models._endpoints import RetryPolicy
from medagent.models._factory import build_model
from medagent.models._messages import (
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    ToolSpec,
    kept_images,
    prune_images,
)
from medagent.models._openai import OpenAIBackend
from medagent.models._params import ParameterMemory, ParameterRules, rules_for_model
from medagent.models._presets import (
    NO_PRESET,
    VLM_PRESETS,
    VLMPreset,
    detect_preset,
    preset_for,
    resolve_preset,
)
from medagent.models._scripted import RecordedRequest, ScriptedModel, ScriptedReply
from medagent.models._spend import (
    MODEL_PRICES,
    PRICES_AS_OF,
    Prices,
    Spend,
    SpendCap,
    resolve_prices,
    watch_budget,
)
from medagent.models._structured import (
    Attempts,
    Correction,
    Structured,
    StructuredFailure,
    ask_with_corrections,
    correction_message,
    extract_json,
    generate_structured,
    parse_structured,
)
from medagent.models._sync import SyncChatModel
from medagent.models._traced import TracedModel, message_parts
from medagent.models._transformers import TransformersBackend
from medagent.models._vllm import VLLMBackend
from medagent.models._wire import RAW_IMAGE_LONG_SIDE, forced_tool_call_schema
from medagent.models.base import (
    ChatModel,
    GenerateParams,
    ReasoningEffort,
    Reply,
    StreamingChatModel,
    Usage,
    UsageTotals,
    image_cap,
)

__all__ = [
    "Attempts",
    "CachedModel",
    "ChatModel",
    "Correction",
    "GenerateParams",
    "ImagePart",
    "MODEL_PRICES",
    "Message",
    "NO_PRESET",
    "OpenAIBackend",
    "PRICES_AS_OF",
    "ParameterMemory",
    "ParameterRules",
    "Prices",
    "RAW_IMAGE_LONG_SIDE",
    "ReasoningEffort",
    "RecordedRequest",
    "Reply",
    "RetryPolicy",
    "ScriptedModel",
    "ScriptedReply",
    "Spend",
    "SpendCap",
    "StreamingChatModel",
    "Structured",
    "StructuredFailure",
    "SyncChatModel",
    "TextPart",
    "ToolCall",
    "ToolSpec",
    "TracedModel",
    "TransformersBackend",
    "Usage",
    "UsageTotals",
    "VLLMBackend",
    "VLMPreset",
    "VLM_PRESETS",
    "ask_with_corrections",
    "build_model",
    "context_row",
    "correction_message",
    "detect_preset",
    "extract_json",
    "forced_tool_call_schema",
    "generate_structured",
    "image_cap",
    "kept_images",
    "message_parts",
    "parse_structured",
    "preset_for",
    "preset_row",
    "prune_images",
    "request_key",
    "resolve_preset",
    "resolve_prices",
    "rules_for_model",
    "run_checks",
    "watch_budget",
]
