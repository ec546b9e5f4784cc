"""MMed-RAG's prompt: a role line, the numbered reference reports with a caveat, the task.

Where the prompt speaks of the image it says what the image truly is — its kind and spacing
(``image_words`` of the slide, as shown to the model): a radiograph in mm, a slide in µm, a
picture without spacing with no unit. The identified ``$domain`` only says whose reports are
retrieved and in which field the model answers.

Without references (the no-RAG runs of preference-pair mining) the middle part is left out, so
the two prompts differ only by the retrieved context. A ``rag`` program (``rag_program``)
replaces the role line with its instructions and puts its demos before the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medagent.imaging import modality
from medagent.models import Message
from medagent.prompts import (
    InputField,
    Predict,
    Program,
    Signature,
    fill_instructions,
    load_template,
)

__all__ = [
    "TEMPLATES",
    "RAGAnswer",
    "build_rag_messages",
    "plain_image_words",
    "rag_program",
    "rag_prompt_hashes",
    "rag_prompt_text",
]

#: Every template MMed-RAG can send (the router's included).
TEMPLATES = ["rag/role", "rag/references", "rag/task", "rag/domain"]


def rag_prompt_hashes() -> dict[str, str]:
    """Content hashes of every prompt template MMed-RAG uses."""
    return {name: load_template(name).sha256 for name in TEMPLATES}


def plain_image_words() -> dict[str, str]:
    """What the prompt says of an image nothing is known about: a medical image, no spacing."""
    plain = modality("image")
    return {
        "image": plain.name,
        "a_image": f"{plain.article} {plain.name}",
        "spacing": plain.spacing(None),
    }


class RAGAnswer(BaseModel):
    """The model's reply."""

    model_config = ConfigDict(frozen=True)

    answer: str = Field(min_length=1, max_length=500)


def rag_program() -> Program:
    """MMed-RAG's tunable prompt, as a program with one predictor, ``answer``.

    Its instructions are the role line (``$domain`` is filled in with the identified domain);
    the reports and the task (question, options, reply format) follow it as before. Its demos
    are worked questions (image, question, options, reports → answer) shown before the real
    one. Save a tuned copy with ``program.save(path)`` and pass it as ``prompts``.
    """
    signature = Signature(
        name="rag.answer",
        instructions=load_template("rag/role").text.strip(),
        inputs=(
            InputField(name="image", kind="image", description="the medical image"),
            InputField(name="question", description="the question about the image"),
            InputField(
                name="options",
                kind="list",
                optional=True,
                description="the choices; answer with the number of the correct option",
            ),
            InputField(
                name="reports",
                kind="list",
                optional=True,
                description="reports of similar cases, for reference only",
            ),
        ),
        output=RAGAnswer,
        description="answer a question about a medical image, grounded in similar cases' reports",
    )
    return Program(
        "rag",
        {"answer": Predict(signature)},
        description="MMed-RAG: answer questions about medical images with the reports of "
        "similar cases retrieved for the image's domain as reference.",
    )


def rag_prompt_text(
    question: str,
    reports: Sequence[str],
    *,
    domain: str = "radiology",
    options: Sequence[str] | None = None,
    program: Program | None = None,
    words: Mapping[str, str] | None = None,
) -> str:
    """The whole text of the prompt; ``reports`` empty gives the plain (no-RAG) prompt;
    ``program`` (a ``rag`` program) gives the role line; ``words`` (``image_words`` of the
    image as shown) say what the image is, a plain medical image when not given."""
    said = {**plain_image_words(), **(words or {})}
    role = (
        fill_instructions(program.predictor("answer"), domain=domain, **said)
        if program is not None
        else load_template("rag/role").render(domain=domain, **said)
    )
    parts = [role.strip()]
    if reports:
        numbered = "\n".join(f"{i}. {' '.join(r.split())}" for i, r in enumerate(reports, 1))
        parts.append(
            load_template("rag/references").render(k=len(reports), reports=numbered).strip()
        )
    listed = ""
    if options:
        listed = "Options:\n" + "\n".join(f"{i}. {o}" for i, o in enumerate(options, 1))
        listed += "\nAnswer with the number of the correct option."
    task = load_template("rag/task").render(question=question, options=listed, **said)
    parts.append(task.strip())
    return "\n\n".join(parts)


def build_rag_messages(
    image: Image.Image,
    question: str,
    reports: Sequence[str],
    *,
    domain: str = "radiology",
    options: Sequence[str] | None = None,
    program: Program | None = None,
    words: Mapping[str, str] | None = None,
) -> list[Message]:
    """One user message: the image, then the prompt (images only ever in user messages);
    ``program``'s demos come first, as user/assistant turns."""
    text = rag_prompt_text(
        question, reports, domain=domain, options=options, program=program, words=words
    )
    demos = program.predictor("answer").demo_messages() if program is not None else []
    return [*demos, Message.user(image, text)]
