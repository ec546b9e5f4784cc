"""MMed-RAG: prompt assembly, the graph, preference-pair stages, the search tool."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from medagent.agents.rag import (
    FourRuns,
    RAGConfig,
    RAGPipeline,
    noise_image,
    pairs_from_runs,
    rag_prompt_text,
    write_pairs,
)
from medagent.artifacts import ArtifactStore
from medagent.imaging import ImageSlide, Region
from medagent.models import ScriptedModel
from medagent.retrieval import AdaptiveK, KNNDomainRouter, VLMDomainRouter
from medagent.tools import SimilarImage, ToolContext, ToolFailure, search_similar


class FakeSearcher:
    """A test double for an index: fixed hits, and a record of what was asked."""

    def __init__(self, hits: list[SimilarImage]) -> None:
        self.hits = hits
        self.calls: list[tuple[int, str | None]] = []

    def search_image(self, image: Image.Image, k: int, domain: str | None) -> list[SimilarImage]:
        self.calls.append((k, domain))
        chosen = [h for h in self.hits if domain is None or h.domain == domain]
        return chosen[:k]

    def thumbnail(self, hit: SimilarImage, long_side: int) -> Image.Image | None:
        return Image.new("RGB", (long_side, long_side // 2), "gray")


def hit(i: int, score: float, domain: str = "radiology", report: str | None = None) -> SimilarImage:
    return SimilarImage(
        id=f"h{i}",
        source=f"img{i}.png",
        score=score,
        domain=domain,
        label="chest",
        report=report or f"report {i}: no effusion",
    )


def test_prompt_has_role_numbered_reports_caveat_and_task() -> None:
    text = rag_prompt_text(
        "Is there an effusion?",
        ["small left effusion", "clear lungs"],
        domain="radiology",
        options=["no", "yes"],
    )
    assert text.startswith("You are an expert in radiology medical imaging")
    assert "You are given an image and 2 reference reports" in text
    assert "1. small left effusion\n2. clear lungs" in text
    assert "for reference only" in text
    assert text.index("reference only") < text.index("Question: Is there an effusion?")
    assert "1. no\n2. yes" in text
    plain = rag_prompt_text("Is there an effusion?", [], domain="radiology")
    assert "reference reports" not in plain and "Question:" in plain


async def test_graph_identifies_retrieves_selects_and_generates() -> None:
    hits = [hit(1, 0.9), hit(2, 0.88), hit(3, 0.5), hit(4, 0.95, domain="pathology")]
    searcher = FakeSearcher(hits)
    model = ScriptedModel([{"json": {"answer": "2"}}])
    pipeline = RAGPipeline(model, searcher, config=RAGConfig(adaptive=AdaptiveK(gamma=0.1)))
    result = await pipeline.ask(Image.new("RGB", (64, 64)), "Effusion?", options=["no", "yes"])
    assert result.domain == "radiology"  # 3 radiology neighbours outvote 1 pathology
    assert searcher.calls[1] == (10, "radiology")  # retrieval filtered by the domain
    assert [r.id for r in result.reports] == ["h1", "h2"]  # gap rule cut before 0.5
    assert result.prediction == "yes" and result.status == "answered"
    request = model.requests[0].messages
    assert len(request) == 1 and request[0].role == "user" and len(request[0].images) == 1
    assert "report 1" in request[0].text and "report 3" not in request[0].text


async def test_without_rag_no_reports_are_sent() -> None:
    model = ScriptedModel([{"json": {"answer": "no"}}])
    pipeline = RAGPipeline(model, FakeSearcher([hit(1, 0.9)]))
    result = await pipeline.ask(Image.new("RGB", (8, 8)), "Effusion?", use_rag=False)
    assert result.reports == [] and "reference reports" not in model.requests[0].messages[0].text


async def test_invalid_answers_end_as_a_status_not_an_exception() -> None:
    model = ScriptedModel([{"text": "hmm"}] * 3)
    result = await RAGPipeline(model, FakeSearcher([])).ask(Image.new("RGB", (8, 8)), "Q?")
    assert result.answer is None and result.status == "invalid_output" and result.domain == "other"


async def test_vlm_router() -> None:
    model = ScriptedModel(
        [{"json": {"domain": "pathology"}}, {"text": "no idea"}] + [{"text": "still no"}] * 2
    )
    router = VLMDomainRouter(model)
    assert await router.route(Image.new("RGB", (8, 8))) == "pathology"
    assert await router.route(Image.new("RGB", (8, 8))) == "other"


def runs(flags: str, n: int, start: int = 0) -> list[FourRuns]:
    """Items whose four correctness flags are ``flags`` (clean_plain, noise_plain, clean_rag,
    noise_rag as 1/0)."""
    cp, np_, cr, nr = (c == "1" for c in flags)
    return [
        FourRuns(
            id=f"i{start + i}",
            image="x.png",
            plain_prompt="P",
            rag_prompt="R",
            clean_plain="cp",
            noise_plain="np",
            clean_rag="cr",
            noise_rag="nr",
            clean_plain_ok=cp,
            noise_plain_ok=np_,
            clean_rag_ok=cr,
            noise_rag_ok=nr,
        )
        for i in range(n)
    ]


def test_each_stage_exactly_when_its_condition_holds(tmp_path: Path) -> None:
    data = (
        runs("1010", 2, 0)
        + runs("1011", 4, 10)
        + runs("0010", 1, 20)
        + runs("0000", 3, 30)
        + runs("0111", 2, 40)
    )
    pairs = pairs_from_runs(data, seed=0)
    by_stage: dict[str, list[str]] = {}
    for pair in pairs:
        by_stage.setdefault(pair.stage, []).append(pair.id)
    # stage 1: clean correct, noise wrong without RAG -> "1010", "1011"
    assert sorted(by_stage["1"]) == sorted([f"i{i}" for i in (0, 1, 10, 11, 12, 13)])
    # 2b: correct without RAG, wrong with -> none here (every clean_plain_ok has clean_rag_ok)
    assert "2b" not in by_stage
    # 2c: wrong without, correct with -> "0010", "0111"
    assert sorted(by_stage["2c"]) == ["i20", "i40", "i41"]
    # 2a: both RAG runs correct ("1011", "0111": 6 candidates), subsampled to 0.5 x (0 + 3) = 1
    assert len(by_stage["2a"]) == 1 and by_stage["2a"][0] in {
        "i10",
        "i11",
        "i12",
        "i13",
        "i40",
        "i41",
    }
    first = next(p for p in pairs if p.stage == "1")
    assert (first.prompt, first.chosen, first.rejected, first.rejected_image) == (
        "P",
        "cp",
        "np",
        "noise",
    )
    two_c = next(p for p in pairs if p.stage == "2c")
    assert (two_c.prompt, two_c.chosen, two_c.rejected) == ("R", "cr", "cp")
    b_only = pairs_from_runs(runs("1000", 2), seed=0)
    assert {p.stage for p in b_only} == {"1", "2b"}
    assert pairs_from_runs(data, seed=0) == pairs  # seeded
    out = write_pairs(pairs, tmp_path / "pairs.jsonl")
    assert len(out.read_text().splitlines()) == len(pairs)


async def test_four_runs_with_a_scripted_model(tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), "white").save(image)
    answers = ["yes", "no", "no", "yes"]  # clean/plain, noise/plain, clean/rag, noise/rag
    model = ScriptedModel([{"json": {"answer": a}} for a in answers])
    pipeline = RAGPipeline(model, FakeSearcher([hit(1, 0.9)]))
    four = await pipeline.four_runs("q1", str(image), "Effusion?", "yes")
    assert (four.clean_plain_ok, four.noise_plain_ok, four.clean_rag_ok, four.noise_rag_ok) == (
        True,
        False,
        False,
        True,
    )
    assert {p.stage for p in pairs_from_runs([four])} == {"1", "2b"}
    noise = noise_image(Image.new("RGB", (20, 10)), seed=1)
    assert noise.size == (20, 10)


def test_search_similar_as_a_tool(tmp_path: Path) -> None:
    slide = ImageSlide(Image.new("RGB", (400, 300), (200, 120, 180)), mpp=(0.5, 0.5))
    searcher = FakeSearcher([hit(1, 0.9, report="long report " * 50), hit(2, 0.8)])
    ctx = ToolContext(artifacts=ArtifactStore(tmp_path), slide=slide, searcher=searcher)
    out = search_similar(ctx, region=Region(x=0, y=0, width=200, height=150), k=2)
    assert [c.id for c in out.cases] == ["h1", "h2"] and out.cases[0].rank == 1
    assert out.cases[0].thumbnail is not None and out.query.kind == "query"
    assert "similarity 0.900" in out.to_text()
    assert searcher.calls == [(2, None)]
    no_index = search_similar.run(ToolContext(artifacts=ArtifactStore(tmp_path), slide=slide), {})
    assert isinstance(no_index, ToolFailure) and "medagent index build" in no_index.message


@pytest.mark.parametrize(("k", "expected"), [(1, "pathology"), (3, "radiology")])
async def test_knn_router_votes_by_similarity(k: int, expected: str) -> None:
    # k=3: radiology 0.5 + 0.45 = 0.95 outweighs pathology 0.9.
    hits = [hit(1, 0.9, "pathology"), hit(2, 0.5, "radiology"), hit(3, 0.45, "radiology")]
    router = KNNDomainRouter(FakeSearcher(hits), k=k)
    assert await router.route(Image.new("RGB", (8, 8))) == expected
