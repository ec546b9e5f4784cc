"""MMed-RAG's prompt: a role line, the numbered reference reports with a caveat, the task.

Without references (the no-RAG runs of preference-pair mining) the middle part is left out, so
the two prompts differ only by the retrieved context.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medagent.models import Message
from medagent.prompts import load_template

__all__ = ["RAGAnswer", "build_rag_messages", "rag_prompt_text"]


class RAGAnswer(BaseModel):
    """The model's reply."""

    model_config = ConfigDict(frozen=True)

    answer: str = Field(min_length=1, max_length=500)


def rag_prompt_text(
    question: str,
    reports: Sequence[str],
    *,
    domain: str = "radiology",
    options: Sequence[str] | None = None,
) -> str:
    """The whole text of the prompt; ``reports`` empty gives the plain (no-RAG) prompt."""
    parts = [load_template("rag/role").render(domain=domain).strip()]
    if reports:
        numbered = "\n".join(f"{i}. {' '.join(r.split())}" for i, r in enumerate(reports, 1))
        parts.append(
            load_template("rag/references").render(k=len(reports), reports=numbered).strip()
        )
    listed = ""
    if options:
        listed = "Options:\n" + "\n".join(f"{i}. {o}" for i, o in enumerate(options, 1))
        listed += "\nAnswer with the number of the correct option."
    parts.append(load_template("rag/task").render(question=question, options=listed).strip())
    return "\n\n".join(parts)


def build_rag_messages(
    image: Image.Image,
    question: str,
    reports: Sequence[str],
    *,
    domain: str = "radiology",
    options: Sequence[str] | None = None,
) -> list[Message]:
    """One user message: the image, then the prompt (images only ever in user messages)."""
    text = rag_prompt_text(question, reports, domain=domain, options=options)
    return [Message.user(image, text)]
