"""The measure tool: distances, lengths, areas, angles and mask sizes in physical units.

Coordinates are level-0 pixels. Physical units come from the image's spacing (µm per pixel,
separately along x and y, so anisotropic DICOM spacing is honoured); without spacing the result
is in pixels and says that physical units are unknown — a scale is never guessed.

The plain helpers (``measure_distance`` … ``measure_mask``) take a ``Spacing`` instead of a
``ToolContext``, so the SDK can measure without an open slide or an artifact store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, RootModel

from medagent.artifacts import ArtifactRef
from medagent.errors import InputError, RegionError
from medagent.imaging import Point, Region, Slide
from medagent.tools.base import ToolContext, tool

__all__ = [
    "AngleInput",
    "DistanceInput",
    "MaskInput",
    "MeasureInput",
    "MeasureOutput",
    "PolygonInput",
    "PolylineInput",
    "Quantity",
    "Spacing",
    "measure",
    "measure_angle",
    "measure_distance",
    "measure_mask",
    "measure_polygon",
    "measure_polyline",
]

Unit = Literal["px", "µm", "mm", "px²", "µm²", "mm²", "°"]

UNKNOWN_UNITS_NOTE = (
    "pixel spacing unknown: results are in level-0 pixels; physical units are unknown"
)


PointLike = Point | tuple[float, float]


class Spacing(BaseModel):
    """Micrometres per pixel along x and y of the grid the coordinates are given in."""

    model_config = ConfigDict(frozen=True)

    mpp_x: float = Field(gt=0)
    mpp_y: float = Field(gt=0)

    @classmethod
    def of(cls, slide: Slide) -> Spacing | None:
        """The level-0 spacing of ``slide``, ``None`` when either axis is unknown."""
        if slide.mpp_x is None or slide.mpp_y is None:
            return None
        return cls(mpp_x=slide.mpp_x, mpp_y=slide.mpp_y)


class Quantity(BaseModel):
    """One measured value with its unit."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float
    unit: Unit

    def to_text(self) -> str:
        return f"{self.name.replace('_', ' ')} {_number(self.value)} {self.unit}"


def _number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class _Grid:
    """The size of one input pixel: µm when ``physical``, else level-0 pixels."""

    x: float
    y: float
    physical: bool

    @classmethod
    def of(cls, spacing: Spacing | None, scale_x: float = 1.0, scale_y: float = 1.0) -> _Grid:
        if spacing is None:
            return cls(scale_x, scale_y, physical=False)
        return cls(spacing.mpp_x * scale_x, spacing.mpp_y * scale_y, physical=True)

    def length(self, name: str, value: float) -> Quantity:
        """A length in a readable unit: mm from 1000 µm up."""
        if not self.physical:
            return Quantity(name=name, value=value, unit="px")
        if value >= 1000:
            return Quantity(name=name, value=value / 1000, unit="mm")
        return Quantity(name=name, value=value, unit="µm")

    def area(self, name: str, value: float) -> Quantity:
        """An area in a readable unit: mm² from 10⁶ µm² up."""
        if not self.physical:
            return Quantity(name=name, value=value, unit="px²")
        if value >= 1e6:
            return Quantity(name=name, value=value / 1e6, unit="mm²")
        return Quantity(name=name, value=value, unit="µm²")


