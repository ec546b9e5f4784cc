"""How one evaluation item is answered: by an agent (GIANT and its baselines) or plain VQA.

A method is an async callable ``(item, model, item_dir) -> MethodOutput``; the runner owns
concurrency, timeouts, results and resuming, so methods only answer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from medagent.agents.giant import GiantConfig, GiantNavigator, Method, normalize_answer
from medagent.errors import ConfigError, InputError
from medagent.evals._records import EvalItem
from medagent.models import ChatModel, GenerateParams, Message, Structured, generate_structured

__all__ = [
    "GiantMethod",
    "ItemMethod",
    "MethodName",
    "MethodOutput",
    "RAGMethod",
    "VQAMethod",
    "make_method",
]

MethodName = Literal["giant", "thumbnail", "patches", "random-region", "vqa", "rag"]


class MethodOutput(BaseModel):
    """What a method found for one item."""

    model_config = ConfigDict(frozen=True)

    answer: str | None
    prediction: str | None
    agent_status: str
    ok: bool = Field(description="False when the method could not produce an answer")
    error: str | None = None
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    trajectory: Path | None = None


class ItemMethod(Protocol):
    """Answers one item with a model; writes whatever it keeps under ``item_dir``."""

    name: str

    def params(self) -> dict[str, Any]:
        """What configures the method, for the run's configuration hash."""
        ...

    async def __call__(self, item: EvalItem, model: ChatModel, item_dir: Path) -> MethodOutput: ...


class GiantMethod:
    """GIANT or one of its baselines on the item's slide."""

    def __init__(self, name: Method, config: GiantConfig, votes: int = 1) -> None:
        self.name: str = name
        self.agent: Method = name
        self.config = config
        self.votes = votes

    def params(self) -> dict[str, Any]:
        from medagent.agents.giant._navigator import prompt_hashes

        return {"config": self.config.model_dump(), "votes": self.votes, "prompts": prompt_hashes()}

    async def __call__(self, item: EvalItem, model: ChatModel, item_dir: Path) -> MethodOutput:
        if item.slide is None:
            raise InputError(f"item {item.id} has no slide; method {self.name} needs one")
        navigator = GiantNavigator(model, self.config, method=self.agent, votes=self.votes)
        question, options = item.question, item.options
        listed = bool(options) and all(o in question for o in options or [])
        # The dataset's prompt may already list the options (MultiPathQA): do not list them
        # twice, but make sure the model knows to answer with a number.
        if listed and "number of the correct option" not in question.lower():
            question += "\nAnswer with the number of the correct option."
        result = await navigator.arun(
            item.slide, question, options=None if listed else options, run_dir=item_dir
        )
        prediction = (
            normalize_answer(result.answer, options)
            if listed and result.answer
            else result.prediction
        )
        return MethodOutput(
            answer=result.answer,
            prediction=prediction,
            agent_status=result.status,
            ok=result.status in ("answered", "answered_at_limit"),
            error=result.error,
            steps=result.steps,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            trajectory=result.trajectory_path,
        )


_VQA_INSTRUCTIONS = '\nReply with one JSON object: {"answer": "<short answer>"}.'


class VQAAnswer(BaseModel):
    """The plain VQA method's reply."""

    answer: str = Field(min_length=1, max_length=300)


