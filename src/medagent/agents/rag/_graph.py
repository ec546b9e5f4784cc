"""MMed-RAG as a LangGraph graph: identify domain → retrieve → select (adaptive k) → generate.

The image stays out of the graph state (state holds text and scores only); the nodes are
module-level functions of ``(state, run)``, ``run`` holding the image and what the prompt says
it is. Retrieval filters by the identified domain, so a chest X-ray is grounded in reports of
other radiographs, not of slides. The image is rendered at the long side the model will
receive, so the spacing the prompt states is true of the pixels sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

from langgraph.graph import END, START, StateGraph
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medagent._files import write_json_atomic
from medagent._trace import agent_run, traced_step
from medagent.agents.base import (
    ProgramRef,
    RunManifest,
    image_words,
    normalize_answer,
    render_long_side,
)
from medagent.agents.rag._pairs import FourRuns, noise_image
from medagent.agents.rag._prompt import (
    RAGAnswer,
    build_rag_messages,
    rag_program,
    rag_prompt_hashes,
)
from medagent.errors import InputError, MedagentError
from medagent.imaging import ImageSlide, Region, Renderer, Slide, open_image
from medagent.models import ChatModel, GenerateParams, Structured, generate_structured
from medagent.prompts import CompiledProgram, Program, resolve_program
from medagent.retrieval import AdaptiveK, DomainRouter, KNNDomainRouter, select_k
from medagent.tools import ImageSearcher

__all__ = ["RAGConfig", "RAGPipeline", "RAGResult", "RAGState", "RAGStatus", "RetrievedReport"]

RAGStatus = Literal["answered", "invalid_output", "model_error", "failed"]
"""``answered``; the model's replies were not valid, or it could not be reached; ``failed``:
the graph ended without generating."""


class RAGConfig(BaseModel):
    """Retrieval and generation settings."""

    model_config = ConfigDict(frozen=True)

    candidates: int = Field(10, ge=1, le=100, description="reports retrieved before selection")
    adaptive: AdaptiveK = Field(default_factory=AdaptiveK)
    long_side: int = Field(1000, ge=64, le=4096, description="long side of the image sent")
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
    status: RAGStatus
    error: str | None = None
    prompt: str


class RAGState(TypedDict, total=False):
    """What the nodes pass on; each node replaces the fields it returns (none accumulates)."""

    domain: str
    candidates: list[RetrievedReport]
    selected: list[RetrievedReport]
    answer: str | None
    status: RAGStatus
    error: str | None
    prompt: str


@dataclass(frozen=True)
class RAGRun:
    """One question about one image: what the nodes need besides the state."""

    model: ChatModel
    searcher: ImageSearcher
    router: DomainRouter
    config: RAGConfig
    program: Program | None
    image: Image.Image  # as the model receives it
    words: dict[str, str]  # what the image is and its spacing (``image_words``)
    question: str
    options: list[str] | None
    use_rag: bool


async def identify(state: RAGState, run: RAGRun) -> RAGState:
    """The image's domain (radiology, pathology, ...), which retrieval filters by."""
    return {"domain": await run.router.route(run.image)}


async def retrieve(state: RAGState, run: RAGRun) -> RAGState:
    """The reports of the most similar cases of that domain (none without RAG)."""
    if not run.use_rag:
        return {"candidates": []}
    hits = run.searcher.search_image(run.image, run.config.candidates, state["domain"])
    return {
        "candidates": [
            RetrievedReport(id=h.id, score=h.score, report=h.report) for h in hits if h.report
        ]
    }


async def select(state: RAGState, run: RAGRun) -> RAGState:
    """Keep the reports before similarity falls off (adaptive k)."""
    candidates = state.get("candidates", [])
    k = select_k([c.score for c in candidates], run.config.adaptive)
    return {"selected": candidates[:k]}


async def generate(state: RAGState, run: RAGRun) -> RAGState:
    """The answer, grounded in the selected reports."""
    config = run.config
    reports = [c.report for c in state.get("selected", [])]
    messages = build_rag_messages(
        run.image,
        run.question,
        reports,
        domain=state["domain"],
        options=run.options,
        program=run.program,
        words=run.words,
    )
    result = await generate_structured(
        run.model,
        messages,
        RAGAnswer,
        max_retries=config.max_corrections,
        params=GenerateParams(
            max_tokens=config.max_tokens, temperature=config.temperature, seed=config.seed
        ),
    )
    prompt = messages[-1].text  # the prompt as sent, after the program's demos
    if isinstance(result, Structured):
        return {"answer": result.value.answer, "status": "answered", "prompt": prompt}
    return {"answer": None, "status": result.kind, "error": result.reason, "prompt": prompt}


