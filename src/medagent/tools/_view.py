"""Looking at the image: the overview and zooms, each stored as an artifact with guides."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent.artifacts import ArtifactRef
from medagent.errors import RegionError
from medagent.imaging import ModalityKind, Region, Rendered, draw_boxes, modality
from medagent.tools.base import ToolContext, store_view, tool

__all__ = [
    "OverviewInput",
    "OverviewOutput",
    "SlideFacts",
    "ZoomInput",
    "ZoomOutput",
    "overview",
    "zoom",
]


class SlideFacts(BaseModel):
    """What a model should know about the image it navigates."""

    model_config = ConfigDict(frozen=True)

    width: int
    height: int
    level_count: int
    mpp_x: float | None
    mpp_y: float | None
    objective_power: float | None
    modality: ModalityKind = Field("image", description="what the image is (Slide.modality)")

    def to_text(self) -> str:
        kind = modality(self.modality)
        spacing = (
            kind.spacing(self.mpp_x).replace(" per pixel", " per level-0 pixel")
            if self.mpp_x is not None
            else "pixel spacing unknown (no physical units)"
        )
        return f"{kind.name} {self.width} x {self.height} level-0 pixels, {spacing}"


class OverviewInput(BaseModel):
    long_side: int | None = Field(
        None, ge=64, le=4096, description="long side of the image in pixels (default 1000)"
    )
    boxes: list[Region] = Field(
        default_factory=list,
        description="level-0 regions to outline and number, e.g. earlier zooms",
    )


class OverviewOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    artifact: ArtifactRef
    slide: SlideFacts
    region: Region
    level: int
    mpp: float | None = Field(description="micrometres per pixel of the overview image")

    def to_text(self) -> str:
        return (
            f"Overview of the whole {self.slide.to_text()}; shown as "
            f"{self.artifact.width}x{self.artifact.height} px with guides labelled in level-0 "
            "coordinates."
        )


class ZoomInput(BaseModel):
    x: int = Field(description="left edge, level-0 pixels")
    y: int = Field(description="top edge, level-0 pixels")
    width: int = Field(ge=1, description="width, level-0 pixels")
    height: int = Field(ge=1, description="height, level-0 pixels")
    long_side: int | None = Field(
        None, ge=64, le=4096, description="long side of the returned image (default 1000)"
    )


class ZoomOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    artifact: ArtifactRef
    requested: Region
    region: Region = Field(description="what is shown, after clamping to the image")
    clamped: bool
    level: int
    mpp: float | None = Field(description="micrometres per pixel of the returned image")
    slide: SlideFacts

    def to_text(self) -> str:
        clamp = f" (clamped from {self.requested} to the image)" if self.clamped else ""
        spacing = (
            modality(self.slide.modality).spacing(self.mpp)
            if self.mpp is not None
            else "spacing unknown"
        )
        return (
            f"Zoomed to {self.region}{clamp}, shown as {self.artifact.width}x"
            f"{self.artifact.height} px ({spacing}) from pyramid level {self.level}; "
            f"{self.slide.to_text()}."
        )


def slide_facts(ctx: ToolContext) -> SlideFacts:
    slide = ctx.require_slide()
    return SlideFacts(
        width=slide.dimensions.width,
        height=slide.dimensions.height,
        level_count=slide.level_count,
        mpp_x=slide.mpp_x,
        mpp_y=slide.mpp_y,
        objective_power=slide.objective_power,
        modality=slide.modality.kind,
    )


def _decorate(ctx: ToolContext, view: Rendered, boxes: list[Region]) -> ArtifactRef:
    image = draw_boxes(view.image, view.region, boxes) if boxes else view.image
    kind = "overview" if view.region == Region.whole(ctx.require_slide().dimensions) else "zoom"
    return store_view(ctx, image, view.region, view.mpp, kind)


@tool(
    "overview",
    "The whole image at low resolution with axis guides labelled in level-0 pixel coordinates. "
    "Optionally outline numbered boxes (level-0 regions), e.g. where you already zoomed.",
    OverviewInput,
    OverviewOutput,
)
def overview(ctx: ToolContext, args: OverviewInput) -> OverviewOutput:
    view = ctx.renderer.overview(ctx.long_side(args.long_side))
    return OverviewOutput(
        artifact=_decorate(ctx, view, args.boxes),
        slide=slide_facts(ctx),
        region=view.region,
        level=view.level,
        mpp=view.mpp,
    )


@tool(
    "zoom",
    "Look at a region of the image in more detail. Give the region in level-0 pixel "
    "coordinates (read them off the guides); it is clamped to the image and returned at up to "
    "long_side pixels, read from the pyramid level that keeps the detail.",
    ZoomInput,
    ZoomOutput,
)
def zoom(ctx: ToolContext, args: ZoomInput) -> ZoomOutput:
    try:
        requested = Region(x=args.x, y=args.y, width=args.width, height=args.height)
    except ValidationError as exc:  # numbers past what any image can have
        first = exc.errors()[0]
        raise RegionError(
            f"region {first['loc'][0]}: {first['msg']}; give a region inside the image"
        ) from None
    view = ctx.renderer.render(requested, ctx.long_side(args.long_side))
    return ZoomOutput(
        artifact=_decorate(ctx, view, []),
        requested=requested,
        region=view.region,
        clamped=view.clamped,
        level=view.level,
        mpp=view.mpp,
        slide=slide_facts(ctx),
    )