class VQAMethod:
    """One request: the item's images and question; no navigation (e.g. VQA-RAD)."""

    name = "vqa"

    def __init__(
        self,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = 0,
        max_corrections: int = 2,
    ) -> None:
        self.generate_params = GenerateParams(
            max_tokens=max_tokens, temperature=temperature, seed=seed
        )
        self.max_corrections = max_corrections

    def params(self) -> dict[str, Any]:
        return {
            "generate": self.generate_params.model_dump(),
            "max_corrections": self.max_corrections,
        }

    async def __call__(self, item: EvalItem, model: ChatModel, item_dir: Path) -> MethodOutput:
        from PIL import Image

        if not item.images:
            raise InputError(f"item {item.id} has no images; the vqa method needs at least one")
        images = []
        for path in item.images:
            try:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            except OSError as exc:
                raise InputError(f"item {item.id}: cannot read image {path} ({exc})") from None
        prompt = item.question
        if item.options:
            numbered = "\n".join(f"{i}. {o}" for i, o in enumerate(item.options, start=1))
            prompt += f"\nOptions:\n{numbered}\nAnswer with the number of the correct option."
        prompt += _VQA_INSTRUCTIONS
        started = time.perf_counter()
        result = await generate_structured(
            model,
            [Message.user(*images, prompt)],
            VQAAnswer,
            max_retries=self.max_corrections,
            params=self.generate_params,
        )
        replies = result.replies
        record = {
            "question": item.question,
            "outputs": [r.text for r in replies],
            "raw": [r.raw for r in replies],
            "elapsed_s": time.perf_counter() - started,
        }
        trajectory = item_dir / "trajectory.json"
        if isinstance(result, Structured):
            answer = result.value.answer
            record["answer"] = answer
            _write_json(trajectory, record)
            return MethodOutput(
                answer=answer,
                prediction=normalize_answer(answer, item.options),
                agent_status="answered",
                ok=True,
                steps=len(replies),
                prompt_tokens=sum(r.usage.prompt_tokens for r in replies),
                completion_tokens=sum(r.usage.completion_tokens for r in replies),
                trajectory=trajectory,
            )
        record["failure"] = result.model_dump(exclude={"replies"})
        _write_json(trajectory, record)
        return MethodOutput(
            answer=None,
            prediction=None,
            agent_status=result.kind,
            ok=False,
            error=result.reason,
            steps=len(replies),
            prompt_tokens=sum(r.usage.prompt_tokens for r in replies),
            completion_tokens=sum(r.usage.completion_tokens for r in replies),
            trajectory=trajectory,
        )


class RAGMethod:
    """MMed-RAG: the item's first image, answered with reports of similar cases."""

    name = "rag"

    def __init__(self, index: str | Path, *, config: Any = None) -> None:
        from medagent.agents.rag import RAGConfig
        from medagent.retrieval import open_index

        self.index_path = Path(index)
        self.searcher = open_index(self.index_path)
        self.config = config or RAGConfig()

    def params(self) -> dict[str, Any]:
        return {
            "index": str(self.index_path),
            "index_count": len(self.searcher.index),
            "config": self.config.model_dump(),
        }

    async def __call__(self, item: EvalItem, model: ChatModel, item_dir: Path) -> MethodOutput:
        from PIL import Image

        from medagent.agents.rag import RAGPipeline

        if not item.images:
            raise InputError(f"item {item.id} has no image; the rag method needs one")
        try:
            with Image.open(item.images[0]) as opened:
                image = opened.convert("RGB")
        except OSError as exc:
            raise InputError(
                f"item {item.id}: cannot read image {item.images[0]} ({exc})"
            ) from None
        pipeline = RAGPipeline(model, self.searcher, config=self.config)
        result = await pipeline.ask(image, item.question, options=item.options)
        trajectory = item_dir / "trajectory.json"
        _write_json(trajectory, result.model_dump(mode="json"))
        return MethodOutput(
            answer=result.answer,
            prediction=result.prediction,
            agent_status=result.status,
            ok=result.answer is not None,
            error=result.error,
            steps=1,
            trajectory=trajectory,
        )


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str))


def make_method(
    name: str,
    *,
    giant: GiantConfig | None = None,
    votes: int = 1,
    index: str | Path | None = None,
) -> ItemMethod:
    """The method called ``name`` (``giant``, ``thumbnail``, ``patches``, ``random-region``,
    ``vqa``)."""
    agents: dict[str, Method] = {
        "giant": "giant",
        "thumbnail": "thumbnail",
        "patches": "patches",
        "random-region": "random-region",
    }
    if name in agents:
        return GiantMethod(agents[name], giant or GiantConfig(), votes)
    if name == "vqa":
        config = giant or GiantConfig()
        return VQAMethod(
            max_tokens=min(config.max_tokens, 512),
            temperature=config.temperature,
            seed=config.seed,
            max_corrections=config.max_corrections,
        )
    if name == "rag":
        if index is None:
            raise ConfigError("the rag method needs --index INDEX_DIR (see medagent index build)")
        return RAGMethod(index)
    raise ConfigError(
        f"unknown method {name!r}: choose giant, thumbnail, patches, random-region, vqa or rag"
    )
