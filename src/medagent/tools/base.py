"""One way to define a tool, and everything derived from that one definition.

A ``Tool`` is a name, a description, pydantic input and output models and a function. From it
come: a plain Python call (``tool(ctx, x=…)``, raising on failure), a call for models
(``tool.run(ctx, arguments)``, never raising: failures come back as a ``ToolFailure`` the model
can read), the OpenAI tool schema (``to_openai_tool``), a ``ToolSpec`` for the model layer, and
an MCP tool description (``to_mcp_tool``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError

from medagent._trace import AttributeValue, content_enabled, span, to_json, tracing_active
from medagent.artifacts import ArtifactRef, ArtifactStore
from medagent.errors import InputError, MedagentError, RegionError
from medagent.imaging import (
    GuideStyle,
    Region,
    Renderer,
    RenderPolicy,
    Slide,
    Volume,
    draw_guides,
    draw_scale_bar,
)
from medagent.models import ToolSpec

if TYPE_CHECKING:
    from medagent.tools._sam import Segmenter
    from medagent.tools._search import ImageSearcher
    from medagent.tools._zero_shot import TextImageScorer

__all__ = ["Tool", "ToolContext", "ToolFailure", "store_view", "tool"]

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


@dataclass
class ToolContext:
    """What tools work on: the open image, where views are stored, and how views look.

    Built by the caller (an agent, the CLI, a notebook) and passed to every call; tools never
    open files or make stores themselves.
    """

    artifacts: ArtifactStore
    slide: Slide | None = None
    policy: RenderPolicy = field(default_factory=RenderPolicy)
    guides: GuideStyle | None = field(default_factory=GuideStyle)
    #: Prompted segmentation for ``segment(method="sam")`` (``SamSegmenter(folder)``); chosen
    #: by whoever runs the agent, never by the model, and passed in like ``searcher``.
    segmenter: Segmenter | None = None
    #: The most any view is rendered at, whatever long side a model asks for: an agent sets
    #: what its model will receive unshrunk, so the scale a result states stays true.
    max_long_side: int | None = None
    #: Similar-case search for ``search_similar`` (``medagent.retrieval.IndexSearcher``).
    searcher: ImageSearcher | None = None
    #: Image-text model for ``zero_shot`` (a CLIP-family ``medagent.retrieval`` embedder).
    scorer: TextImageScorer | None = None
    #: A CT/MR volume for the volume tools (``slice``, ``measure_3d``, ``montage``).
    volume: Volume | None = None
    _renderer: Renderer | None = field(default=None, repr=False)

    def long_side(self, asked: int | None) -> int:
        """The long side to render a view at: what was asked (else the policy's), capped."""
        wanted = asked or self.policy.long_side
        return min(wanted, self.max_long_side) if self.max_long_side else wanted

    def require_slide(self) -> Slide:
        if self.slide is None:
            raise InputError("this tool needs an open image; set ToolContext.slide")
        return self.slide

    @property
    def renderer(self) -> Renderer:
        """One renderer per slide, so its cache of recent views is shared by all tools."""
        slide = self.require_slide()
        if self._renderer is None or self._renderer.slide is not slide:
            self._renderer = Renderer(slide, self.policy)
        return self._renderer


def store_view(
    ctx: ToolContext, image: Image.Image, region: Region, mpp: float | None, kind: str
) -> ArtifactRef:
    """Store an image a model will see, with the context's guides and a scale bar if known.

    Every view gets the same decorations, so the model can always read level-0 coordinates
    off the picture, whichever tool made it.
    """
    if ctx.guides is not None:
        image = draw_guides(image, region, ctx.guides)
    if mpp is not None:
        image = draw_scale_bar(image, mpp)
    return ctx.artifacts.put(image, kind=kind, region=region)


class ToolFailure(BaseModel):
    """A tool call that did not work, in words a model can act on."""

    model_config = ConfigDict(frozen=True)

    ok: Literal[False] = False
    tool: str
    kind: Literal["invalid_arguments", "bad_region", "bad_input", "failed"]
    message: str

    def to_text(self) -> str:
        return f"Tool {self.tool} failed ({self.kind}): {self.message}"


def _kind(error: MedagentError) -> Literal["bad_region", "bad_input", "failed"]:
    if isinstance(error, RegionError):
        return "bad_region"
    if isinstance(error, InputError):
        return "bad_input"
    return "failed"


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:4]:
        where = ".".join(str(x) for x in item["loc"]) or "arguments"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


class Tool(Generic[In, Out]):
    """A typed tool; see the module docstring for what one definition gives."""

    def __init__(
        self,
        name: str,
        description: str,
        input_model: type[In],
        output_model: type[Out],
        function: Callable[[ToolContext, In], Out],
    ) -> None:
        self.name = name
        self.description = description
        self.input_model = input_model
        self.output_model = output_model
        self.function = function

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def __call__(self, ctx: ToolContext, arguments: In | None = None, /, **kwargs: Any) -> Out:
        """The plain Python call: validated arguments in, output model out, errors raised."""
        args = arguments if arguments is not None else self.input_model.model_validate(kwargs)
        return self._call(ctx, args)

    def _call(self, ctx: ToolContext, args: In) -> Out:
        """The function, inside a GenAI ``execute_tool`` span when tracing is on (arguments
        and result recorded only when the user opted in; they hold artifact ids, not pixels)."""
        if not tracing_active():
            return self.function(ctx, args)
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": self.name,
            "gen_ai.tool.type": "function",
        }
        if content_enabled():
            attributes["gen_ai.tool.call.arguments"] = to_json(args.model_dump(mode="json"))
        with span(f"execute_tool {self.name}", attributes) as current:
            result = self.function(ctx, args)
            if content_enabled():
                current.set_attribute(
                    "gen_ai.tool.call.result", to_json(result.model_dump(mode="json"))
                )
            return result

    def run(self, ctx: ToolContext, arguments: dict[str, Any] | str | None) -> Out | ToolFailure:
        """The call a model makes: never raises for bad arguments or bad regions."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return ToolFailure(
                    tool=self.name,
                    kind="invalid_arguments",
                    message=f"arguments are not valid JSON ({exc.msg}); send a JSON object",
                )
        if arguments is None:
            return ToolFailure(
                tool=self.name,
                kind="invalid_arguments",
                message="arguments could not be read; send a JSON object",
            )
        try:
            args = self.input_model.model_validate(arguments)
        except ValidationError as exc:
            return ToolFailure(tool=self.name, kind="invalid_arguments", message=_describe(exc))
        try:
            return self._call(ctx, args)
        except MedagentError as exc:
            return ToolFailure(tool=self.name, kind=_kind(exc), message=str(exc))

    def spec(self) -> ToolSpec:
        """The tool as the model layer sends it."""
        return ToolSpec(
            name=self.name,
            description=self.description,
            parameters=self.input_model.model_json_schema(),
        )

    def to_openai_tool(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.input_model.model_json_schema(),
            },
        }

    def to_mcp_tool(self) -> dict[str, Any]:
        """The MCP ``tools/list`` entry (name, description, input and output schemas)."""
        return {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_model.model_json_schema(),
            "outputSchema": self.output_model.model_json_schema(),
        }


def tool(
    name: str, description: str, input_model: type[In], output_model: type[Out]
) -> Callable[[Callable[[ToolContext, In], Out]], Tool[In, Out]]:
    """Decorator form: ``@tool("zoom", "…", ZoomInput, ZoomOutput)`` over the function."""

    def wrap(function: Callable[[ToolContext, In], Out]) -> Tool[In, Out]:
        return Tool(name, description, input_model, output_model, function)

    return wrap
