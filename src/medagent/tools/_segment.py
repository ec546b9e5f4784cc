"""The segment tool: nuclei, tissue or a SAM-prompted object in a level-0 region, with sizes.

Three methods, one output. ``nuclei`` is classical (scikit-image): the hematoxylin channel by
colour deconvolution, Otsu's threshold over the tissue (never below a floor, so glass yields no
nuclei), watershed on the distance transform to split touching nuclei, and a size filter in µm²
when the spacing is known. ``tissue`` is ``medagent.imaging.tissue_pixels``. ``sam`` asks a
Segment Anything checkpoint (``tools/_sam.py``) for the object under a box or points.

Every result stores an overlay (mask tinted, objects outlined) and the mask itself (PNG, white =
object, touching objects separated by a one-pixel gap so ``measure`` can count them). Areas are
µm² when the spacing is known, else level-0 pixels² with a note saying physical units are
unknown.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medagent.artifacts import ArtifactRef
from medagent.errors import ConfigError, RegionError
from medagent.imaging import (
    Point,
    Region,
    Rendered,
    TissueParams,
    draw_boxes,
    draw_mask,
    tissue_pixels,
)
from medagent.tools._measure import Spacing
from medagent.tools._sam import Segmenter
from medagent.tools.base import ToolContext, store_view, tool

__all__ = [
    "NucleiParams",
    "SegmentInput",
    "SegmentOutput",
    "SegmentedObject",
    "segment",
    "segment_nuclei",
    "segment_tissue",
]

Method = Literal["nuclei", "tissue", "sam"]

#: Analysis resolution caps: nuclei need full resolution (bounded); SAM works at 1024 px.
NUCLEI_LONG_SIDE = 2048
TISSUE_LONG_SIDE = 2048
SAM_LONG_SIDE = 1024
#: Coarser than this, nuclei are a few pixels across and cannot be counted.
MAX_NUCLEI_MPP = 2.0


class NucleiParams(BaseModel):
    """Bounds for classical nuclei segmentation, in physical units.

    Defaults are for H&E. 10–400 µm² spans a small lymphocyte (~4 µm across) to a large tumour
    nucleus (~22 µm); smaller is debris, larger is an unsplit clump. Without spacing, the bounds
    are applied as if the image had ``pixel_mode_mpp`` µm/px (a 20x scan); reported areas then
    stay in pixels.
    """

    model_config = ConfigDict(frozen=True)

    min_area_um2: float = Field(10.0, gt=0)
    max_area_um2: float = Field(400.0, gt=0)
    max_clump_um2: float = Field(
        2000.0, gt=0, description="dark components larger than this are stain bands or folds"
    )
    min_threshold: float = Field(
        0.06, gt=0, description="hematoxylin optical density floor (glass ≈ 0.003)"
    )
    smoothing_um: float = Field(0.5, ge=0)
    min_separation_um: float = Field(2.5, gt=0, description="closest two nucleus centres")
    min_solidity: float = Field(0.7, ge=0, le=1, description="drops ragged fibres and bands")
    tissue_margin_um: float = Field(
        3.0, ge=0, description="how far outside tissue a nucleus may lie"
    )
    tissue: TissueParams = Field(
        default_factory=TissueParams, description="where tissue is (any stain by default)"
    )
    pixel_mode_mpp: float = Field(0.5, gt=0)


def segment_nuclei(
    image: Image.Image, spacing: Spacing | None = None, params: NucleiParams | None = None
) -> np.ndarray:
    """Labelled nuclei of an H&E ``image`` (0 = background); ``spacing`` is the image's own."""
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label, regionprops
    from skimage.segmentation import watershed

    params = params or NucleiParams()
    mpp = math.sqrt(spacing.mpp_x * spacing.mpp_y) if spacing else params.pixel_mode_mpp
    pixel_um2 = mpp * mpp
    empty = np.zeros((image.height, image.width), dtype=np.int32)

    # Only stained tissue counts: a dark speck on glass or a pen mark is not a nucleus.
    tissue = tissue_pixels(image, params.tissue)
    near_tissue = ndi.binary_dilation(
        tissue, iterations=max(1, round(params.tissue_margin_um / mpp))
    )
    if not near_tissue.any():
        return empty
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    hematoxylin = gaussian(rgb2hed(rgb)[..., 0], sigma=max(0.5, params.smoothing_um / mpp))
    threshold = params.min_threshold
    stained = hematoxylin[near_tissue]
    if stained.size > 64 and float(np.ptp(stained)) > 1e-6:
        threshold = max(threshold, float(threshold_otsu(stained)))
    mask = ndi.binary_fill_holes(hematoxylin > threshold)

    components = label(mask)
    for prop in regionprops(components):
        if prop.area * pixel_um2 > params.max_clump_um2:
            mask[components == prop.label] = False
    distance = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(
        distance,
        min_distance=max(1, round(params.min_separation_um / mpp)),
        labels=label(mask),
        exclude_border=False,
    )
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    pieces = watershed(-distance, markers, mask=mask)

    nuclei = empty
    count = 0
    for prop in regionprops(pieces):
        area = prop.area * pixel_um2
        if not params.min_area_um2 <= area <= params.max_area_um2:
            continue
        if prop.solidity < params.min_solidity:
            continue
        rows, cols = prop.coords[:, 0], prop.coords[:, 1]
        if near_tissue[rows, cols].mean() < 0.5:
            continue
        count += 1
        nuclei[rows, cols] = count
    return nuclei


