"""What the model writes at each module: one JSON object, validated by these models.

Every field is bounded (string lengths, list sizes, integer ranges) so a constrained decoder
always terminates, even with a weak model: a free string or list would let it write until
``max_tokens``. Coordinates are level-0 pixels of the image named by ``image`` (1-based).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, RootModel

from medagent.imaging import Point, Region
from medagent.tools import ZeroShotInput

__all__ = [
    "ACTIONS",
    "AnswerAction",
    "Box",
    "FollowUps",
    "InsightAnswer",
    "MeasureAction",
    "PROMPT_CHARS",
    "Pixel",
    "QuestionKind",
    "RegionAction",
    "ReportsAction",
    "RootFinding",
    "SearchAction",
    "SegmentAction",
    "SummaryOutput",
    "ToolName",
    "ZERO_SHOT_PROMPTS",
    "ZeroShotAction",
    "ZoomAction",
    "action_schema",
    "root_schema",
]

COORD = 10_000_000
MAX_IMAGES = 8
REASONING = 400
QUESTION = 300
TEXT = 500

QuestionKind = Literal["root", "descriptive", "diagnostic", "predictive", "prescriptive"]
FollowUpKind = Literal["descriptive", "diagnostic", "predictive", "prescriptive"]
ToolName = Literal["zoom", "tissue", "segment", "measure", "search_similar", "reports", "zero_shot"]

_frozen = ConfigDict(frozen=True)
ImageNumber = Annotated[int, Field(ge=1, le=MAX_IMAGES, description="which image, 1-based")]


class Box(BaseModel):
    """A level-0 rectangle: top-left corner and size."""

    model_config = _frozen

    x: int = Field(ge=-COORD, le=COORD)
    y: int = Field(ge=-COORD, le=COORD)
    width: int = Field(ge=1, le=COORD)
    height: int = Field(ge=1, le=COORD)

    def region(self) -> Region:
        return Region(x=self.x, y=self.y, width=self.width, height=self.height)


class Pixel(BaseModel):
    """A level-0 point."""

    model_config = _frozen

    x: int = Field(ge=-COORD, le=COORD)
    y: int = Field(ge=-COORD, le=COORD)

    def point(self) -> Point:
        return Point(x=self.x, y=self.y)


# -- Visual Root Finder ---------------------------------------------------------------------
class FindingOut(BaseModel):
    """A salient visual finding, with where it is when that can be said."""

    model_config = _frozen

    description: str = Field(min_length=1, max_length=QUESTION)
    image: ImageNumber = 1
    region: Box | None = None


class RootFinding(BaseModel):
    """The root finder's reply: what stands out, and the first questions to ask."""

    model_config = _frozen

    findings: list[FindingOut] = Field(min_length=1, max_length=8)
    questions: list[Annotated[str, Field(min_length=1, max_length=QUESTION)]] = Field(
        min_length=1, max_length=8
    )


def root_schema(k: int) -> type[RootFinding]:
    """``RootFinding`` asking for exactly ``k`` questions (the decoder then writes k)."""

    class RootFindingK(RootFinding):
        questions: list[Annotated[str, Field(min_length=1, max_length=QUESTION)]] = Field(
            min_length=k, max_length=k
        )

    RootFindingK.__name__ = "RootFinding"
    return RootFindingK


# -- Analytical Insight Agent ---------------------------------------------------------------
class ZoomAction(BaseModel):
    """Look at a region in detail."""

    model_config = _frozen

    reasoning: str = Field(max_length=REASONING)
    action: Literal["zoom"]
    image: ImageNumber = 1
    region: Box


class RegionAction(BaseModel):
    """Tissue detection over a region (the whole image when ``region`` is null)."""

    model_config = _frozen

    reasoning: str = Field(max_length=REASONING)
    action: Literal["tissue"]
    image: ImageNumber = 1
    region: Box | None = None


class SegmentAction(BaseModel):
    """Segment nuclei or tissue pieces in a region, with counts and sizes."""

    model_config = _frozen

    reasoning: str = Field(max_length=REASONING)
    action: Literal["segment"]
    image: ImageNumber = 1
    method: Literal["nuclei", "tissue"]
    region: Box | None = None


class MeasureAction(BaseModel):
    """Measure in physical units: distance (2 points), polyline, polygon, angle (3), mask."""

    model_config = _frozen

    reasoning: str = Field(max_length=REASONING)
    action: Literal["measure"]
    image: ImageNumber = 1
    kind: Literal["distance", "polyline", "polygon", "angle", "mask"]
    points: list[Pixel] = Field(default_factory=list, max_length=12)
    mask: str | None = Field(None, max_length=32, description="mask id from a segment result")


class SearchAction(BaseModel):
    """Similar cases for a region (the whole image when ``region`` is null)."""

    model_config = _frozen

    reasoning: str = Field(max_length=REASONING)
    action: Literal["search_similar"]
    image: ImageNumber = 1
    region: Box | None = None
    k: int = Field(5, ge=1, le=10)


class ReportsAction(BaseModel):
    """Reports of similar cases for a region, as many as the adaptive cut keeps."""

    model_config = _frozen

    reasoning: str = Field(max_length=REASONING)
    action: Literal["reports"]
    image: ImageNumber = 1
    region: Box | None = None


