"""The contract of an opened image: a pyramid of levels read by level-0 region.

Three implementations: ``OpenSlideSlide`` (whole-slide formats), ``ImageSlide`` (PNG, JPEG,
plain TIFF) and ``DicomImage`` (radiology). Everything above this layer (rendering, tissue,
tools) works on ``Slide`` alone.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict

from medagent.errors import InputError, PHIRefusedError
from medagent.imaging._region import Region, Size

__all__ = ["Slide", "SlideInfo", "flatten_rgba"]


class SlideInfo(BaseModel):
    """What is known about an opened image, safe to show (no associated image content)."""

    model_config = ConfigDict(frozen=True)

    path: str
    format: str
    vendor: str | None
    dimensions: Size
    level_count: int
    level_dimensions: list[Size]
    level_downsamples: list[float]
    mpp_x: float | None
    mpp_y: float | None
    objective_power: float | None
    associated_images: list[str]

    @property
    def spacing_known(self) -> bool:
        return self.mpp_x is not None and self.mpp_y is not None


class Slide(ABC):
    """An opened image. Coordinates are level-0 pixels; spacing is ``None`` when unknown."""

    path: Path
    format: str

    # -- facts ------------------------------------------------------------------------------
    @property
    @abstractmethod
    def level_dimensions(self) -> list[Size]: ...

    @property
    @abstractmethod
    def level_downsamples(self) -> list[float]: ...

    @property
    def dimensions(self) -> Size:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def mpp_x(self) -> float | None:
        """Micrometres per level-0 pixel along x, or ``None`` when the file does not say."""
        return None

    @property
    def mpp_y(self) -> float | None:
        return None

    @property
    def objective_power(self) -> float | None:
        return None

    @property
    def vendor(self) -> str | None:
        return None

    @property
    def properties(self) -> Mapping[str, str]:
        """Format-specific metadata (vendor keys, DICOM attributes), as strings."""
        return {}

    @property
    def associated_image_names(self) -> list[str]:
        """Names only; the images themselves may identify the patient."""
        return []

    def associated_image(self, name: str, *, allow_phi: bool = False) -> Image.Image:
        """A label/macro/thumbnail image, only when the caller explicitly allows it."""
        if not allow_phi:
            raise PHIRefusedError(
                f"associated image {name!r} of {self.path.name} may show patient identifiers; "
                "pass allow_phi=True only if you are allowed to see them"
            )
        return self._associated_image(name)

    def _associated_image(self, name: str) -> Image.Image:
        raise InputError(f"{self.path.name} has no associated image {name!r}", path=str(self.path))

    @property
    def info(self) -> SlideInfo:
        return SlideInfo(
            path=str(self.path),
            format=self.format,
            vendor=self.vendor,
            dimensions=self.dimensions,
            level_count=self.level_count,
            level_dimensions=self.level_dimensions,
            level_downsamples=self.level_downsamples,
            mpp_x=self.mpp_x,
            mpp_y=self.mpp_y,
            objective_power=self.objective_power,
            associated_images=self.associated_image_names,
        )

    # -- pixels -----------------------------------------------------------------------------
    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (OpenSlide's rule)."""
        best = 0
        for level, level_downsample in enumerate(self.level_downsamples):
            if level_downsample <= downsample + 1e-9:
                best = level
        return best

    def level_size_of(self, region: Region, level: int) -> Size:
        """How many pixels ``region`` covers at ``level``."""
        downsample = self.level_downsamples[level]
        return Size(
            width=max(1, math.ceil(region.width / downsample)),
            height=max(1, math.ceil(region.height / downsample)),
        )

    @abstractmethod
    def read(self, region: Region, level: int) -> Image.Image:
        """RGB pixels of ``region`` (inside the slide) at ``level``, ``level_size_of`` in size."""

    def close(self) -> None:  # noqa: B027 - most kinds hold no handle; those that do override
        """Release file handles; reading after this is an error."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        d = self.dimensions
        return f"{type(self).__name__}({self.path.name!r}, {d.width}x{d.height}, {self.format})"


def flatten_rgba(image: Image.Image, background: Any = (255, 255, 255)) -> Image.Image:
    """RGB with transparent pixels (no scanned data) shown as background, not black."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema() == (255, 255):
            return rgba.convert("RGB")  # fully scanned: no compositing needed (4x faster)
        out = Image.new("RGB", rgba.size, background)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return image.convert("RGB")
