"""Prompts: templates as files (``templates/``), loaded and hashed for run manifests; typed
signatures, prompt programs and the optimizers that tune them, saved as compiled JSON.
"""

from medagent.prompts._agents import demo_turns, fill_instructions, resolve_program
from medagent.prompts._bootstrap import BootstrapConfig, BootstrapFewShot
from medagent.prompts._compiled import CompiledProgram, PromptVersionWarning, load_compiled
from medagent.prompts._instruction_search import InstructionSearch, InstructionSearchConfig
from medagent.prompts._modules import (
    ChainOfThought,
    Demo,
    Example,
    Predict,
    Prediction,
    load_input_image,
    tracing,
)
from medagent.prompts._optimizer import (
    BudgetExhausted,
    CandidateRecord,
    Evaluation,
    Metric,
    OptimizationResult,
    OptimizerConfig,
    ProgressEvent,
    evaluate,
)
from medagent.prompts._program import Program
from medagent.prompts._random_search import RandomSearch, RandomSearchConfig
from medagent.prompts._signature import InputField, Signature
from medagent.prompts._templates import PromptTemplate, load_template
from medagent.prompts._vqa import VQA_TEMPLATES, VQAAnswer, vqa_program

__all__ = [
    "BootstrapConfig",
    "BootstrapFewShot",
    "BudgetExhausted",
    "CandidateRecord",
    "ChainOfThought",
    "CompiledProgram",
    "Demo",
    "Evaluation",
    "Example",
    "InputField",
    "InstructionSearch",
    "InstructionSearchConfig",
    "Metric",
    "OptimizationResult",
    "OptimizerConfig",
    "Predict",
    "Prediction",
    "Program",
    "ProgressEvent",
    "PromptTemplate",
    "PromptVersionWarning",
    "RandomSearch",
    "RandomSearchConfig",
    "Signature",
    "VQAAnswer",
    "VQA_TEMPLATES",
    "demo_turns",
    "evaluate",
    "fill_instructions",
    "load_compiled",
    "load_input_image",
    "load_template",
    "resolve_program",
    "tracing",
    "vqa_program",
]
