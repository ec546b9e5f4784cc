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

from medagent._files import write_json_atomic
from medagent.agents.base import normalize_answer
from medagent.agents.giant import GiantConfig, GiantNavigator, Method
from medagent.agents.insight import (
    InsightAgent,
    InsightConfig,
    InsightReference,
    Matcher,
    PairVerdict,
    insight_program,
    score_insights,
)
from medagent.errors import ConfigError, InputError
from medagent.evals._records import EvalItem
from medagent.imaging import open_image
from medagent.models import ChatModel, GenerateParams
from medagent.prompts import (
    CompiledProgram,
    Example,
    Prediction,
    Program,
    load_template,
    resolve_program,
    vqa_program,
)

__all__ = [
    "GiantMethod",
    "InsightMethod",
    "ItemMethod",
    "MethodName",
    "MethodOutput",
    "RAGMethod",
    "VQAMethod",
    "insight_matcher",
    "make_method",
    "vqa_example",
    "vqa_metric",
]

MethodName = Literal["giant", "thumbnail", "patches", "random-region", "vqa", "rag", "insight"]


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

    def __init__(
        self,
        name: Method,
        config: GiantConfig,
        votes: int = 1,
        prompts: CompiledProgram | None = None,
    ) -> None:
        self.name: str = name
        self.agent: Method = name
        self.config = config
        self.votes = votes
        self.prompts = prompts

    def params(self) -> dict[str, Any]:
        from medagent.agents.giant import prompt_hashes

        params = {
            "config": self.config.model_dump(),
            "votes": self.votes,
            "prompts": prompt_hashes(),
        }
        if self.prompts is not None:
            params["prompt_program"] = self.prompts.sha256
        return params

    async def __call__(self, item: EvalItem, model: ChatModel, item_dir: Path) -> MethodOutput:
        if item.slide is None:
            raise InputError(f"item {item.id} has no slide; method {self.name} needs one")
        navigator = GiantNavigator(
            model, self.config, method=self.agent, votes=self.votes, prompts=self.prompts
        )
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


def vqa_example(item: EvalItem) -> Example:
    """An item as the VQA program's example (images, question, options → answer)."""
    return Example(
        id=item.id,
        inputs={"images": list(item.images), "question": item.question, "options": item.options},
        outputs={"answer": item.answer} if item.answer is not None else {},
        metadata={"task": item.task, "metric": item.metric},
    )


def vqa_metric(example: Example, prediction: Prediction) -> float:
    """1.0 when the prediction is right by the item's own metric (``score_item``), else 0.0."""
    from medagent.evals._summary import score_item

    answer = prediction.outputs.get("answer")
    item = EvalItem(
        id=example.id,
        task=str(example.metadata.get("task", "")),
        question=str(example.inputs.get("question", "")),
        options=example.inputs.get("options"),
        answer=example.outputs.get("answer"),
        metric=example.metadata.get("metric", "accuracy"),
    )
    options = item.options
    correct, _ = score_item(item, normalize_answer(answer, options) if answer else None)
    return 1.0 if correct else 0.0


class VQAMethod:
    """One request: the item's images and question; no navigation (e.g. VQA-RAD).

    It runs the VQA prompt program (``medagent.prompts.vqa_program``); ``prompts`` replaces its
    instructions and demos with a compiled program's (``medagent optimize``).
    """

    name = "vqa"

    def __init__(
        self,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = 0,
        max_corrections: int = 2,
        prompts: CompiledProgram | None = None,
    ) -> None:
        self.generate_params = GenerateParams(
            max_tokens=max_tokens, temperature=temperature, seed=seed
        )
        self.max_corrections = max_corrections
        self.prompts = prompts
        self.program: Program = vqa_program(
            params=self.generate_params, max_corrections=max_corrections
        )
        if prompts is not None:
            self.program.load(prompts)

    def params(self) -> dict[str, Any]:
        from medagent.prompts import VQA_TEMPLATES

        params: dict[str, Any] = {
            "generate": self.generate_params.model_dump(),
            "max_corrections": self.max_corrections,
            "prompts": {name: load_template(name).sha256 for name in VQA_TEMPLATES},
        }
        if self.prompts is not None:
            params["prompt_program"] = self.prompts.sha256
        return params

    async def __call__(self, item: EvalItem, model: ChatModel, item_dir: Path) -> MethodOutput:
        if not item.images:
            raise InputError(f"item {item.id} has no images; the vqa method needs at least one")
        started = time.perf_counter()
        prediction = await self.program(model, vqa_example(item).inputs)
        replies = prediction.replies
        record: dict[str, Any] = {
            "question": item.question,
            "outputs": [r.text for r in replies],
            "raw": [r.raw for r in replies],
            "elapsed_s": time.perf_counter() - started,
        }
        if self.prompts is not None:
            record["prompt_program"] = self.prompts.sha256
        trajectory = item_dir / "trajectory.json"
        tokens = {
            "steps": len(replies),
            "prompt_tokens": sum(r.usage.prompt_tokens for r in replies),
            "completion_tokens": sum(r.usage.completion_tokens for r in replies),
        }
        if prediction.ok:
            answer = str(prediction.outputs["answer"])
            record["answer"] = answer
            if prediction.reasoning:
                record["reasoning"] = prediction.reasoning
            _write_json(trajectory, record)
            return MethodOutput(
                answer=answer,
                prediction=normalize_answer(answer, item.options),
                agent_status="answered",
                ok=True,
                trajectory=trajectory,
                **tokens,
            )
        record["failure"] = {"kind": prediction.failure, "reason": prediction.error}
        _write_json(trajectory, record)
        return MethodOutput(
            answer=None,
            prediction=None,
            agent_status=prediction.failure or "invalid_output",
            ok=False,
            error=prediction.error,
            trajectory=trajectory,
            **tokens,
        )


