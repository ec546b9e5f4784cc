"""Graph factories for LangGraph's own CLI and Studio (``langgraph.json`` at the repo root).

LangGraph's server calls each factory with the run's config, so what a run is about — the
slide, the question, the goal — comes from ``configurable``; the model backend comes from
``MEDAGENT_*`` settings (put them in ``.env``). The graphs are compiled without a
checkpointer: the LangGraph server brings its own.

    giant    configurable: slide, question, [options], [run_dir]
    insight  configurable: images (one path or a list), goal, [index], [run_dir]
    rag      configurable: image, question, index, [options]
    chat     input: {"slide": PATH, "inbox": {"message": ...}}; then resume the interrupt

Run ``langgraph dev --allow-blocking``: nodes open slides and write crops with plain file I/O.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig

from medagent.agents.chat import build_chat_graph
from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError
from medagent.imaging import RenderPolicy, open_image
from medagent.models import ChatModel, build_model
from medagent.settings import Settings
from medagent.tools import SamSegmenter, ToolContext

__all__ = ["build_chat_graph", "build_giant_graph", "build_insight_graph", "build_rag_graph"]


def _configurable(config: RunnableConfig | None, graph: str, *required: str) -> dict[str, Any]:
    values = dict((config or {}).get("configurable") or {})
    missing = [key for key in required if not values.get(key)]
    if missing:
        raise ConfigError(
            f"the {graph} graph needs {', '.join(repr(k) for k in missing)} in the assistant's "
            f"configurable settings (see medagent.studio)"
        )
    return values


def _options(value: Any) -> list[str] | None:
    if not value:
        return None
    items = value.split(";") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def _run_dir(values: dict[str, Any], settings: Settings, graph: str) -> Path:
    folder = Path(values.get("run_dir") or settings.cache_dir / "studio" / graph)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _model(settings: Settings) -> ChatModel:
    return build_model(settings)


def build_giant_graph(config: RunnableConfig | None = None) -> Any:
    """The GIANT navigation graph for one question about one slide."""
    from medagent.agents.base import render_long_side
    from medagent.agents.giant import GiantConfig, RunContext, RunLog, build_graph

    values = _configurable(config, "giant", "slide", "question")
    settings = Settings()
    folder = _run_dir(values, settings, "giant")
    giant = GiantConfig(seed=settings.seed)
    model = _model(settings)
    run = RunContext(
        model=model,
        tools=ToolContext(
            artifacts=ArtifactStore(folder / "artifacts"),
            slide=open_image(values["slide"]),
            policy=RenderPolicy(long_side=render_long_side(model, giant.long_side)),
            segmenter=SamSegmenter.optional(settings.sam_model),
        ),
        log=RunLog(folder / "events.jsonl"),
        config=giant,
        question=str(values["question"]),
        options=_options(values.get("options")),
    )
    return build_graph(run).compile()


def build_insight_graph(config: RunnableConfig | None = None) -> Any:
    """The MedInsightAgent graph for a goal over one or more images."""
    from medagent.agents.insight import InsightAgent, InsightConfig, build_graph

    values = _configurable(config, "insight", "images", "goal")
    settings = Settings()
    folder = _run_dir(values, settings, "insight")
    images = values["images"]
    paths = [images] if isinstance(images, str) else list(images)
    agent = InsightAgent(
        _model(settings),
        InsightConfig(seed=settings.seed),
        searcher=_searcher(values.get("index")),
        segmenter=SamSegmenter.optional(settings.sam_model),
    )
    run = agent.run_context([open_image(path) for path in paths], str(values["goal"]), folder)
    return build_graph(run).compile()


def build_rag_graph(config: RunnableConfig | None = None) -> Any:
    """The MMed-RAG graph (route, retrieve, select k, answer) for one image and question."""
    from medagent.agents.rag import RAGConfig, RAGPipeline

    values = _configurable(config, "rag", "image", "question", "index")
    settings = Settings()
    pipeline = RAGPipeline(
        _model(settings), _searcher(values["index"]), config=RAGConfig(seed=settings.seed)
    )
    # The opened image, so the prompt names its kind and spacing (it stays open with the graph).
    return pipeline.graph(
        open_image(values["image"]), str(values["question"]), _options(values.get("options"))
    )


def _searcher(index: Any) -> Any:
    if not index:
        return None
    from medagent.retrieval import open_index

    return open_index(str(index))