def segment_tissue(image: Image.Image, params: TissueParams | None = None) -> np.ndarray:
    """Labelled tissue pieces of ``image`` (0 = glass), from ``tissue_pixels``."""
    from skimage.measure import label

    return np.asarray(label(tissue_pixels(image, params)), dtype=np.int32)


# -- the tool -------------------------------------------------------------------------------


class SegmentInput(BaseModel):
    region: Region | None = Field(
        None, description="level-0 region to segment; the whole image when omitted"
    )
    method: Method = Field(
        description="'nuclei' (H&E cell nuclei), 'tissue' (tissue versus glass), or 'sam' "
        "(the object under a box or points, with a Segment Anything model)"
    )
    box: Region | None = Field(None, description="sam only: level-0 box around the object")
    points: list[Point] | None = Field(
        None, max_length=16, description="sam only: level-0 points on the object"
    )
    long_side: int | None = Field(
        None,
        ge=64,
        le=4096,
        description="analysis resolution (long side, px); default: full resolution up to "
        f"{NUCLEI_LONG_SIDE} px (nuclei, tissue) or {SAM_LONG_SIDE} px (sam)",
    )
    max_objects: int = Field(
        20, ge=0, le=500, description="how many objects to list, largest first"
    )

    @model_validator(mode="after")
    def _prompts_fit_the_method(self) -> SegmentInput:
        if self.method != "sam" and (self.box is not None or self.points):
            raise ValueError("box and points are prompts for method 'sam' only")
        if self.method == "sam" and self.box is None and not self.points:
            raise ValueError("method 'sam' needs a prompt: a level-0 box, points, or both")
        return self


AreaUnit = Literal["µm²", "px²"]


class SegmentedObject(BaseModel):
    """One object: its area and where it is (level-0)."""

    model_config = ConfigDict(frozen=True)

    area: float
    centroid: Point
    box: Region


class SegmentOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    artifact: ArtifactRef = Field(description="the view with objects tinted and outlined")
    mask: ArtifactRef = Field(description="the mask (PNG), white = object; give it to measure")
    region: Region
    method: Method
    count: int
    area_unit: AreaUnit = Field(description="µm², or level-0 pixels² when spacing is unknown")
    areas: list[float] = Field(description="every object's area, largest first")
    mean_area: float | None
    median_area: float | None
    total_area: float
    area_fraction: float = Field(description="share of the region covered by objects, 0..1")
    objects: list[SegmentedObject] = Field(description="the largest objects, largest first")
    analysis_mpp: float | None = Field(description="µm per analysed pixel; None when unknown")
    scale: float = Field(description="level-0 pixels per analysed pixel")
    score: float | None = Field(None, description="sam only: the model's predicted IoU")
    notes: list[str] = Field(default_factory=list)

    def to_text(self) -> str:
        one, many = _NOUNS[self.method]
        parts = [
            f"Segmented {self.method} in {self.region}: {self.count} "
            f"{one if self.count == 1 else many}"
        ]
        if self.mean_area is not None and self.median_area is not None:
            parts.append(
                f"median area {_area(self.median_area, self.area_unit)}, mean "
                f"{_area(self.mean_area, self.area_unit)}, range "
                f"{_area(self.areas[-1], self.area_unit)}–{_area(self.areas[0], self.area_unit)}"
            )
        parts.append(
            f"covering {self.area_fraction:.1%} of the region "
            f"({_area(self.total_area, self.area_unit)})"
        )
        text = "; ".join(parts) + "."
        if self.objects:
            listed = "; ".join(
                f"{i + 1}: {_area(o.area, self.area_unit)} at {o.box}"
                for i, o in enumerate(self.objects[:5])
            )
            text += f" Largest (level-0 boxes): {listed}."
        if self.notes:
            text += " Notes: " + "; ".join(self.notes) + "."
        return text


