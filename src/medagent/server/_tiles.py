"""Deep Zoom tiles for the viewer: ``openslide.deepzoom`` geometry over any ``Slide``, cached.

Tiles are read through medagent's ``Slide`` (not a second reader), so every format
``open_image`` opens can be viewed, and associated images (label, macro) are unreachable: the
geometry adapter reports none. Viewer coordinates equal level-0 pixels (no bounds cropping), so
the agent's regions can be drawn on the viewer without conversion.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TypeAlias

import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from medagent.imaging import DEFAULT_MAX_PIXELS, ImageSlide, Region, Size, Slide, open_image

__all__ = ["DeepZoomSlide", "SharedSlide", "TileNotFoundError", "TileService", "resident_bytes"]

#: A slide file, or a ``dicomweb+`` reference to a series (already allowed by the caller).
SlideKey: TypeAlias = Path | str

#: What an OpenSlide handle may hold at most: its decoded-tile cache (medagent sets 128 MiB).
_OPENSLIDE_BYTES = 128 * 1024 * 1024


def resident_bytes(slide: Slide) -> int:
    """Memory an open slide may hold: every decoded level of a plain image (RGB, 3 bytes a
    pixel), or the tile cache of a slide read by tile."""
    if isinstance(slide, ImageSlide):
        return sum(3 * size.width * size.height for size in slide.level_dimensions)
    return _OPENSLIDE_BYTES


class TileNotFoundError(LookupError):
    """The level or tile address does not exist in the slide's Deep Zoom pyramid."""


