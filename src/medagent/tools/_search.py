"""The image-search tool: similar cases for a region or a stored image.

The search itself lives in ``medagent.retrieval`` (an index and an embedder), a layer below
this one; the tool defines what it needs (``ImageSearcher``) and the caller puts an
implementation in ``ToolContext.searcher`` — ``medagent.retrieval.IndexSearcher`` is one.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medagent.artifacts import ArtifactRef
from medagent.errors import ConfigError, InputError
from medagent.imaging import Region
from medagent.tools.base import ToolContext, tool

__all__ = [
    "ImageSearcher",
    "SearchInput",
    "SearchOutput",
    "SimilarCase",
    "SimilarImage",
    "search_similar",
]


class SimilarImage(BaseModel):
    """One hit as the searcher reports it."""

    model_config = ConfigDict(frozen=True)

    id: str
    source: str
    score: float
    label: str | None = None
    domain: str | None = None
    report: str | None = None
    region: Region | None = None


@runtime_checkable
class ImageSearcher(Protocol):
    """Finds images like a query image, and can show a hit."""

    def search_image(
        self, image: Image.Image, k: int, domain: str | None
    ) -> list[SimilarImage]: ...

    def thumbnail(self, hit: SimilarImage, long_side: int) -> Image.Image | None: ...


class SearchInput(BaseModel):
    region: Region | None = Field(
        None, description="level-0 region of the open image to search with"
    )
    artifact_id: str | None = Field(
        None, description="or: the id of an image shown earlier (e.g. a zoom) to search with"
    )
    k: int = Field(5, ge=1, le=50, description="how many similar cases")
    domain: str | None = Field(
        None, description="only cases of this domain: radiology, pathology, ophthalmology, other"
    )


class SimilarCase(BaseModel):
    """A neighbour as the model sees it: a thumbnail, what is known, and how similar."""

    model_config = ConfigDict(frozen=True)

    rank: int
    id: str
    score: float
    source: str
    label: str | None
    domain: str | None
    report: str | None
    thumbnail: ArtifactRef | None


class SearchOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    query: ArtifactRef
    cases: list[SimilarCase]

    def to_text(self) -> str:
        if not self.cases:
            return "No similar cases found."
        lines = []
        for case in self.cases:
            facts = ", ".join(
                f"{name} {value}"
                for name, value in (("label", case.label), ("domain", case.domain))
                if value
            )
            report = f' Report: "{case.report[:300]}"' if case.report else ""
            lines.append(
                f"{case.rank}. similarity {case.score:.3f}{', ' + facts if facts else ''}.{report}"
            )
        return "Similar cases, most similar first:\n" + "\n".join(lines)


@tool(
    "search_similar",
    "Find cases that look like a region of the open image (or an image shown earlier): "
    "their thumbnails, labels, domains, report excerpts and similarity scores.",
    SearchInput,
    SearchOutput,
)
def search_similar(ctx: ToolContext, args: SearchInput) -> SearchOutput:
    if ctx.searcher is None:
        raise ConfigError(
            "search_similar needs an image index: build one with `medagent index build` and "
            "give it to the agent (ToolContext.searcher)"
        )
    if args.artifact_id is not None:
        # Only an image of this context's own store: the id comes from a model or a client.
        image = ctx.artifacts.get(ctx.artifacts.resolve(args.artifact_id))
    elif args.region is not None:
        image = ctx.renderer.render(args.region, 512).image
    elif ctx.slide is not None:
        image = ctx.renderer.overview(512).image
    else:
        raise InputError("give a region of the open image or the id of an image to search with")
    query = ctx.artifacts.put(image, kind="query", region=args.region)
    hits = ctx.searcher.search_image(image, args.k, args.domain)
    cases = []
    for rank, hit in enumerate(hits, start=1):
        thumb = ctx.searcher.thumbnail(hit, 256)
        cases.append(
            SimilarCase(
                rank=rank,
                id=hit.id,
                score=hit.score,
                source=hit.source,
                label=hit.label,
                domain=hit.domain,
                report=hit.report,
                thumbnail=ctx.artifacts.put(thumb, kind="neighbour") if thumb is not None else None,
            )
        )
    return SearchOutput(query=query, cases=cases)
