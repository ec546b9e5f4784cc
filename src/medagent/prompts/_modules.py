"""``Predict`` and ``ChainOfThought``: a signature turned into messages, run on any backend.

The prompt a predictor sends is each demo as a user turn (its inputs) and the assistant's JSON
reply, then one user turn with the images, the text inputs and, after them, the instructions,
the fields and the reply format. No system turn: several medical VLMs' chat templates have
none, and zero-shot this is the one-message prompt VQA benchmarks use. Images go in user turns
only. Replies are constrained to the output model where the backend can, and always validated
(``generate_structured``).

While ``tracing()`` is active, every successful predictor call is recorded, so an optimizer can
turn a teacher's good runs into demos.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medagent.errors import ConfigError, InputError, MedagentError
from medagent.models import (
    ChatModel,
    GenerateParams,
    ImagePart,
    Message,
    Reply,
    Structured,
    TextPart,
    generate_structured,
)
from medagent.prompts._signature import REASONING_FIELD, InputField, Signature, with_reasoning
from medagent.prompts._templates import load_template

__all__ = [
    "ChainOfThought",
    "Demo",
    "Example",
    "Predict",
    "Prediction",
    "TraceEntry",
    "load_input_image",
    "tracing",
]

DemoSource = Literal["bootstrapped", "labeled", "manual"]


class Example(BaseModel):
    """One training or validation case: the program's inputs and the reference outputs.

    Image inputs may be PIL images, paths or raw bytes; ``metadata`` is for the metric.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Demo(BaseModel):
    """A worked example shown before the request: inputs, the reply, maybe its reasoning."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    inputs: dict[str, Any]
    outputs: dict[str, Any]
    reasoning: str | None = None
    source: DemoSource = "manual"
    example_id: str | None = Field(None, description="the training example it came from")


class Prediction(BaseModel):
    """What a predictor (or a program) answered: a validated output, or why there is none."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    value: BaseModel | None = None
    reasoning: str | None = None
    error: str | None = None
    failure: Literal["invalid_output", "model_error"] | None = Field(
        None, description="why there is no value: the model answered badly, or not at all"
    )
    replies: list[Reply] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.value is not None

    @property
    def outputs(self) -> dict[str, Any]:
        """The output fields as a dict (empty when there is no value)."""
        return self.value.model_dump(mode="json") if self.value is not None else {}


@dataclass(frozen=True)
class TraceEntry:
    """One successful predictor call made while tracing."""

    predictor: Predict
    inputs: dict[str, Any]
    prediction: Prediction


_TRACE: ContextVar[list[TraceEntry] | None] = ContextVar("medagent_prompt_trace", default=None)


@contextmanager
def tracing() -> Iterator[list[TraceEntry]]:
    """Record the predictor calls made inside the block (per asyncio task: contexts are copied)."""
    trace: list[TraceEntry] = []
    token = _TRACE.set(trace)
    try:
        yield trace
    finally:
        _TRACE.reset(token)


#: An image given by path is rendered whole with its long side at most this (never upscaled):
#: a plain image of a usual size goes as it is, a slide or a large scan as an overview.
PATH_IMAGE_LONG_SIDE = 2048


def load_input_image(value: object, what: str) -> ImagePart:
    """An image input (PIL image, path or bytes) as a message part, in RGB.

    A path opens through ``open_image``, like every image path medagent accepts: DICOM,
    slides and plain images alike; bytes through ``decode_image`` (pixel count checked first).
    """
    if isinstance(value, Image.Image):
        return ImagePart(image=value if value.mode == "RGB" else value.convert("RGB"))
    if isinstance(value, str | Path):
        from medagent.imaging import Renderer, open_image

        try:
            with open_image(value) as slide:
                return ImagePart(image=Renderer(slide).overview(PATH_IMAGE_LONG_SIDE).image)
        except MedagentError as exc:
            raise InputError(f"{what}: cannot read image ({exc})", path=str(value)) from None
    if isinstance(value, bytes):
        from medagent.imaging import decode_image

        try:
            image = decode_image(value, name="image bytes").image
        except MedagentError as exc:
            raise InputError(f"{what}: cannot read image ({exc})", path="(bytes)") from None
        return ImagePart(image=image if image.mode == "RGB" else image.convert("RGB"))
    raise ConfigError(f"{what}: an image must be a PIL image, a path or bytes, not {type(value)}")


def _image_values(field: InputField, value: object) -> list[object]:
    if value is None:
        return []
    if field.kind == "images":
        if not isinstance(value, list | tuple):
            raise ConfigError(f"input {field.name} takes a list of images")
        return list(value)
    return [value]


def _text(field: InputField, value: object) -> str:
    if field.kind == "list":
        if not isinstance(value, list | tuple):
            raise ConfigError(f"input {field.name} takes a list of strings")
        lines = "\n".join(f"{i}. {item}" for i, item in enumerate(value, start=1))
        return f"{field.label}:\n{lines}"
    return f"{field.label}: {value}"


