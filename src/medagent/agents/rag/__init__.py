"""MMed-RAG: domain-aware retrieval of similar cases' reports, adaptive k, preference pairs."""

from medagent.agents.rag._graph import RAGConfig, RAGPipeline, RAGResult, RetrievedReport
from medagent.agents.rag._pairs import (
    FourRuns,
    PreferencePair,
    noise_image,
    pairs_from_runs,
    write_pairs,
)
from medagent.agents.rag._prompt import (
    RAGAnswer,
    build_rag_messages,
    rag_program,
    rag_prompt_text,
)

__all__ = [
    "FourRuns",
    "PreferencePair",
    "RAGAnswer",
    "RAGConfig",
    "RAGPipeline",
    "RAGResult",
    "RetrievedReport",
    "build_rag_messages",
    "noise_image",
    "pairs_from_runs",
    "rag_program",
    "rag_prompt_text",
    "write_pairs",
]