class MeasureOutput(BaseModel):
    """What was measured: the main value and unit first, every value in ``quantities``."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["distance", "polyline", "polygon", "angle", "mask"]
    value: float
    unit: Unit
    quantities: list[Quantity] = Field(description="all values, the main one first")
    spacing_known: bool
    object_count: int | None = Field(None, description="objects in the mask (kind 'mask')")
    note: str | None = None

    def to_text(self) -> str:
        values = "; ".join(q.to_text() for q in self.quantities)
        objects = f" ({self.object_count} objects in the mask)" if self.object_count else ""
        note = f" Note: {self.note}." if self.note else ""
        return f"Measured {self.kind}: {values}{objects}.{note}"


def _output(
    kind: Literal["distance", "polyline", "polygon", "angle", "mask"],
    grid: _Grid,
    quantities: list[Quantity],
    object_count: int | None = None,
) -> MeasureOutput:
    main = quantities[0]
    angle_only = all(q.unit == "°" for q in quantities)
    note = None if grid.physical or angle_only else UNKNOWN_UNITS_NOTE
    if not grid.physical and angle_only:
        note = "pixel spacing unknown: the angle assumes square pixels"
    return MeasureOutput(
        kind=kind,
        value=main.value,
        unit=main.unit,
        quantities=quantities,
        spacing_known=grid.physical,
        object_count=object_count,
        note=note,
    )


def _xy(points: Sequence[PointLike]) -> np.ndarray:
    return np.array(
        [(p.x, p.y) if isinstance(p, Point) else (float(p[0]), float(p[1])) for p in points],
        dtype=np.float64,
    )


def _path_length(xy: np.ndarray, grid: _Grid) -> float:
    steps = np.diff(xy, axis=0) * (grid.x, grid.y)
    return float(np.hypot(steps[:, 0], steps[:, 1]).sum())


def _distance(a: PointLike, b: PointLike, grid: _Grid) -> MeasureOutput:
    return _output("distance", grid, [grid.length("distance", _path_length(_xy([a, b]), grid))])


def _polyline(points: Sequence[PointLike], grid: _Grid) -> MeasureOutput:
    if len(points) < 2:
        raise InputError("a polyline needs at least 2 points")
    return _output("polyline", grid, [grid.length("length", _path_length(_xy(points), grid))])


def _polygon(points: Sequence[PointLike], grid: _Grid) -> MeasureOutput:
    if len(points) < 3:
        raise InputError("a polygon needs at least 3 points")
    xy = _xy(points)
    x, y = xy[:, 0], xy[:, 1]
    # Shoelace in pixels, then one pixel's area: a linear scaling multiplies areas by sx·sy.
    area_px = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    closed = np.vstack([xy, xy[:1]])
    return _output(
        "polygon",
        grid,
        [
            grid.area("area", area_px * grid.x * grid.y),
            grid.length("perimeter", _path_length(closed, grid)),
        ],
    )


def _angle(a: PointLike, vertex: PointLike, b: PointLike, grid: _Grid) -> MeasureOutput:
    xy = _xy([a, vertex, b]) * (grid.x, grid.y)  # anisotropic spacing changes angles
    u, v = xy[0] - xy[1], xy[2] - xy[1]
    if not np.any(u) or not np.any(v):
        raise InputError("an angle needs both arms of non-zero length (a and b differ from vertex)")
    cross = float(u[0] * v[1] - u[1] * v[0])
    degrees = math.degrees(math.atan2(abs(cross), float(np.dot(u, v))))
    return _output("angle", grid, [Quantity(name="angle", value=degrees, unit="°")])


def _feret_diameter(obj: np.ndarray, grid: _Grid) -> float:
    """The largest caliper width of the object's pixel squares (one pixel is √2 wide)."""
    from scipy.ndimage import binary_erosion
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import pdist

    edge = obj & ~binary_erosion(obj)
    rows, cols = np.nonzero(edge)
    corners = np.concatenate(
        [np.stack([cols + dx, rows + dy], axis=1) for dx in (0, 1) for dy in (0, 1)]
    )
    # Scale before taking the hull: with anisotropic spacing the farthest pair changes.
    xy = np.unique(corners, axis=0).astype(np.float64) * (grid.x, grid.y)
    hull = xy[ConvexHull(xy).vertices]
    return float(pdist(hull).max())


def _mask(mask: np.ndarray, grid: _Grid) -> MeasureOutput:
    from skimage.measure import label

    binary = np.asarray(mask).astype(bool)
    if binary.ndim != 2:
        raise InputError(f"a mask must be a 2-D image, not of shape {binary.shape}")
    labels, count = label(binary, return_num=True)
    if count == 0:
        raise InputError("the mask is empty: it has no foreground (non-zero) pixels to measure")
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == int(np.argmax(sizes)) + 1
    pixel_area = grid.x * grid.y
    return _output(
        "mask",
        grid,
        [
            grid.area("area", float(sizes.max()) * pixel_area),
            grid.length("max_diameter", _feret_diameter(largest, grid)),
            grid.area("total_area", float(sizes.sum()) * pixel_area),
        ],
        object_count=int(count),
    )


def measure_distance(a: PointLike, b: PointLike, spacing: Spacing | None = None) -> MeasureOutput:
    """Straight-line distance between two points (pixels of a grid with ``spacing``)."""
    return _distance(a, b, _Grid.of(spacing))


def measure_polyline(points: Sequence[PointLike], spacing: Spacing | None = None) -> MeasureOutput:
    """Length of the open path through ``points``."""
    return _polyline(points, _Grid.of(spacing))


def measure_polygon(points: Sequence[PointLike], spacing: Spacing | None = None) -> MeasureOutput:
    """Area (main value) and perimeter of the closed polygon through ``points``."""
    return _polygon(points, _Grid.of(spacing))


def measure_angle(
    a: PointLike, vertex: PointLike, b: PointLike, spacing: Spacing | None = None
) -> MeasureOutput:
    """The angle a–vertex–b in degrees (0–180), in physical space when spacing is known."""
    return _angle(a, vertex, b, _Grid.of(spacing))