class Predict:
    """One prompt step: a signature plus what optimizers tune (instructions, demos, descriptions).

    ``params`` and ``max_corrections`` are how it samples and how many invalid replies it
    corrects; they are not part of a compiled program.
    """

    reasoning: bool = False

    def __init__(
        self,
        signature: Signature,
        *,
        params: GenerateParams | None = None,
        max_corrections: int = 2,
    ) -> None:
        self.signature = signature
        self.params = params or GenerateParams()
        self.max_corrections = max_corrections
        self.instructions = signature.instructions
        self.demos: list[Demo] = []
        self.input_descriptions = signature.input_descriptions()
        self.output_descriptions = signature.output_descriptions()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature.name!r}, demos={len(self.demos)})"

    def copy(self) -> Predict:
        """An independent copy: changing its instructions or demos leaves this one alone."""
        twin = copy.copy(self)
        twin.demos = list(self.demos)
        twin.input_descriptions = dict(self.input_descriptions)
        twin.output_descriptions = dict(self.output_descriptions)
        return twin

    @property
    def schema(self) -> type[BaseModel]:
        """The model replies are decoded into (with ``reasoning`` first for chain of thought)."""
        output = self.signature.output
        return with_reasoning(output) if self.reasoning else output

    # -- the prompt ----------------------------------------------------------------------------
    def instructions_text(self) -> str:
        """The instructions, what each input is, and the reply format."""
        fields = self.signature.inputs
        inputs = "\n".join(
            f"- {f.label}: {self.input_descriptions.get(f.name) or f.kind}"
            + (" (may be absent)" if f.optional else "")
            for f in fields
        )
        names = list(self.schema.model_fields)
        described = {REASONING_FIELD: "your step-by-step reasoning, before the answer"}
        described.update(self.output_descriptions)
        outputs = "\n".join(f'- "{n}": {described.get(n) or "see the instructions"}' for n in names)
        skeleton = json.dumps({n: "..." for n in names})
        return load_template("program/instructions").render(
            instructions=self.instructions.strip(),
            inputs=inputs,
            outputs=outputs,
            skeleton=skeleton,
        )

    def user_message(
        self, values: Mapping[str, Any], what: str, *, instructions: bool = False
    ) -> Message:
        """The inputs as one user turn: every image first, then each text field on its own line;
        with ``instructions``, the instructions and reply format after a blank line."""
        parts: list[TextPart | ImagePart] = []
        fields = self.signature.inputs
        for field in fields:
            if field.is_image:
                parts.extend(
                    load_input_image(v, f"{what}, input {field.name}")
                    for v in _image_values(field, values.get(field.name))
                )
        texts = [
            _text(field, values[field.name])
            for field in fields
            if not field.is_image and values.get(field.name) not in (None, "", [], ())
        ]
        if instructions:
            texts.append("\n" + self.instructions_text())
        if texts:
            parts.append(TextPart(text="\n".join(texts)))
        return Message(role="user", content=parts)

    def demo_messages(self, demos: Sequence[Demo] | None = None) -> list[Message]:
        """Each demo as a user turn and the assistant's JSON reply."""
        messages: list[Message] = []
        for number, demo in enumerate(self.demos if demos is None else demos, start=1):
            reply: dict[str, Any] = {}
            if self.reasoning and demo.reasoning:
                reply[REASONING_FIELD] = demo.reasoning
            reply.update(demo.outputs)
            messages.append(self.user_message(demo.inputs, f"demo {number}"))
            messages.append(Message.assistant(json.dumps(reply, ensure_ascii=False)))
        return messages

    def messages(self, values: Mapping[str, Any]) -> list[Message]:
        """The whole request for ``values``: the demos, then the question and instructions."""
        return [
            *self.demo_messages(),
            self.user_message(values, self.signature.name, instructions=True),
        ]

    # -- running -------------------------------------------------------------------------------
    async def acall(self, model: ChatModel, inputs: Mapping[str, Any]) -> Prediction:
        """Ask ``model``; a model that answers badly gives a failed `Prediction`, not an error."""
        values = {f.name: inputs.get(f.name) for f in self.signature.inputs}
        self.signature.check_inputs({k: v for k, v in values.items() if v is not None})
        result = await generate_structured(
            model,
            self.messages(values),
            self.schema,
            max_retries=self.max_corrections,
            params=self.params,
        )
        if not isinstance(result, Structured):
            return Prediction(error=result.reason, failure=result.kind, replies=result.replies)
        data = result.value.model_dump()
        reasoning = data.pop(REASONING_FIELD, None) if self.reasoning else None
        prediction = Prediction(
            value=self.signature.output.model_validate(data),
            reasoning=reasoning,
            replies=result.replies,
        )
        trace = _TRACE.get()
        if trace is not None:
            trace.append(TraceEntry(predictor=self, inputs=values, prediction=prediction))
        return prediction


class ChainOfThought(Predict):
    """``Predict`` that asks for ``reasoning`` before the output fields."""

    reasoning = True