def build_graph(run: RAGRun) -> StateGraph[RAGState]:
    """The graph for one question (compile it, then ``ainvoke(RAGState())``)."""
    graph: StateGraph[RAGState] = StateGraph(RAGState)
    graph.add_node("identify", traced_step("rag", "identify", partial(identify, run=run)))
    graph.add_node("retrieve", traced_step("rag", "retrieve", partial(retrieve, run=run)))
    graph.add_node("select", traced_step("rag", "select", partial(select, run=run)))
    graph.add_node("generate", traced_step("rag", "generate", partial(generate, run=run)))
    graph.add_edge(START, "identify")
    graph.add_edge("identify", "retrieve")
    graph.add_edge("retrieve", "select")
    graph.add_edge("select", "generate")
    graph.add_edge("generate", END)
    return graph


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

    @property
    def long_side(self) -> int:
        """The long side the image is sent at: the configured one, within the model's cap."""
        return render_long_side(self.model, self.config.long_side)

    def shown(self, image: Image.Image | Slide) -> ImageSlide:
        """The image as the model receives it (rendered at ``long_side``), keeping what it is:
        the slide's kind (a bare picture is a plain medical image) and the spacing of the
        pixels sent (none where the original's is unknown)."""
        slide = image if isinstance(image, Slide) else ImageSlide(image)
        rendered = Renderer(slide).overview(self.long_side)
        mpp = slide.mpp_x * rendered.scale if slide.mpp_x is not None else None
        return ImageSlide(
            rendered.image.convert("RGB"),
            path=slide.path,
            mpp=(mpp, mpp) if mpp is not None else None,
            modality=slide.modality,
        )

    def _run(
        self,
        image: Image.Image | Slide,
        question: str,
        options: list[str] | None,
        use_rag: bool,
    ) -> RAGRun:
        shown = self.shown(image)
        return RAGRun(
            model=self.model,
            searcher=self.searcher,
            router=self.router,
            config=self.config,
            program=self.prompts,
            image=shown.read(Region.whole(shown.dimensions), 0),
            words=image_words(shown),
            question=question,
            options=options,
            use_rag=use_rag,
        )

    def graph(
        self,
        image: Image.Image | Slide,
        question: str,
        options: list[str] | None = None,
        use_rag: bool = True,
    ) -> Any:
        """The compiled graph for one question (LangGraph Studio runs it as is)."""
        return build_graph(self._run(image, question, options, use_rag)).compile()

    def manifest(
        self,
        image: Image.Image | Slide,
        question: str,
        options: list[str] | None,
        use_rag: bool,
    ) -> RunManifest:
        """What a run of ``ask`` is (its rendered prompt is added once it is known)."""
        return RunManifest.for_model(
            self.model,
            agent="rag",
            method="rag" if use_rag else "rag-plain",
            inputs={
                "question": question,
                "options": options,
                "image": str(image.path) if isinstance(image, Slide) else None,
                "use_rag": use_rag,
            },
            config=self.config.model_dump(mode="json"),
            prompts=rag_prompt_hashes(),
            prompt_program=ProgramRef.of(self.prompts),
            image_long_side=self.long_side,
            seed=self.config.seed,
        )

    async def ask(
        self,
        image: Image.Image | Slide,
        question: str,
        *,
        options: list[str] | None = None,
        use_rag: bool = True,
        run_dir: str | Path | None = None,
    ) -> RAGResult:
        """Run the graph once; ``use_rag=False`` answers from the image alone.

        Pass the opened ``Slide`` where there is one: the prompt then names its kind and
        spacing. With ``run_dir`` the run leaves its ``manifest.json`` there (written first,
        then again with the hash of the prompt as sent) and ``result.json``.
        """
        directory = Path(run_dir) if run_dir is not None else None
        manifest = self.manifest(image, question, options, use_rag)
        if directory is not None:
            await asyncio.to_thread(manifest.write, directory)
        run = self._run(image, question, options, use_rag)
        with agent_run("rag", manifest.run_id, {"medagent.rag.use_rag": use_rag}):
            state = cast(RAGState, await build_graph(run).compile().ainvoke(RAGState()))
        answer = state.get("answer")
        result = RAGResult(
            answer=answer,
            prediction=normalize_answer(answer, options) if answer else None,
            domain=state["domain"],
            reports=state.get("selected", []),
            candidates=len(state.get("candidates", [])),
            status=state.get("status", "failed"),
            error=state.get("error"),
            prompt=state.get("prompt", ""),
        )
        if directory is not None:
            await asyncio.to_thread(self._record, directory, manifest, result)
        return result

    @staticmethod
    def _record(directory: Path, manifest: RunManifest, result: RAGResult) -> None:
        manifest.with_rendered(prompt=result.prompt).write(directory)
        write_json_atomic(directory / "result.json", result.model_dump(mode="json"))

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
        # Through open_image like every image path (DICOM included); the noise image is
        # described as the clean one is, so the two prompts differ by the pixels only.
        try:
            with open_image(image_path) as slide:
                clean = self.shown(slide)
        except MedagentError as exc:
            raise InputError(
                f"item {item_id}: cannot read image ({exc})", path=str(image_path)
            ) from None
        noise = ImageSlide(
            noise_image(clean.read(Region.whole(clean.dimensions), 0), seed),
            mpp=(clean.mpp_x, clean.mpp_x) if clean.mpp_x is not None else None,
            modality=clean.modality,
        )
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
