"""Rendering a level-0 region to a target size, reading from the right pyramid level.

GIANT's rule: desired downsample = region long side / target; bias it by 0.85 toward finer
levels; take the best level for that; if the read would come out smaller than the target, step
one level finer; Lanczos down to the target; never upscale. Reads are bounded: a request whose
read would exceed ``max_read_pixels`` fails before any pixel is read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medagent.errors import RegionError
from medagent.imaging._region import Region, Size
from medagent.imaging.base import Slide

__all__ = ["RenderPolicy", "Rendered", "Renderer", "choose_level"]

LEVEL_BIAS = 0.85


#: The one default long side of every view an agent shows a model, in pixels: the GIANT
#: paper's setting for its headline models, and what every agent rendered at already.
DEFAULT_LONG_SIDE = 1000


class RenderPolicy(BaseModel):
    """Limits and defaults for rendering; one per renderer."""

    model_config = ConfigDict(frozen=True)

    long_side: int = Field(
        DEFAULT_LONG_SIDE, ge=16, description="target long side of a view in pixels"
    )
    max_read_pixels: int = Field(
        64_000_000, ge=1, description="most pixels one read may touch at its level"
    )
    cache_entries: int = Field(32, ge=0, description="recently rendered views kept in memory")


class Rendered(BaseModel):
    """A rendered view and what it shows: the effective level-0 region and the scale."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    image: Image.Image = Field(exclude=True)
    requested: Region
    region: Region
    clamped: bool
    level: int
    level_downsample: float
    #: level-0 pixels per output pixel along x (and y: aspect is kept)
    scale: float
    #: micrometres per output pixel, ``None`` when the slide's spacing is unknown
    mpp: float | None

    @property
    def size(self) -> Size:
        return Size(width=self.image.width, height=self.image.height)

    def note(self) -> str:
        """One line for a model or a log: what was shown, at what scale."""
        clamp = f" (clamped from {self.requested})" if self.clamped else ""
        spacing = f", {self.mpp:.3g} µm/px" if self.mpp is not None else ", spacing unknown"
        return (
            f"region {self.region}{clamp} at level {self.level} shown as "
            f"{self.image.width}x{self.image.height} px{spacing}"
        )


def choose_level(slide: Slide, region: Region, long_side: int) -> int:
    """The pyramid level GIANT's rule reads ``region`` from, for an output of ``long_side``."""
    desired = region.long_side / long_side
    biased = max(1.0, desired * LEVEL_BIAS)
    level = slide.best_level_for_downsample(biased)
    if level > 0 and region.long_side / slide.level_downsamples[level] < long_side:
        level -= 1  # the read would come out below the target: one level finer
    return level


def _output_size(region: Region, long_side: int) -> Size:
    """The output size: long side at most ``long_side``, aspect kept, never upscaled."""
    if region.long_side <= long_side:
        return region.size
    scale = long_side / region.long_side
    return Size(
        width=max(1, round(region.width * scale)), height=max(1, round(region.height * scale))
    )


class Renderer:
    """Renders regions of one slide, with a small cache of recent views.

    Safe to share between threads (agents render off the event loop): the cache is locked,
    the read and resize are not, so two threads render at once.
    """

    def __init__(self, slide: Slide, policy: RenderPolicy | None = None) -> None:
        self.slide = slide
        self.policy = policy or RenderPolicy()
        self._cache: OrderedDict[tuple[Region, int], Rendered] = OrderedDict()
        self._lock = threading.Lock()

    def effective_region(self, region: Region) -> Region:
        """``region`` clamped to the slide; a ``RegionError`` when nothing of it is left."""
        if region.width <= 0 or region.height <= 0:
            raise RegionError(
                f"region {region} has zero area; give a width and height of at least 1 pixel"
            )
        dims = self.slide.dimensions
        clamped = region.clamp(dims)
        if clamped is None:
            raise RegionError(
                f"region {region} lies entirely outside the image "
                f"(0..{dims.width} x 0..{dims.height} level-0 pixels)"
            )
        return clamped

    def render(self, region: Region, long_side: int | None = None) -> Rendered:
        """The view of ``region`` with its long side at most ``long_side`` (never upscaled)."""
        target = long_side or self.policy.long_side
        if target < 1:
            raise RegionError(f"the output long side must be at least 1 pixel, not {target}")
        key = (region, target)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        effective = self.effective_region(region)
        level = choose_level(self.slide, effective, target)
        read_size = self.slide.level_size_of(effective, level)
        read_pixels = read_size.width * read_size.height
        if read_pixels > self.policy.max_read_pixels:
            raise RegionError(
                f"rendering {effective} would read {read_pixels / 1e6:.3g} MP at level {level} "
                f"(limit {self.policy.max_read_pixels / 1e6:.3g} MP): the image has no coarse "
                "enough level; ask for a smaller region, or convert the file to a pyramidal "
                "TIFF (vips tiffsave IN OUT.tif --tile --pyramid --compression jpeg)"
            )
        pixels = self.slide.read(effective, level)
        out = _output_size(effective, target)
        if pixels.size != (out.width, out.height):
            # reducing_gap: box-reduce by an integer factor first, then Lanczos the rest;
            # at 3 the result is indistinguishable from a full Lanczos and several times faster.
            pixels = pixels.resize(
                (out.width, out.height), Image.Resampling.LANCZOS, reducing_gap=3.0
            )
        scale = effective.width / out.width
        mpp = self.slide.mpp_x * scale if self.slide.mpp_x is not None else None
        rendered = Rendered(
            image=pixels,
            requested=region,
            region=effective,
            clamped=effective != region,
            level=level,
            level_downsample=self.slide.level_downsamples[level],
            scale=scale,
            mpp=mpp,
        )
        if self.policy.cache_entries:
            with self._lock:
                self._cache[key] = rendered
                while len(self._cache) > self.policy.cache_entries:
                    self._cache.popitem(last=False)
        return rendered

    def overview(self, long_side: int | None = None) -> Rendered:
        """The whole image, rendered by the same rule as every other view."""
        return self.render(Region.whole(self.slide.dimensions), long_side)
