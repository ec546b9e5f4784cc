"""Helpers for prompt-program tests: small VQA items and keyword-conditional scripted models.

A keyword model answers a VQA question right only when a keyword appears somewhere in the
prompt (instructions or a demo), so an optimizer that finds that wording scores higher than the
zero-shot program, and one that does nothing does not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from medagent.evals import EvalItem
from medagent.models import RecordedRequest, ScriptedModel

KEYWORD = "MAGIC"
_FINDING = re.compile(r"finding (\d+)")


def answer_of(number: int) -> str:
    return f"finding {number} answer"


def request_text(request: RecordedRequest) -> str:
    return "\n".join(m.text for m in request.messages)


def asked_number(request: RecordedRequest) -> int:
    """The finding number of the question being asked (the last user turn)."""
    found = _FINDING.findall(request.messages[-1].text)
    assert found, request.messages[-1].text
    return int(found[0])


def vqa_reply(
    request: RecordedRequest, right: bool, reasoning: str = "I looked at the image."
) -> dict[str, Any]:
    answer = answer_of(asked_number(request)) if right else "something else"
    reply: dict[str, Any] = {"answer": answer}
    if request.schema_name and request.schema_name.endswith("WithReasoning"):
        reply = {"reasoning": reasoning, **reply}
    return {"json": reply}


def keyword_model(
    keyword: str = KEYWORD,
    other: Callable[[RecordedRequest], dict[str, Any]] | None = None,
) -> ScriptedModel:
    """Right on VQA questions only when ``keyword`` is in the prompt; ``other`` answers the rest
    (instruction proposals, summaries)."""

    def respond(request: RecordedRequest) -> dict[str, Any]:
        if request.schema_name and request.schema_name.startswith("VQAAnswer"):
            return vqa_reply(request, keyword in request_text(request))
        if other is None:
            raise AssertionError(f"unexpected request for {request.schema_name}")
        return other(request)

    return ScriptedModel(responder=respond, name="keyword-model")


def oracle_model(
    reasoning: str = f"By the {KEYWORD} rule.", *, min_temperature: float = 0.0
) -> ScriptedModel:
    """Always right (when sampling at ``min_temperature`` or above), reasoning with the keyword."""

    def respond(request: RecordedRequest) -> dict[str, Any]:
        right = request.params.temperature >= min_temperature
        return vqa_reply(request, right, reasoning)

    return ScriptedModel(responder=respond, name="oracle")


def make_items(
    folder: Path, numbers: list[int], keyword_in: set[int] | None = None
) -> list[EvalItem]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for n in numbers:
        path = folder / f"img{n}.png"
        if not path.exists():
            Image.new("RGB", (24, 24), (n * 20 % 256, 90, 160)).save(path)
        question = f"What is finding {n}?"
        if keyword_in and n in keyword_in:
            question += f" ({KEYWORD})"
        items.append(
            EvalItem(
                id=f"q{n}",
                task="demo",
                images=[str(path)],
                question=question,
                answer=answer_of(n),
                metric="open",
            )
        )
    return items


def write_jsonl(path: Path, items: list[EvalItem]) -> Path:
    lines = [
        json.dumps(
            {
                "id": i.id,
                "task": i.task,
                "images": i.images,
                "question": i.question,
                "answer": i.answer,
                "metric": i.metric,
            }
        )
        for i in items
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