class _Geometry(openslide.AbstractSlide):
    """Just enough of an OpenSlide object for ``DeepZoomGenerator``'s arithmetic."""

    def __init__(self, slide: Slide) -> None:
        super().__init__()
        self._slide = slide

    @classmethod
    def detect_format(cls, filename: object) -> str | None:
        return None

    def close(self) -> None:
        """The ``Slide`` is owned by ``DeepZoomSlide``."""

    @property
    def level_count(self) -> int:
        return self._slide.level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((s.width, s.height) for s in self._slide.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(self._slide.level_downsamples)

    @property
    def properties(self) -> Mapping[str, str]:
        return {}  # no bounds keys: viewer pixels stay level-0 pixels

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        return {}  # label and macro may identify the patient: never reachable from here

    def get_best_level_for_downsample(self, downsample: float) -> int:
        return self._slide.best_level_for_downsample(downsample)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> Image.Image:
        ds = self._slide.level_downsamples[level]
        region = Region(
            x=location[0], y=location[1], width=round(size[0] * ds), height=round(size[1] * ds)
        )
        inside = region.clamp(self._slide.dimensions) or Region(x=0, y=0, width=1, height=1)
        return self._slide.read(inside, level).convert("RGBA")


class DeepZoomSlide:
    """One opened slide as a Deep Zoom pyramid of JPEG tiles."""

    def __init__(self, slide: Slide, *, tile_size: int, overlap: int, quality: int) -> None:
        self.slide = slide
        self._dz = DeepZoomGenerator(_Geometry(slide), tile_size, overlap, limit_bounds=False)
        self._quality = quality

    @property
    def level_count(self) -> int:
        return self._dz.level_count

    def dzi(self) -> str:
        """The ``.dzi`` XML the viewer starts from."""
        return self._dz.get_dzi("jpeg")

    def tile(self, level: int, col: int, row: int) -> bytes:
        """The JPEG bytes of one tile; ``TileNotFoundError`` outside the pyramid."""
        try:
            l0, slide_level, l_size = self._dz.get_tile_coordinates(level, (col, row))
            z_size = self._dz.get_tile_dimensions(level, (col, row))
        except ValueError:
            # The numbers are a client's: a 10,000-digit level is not quoted back.
            where = f"{col}_{row} at Deep Zoom level {level}"
            raise TileNotFoundError(f"no tile {where if len(where) < 80 else 'there'}") from None
        ds = self.slide.level_downsamples[slide_level]
        wanted = Region(x=l0[0], y=l0[1], width=round(l_size[0] * ds), height=round(l_size[1] * ds))
        # Rounding may reach one pixel past the edge; reading there would paint a black line.
        inside = wanted.clamp(self.slide.dimensions) or Region(x=0, y=0, width=1, height=1)
        image = self.slide.read(inside, slide_level)
        if image.size != z_size:
            image = image.resize(z_size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self._quality)
        return buffer.getvalue()


class TileService:
    """Open slides and encoded tiles, both LRU-bounded (by count and bytes), safe to call from
    worker threads.

    A decoded plain image can take hundreds of MB, so open slides are bounded by the memory they
    may hold (``resident_bytes``), not only by their number; the most recent one always stays.
    """

    def __init__(
        self,
        *,
        tile_size: int = 254,
        overlap: int = 1,
        quality: int = 80,
        cache_bytes: int = 64 * 1024 * 1024,
        open_slides: int = 16,
        open_slides_bytes: int = 1024 * 1024 * 1024,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self._tile_size = tile_size
        self._overlap = overlap
        self._quality = quality
        self._cache_bytes = cache_bytes
        self._open_slides = open_slides
        self._open_slides_bytes = open_slides_bytes
        self._max_pixels = max_pixels
        self._slides: OrderedDict[SlideKey, tuple[DeepZoomSlide, int]] = OrderedDict()
        self._slides_size = 0
        self._tiles: OrderedDict[tuple[SlideKey, int, int, int], bytes] = OrderedDict()
        self._tiles_size = 0
        self._slides_lock = threading.Lock()
        self._tiles_lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def slide(self, path: SlideKey) -> DeepZoomSlide:
        """The slide at ``path`` (already checked to be under a root, or a reference to a
        series in an allowed archive: its frames are fetched as tiles need them), opened once."""
        with self._slides_lock:
            found = self._slides.get(path)
            if found is not None:
                self._slides.move_to_end(path)
                return found[0]
            opened = DeepZoomSlide(
                open_image(path, max_pixels=self._max_pixels),
                tile_size=self._tile_size,
                overlap=self._overlap,
                quality=self._quality,
            )
            size = resident_bytes(opened.slide)
            self._slides[path] = (opened, size)
            self._slides_size += size
            while len(self._slides) > 1 and (
                len(self._slides) > self._open_slides or self._slides_size > self._open_slides_bytes
            ):
                # Dropped, not closed: a request still reading it keeps it alive, and OpenSlide
                # closes the handle when the last reference goes.
                _, (_, dropped) = self._slides.popitem(last=False)
                self._slides_size -= dropped
            return opened

    @property
    def open_bytes(self) -> int:
        """What the open slides may hold now (``resident_bytes`` summed)."""
        return self._slides_size

    def shared(self, path: SlideKey) -> Slide:
        """The slide at ``path`` for a session's agent: opened now (so errors show at once),
        then read through this cache on every use, so an agent never keeps a decoded image
        alive after the cache has let it go."""
        return SharedSlide(path, self.slide(path).slide, self)

    def dzi(self, path: SlideKey) -> str:
        return self.slide(path).dzi()

    def tile(self, path: SlideKey, level: int, col: int, row: int) -> bytes:
        key = (path, level, col, row)
        with self._tiles_lock:
            data = self._tiles.get(key)
            if data is not None:
                self._tiles.move_to_end(key)
                self.hits += 1
                return data
        data = self.slide(path).tile(level, col, row)
        with self._tiles_lock:
            self.misses += 1
            if key not in self._tiles and len(data) <= self._cache_bytes:
                self._tiles[key] = data
                self._tiles_size += len(data)
                while self._tiles_size > self._cache_bytes:
                    _, dropped = self._tiles.popitem(last=False)
                    self._tiles_size -= len(dropped)
        return data


class SharedSlide(Slide):
    """A ``Slide`` that holds no pixels: every call goes to the cache's current copy."""

    def __init__(self, path: SlideKey, opened: Slide, tiles: TileService) -> None:
        self.path = opened.path
        self.format = opened.format
        self.remote_source = opened.remote_source  # manifests name the series, not a path
        self._key = path
        self._tiles = tiles

    @property
    def _slide(self) -> Slide:
        return self._tiles.slide(self._key).slide

    @property
    def level_dimensions(self) -> list[Size]:
        return self._slide.level_dimensions

    @property
    def level_downsamples(self) -> list[float]:
        return self._slide.level_downsamples

    @property
    def mpp_x(self) -> float | None:
        return self._slide.mpp_x

    @property
    def mpp_y(self) -> float | None:
        return self._slide.mpp_y

    @property
    def objective_power(self) -> float | None:
        return self._slide.objective_power

    @property
    def vendor(self) -> str | None:
        return self._slide.vendor

    @property
    def properties(self) -> Mapping[str, str]:
        return self._slide.properties

    @property
    def associated_image_names(self) -> list[str]:
        return self._slide.associated_image_names

    def _associated_image(self, name: str) -> Image.Image:
        return self._slide.associated_image(name, allow_phi=True)  # consent checked by caller

    def read(self, region: Region, level: int) -> Image.Image:
        return self._slide.read(region, level)

    def close(self) -> None:
        """The cache owns the slide: closing one session's view of it closes nothing."""