class RAGMethod:
    """MMed-RAG: the item's first image, answered with reports of similar cases.

    ``prompts`` (a compiled ``rag`` program) is checked here, once, rather than at every item.
    """

    name = "rag"

    def __init__(
        self, index: str | Path, *, config: Any = None, prompts: CompiledProgram | None = None
    ) -> None:
        from medagent.agents.rag import RAGConfig, rag_program
        from medagent.retrieval import open_index

        self.prompts = prompts
        self.program = resolve_program(prompts, rag_program(), "the rag method")
        self.index_path = Path(index)
        self.searcher = open_index(self.index_path)
        self.config = config or RAGConfig()

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "index": str(self.index_path),
            "index_count": len(self.searcher.index),
            "config": self.config.model_dump(),
        }
        if self.prompts is not None:
            params["prompt_program"] = self.prompts.sha256
        return params

    async def __call__(self, item: EvalItem, model: ChatModel, item_dir: Path) -> MethodOutput:
        from medagent.agents.rag import RAGPipeline

        if not item.images:
            raise InputError(f"item {item.id} has no image; the rag method needs one")
        # The opened image, so the prompt names its kind and spacing; the item's folder gets
        # the rag run's manifest.
        pipeline = RAGPipeline(model, self.searcher, config=self.config, prompts=self.program)
        with open_image(item.images[0]) as slide:
            result = await pipeline.ask(
                slide, item.question, options=item.options, run_dir=item_dir
            )
        trajectory = item_dir / "trajectory.json"
        record = result.model_dump(mode="json")
        if self.prompts is not None:
            record["prompt_program"] = self.prompts.sha256
        _write_json(trajectory, record)
        return MethodOutput(
            answer=result.answer,
            prediction=result.prediction,
            agent_status=result.status,
            ok=result.answer is not None,
            error=result.error,
            steps=1,
            trajectory=trajectory,
        )


def insight_matcher(
    kind: Literal["judge", "rouge"],
    judge_model: ChatModel | None = None,
    *,
    threshold: float | None = None,
) -> Matcher:
    """How predicted and reference insights are matched for ``score_insights``.

    ``judge``: the G-Eval judge (``_judge.judge``) grades the pair 1..10; above ``threshold``
    (5, as MedInsightBench counts) is a match. ``rouge``: ROUGE-L F-measure above
    ``threshold`` (0.5) — cheap, no model, but blind to paraphrase.
    """
    if kind == "rouge":
        from medagent.evals._text_metrics import rouge_l

        cut = 0.5 if threshold is None else threshold

        async def by_rouge(question: str, reference: str, candidate: str) -> PairVerdict:
            score = rouge_l(reference, candidate)
            return PairVerdict(matched=score > cut, score=score)

        return by_rouge
    if judge_model is None:
        raise ConfigError("the judge matcher needs a model to judge with")
    from medagent.evals._judge import judge, matched

    rubric = load_template("insight/judge").render()
    limit = 5 if threshold is None else int(threshold)

    async def by_judge(question: str, reference: str, candidate: str) -> PairVerdict:
        verdict = await judge(judge_model, question, reference, candidate, rubric=rubric)
        if verdict is None:
            return PairVerdict(matched=False, reason="the judge gave no valid verdict")
        return PairVerdict(
            matched=matched(verdict, limit), score=verdict.score, reason=verdict.reason
        )

    return by_judge