def measure_mask(mask: np.ndarray, spacing: Spacing | None = None) -> MeasureOutput:
    """Area (main value) and maximum Feret diameter of the largest object, and total area.

    Objects are 8-connected groups of non-zero pixels; ``spacing`` is that of the mask's grid.
    """
    return _mask(mask, _Grid.of(spacing))


# -- the tool -------------------------------------------------------------------------------

PointField = Annotated[Point, Field(description="level-0 pixels")]


class DistanceInput(BaseModel):
    kind: Literal["distance"]
    a: PointField
    b: PointField


class PolylineInput(BaseModel):
    kind: Literal["polyline"]
    points: list[PointField] = Field(min_length=2, max_length=1000)


class PolygonInput(BaseModel):
    kind: Literal["polygon"]
    points: list[PointField] = Field(min_length=3, max_length=1000)


class AngleInput(BaseModel):
    kind: Literal["angle"]
    a: PointField
    vertex: PointField = Field(description="where the angle is measured, level-0 pixels")
    b: PointField


class MaskInput(BaseModel):
    kind: Literal["mask"]
    mask: str | ArtifactRef = Field(
        description="the mask artifact (its id, e.g. the 'mask' of a segment result): "
        "white = object"
    )
    region: Region | None = Field(
        None,
        description="level-0 region the mask covers; taken from the artifact when given, "
        "else the whole image",
    )


class MeasureInput(
    RootModel[
        Annotated[
            DistanceInput | PolylineInput | PolygonInput | AngleInput | MaskInput,
            Field(discriminator="kind"),
        ]
    ]
):
    """One measurement, chosen by ``kind``: the arguments are the chosen model's fields."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        schema = super().model_json_schema(*args, **kwargs)
        # Tool-calling APIs want an object at the top; ``oneOf`` keeps the union under it.
        return {"type": "object", **schema}


def _check_inside(slide: Slide, points: Sequence[Point]) -> None:
    dims = slide.dimensions
    for p in points:
        if not (0 <= p.x <= dims.width and 0 <= p.y <= dims.height):
            raise RegionError(
                f"point {p} lies outside the image (0..{dims.width} x 0..{dims.height} "
                "level-0 pixels)"
            )


def _load_mask(ctx: ToolContext, args: MaskInput) -> tuple[np.ndarray, Region | None]:
    # A reference from a caller is only an id: the store's own index says what it is.
    ref = ctx.artifacts.resolve(args.mask)
    region = args.region or ref.region
    image = ctx.artifacts.get(ref)
    # JPEG masks are not exactly 0/255: threshold at mid-grey.
    return np.asarray(image.convert("L"), dtype=np.uint8) > 127, region


def _measure_mask_artifact(ctx: ToolContext, args: MaskInput) -> MeasureOutput:
    slide = ctx.require_slide()
    mask, region = _load_mask(ctx, args)
    height, width = mask.shape
    if region is None:
        region = Region.whole(slide.dimensions)
        # An id without its region: only safe when the mask has the image's shape.
        if abs(width / height - region.width / region.height) > 0.02 * region.width / region.height:
            raise InputError(
                f"mask {width}x{height} px does not have the image's shape "
                f"({region.width}x{region.height}); give the level-0 region the mask covers"
            )
    grid = _Grid.of(Spacing.of(slide), region.width / width, region.height / height)
    return _mask(mask, grid)


@tool(
    "measure",
    "Measure on the image in physical units (µm/mm, from the image's pixel spacing; pixels "
    "when the spacing is unknown). kind 'distance': points a and b; 'polyline': the length "
    "through points; 'polygon': area and perimeter of points; 'angle': the angle at vertex "
    "between a and b; 'mask': area and maximum diameter of the largest object of a mask "
    "artifact (e.g. a segment result's mask id). Points are level-0 pixels.",
    MeasureInput,
    MeasureOutput,
)
def measure(ctx: ToolContext, arguments: MeasureInput) -> MeasureOutput:
    args = arguments.root
    if isinstance(args, MaskInput):
        return _measure_mask_artifact(ctx, args)
    slide = ctx.require_slide()
    grid = _Grid.of(Spacing.of(slide))
    if isinstance(args, DistanceInput):
        _check_inside(slide, [args.a, args.b])
        return _distance(args.a, args.b, grid)
    if isinstance(args, PolylineInput):
        _check_inside(slide, args.points)
        return _polyline(args.points, grid)
    if isinstance(args, PolygonInput):
        _check_inside(slide, args.points)
        return _polygon(args.points, grid)
    _check_inside(slide, [args.a, args.vertex, args.b])
    return _angle(args.a, args.vertex, args.b, grid)
