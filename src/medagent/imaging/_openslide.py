"""Whole-slide formats through OpenSlide 4 (openslide-bin): SVS, NDPI, MRXS, SCN, DICOM WSI, …"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from PIL import Image

from medagent.errors import SlideOpenError
from medagent.imaging._guard import failure_reason
from medagent.imaging._modality import MODALITIES, Modality
from medagent.imaging._region import Region, Size
from medagent.imaging.base import Slide, flatten_rgba

__all__ = ["OpenSlideSlide", "detect_openslide_format"]

#: Decoded-tile cache per slide; OpenSlide's default (32 MiB) thrashes on 1000-px views.
DEFAULT_TILE_CACHE_BYTES = 128 * 1024 * 1024


def detect_openslide_format(path: Path) -> str | None:
    """OpenSlide's vendor name for the file, or ``None`` when OpenSlide does not claim it."""
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError:
        return None


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number and number > 0 else None


class OpenSlideSlide(Slide):
    """A slide OpenSlide reads. Reads fail as ``SlideOpenError`` naming the file (``Slide``
    wraps ``read``)."""

    def __init__(self, path: Path, *, tile_cache_bytes: int = DEFAULT_TILE_CACHE_BYTES) -> None:
        import openslide

        self.path = path
        try:
            self._osr = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as exc:
            raise SlideOpenError(
                f"{path}: OpenSlide cannot open it ({failure_reason(exc, hide=str(path))}); "
                "the file may be truncated or corrupt",
                path=str(path),
            ) from None
        self._closed = False
        self._osr.set_cache(openslide.OpenSlideCache(tile_cache_bytes))
        self.format = self._osr.properties.get("openslide.vendor", "openslide")
        self._level_dimensions = [Size(width=w, height=h) for w, h in self._osr.level_dimensions]
        self._level_downsamples = [float(d) for d in self._osr.level_downsamples]

    @property
    def level_dimensions(self) -> list[Size]:
        return self._level_dimensions

    @property
    def level_downsamples(self) -> list[float]:
        return self._level_downsamples

    @property
    def mpp_x(self) -> float | None:
        return _float(self._osr.properties.get("openslide.mpp-x"))

    @property
    def mpp_y(self) -> float | None:
        return _float(self._osr.properties.get("openslide.mpp-y"))

    @property
    def objective_power(self) -> float | None:
        return _float(self._osr.properties.get("openslide.objective-power"))

    @property
    def modality(self) -> Modality:
        return MODALITIES["pathology"]

    @property
    def vendor(self) -> str | None:
        return self._osr.properties.get("openslide.vendor")

    @property
    def properties(self) -> Mapping[str, str]:
        return dict(self._osr.properties)

    @property
    def associated_image_names(self) -> list[str]:
        return sorted(self._osr.associated_images.keys())

    def _associated_image(self, name: str) -> Image.Image:
        if name not in self._osr.associated_images:
            return super()._associated_image(name)
        return flatten_rgba(self._osr.associated_images[name])

    def read(self, region: Region, level: int) -> Image.Image:
        if self._closed:
            raise SlideOpenError(
                f"{self.path.name} was closed; open it again to read it", path=str(self.path)
            )
        size = self.level_size_of(region, level)
        rgba = self._osr.read_region((region.x, region.y), level, (size.width, size.height))
        return flatten_rgba(rgba)

    def close(self) -> None:
        # OpenSlide refuses a second close; ``with`` blocks and callers may both close.
        if not self._closed:
            self._closed = True
            self._osr.close()
