"""What every module of a run shares: the model, the images and their tools, and the records.

The graph's state holds only control data (which branches are open, at what depth); the
records a run produces — questions, insights, the trace of model calls — live here and are
appended to ``events.jsonl`` as they happen, so a killed run still shows what it did.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel

from medagent.agents.base import image_words
from medagent.agents.insight._config import InsightConfig
from medagent.agents.insight._outputs import ToolName
from medagent.agents.insight._prompts import MODULE_TEMPLATES
from medagent.agents.insight._report import (
    CallStatus,
    Finding,
    Insight,
    InsightEvent,
    ModuleCall,
    ModuleName,
    QuestionRecord,
    SourceImage,
)
from medagent.artifacts import ArtifactRef, ArtifactStore
from medagent.errors import ModelError
from medagent.imaging import Slide
from medagent.models import ChatModel, GenerateParams, Message, Structured, generate_structured
from medagent.prompts import Program, demo_turns, fill_instructions, load_template
from medagent.tools import ImageSearcher, TextImageScorer, ToolContext

__all__ = [
    "RunContext",
    "Source",
    "image_kind",
    "normalize_question",
    "role_prompt",
    "role_words",
    "unit_words",
]

T = TypeVar("T", bound=BaseModel)


def image_kind(slide: Slide) -> Literal["slide", "image"]:
    """A pathology slide (tissue tools apply), or any other image: the tools offered differ."""
    return "slide" if slide.modality.kind == "pathology" else "image"


def _plural(name: str, count: int) -> str:
    return f"{count} {name}s" if count > 1 else name


def role_words(slides: Sequence[Slide]) -> dict[str, str]:
    """The role's slots for the run's images: who reads them and what they are, e.g.
    ``reader`` "pathologist and radiologist", ``images`` "a whole-slide pathology image and
    2 radiographs" — never a kind the images are not."""
    readers: list[str] = []
    counts: dict[str, int] = {}
    articles: dict[str, str] = {}
    for slide in slides:
        words = image_words(slide)
        if words["reader"] not in readers:
            readers.append(words["reader"])
        counts[words["image"]] = counts.get(words["image"], 0) + 1
        articles[words["image"]] = words["a_image"]
    named = [
        articles[name] if count == 1 else _plural(name, count) for name, count in counts.items()
    ]
    images = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    return {"reader": " and ".join(readers), "images": images}


def role_prompt(slides: Sequence[Slide]) -> str:
    """The system prompt every module sends: the role, filled with what the images are."""
    return load_template("insight/role").render(**role_words(slides))


def unit_words(slides: Sequence[Slide]) -> str:
    """The units measurements come in: the images' own (µm for slides, mm for radiology), or
    pixels where no spacing is known — never a unit an image without spacing could not give."""
    units: list[str] = []
    unknown = False
    for slide in slides:
        if slide.mpp_x is None:
            unknown = True
            continue
        unit = slide.modality.unit or "µm/mm"
        if unit not in units:
            units.append(unit)
    if not units:
        return "level-0 pixels (the pixel spacing is unknown)"
    return "/".join(units) + (" (pixels where the spacing is unknown)" if unknown else "")


