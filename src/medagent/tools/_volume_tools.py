"""Tools over a CT/MR volume: a slice along any axis through a window, a labelled montage to
start from, and 3-D distances between voxels.

Points are voxel indices (slice, row, col) of the series; every view states which voxels its
corners are, so a model can carry a point it sees on a view into ``measure_3d``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medagent.artifacts import ArtifactRef
from medagent.errors import InputError
from medagent.imaging import Region, Volume, VolumeAxis, VoxelPoint, Window, WindowPreset
from medagent.tools.base import ToolContext, store_view, tool

__all__ = [
    "Measure3DInput",
    "Measure3DOutput",
    "MontageInput",
    "MontageOutput",
    "SliceInput",
    "SliceOutput",
    "VolumeFacts",
    "measure_3d",
    "montage",
    "volume_slice",
]


def _require_volume(ctx: ToolContext) -> Volume:
    if ctx.volume is None:
        raise InputError(
            "this tool needs a CT or MR volume and none is open; open a series folder "
            "(ToolContext.volume)"
        )
    return ctx.volume


class VolumeFacts(BaseModel):
    """What a model should know about the volume it scrolls through."""

    model_config = ConfigDict(frozen=True)

    modality: Literal["ct", "mr"]
    shape: tuple[int, int, int] = Field(description="slices, rows, columns")
    spacing_mm: tuple[float, float, float] = Field(
        description="between slices, between rows, between columns"
    )
    plane: str
    unit: str

    @classmethod
    def of(cls, volume: Volume) -> VolumeFacts:
        return cls(
            modality="ct" if volume.hu else "mr",
            shape=volume.shape,
            spacing_mm=volume.spacing_mm,
            plane=volume.plane,
            unit=volume.unit,
        )


class _WindowArgs(BaseModel):
    window: WindowPreset | None = Field(
        None,
        description="CT window preset: lung, mediastinum, soft_tissue, bone, brain (default "
        "soft_tissue for CT; MR defaults to its own percentiles)",
    )
    level: float | None = Field(None, description="window centre (HU for CT), with width")
    width: float | None = Field(None, gt=0, description="window width (HU for CT), with level")

    @model_validator(mode="after")
    def _one_window(self) -> _WindowArgs:
        if (self.level is None) != (self.width is None):
            raise ValueError("give level and width together")
        if self.window is not None and self.level is not None:
            raise ValueError("give a window preset or level and width, not both")
        return self

    def chosen(self) -> WindowPreset | Window | None:
        if self.level is not None and self.width is not None:
            return Window(level=self.level, width=self.width, name="custom")
        return self.window


class SliceInput(_WindowArgs):
    axis: VolumeAxis = Field("axial", description="axial, coronal or sagittal")
    index: int = Field(ge=0, description="which plane along the axis, from 0")


class SliceOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    artifact: ArtifactRef
    axis: VolumeAxis
    index: int
    count: int = Field(description="planes along this axis")
    position_mm: float = Field(description="patient coordinate of the plane's centre, mm")
    patient_axis: str
    pixel_mm: tuple[float, float] = Field(description="mm per image pixel (x, y)")
    window: Window
    top_left: VoxelPoint = Field(description="the voxel the image's top-left pixel shows")
    bottom_right: VoxelPoint = Field(description="the voxel the bottom-right pixel shows")
    volume: VolumeFacts

    def to_text(self) -> str:
        tl, br = self.top_left, self.bottom_right
        return (
            f"{self.axis.capitalize()} slice {self.index} of {self.count - 1} at "
            f"{self.patient_axis} = {self.position_mm:+.1f} mm, shown as "
            f"{self.artifact.width}x{self.artifact.height} px of {self.pixel_mm[0]:.3g} x "
            f"{self.pixel_mm[1]:.3g} mm, {self.window.to_text(self.volume.unit)}. Top-left "
            f"pixel is voxel (slice, row, col) ({tl.slice:.0f}, {tl.row:.0f}, {tl.col:.0f}), "
            f"bottom-right ({br.slice:.0f}, {br.row:.0f}, {br.col:.0f}). Volume: "
            f"{self.volume.shape[0]} slices, voxels {self.volume.spacing_mm[2]:.3g} x "
            f"{self.volume.spacing_mm[1]:.3g} x {self.volume.spacing_mm[0]:.3g} mm."
        )


@tool(
    "slice",
    "Look at one plane of the CT/MR volume: axis (axial, coronal, sagittal) and index from 0, "
    "through a window preset (lung, mediastinum, soft_tissue, bone, brain) or level/width in "
    "HU. Returns the image with its slice number, position in mm and pixel spacing, and the "
    "voxels (slice, row, col) at its corners for measure_3d.",
    SliceInput,
    SliceOutput,
)
def volume_slice(ctx: ToolContext, args: SliceInput) -> SliceOutput:
    volume = _require_volume(ctx)
    view = volume.view(args.axis, args.index, args.chosen())
    slide = view.slide
    image = slide.read(Region.whole(slide.dimensions), 0)
    long_side = ctx.long_side(None)
    if max(image.size) > long_side:  # shrink only; a slice is never upscaled
        image.thumbnail((long_side, long_side))
    shown_x = slide.mpp_x / 1000 * slide.dimensions.width / image.width  # type: ignore[operator]
    shown_y = slide.mpp_y / 1000 * slide.dimensions.height / image.height  # type: ignore[operator]
    region = Region.whole(slide.dimensions)
    artifact = store_view(ctx, image, region, shown_x * 1000, "slice")
    width, height = slide.dimensions.width, slide.dimensions.height
    return SliceOutput(
        artifact=artifact,
        axis=view.axis,
        index=view.index,
        count=view.count,
        position_mm=view.position_mm,
        patient_axis=view.patient_axis,
        pixel_mm=(shown_x, shown_y),
        window=view.window,
        top_left=view.to_voxel(0, 0),
        bottom_right=view.to_voxel(width - 1, height - 1),
        volume=VolumeFacts.of(volume),
    )


class MontageInput(_WindowArgs):
    axis: VolumeAxis = Field("axial", description="axial, coronal or sagittal")
    every: int | None = Field(
        None, ge=1, description="show every n-th plane (default: about 24 planes in all)"
    )


class MontageOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    artifact: ArtifactRef
    axis: VolumeAxis
    indices: list[int]
    columns: int
    window: Window
    volume: VolumeFacts

    def to_text(self) -> str:
        first, last = self.indices[0], self.indices[-1]
        step = self.indices[1] - first if len(self.indices) > 1 else 1
        return (
            f"Montage of {self.axis} slices {first} to {last} (every {step}), "
            f"{self.columns} per row, each labelled with its slice number; "
            f"{self.window.to_text(self.volume.unit)}. Volume: {self.volume.shape[0]} slices "
            f"of {self.volume.shape[2]}x{self.volume.shape[1]} px, {self.volume.plane}."
        )


@tool(
    "montage",
    "An overview of the CT/MR volume: every n-th slice along an axis in one grid, each tile "
    "labelled with its slice number. Start here, then open single slices with 'slice'.",
    MontageInput,
    MontageOutput,
)
def montage(ctx: ToolContext, args: MontageInput) -> MontageOutput:
    volume = _require_volume(ctx)
    every = args.every or max(1, -(-volume.count(args.axis) // 24))
    grid = volume.montage(every, args.chosen(), axis=args.axis, long_side=ctx.long_side(None))
    # No region: a montage shows many planes, not one region of an image.
    artifact = ctx.artifacts.put(grid.image, kind="montage")
    return MontageOutput(
        artifact=artifact,
        axis=grid.axis,
        indices=grid.indices,
        columns=grid.columns,
        window=grid.window,
        volume=VolumeFacts.of(volume),
    )


class Measure3DInput(BaseModel):
    a: VoxelPoint = Field(description="first point: slice, row, col (voxel indices)")
    b: VoxelPoint = Field(description="second point: slice, row, col (voxel indices)")


class Measure3DOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    distance_mm: float
    a_mm: tuple[float, float, float] = Field(description="patient coordinates of a (x, y, z)")
    b_mm: tuple[float, float, float] = Field(description="patient coordinates of b (x, y, z)")
    slices_apart: float

    def to_text(self) -> str:
        return (
            f"Measured 3-D distance: {self.distance_mm:.1f} mm between voxels "
            f"{self.slices_apart:g} slice(s) apart."
        )


@tool(
    "measure_3d",
    "The physical distance in mm between two points of the CT/MR volume, given as voxel "
    "indices (slice, row, col) — read them off slice views (their corners' voxels are "
    "stated); works across slices, using the series' true slice positions.",
    Measure3DInput,
    Measure3DOutput,
)
def measure_3d(ctx: ToolContext, args: Measure3DInput) -> Measure3DOutput:
    volume = _require_volume(ctx)
    a, b = volume.world_mm(args.a), volume.world_mm(args.b)
    return Measure3DOutput(
        distance_mm=volume.distance_mm(args.a, args.b),
        a_mm=(float(a[0]), float(a[1]), float(a[2])),
        b_mm=(float(b[0]), float(b[1]), float(b[2])),
        slices_apart=abs(args.a.slice - args.b.slice),
    )
