"""Which domain an image belongs to, so MMed-RAG retrieves reports of the right kind.

Default: a kNN vote over an index of images labelled by domain (no model call, works offline
with the default embedder). Alternative: ask a VLM.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol, get_args

from PIL import Image
from pydantic import BaseModel

from medagent.models import ChatModel, GenerateParams, Message, Structured, generate_structured
from medagent.prompts import load_template
from medagent.retrieval.base import Domain
from medagent.tools import ImageSearcher

__all__ = ["DomainRouter", "KNNDomainRouter", "VLMDomainRouter"]

DOMAINS: tuple[str, ...] = get_args(Domain)


class DomainRouter(Protocol):
    """Names the domain of an image."""

    async def route(self, image: Image.Image) -> Domain: ...


class KNNDomainRouter:
    """Similarity-weighted vote of the ``k`` nearest labelled images; ``other`` when none."""

    def __init__(self, searcher: ImageSearcher, k: int = 7) -> None:
        self.searcher = searcher
        self.k = k

    async def route(self, image: Image.Image) -> Domain:
        votes: dict[str, float] = defaultdict(float)
        for hit in self.searcher.search_image(image, self.k, None):
            if hit.domain in DOMAINS:
                votes[hit.domain] += max(hit.score, 0.0) + 1e-6
        if not votes:
            return "other"
        best = max(votes.items(), key=lambda item: item[1])[0]
        return best  # type: ignore[return-value]  # checked against DOMAINS above


class _DomainAnswer(BaseModel):
    domain: Domain


class VLMDomainRouter:
    """Asks the model; ``other`` when it cannot give a valid answer."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model

    async def route(self, image: Image.Image) -> Domain:
        prompt = load_template("rag/domain").render()
        result = await generate_structured(
            self.model,
            [Message.user(image, prompt)],
            _DomainAnswer,
            params=GenerateParams(max_tokens=32),
        )
        return result.value.domain if isinstance(result, Structured) else "other"
