"""Where the tissue is: a low-resolution mask, tissue fractions, components and tissue tiles.

Tissue is told from glass by colour saturation (Otsu's threshold, kept within sane bounds so a
blank image is not split in two); hues of common pen marks (green, blue-green, pure red), as
saturated as stain, are excluded. Any stain works (H&E, IHC); ``hue_range`` narrows it to one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medagent.errors import RegionError
from medagent.imaging._region import Region, Size
from medagent.imaging._render import Renderer
from medagent.imaging.base import Slide

__all__ = [
    "TissueMask",
    "TissueParams",
    "TissueTile",
    "iter_tissue_tiles",
    "tissue_mask",
    "tissue_pixels",
]


class TissueParams(BaseModel):
    """Thresholds for the tissue detector (HSV values in 0..1)."""

    model_config = ConfigDict(frozen=True)

    min_saturation: float = Field(0.07, ge=0, le=1)
    max_saturation_threshold: float = Field(0.2, ge=0, le=1)
    hue_range: tuple[float, float] | None = Field(
        None, description="accept only this hue band, e.g. (0.70, 0.95) for H&E purple–pink"
    )
    excluded_hues: list[tuple[float, float]] = Field(
        default_factory=lambda: [(0.25, 0.55), (0.955, 1.0), (0.0, 0.02)],
        description="hues never tissue: green/blue-green and pure red pen marks",
    )
    max_value: float = Field(0.95, description="brighter than this is glass")
    min_value: float = Field(0.08, description="darker than this is debris or out-of-scan black")
    min_object_px: int = Field(16, ge=0, description="smaller specks are dropped")
    mask_long_side: int = Field(2048, ge=64, description="resolution of a slide's tissue mask")


def tissue_pixels(image: Image.Image, params: TissueParams | None = None) -> np.ndarray:
    """A boolean tissue mask of ``image``, same size."""
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_holes, remove_small_objects

    params = params or TissueParams()
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    hsv = rgb2hsv(rgb)
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    threshold = params.min_saturation
    if saturation.max() - saturation.min() > 1e-3:
        threshold = float(
            np.clip(
                threshold_otsu(saturation), params.min_saturation, params.max_saturation_threshold
            )
        )
    mask = (saturation > threshold) & (value < params.max_value) & (value > params.min_value)
    if params.hue_range is not None:
        low, high = params.hue_range
        mask &= (hue >= low) & (hue <= high)
    for low, high in params.excluded_hues:
        mask &= ~((hue >= low) & (hue <= high))
    if params.min_object_px:
        mask = remove_small_objects(mask, max_size=params.min_object_px)
        mask = remove_small_holes(mask, max_size=params.min_object_px)
    return np.asarray(mask, dtype=bool)


class TissueMask(BaseModel):
    """A tissue mask over a level-0 ``region``, each mask pixel ``scale`` level-0 pixels wide."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    mask: np.ndarray = Field(exclude=True)
    region: Region
    scale: float

    @property
    def size(self) -> Size:
        return Size(width=int(self.mask.shape[1]), height=int(self.mask.shape[0]))

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def _window(self, region: Region) -> np.ndarray:
        inside = region.intersect(self.region)
        if inside is None:
            return np.zeros((0, 0), dtype=bool)
        x0 = int((inside.x - self.region.x) / self.scale)
        y0 = int((inside.y - self.region.y) / self.scale)
        x1 = max(x0 + 1, int(np.ceil((inside.x_end - self.region.x) / self.scale)))
        y1 = max(y0 + 1, int(np.ceil((inside.y_end - self.region.y) / self.scale)))
        return self.mask[y0:y1, x0:x1]

    def fraction(self, region: Region) -> float:
        """Share of ``region`` (level-0) covered by tissue; 0 outside the mask."""
        window = self._window(region)
        return float(window.mean()) if window.size else 0.0

    def components(self, min_area_fraction: float = 0.001) -> list[Region]:
        """Boxes (level-0) of connected tissue pieces, largest first; specks dropped."""
        from skimage.measure import label, regionprops

        minimum = max(1, int(min_area_fraction * self.mask.size))
        boxes = []
        for prop in sorted(regionprops(label(self.mask)), key=lambda p: -p.area):
            if prop.area < minimum:
                continue
            min_row, min_col, max_row, max_col = prop.bbox
            boxes.append(
                Region(
                    x=self.region.x + int(min_col * self.scale),
                    y=self.region.y + int(min_row * self.scale),
                    width=max(1, int((max_col - min_col) * self.scale)),
                    height=max(1, int((max_row - min_row) * self.scale)),
                )
            )
        return boxes

    def to_image(self) -> Image.Image:
        return Image.fromarray(self.mask.astype(np.uint8) * 255)


def tissue_mask(
    slide: Slide | Renderer,
    region: Region | None = None,
    params: TissueParams | None = None,
) -> TissueMask:
    """The tissue mask of ``region`` (default: the whole slide), rendered at low resolution."""
    params = params or TissueParams()
    renderer = slide if isinstance(slide, Renderer) else Renderer(slide)
    region = region or Region.whole(renderer.slide.dimensions)
    view = renderer.render(region, params.mask_long_side)
    return TissueMask(mask=tissue_pixels(view.image, params), region=view.region, scale=view.scale)


class TissueTile(BaseModel):
    """A tile to read: its level-0 region, the level to read it from and its tissue share."""

    model_config = ConfigDict(frozen=True)

    region: Region
    level: int
    tile_px: int
    tissue: float


def iter_tissue_tiles(
    slide: Slide,
    mask: TissueMask,
    *,
    tile_px: int = 224,
    level: int | None = 0,
    mpp: float | None = None,
    min_tissue: float = 0.5,
) -> Iterator[TissueTile]:
    """Non-overlapping tiles of ``tile_px`` pixels with at least ``min_tissue`` tissue.

    The tile size is at pyramid ``level`` or, when ``mpp`` is given, at that physical
    resolution (read from the closest finer level); row by row over the mask's region.
    """
    if mpp is not None:
        if slide.mpp_x is None:
            raise RegionError(
                f"tiles at {mpp} µm/px need the slide's pixel spacing, which "
                f"{slide.path.name} does not record; give a pyramid level instead"
            )
        level0_per_tile = tile_px * mpp / slide.mpp_x
        read_level = slide.best_level_for_downsample(mpp / slide.mpp_x)
    else:
        read_level = level or 0
        if not 0 <= read_level < slide.level_count:
            raise RegionError(
                f"level {read_level} does not exist; {slide.path.name} has levels "
                f"0..{slide.level_count - 1}"
            )
        level0_per_tile = tile_px * slide.level_downsamples[read_level]
    step = max(1, round(level0_per_tile))
    area = mask.region
    for y in range(area.y, area.y_end - step + 1, step):
        for x in range(area.x, area.x_end - step + 1, step):
            tile = Region(x=x, y=y, width=step, height=step)
            share = mask.fraction(tile)
            if share >= min_tissue:
                yield TissueTile(region=tile, level=read_level, tile_px=tile_px, tissue=share)
