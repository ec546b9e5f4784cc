"""MMed-RAG as a LangGraph graph: identify domain → retrieve → select (adaptive k) → generate.

The image stays out of the graph state (state holds text and scores only); the nodes close
over it. Retrieval filters by the identified domain, so a chest X-ray is grounded in reports
of other radiographs, not of slides.
"""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medagent.agents.base import normalize_answer
from medagent.agents.rag._pairs import FourRuns, noise_image
from medagent.agents.rag._prompt import (
    RAGAnswer,
    build_rag_messages,
    rag_program,
    rag_prompt_text,
)
from medagent.models import ChatModel, GenerateParams, Structured, generate_structured
from medagent.prompts import CompiledProgram, Program, resolve_program
from medagent.prompts._modules import load_input_image
from medagent.retrieval._adaptive_k import AdaptiveK, select_k
from medagent.retrieval._router import DomainRouter, KNNDomainRouter
from medagent.tools import ImageSearcher

__all__ = ["RAGConfig", "RAGPipeline", "RAGResult", "RetrievedReport"]


class RAGConfig(BaseModel):
    """Retrieval and generation settings."""

    model_config = ConfigDict(frozen=True)

    candidates: int = Field(10, ge=1, le=100, description="reports retrieved before selection")
    adaptive: AdaptiveK = Field(default_factory=AdaptiveK)
    max_tokens: int = Field(256, ge=8)
    temperature: float = Field(0.0, ge=0)
    seed: int | None = 0
    max_corrections: int = Field(2, ge=0)


class RetrievedReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    score: float
    report: str


class RAGResult(BaseModel):
    """An answer and what grounded it."""

    answer: str | None
    prediction: str | None
    domain: str
    reports: list[RetrievedReport]
    candidates: int
    status: str
    error: str | None = None
    prompt: str


class RAGState(TypedDict, total=False):
    domain: str
    candidates: list[dict[str, Any]]
    selected: list[dict[str, Any]]
    answer: str | None
    status: str
    error: str | None
    prompt: str


class RAGPipeline:
    """Answers a question about an image, grounded in reports of similar cases.

    ``prompts`` (a ``rag`` program, see ``rag_program``, or its compiled JSON) replaces the role
    line with its instructions and adds its demos as worked examples before the question.
    """

    def __init__(
        self,
        model: ChatModel,
        searcher: ImageSearcher,
        *,
        router: DomainRouter | None = None,
        config: RAGConfig | None = None,
        prompts: CompiledProgram | Program | None = None,
    ) -> None:
        self.prompts = resolve_program(prompts, rag_program(), "MMed-RAG")
        self.model = model
        self.searcher = searcher
        self.router = router or KNNDomainRouter(searcher)
        self.config = config or RAGConfig()

    def _graph(
        self, image: Image.Image, question: str, options: list[str] | None, use_rag: bool
    ) -> Any:
        config = self.config

        async def identify(state: RAGState) -> RAGState:
            return {"domain": await self.router.route(image)}

        async def retrieve(state: RAGState) -> RAGState:
            if not use_rag:
                return {"candidates": []}
            hits = self.searcher.search_image(image, config.candidates, state["domain"])
            return {
                "candidates": [
                    {"id": h.id, "score": h.score, "report": h.report} for h in hits if h.report
                ]
            }

        async def select(state: RAGState) -> RAGState:
            candidates = state.get("candidates", [])
            k = select_k([c["score"] for c in candidates], config.adaptive)
            return {"selected": candidates[:k]}

        async def generate(state: RAGState) -> RAGState:
            reports = [c["report"] for c in state.get("selected", [])]
            domain = state["domain"]
            messages = build_rag_messages(
                image, question, reports, domain=domain, options=options, program=self.prompts
            )
            result = await generate_structured(
                self.model,
                messages,
                RAGAnswer,
                max_retries=config.max_corrections,
                params=GenerateParams(
                    max_tokens=config.max_tokens, temperature=config.temperature, seed=config.seed
                ),
            )
            prompt = rag_prompt_text(
                question, reports, domain=domain, options=options, program=self.prompts
            )
            if isinstance(result, Structured):
                return {"answer": result.value.answer, "status": "answered", "prompt": prompt}
            return {"answer": None, "status": result.kind, "error": result.reason, "prompt": prompt}

        graph: StateGraph[RAGState] = StateGraph(RAGState)
        graph.add_node("identify", identify)
        graph.add_node("retrieve", retrieve)
        graph.add_node("select", select)
        graph.add_node("generate", generate)
        graph.add_edge(START, "identify")
        graph.add_edge("identify", "retrieve")
        graph.add_edge("retrieve", "select")
        graph.add_edge("select", "generate")
        graph.add_edge("generate", END)
        return graph.compile()

    async def ask(
        self,
        image: Image.Image,
        question: str,
        *,
        options: list[str] | None = None,
        use_rag: bool = True,
    ) -> RAGResult:
        """Run the graph once; ``use_rag=False`` answers from the image alone."""
        state = await self._graph(image, question, options, use_rag).ainvoke(RAGState())
        answer = state.get("answer")
        return RAGResult(
            answer=answer,
            prediction=normalize_answer(answer, options) if answer else None,
            domain=state["domain"],
            reports=[RetrievedReport(**c) for c in state.get("selected", [])],
            candidates=len(state.get("candidates", [])),
            status=state.get("status", "failed"),
            error=state.get("error"),
            prompt=state.get("prompt", ""),
        )

    async def four_runs(
        self,
        item_id: str,
        image_path: str,
        question: str,
        reference: str,
        *,
        options: list[str] | None = None,
        seed: int = 0,
    ) -> FourRuns:
        """The four answers preference-pair mining compares (see ``_pairs``)."""
        # Through open_image like every image path (DICOM included), as the predictors load it.
        clean = load_input_image(image_path, f"item {item_id}").image
        assert clean is not None  # load_input_image always decodes
        noise = noise_image(clean, seed)
        wanted = normalize_answer(reference, options) or reference.strip().lower()

        def ok(result: RAGResult) -> bool:
            return result.prediction is not None and result.prediction == wanted

        clean_plain = await self.ask(clean, question, options=options, use_rag=False)
        noise_plain = await self.ask(noise, question, options=options, use_rag=False)
        clean_rag = await self.ask(clean, question, options=options)
        noise_rag = await self.ask(noise, question, options=options)
        return FourRuns(
            id=item_id,
            image=image_path,
            plain_prompt=clean_plain.prompt,
            rag_prompt=clean_rag.prompt,
            clean_plain=clean_plain.answer,
            noise_plain=noise_plain.answer,
            clean_rag=clean_rag.answer,
            noise_rag=noise_rag.answer,
            clean_plain_ok=ok(clean_plain),
            noise_plain_ok=ok(noise_plain),
            clean_rag_ok=ok(clean_rag),
            noise_rag_ok=ok(noise_rag),
        )