class InsightMethod:
    """MedInsightAgent on the item's slide or images, scored against its reference insights.

    The prediction is a small JSON object with the scores (``f1``, ``recall``, ``precision``,
    ``novelty``) that ``score_item`` reads; the full scoring, every pair's verdict included,
    is ``insight_scores.json`` next to the run's ``insights.json``. The judge is the run's
    model unless ``judge_model`` is given. ``prompts`` (a compiled ``insight`` program) is
    checked here, once, rather than at every item.
    """

    name = "insight"

    def __init__(
        self,
        config: InsightConfig | None = None,
        *,
        matcher: Literal["judge", "rouge"] = "judge",
        index: str | Path | None = None,
        judge_model: ChatModel | None = None,
        prompts: CompiledProgram | None = None,
    ) -> None:
        self.prompts = prompts
        self.program = resolve_program(prompts, insight_program(), "the insight method")
        self.config = config or InsightConfig()
        self.matcher: Literal["judge", "rouge"] = matcher
        self.judge_model = judge_model
        self.index_path = Path(index) if index is not None else None
        self.searcher: Any = None
        if self.index_path is not None:
            from medagent.retrieval import open_index

            self.searcher = open_index(self.index_path)

    def params(self) -> dict[str, Any]:
        from medagent.agents.insight import prompt_hashes

        params: dict[str, Any] = {
            "config": self.config.model_dump(mode="json"),
            "matcher": self.matcher,
            "index": str(self.index_path) if self.index_path else None,
            "prompts": prompt_hashes(),
        }
        if self.prompts is not None:
            params["prompt_program"] = self.prompts.sha256
        return params

    async def __call__(self, item: EvalItem, model: ChatModel, item_dir: Path) -> MethodOutput:
        images = [item.slide] if item.slide else list(item.images)
        if not images:
            raise InputError(f"item {item.id} has no slide or images; the insight method needs one")
        references = [
            InsightReference.model_validate(r) for r in item.metadata.get("insights") or []
        ]
        if not references:
            raise InputError(f"item {item.id} has no reference insights to score against")
        agent = InsightAgent(model, self.config, searcher=self.searcher, prompts=self.program)
        report = await agent.arun(images, item.question, run_dir=item_dir)
        ok = report.status in ("completed", "partial")
        prediction = None
        if ok:
            score = await score_insights(
                [i.text for i in report.insights],
                references,
                insight_matcher(self.matcher, self.judge_model or model),
                goal=item.question,
            )
            _write_json(item_dir / "insight_scores.json", score.model_dump(mode="json"))
            prediction = json.dumps(
                {
                    "f1": score.f1,
                    "recall": score.recall,
                    "precision": score.precision,
                    "novelty": score.novelty,
                    "insights": score.n_predicted,
                    "references": score.n_reference,
                    "matcher": self.matcher,
                }
            )
        return MethodOutput(
            answer=report.summary or None,
            prediction=prediction,
            agent_status=report.status,
            ok=ok,
            error=report.error,
            steps=len(report.trace),
            prompt_tokens=report.prompt_tokens,
            completion_tokens=report.completion_tokens,
            trajectory=report.json_path,
        )


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


def make_method(
    name: str,
    *,
    giant: GiantConfig | None = None,
    votes: int = 1,
    index: str | Path | None = None,
    prompts: CompiledProgram | None = None,
    insight: InsightConfig | None = None,
    matcher: Literal["judge", "rouge"] = "judge",
) -> ItemMethod:
    """The method called ``name`` (``giant``, ``thumbnail``, ``patches``, ``random-region``,
    ``vqa``, ``rag``, ``insight``); ``prompts`` (a compiled program) applies to ``giant``,
    ``random-region``, ``vqa``, ``insight`` and ``rag``; ``insight`` (roots, depth, adaptive)
    and ``matcher`` to ``insight``, whose seed, temperature and time limit come from
    ``giant``."""
    agents: dict[str, Method] = {
        "giant": "giant",
        "thumbnail": "thumbnail",
        "patches": "patches",
        "random-region": "random-region",
    }
    if prompts is not None and name not in ("giant", "random-region", "vqa", "insight", "rag"):
        raise ConfigError(
            "compiled prompts apply to the giant, random-region, vqa, insight and rag methods, "
            f"not {name}"
        )
    if name in agents:
        return GiantMethod(agents[name], giant or GiantConfig(), votes, prompts=prompts)
    if name == "vqa":
        config = giant or GiantConfig()
        return VQAMethod(
            max_tokens=min(config.max_tokens, 512),
            temperature=config.temperature,
            seed=config.seed,
            max_corrections=config.max_corrections,
            prompts=prompts,
        )
    if name == "insight":
        base = giant or GiantConfig()
        # Stop the agent before the item's time limit, so its report and scores get written.
        return InsightMethod(
            (insight or InsightConfig()).model_copy(
                update={
                    "seed": base.seed,
                    "temperature": base.temperature,
                    "max_corrections": base.max_corrections,
                    "timeout_s": 0.8 * base.timeout_s,
                }
            ),
            matcher=matcher,
            index=index,
            prompts=prompts,
        )
    if name == "rag":
        if index is None:
            raise ConfigError("the rag method needs --index INDEX_DIR (see medagent index build)")
        return RAGMethod(index, prompts=prompts)
    raise ConfigError(
        f"unknown method {name!r}: choose giant, thumbnail, patches, random-region, vqa, rag "
        "or insight"
    )
