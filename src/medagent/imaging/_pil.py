"""Single images (PNG, JPEG, plain TIFF) as one-level slides with in-memory reduced levels."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from medagent.imaging._modality import MODALITIES, Modality
from medagent.imaging._region import Region, Size
from medagent.imaging.base import Slide, flatten_rgba

__all__ = ["ImageSlide"]

#: Reduced copies are made until the long side is below this, so an overview never needs the
#: full-resolution pixels.
_SMALLEST_LEVEL = 1024
_LEVEL_FACTOR = 4


class ImageSlide(Slide):
    """A plain image behaving like a slide. Spacing is unknown unless given (never guessed);
    so is what it shows (``modality``), unless the file or the caller says."""

    def __init__(
        self,
        image: Image.Image,
        *,
        path: Path | None = None,
        format: str = "image",
        mpp: tuple[float, float] | None = None,
        properties: dict[str, str] | None = None,
        modality: Modality | None = None,
    ) -> None:
        self.path = path or Path("<memory>")
        self.format = format
        self._levels = [flatten_rgba(image)]
        while self._levels[-1].width * self._levels[-1].height > 0 and (
            max(self._levels[-1].size) > _SMALLEST_LEVEL
        ):
            previous = self._levels[-1]
            self._levels.append(previous.reduce(_LEVEL_FACTOR))
        self._mpp = mpp
        self._properties = properties or {}
        self._modality = modality or MODALITIES["image"]

    @property
    def level_dimensions(self) -> list[Size]:
        return [Size(width=im.width, height=im.height) for im in self._levels]

    @property
    def level_downsamples(self) -> list[float]:
        base = self._levels[0].width
        return [base / im.width for im in self._levels]

    @property
    def mpp_x(self) -> float | None:
        return self._mpp[0] if self._mpp else None

    @property
    def mpp_y(self) -> float | None:
        return self._mpp[1] if self._mpp else None

    @property
    def properties(self) -> dict[str, str]:
        return self._properties

    @property
    def modality(self) -> Modality:
        return self._modality

    def read(self, region: Region, level: int) -> Image.Image:
        downsample = self.level_downsamples[level]
        size = self.level_size_of(region, level)
        l_x, l_y = int(region.x / downsample), int(region.y / downsample)
        return self._levels[level].crop((l_x, l_y, l_x + size.width, l_y + size.height))
