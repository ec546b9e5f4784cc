"""The VQA answering program: images and a question in, a short answer out, in one request.

``medagent eval run --method vqa`` runs it and ``medagent optimize`` tunes it, so a compiled
program scores the same way in both.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from medagent.models import GenerateParams
from medagent.prompts._modules import ChainOfThought, Predict
from medagent.prompts._program import Program
from medagent.prompts._signature import InputField, Signature
from medagent.prompts._templates import load_template

__all__ = ["VQA_TEMPLATES", "VQAAnswer", "vqa_program", "vqa_signature"]

VQA_TEMPLATES = ["vqa/instructions", "vqa/program", "program/instructions"]
"""Every template the VQA program's prompt is built from (their hashes go into manifests)."""


class VQAAnswer(BaseModel):
    """The VQA program's reply."""

    answer: str = Field(
        min_length=1,
        max_length=300,
        description="a short answer: yes or no, the number of the correct option, or a few words",
    )


def vqa_signature() -> Signature:
    """images, question, options (optional) → ``VQAAnswer``."""
    return Signature(
        name="vqa.answer",
        instructions=load_template("vqa/instructions").text.strip(),
        inputs=(
            InputField(name="images", kind="images", description="the medical image(s)"),
            InputField(name="question", description="the question about the image(s)"),
            InputField(
                name="options",
                kind="list",
                optional=True,
                description="the choices of a multiple-choice question; answer with the "
                "number of the correct option",
            ),
        ),
        output=VQAAnswer,
        description="answer a question about medical images",
    )


def vqa_program(
    module: Literal["predict", "cot"] = "predict",
    *,
    params: GenerateParams | None = None,
    max_corrections: int = 2,
) -> Program:
    """The program (one predictor, ``answer``); ``cot`` asks for reasoning before the answer."""
    kind = ChainOfThought if module == "cot" else Predict
    answer = kind(vqa_signature(), params=params, max_corrections=max_corrections)
    return Program("vqa", {"answer": answer}, description=load_template("vqa/program").text.strip())