def normalize_question(text: str) -> str:
    """Lower case, letters and digits only: two wordings that differ only so are one question."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


@dataclass
class Source:
    """One input image, its tools (sharing the run's artifact store) and its overview."""

    number: int
    slide: Slide
    tools: ToolContext
    overview: ArtifactRef | None = None

    @property
    def kind(self) -> Literal["slide", "image"]:
        return image_kind(self.slide)

    def describe(self) -> str:
        """What the image is, its size and its level-0 spacing (in the kind's unit), e.g.
        "Image 2: a radiograph, 2000 x 2500 level-0 pixels, 0.15 mm per pixel"."""
        dims = self.slide.dimensions
        words = image_words(self.slide)
        return (
            f"Image {self.number}: {words['a_image']}, {dims.width} x {dims.height} level-0 "
            f"pixels, {words['spacing']}"
        )

    def record(self) -> SourceImage:
        return SourceImage(
            path=str(self.slide.path),
            kind=self.kind,
            width=self.slide.dimensions.width,
            height=self.slide.dimensions.height,
            mpp=self.slide.mpp_x,
            modality=self.slide.modality.kind,
            overview=self.overview,
        )


@dataclass
class RunContext:
    """Everything the modules need besides the graph state; built by the agent per run."""

    model: ChatModel
    config: InsightConfig
    goal: str
    sources: list[Source]
    artifacts: ArtifactStore
    events_path: Path
    searcher: ImageSearcher | None = None
    scorer: TextImageScorer | None = None
    on_event: Callable[[InsightEvent], None] = lambda event: None
    findings: list[Finding] = field(default_factory=list)
    questions: list[QuestionRecord] = field(default_factory=list)
    insights: list[Insight] = field(default_factory=list)
    trace: list[ModuleCall] = field(default_factory=list)
    summary: str = ""
    ranked: list[Insight] = field(default_factory=list)
    prompts: Program | None = None  # an ``insight`` program; else each module's template
    _demo_turns: dict[ModuleName, list[Message]] = field(
        default_factory=dict, init=False, repr=False
    )

    # -- what the model is offered -------------------------------------------------------------
    @property
    def tools(self) -> list[ToolName]:
        """The tools of this run: region tools everywhere, tissue tools on slides, search with
        an index, zero-shot with an image-text model on slides (it scores tissue tiles)."""
        slides = any(s.kind == "slide" for s in self.sources)
        names: list[ToolName] = ["zoom"]
        if slides:
            names += ["tissue", "segment"]
        names.append("measure")
        if self.searcher is not None:
            names += ["search_similar", "reports"]
        if self.scorer is not None and slides:
            names.append("zero_shot")
        return names

    def units(self) -> str:
        """The units the run's measurements come in (see ``unit_words``)."""
        return unit_words([s.slide for s in self.sources])

    def params(self) -> GenerateParams:
        return GenerateParams(
            max_tokens=self.config.max_tokens,
            temperature=self.config.temperature,
            seed=self.config.seed,
        )

    def role(self) -> str:
        """The system prompt as sent (see ``role_prompt``)."""
        return role_prompt([s.slide for s in self.sources])

    def system(self) -> Message:
        return Message.system(self.role())

    def request(
        self, module: ModuleName, *intro: str | ArtifactRef, **values: object
    ) -> list[Message]:
        """A module's opening turns: the role, the program's demos for the module (images stored
        once per run), then ``intro`` and the module's prompt filled with ``values``."""
        if self.prompts is None:
            text = load_template(MODULE_TEMPLATES[module]).render(**values)
            return [self.system(), Message.user(*intro, text)]
        predictor = self.prompts.predictor(module)
        if module not in self._demo_turns:
            self._demo_turns[module] = demo_turns(predictor, self.artifacts)
        text = fill_instructions(predictor, **values)
        return [self.system(), *self._demo_turns[module], Message.user(*intro, text)]

    def images_intro(self) -> list[str | ArtifactRef]:
        """The overviews, each after a line saying what it is (parts for ``Message.user``)."""
        parts: list[str | ArtifactRef] = []
        for source in self.sources:
            parts.append(source.describe() + " (overview, guides in level-0 coordinates):")
            if source.overview is not None:
                parts.append(source.overview)
        return parts

    # -- records -------------------------------------------------------------------------------
    def emit(self, event: InsightEvent) -> None:
        self._append({"type": "event", "event": event.model_dump(mode="json")})
        self.on_event(event)

    def _append(self, entry: dict[str, object]) -> None:
        with self.events_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")

    async def call(
        self,
        module: ModuleName,
        messages: Sequence[Message],
        schema: type[T],
        *,
        branch: int | None = None,
        depth: int | None = None,
        step: int | None = None,
    ) -> T | None:
        """One module's request, with correction rounds; ``None`` when no valid reply came.

        Every call is traced. An unreachable model raises ``ModelError``: the graph ends the run
        with status ``model_error`` rather than asking again at every branch.
        """
        started = time.perf_counter()
        result = await generate_structured(
            self.model,
            messages,
            schema,
            max_retries=self.config.max_corrections,
            params=self.params(),
            artifacts=self.artifacts,
        )
        status: CallStatus = "ok"
        errors: list[str] = []
        parsed = None
        if isinstance(result, Structured):
            parsed = result.value.model_dump(mode="json")
            # A success keeps no reasons for the replies it refused first; their parse errors do.
            errors = [r.parse_error or "not valid" for r in result.replies[:-1]]
        else:
            status, errors = result.kind, list(result.errors)
        record = ModuleCall(
            module=module,
            branch=branch,
            depth=depth,
            step=step,
            status=status,
            outputs=[reply.text for reply in result.replies],
            errors=errors,
            parsed=parsed,
            images_sent=[
                part.artifact.id
                for message in messages
                for part in message.images
                if part.artifact is not None
            ],
            prompt_tokens=sum(reply.usage.prompt_tokens for reply in result.replies),
            completion_tokens=sum(reply.usage.completion_tokens for reply in result.replies),
            thinking=(
                [reply.reasoning for reply in result.replies]
                if any(reply.reasoning for reply in result.replies)
                else []
            ),
            reasoning_tokens=sum(reply.usage.reasoning_tokens for reply in result.replies),
            model_s=time.perf_counter() - started,
        )
        self.trace.append(record)
        self._append({"type": "call", "call": record.model_dump(mode="json")})
        if isinstance(result, Structured):
            value: T = result.value
            return value
        if result.kind == "model_error":
            raise ModelError(result.reason)
        return None