_NOUNS = {
    "nuclei": ("nucleus", "nuclei"),
    "tissue": ("tissue piece", "tissue pieces"),
    "sam": ("object", "objects"),
}


def _area(value: float, unit: AreaUnit) -> str:
    if unit == "µm²" and value >= 1e6:
        return f"{value / 1e6:.3g} mm²"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


def _object_table(
    labels: np.ndarray, view: Rendered, pixel_area: float, max_objects: int
) -> tuple[list[float], list[SegmentedObject]]:
    """Areas of all objects and the largest ``max_objects`` located in level-0 pixels."""
    from skimage.measure import regionprops

    region = view.region
    sx, sy = region.width / view.image.width, region.height / view.image.height
    props = sorted(regionprops(labels), key=lambda p: -p.area)
    areas = [float(p.area) * pixel_area for p in props]
    objects = []
    for prop, area in zip(props[:max_objects], areas, strict=False):
        row, col = prop.centroid
        min_row, min_col, max_row, max_col = prop.bbox
        objects.append(
            SegmentedObject(
                area=round(area, 3),
                centroid=Point(x=region.x + (col + 0.5) * sx, y=region.y + (row + 0.5) * sy),
                box=Region(
                    x=region.x + math.floor(min_col * sx),
                    y=region.y + math.floor(min_row * sy),
                    width=max(1, math.ceil((max_col - min_col) * sx)),
                    height=max(1, math.ceil((max_row - min_row) * sy)),
                ),
            )
        )
    return areas, objects


def _separated_mask(labels: np.ndarray) -> Image.Image:
    """White objects; where two touch, the higher label gives up its edge pixels, so the
    objects stay apart (8-connected) in a binary image."""
    from scipy import ndimage as ndi

    lowest_neighbour = ndi.minimum_filter(
        np.where(labels > 0, labels, np.iinfo(np.int32).max).astype(np.int32), size=3
    )
    keep = (labels > 0) & ~(lowest_neighbour < labels)
    return Image.fromarray(keep.astype(np.uint8) * 255)


def _overlay(
    view: Rendered, labels: np.ndarray, box: Region | None, points: list[Point]
) -> Image.Image:
    from skimage.segmentation import find_boundaries

    tinted = np.asarray(draw_mask(view.image, labels > 0, color=(0, 255, 0), alpha=0.3)).copy()
    tinted[find_boundaries(labels, mode="inner")] = (255, 255, 0)
    image = Image.fromarray(tinted)
    if box is not None:
        image = draw_boxes(image, view.region, [box], labels=["prompt"], color=(0, 200, 255))
    draw = ImageDraw.Draw(image)
    region = view.region
    sx, sy = region.width / image.width, region.height / image.height
    radius = max(3, round(min(image.size) / 150))
    for p in points:
        cx, cy = (p.x - region.x) / sx, (p.y - region.y) / sy
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(0, 200, 255))
    return image


def _default_long_side(method: Method, region: Region) -> int:
    cap = {"nuclei": NUCLEI_LONG_SIDE, "tissue": TISSUE_LONG_SIDE, "sam": SAM_LONG_SIDE}[method]
    return min(region.long_side, cap)


def _sam_labels(
    view: Rendered, args: SegmentInput, segmenter: Segmenter | None
) -> tuple[np.ndarray, float]:
    from skimage.measure import label

    if segmenter is None:
        raise ConfigError(
            "method 'sam' needs a SAM model: set --sam-model / MEDAGENT_SAM_MODEL "
            "(ToolContext.segmenter = SamSegmenter(folder)) to a folder holding a SAM "
            "checkpoint (saved with SamModel/SamProcessor.save_pretrained; for tests, "
            "medagent.testing.build_tiny_sam) or a hub id already in the local cache"
        )
    region = view.region
    sx, sy = region.width / view.image.width, region.height / view.image.height
    image_box = None
    if args.box is not None:
        inside = args.box.intersect(region)
        if inside is None:
            raise RegionError(f"the SAM box {args.box} lies outside the segmented region {region}")
        image_box = (
            (inside.x - region.x) / sx,
            (inside.y - region.y) / sy,
            (inside.x_end - region.x) / sx,
            (inside.y_end - region.y) / sy,
        )
    for p in args.points or []:
        if not region.contains(p.x, p.y):
            raise RegionError(f"the SAM point {p} lies outside the segmented region {region}")
    image_points = [((p.x - region.x) / sx, (p.y - region.y) / sy) for p in args.points or []]
    found = segmenter.segment(view.image, box=image_box, points=image_points)
    return np.asarray(label(found.mask), dtype=np.int32), found.score


