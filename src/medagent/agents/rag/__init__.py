"""MMed-RAG: domain-aware retrieval of similar cases' reports, adaptive k, preference pairs."""

from medagent.agents.rag._graph import (
    RAGConfig,
    RAGPipeline,
    RAGResult,
    RAGState,
    RAGStatus,
    RetrievedReport,
    build_graph,
)
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
    rag_prompt_hashes,
    rag_prompt_text,
)

__all__ = [
    "FourRuns",
    "PreferencePair",
    "RAGAnswer",
    "RAGConfig",
    "RAGPipeline",
    "RAGResult",
    "RAGState",
    "RAGStatus",
    "RetrievedReport",
    "build_graph",
    "build_rag_messages",
    "noise_image",
    "pairs_from_runs",
    "rag_program",
    "rag_prompt_hashes",
    "rag_prompt_text",
    "write_pairs",
]