def _max_len(metadata: list[Any] | tuple[Any, ...]) -> int:
    """The ``max_length`` among a field's constraints: the tool's limits, read from its input
    model so the two cannot drift apart."""
    for item in metadata:
        limit = getattr(item, "max_length", None)
        if isinstance(limit, int):
            return limit
    raise AssertionError("no max_length in the zero-shot tool's input")  # pragma: no cover


_ZERO_SHOT_FIELD = ZeroShotInput.model_fields["prompts"]
#: The zero-shot tool's own limits: the longest prompt it takes, and the most prompts.
PROMPT_CHARS = _max_len(get_args(get_args(_ZERO_SHOT_FIELD.annotation)[0])[1:])
#: Fewer prompts than the tool takes (its limit bounds a client, this one a decoder): a few
#: things to tell apart is what a turn needs, and each prompt costs the decoder tokens.
ZERO_SHOT_PROMPTS = min(5, _max_len(_ZERO_SHOT_FIELD.metadata))


class ZeroShotAction(BaseModel):
    """Where to look: every tissue tile scored against text prompts by an image-text model.

    Two prompts at least, as the tool needs (each tile's scores are shares between them); the
    heat map and the best regions are those of the first.
    """

    model_config = _frozen

    reasoning: str = Field(max_length=REASONING)
    action: Literal["zero_shot"]
    image: ImageNumber = 1
    prompts: list[Annotated[str, Field(min_length=1, max_length=PROMPT_CHARS)]] = Field(
        min_length=2,
        max_length=ZERO_SHOT_PROMPTS,
        description="things to tell apart, the one to map first, e.g. ['tumour', 'normal tissue']",
    )
    region: Box | None = None


class AnswerAction(BaseModel):
    """Stop gathering evidence: answer the question and state the insight."""

    model_config = _frozen

    reasoning: str = Field(max_length=REASONING)
    action: Literal["answer"]
    answer: str = Field(min_length=1, max_length=TEXT)
    insight: str = Field(min_length=1, max_length=TEXT)
    confidence: int = Field(ge=0, le=100, description="percent")


class InsightAnswer(BaseModel):
    """The last turn of a question: the answer and the insight, nothing else."""

    model_config = _frozen

    reasoning: str = Field(max_length=REASONING)
    answer: str = Field(min_length=1, max_length=TEXT)
    insight: str = Field(min_length=1, max_length=TEXT)
    confidence: int = Field(ge=0, le=100, description="percent")


ACTIONS: dict[ToolName, type[BaseModel]] = {
    "zoom": ZoomAction,
    "tissue": RegionAction,
    "segment": SegmentAction,
    "measure": MeasureAction,
    "search_similar": SearchAction,
    "reports": ReportsAction,
    "zero_shot": ZeroShotAction,
}


def action_schema(tools: list[ToolName]) -> type[RootModel[Any]]:
    """One turn of the insight agent: one of the available tools, or the answer.

    Only the tools this run offers are in the union, so a constrained decoder cannot pick one
    that is not there (no index, no search).
    """
    members: tuple[type[BaseModel], ...] = (*(ACTIONS[name] for name in tools), AnswerAction)
    union: Any = members[0]
    for member in members[1:]:
        union = union | member
    if len(members) == 1:
        return RootModel[union]

    class InsightAction(RootModel[Annotated[union, Field(discriminator="action")]]):
        """One turn of the insight agent."""

    return InsightAction


# -- Follow-up Question Composer ------------------------------------------------------------
class FollowUps(BaseModel):
    """One candidate follow-up of each kind (empty when there is nothing of that kind)."""

    model_config = _frozen

    reasoning: str = Field(max_length=REASONING)
    descriptive: str = Field(max_length=QUESTION, description="what else is there to see")
    diagnostic: str = Field(max_length=QUESTION, description="why: what explains a finding")
    predictive: str = Field(max_length=QUESTION, description="what it implies for the course")
    prescriptive: str = Field(max_length=QUESTION, description="what should be done or checked")
    choice: FollowUpKind
    nothing_new: bool = Field(description="true when no question would add a new insight")

    def candidates(self) -> dict[FollowUpKind, str]:
        return {
            "descriptive": self.descriptive.strip(),
            "diagnostic": self.diagnostic.strip(),
            "predictive": self.predictive.strip(),
            "prescriptive": self.prescriptive.strip(),
        }


# -- Final summary ------------------------------------------------------------------------------
InsightNumber = Annotated[int, Field(ge=1, le=100)]


class SummaryOutput(BaseModel):
    """The summary: a paragraph, the insights by importance, and which say the same thing."""

    model_config = _frozen

    summary: str = Field(min_length=1, max_length=1500)
    ranking: list[InsightNumber] = Field(
        max_length=80, description="insight numbers, most important first"
    )
    duplicates: list[Annotated[list[InsightNumber], Field(min_length=2, max_length=20)]] = Field(
        default_factory=list,
        max_length=40,
        description="groups of insight numbers that say the same thing, the best first",
    )