@tool(
    "segment",
    "Segment a level-0 region (default: the whole image) and measure the objects. method "
    "'nuclei': cell nuclei in H&E (count, sizes); 'tissue': tissue pieces versus glass; 'sam': "
    "the object under a level-0 box and/or points. Returns an overlay, a mask (for measure), "
    "the object count and areas in µm² (pixels² when the spacing is unknown).",
    SegmentInput,
    SegmentOutput,
)
def segment(ctx: ToolContext, args: SegmentInput) -> SegmentOutput:
    slide = ctx.require_slide()
    renderer = ctx.renderer
    region = renderer.effective_region(args.region or Region.whole(slide.dimensions))
    view = renderer.render(region, args.long_side or _default_long_side(args.method, region))
    sx, sy = view.region.width / view.image.width, view.region.height / view.image.height
    slide_spacing = Spacing.of(slide)
    spacing = (
        Spacing(mpp_x=slide_spacing.mpp_x * sx, mpp_y=slide_spacing.mpp_y * sy)
        if slide_spacing is not None
        else None
    )
    notes: list[str] = []
    score: float | None = None
    if args.method == "nuclei":
        coarsest = max(spacing.mpp_x, spacing.mpp_y) if spacing is not None else 0.0
        if coarsest > MAX_NUCLEI_MPP:
            most = math.floor(view.region.long_side * MAX_NUCLEI_MPP / coarsest)
            raise RegionError(
                f"nuclei cannot be resolved at {coarsest:.2g} µm/px (the region is too "
                f"large for the analysis resolution); segment a region at most {most} level-0 "
                "pixels across, or raise long_side (up to 4096)"
            )
        labels = segment_nuclei(view.image, spacing)
        if spacing is None:
            notes.append("size bounds for nuclei assume about 0.5 µm/px (a 20x scan)")
    elif args.method == "tissue":
        labels = segment_tissue(view.image)
    else:
        labels, score = _sam_labels(view, args, ctx.segmenter)
        notes.append(f"SAM's predicted IoU for the mask is {score:.2f}")

    if spacing is not None:
        unit: AreaUnit = "µm²"
        pixel_area = spacing.mpp_x * spacing.mpp_y
    else:
        unit, pixel_area = "px²", sx * sy
        notes.append(
            "pixel spacing unknown: areas are in level-0 pixels²; physical units are unknown"
        )
    if view.scale > 1.01:
        at = f"{spacing.mpp_x:.2g} µm/px" if spacing is not None else f"1/{view.scale:.3g} scale"
        notes.append(f"analysed at {view.image.width}x{view.image.height} px ({at})")
    areas, objects = _object_table(labels, view, pixel_area, args.max_objects)
    if len(areas) > len(objects) > 0:
        notes.append(f"listing the {len(objects)} largest of {len(areas)} objects")
    total = float(sum(areas))
    box = args.box if args.method == "sam" else None
    return SegmentOutput(
        artifact=store_view(
            ctx,
            _overlay(view, labels, box, args.points or []),
            view.region,
            view.mpp,
            "segmentation",
        ),
        mask=ctx.artifacts.put(
            _separated_mask(labels), media_type="image/png", kind="mask", region=view.region
        ),
        region=view.region,
        method=args.method,
        count=len(areas),
        area_unit=unit,
        areas=[round(a, 3) for a in areas],
        mean_area=float(np.mean(areas)) if areas else None,
        median_area=float(np.median(areas)) if areas else None,
        total_area=total,
        area_fraction=float((labels > 0).mean()) if labels.size else 0.0,
        objects=objects,
        analysis_mpp=spacing.mpp_x if spacing is not None else None,
        scale=view.scale,
        score=score,
        notes=notes,
    )
