"""What the model may answer each turn: one JSON object, validated by these models.

Bounds on every field keep the JSON schema finite, so constrained decoding terminates even with
a weak model (free integers and strings would let it write digits until ``max_tokens``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

__all__ = [
    "AnswerAction",
    "FinalAnswer",
    "GiantAction",
    "LookAction",
    "RandomAction",
    "ZoomAction",
    "decoding_schema",
]

COORD = 10_000_000
REASONING = 800
ANSWER = 300


class ZoomAction(BaseModel):
    """Look at a region: top-left corner and size in level-0 pixels."""

    model_config = ConfigDict(frozen=True)

    reasoning: str = Field(max_length=REASONING)
    action: Literal["zoom"]
    x: int = Field(ge=-COORD, le=COORD)
    y: int = Field(ge=-COORD, le=COORD)
    width: int = Field(ge=1, le=COORD)
    height: int = Field(ge=1, le=COORD)


class AnswerAction(BaseModel):
    """Stop looking and answer."""

    model_config = ConfigDict(frozen=True)

    reasoning: str = Field(max_length=REASONING)
    action: Literal["answer"]
    answer: str = Field(min_length=1, max_length=ANSWER)


class LookAction(BaseModel):
    """The random-region baseline's only tool: show me another region (no coordinates)."""

    model_config = ConfigDict(frozen=True)

    reasoning: str = Field(max_length=REASONING)
    action: Literal["look"]


class GiantAction(RootModel[Annotated[ZoomAction | AnswerAction, Field(discriminator="action")]]):
    """One turn of the navigator."""


class RandomAction(RootModel[Annotated[LookAction | AnswerAction, Field(discriminator="action")]]):
    """One turn of the random-region baseline."""


class FinalAnswer(BaseModel):
    """The last turn: an answer, nothing else."""

    model_config = ConfigDict(frozen=True)

    reasoning: str = Field(max_length=REASONING)
    answer: str = Field(min_length=1, max_length=ANSWER)


def decoding_schema(slide_width: int, slide_height: int) -> type[BaseModel]:
    """``GiantAction`` with coordinates bounded by the slide, for constrained decoding only.

    Sent to the model so a constrained decoder can only write regions that start inside the
    slide; replies are still validated against the looser ``GiantAction``, so a server that
    ignores the schema can send a partly-outside region, which is clamped with a note.
    """

    class SlideZoom(ZoomAction):
        x: int = Field(ge=0, le=max(0, slide_width - 1))
        y: int = Field(ge=0, le=max(0, slide_height - 1))
        width: int = Field(ge=1, le=max(1, slide_width))
        height: int = Field(ge=1, le=max(1, slide_height))

    class SlideAction(
        RootModel[Annotated[SlideZoom | AnswerAction, Field(discriminator="action")]]
    ):
        """One turn of the navigator, within this slide."""

    SlideAction.__name__ = "GiantAction"
    return SlideAction
