"""The contract of an opened image: a pyramid of levels read by level-0 region.

Two implementations: ``OpenSlideSlide`` (whole-slide formats) and ``ImageSlide`` (PNG, JPEG,
plain TIFF, DICOM radiology). Everything above this layer (rendering, tissue, tools) works on
``Slide`` alone.

Every ``read`` of every implementation, present or future, runs inside the decoder boundary
(``__init_subclass__`` wraps it): whatever a decoder raises there is one ``SlideOpenError``
naming the file and the level, and its warnings become ``notes``.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict

from medagent.errors import InputError, PHIRefusedError, RegionError
from medagent.imaging._guard import decoder_boundary
from medagent.imaging._modality import MODALITIES, Modality, ModalityKind
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
    #: What the image is (``Modality.kind``): pathology, radiograph, ct, mr, ..., or image.
    modality: ModalityKind = "image"
    #: What the decoders warned about while the file was opened and read (one line each).
    notes: list[str] = []

    @property
    def spacing_known(self) -> bool:
        return self.mpp_x is not None and self.mpp_y is not None


#: Most notes a slide keeps: a damaged file can warn on every read.
_MAX_NOTES = 20

_Read = Callable[["Slide", Region, int], Image.Image]


def _guarded(read: _Read) -> _Read:
    @functools.wraps(read)
    def guarded_read(self: Slide, region: Region, level: int) -> Image.Image:
        with decoder_boundary(self.path, f"reading level {level} at {region}") as notes:
            if not 0 <= level < self.level_count:
                raise RegionError(
                    f"{self.path.name} has no level {level}; its levels are 0 to "
                    f"{self.level_count - 1}"
                )
            image = read(self, region, level)
        self.add_notes(notes)
        return image

    guarded_read.__medagent_guarded__ = True  # type: ignore[attr-defined]
    return guarded_read


class Slide(ABC):
    """An opened image. Coordinates are level-0 pixels; spacing is ``None`` when unknown."""

    path: Path
    format: str
    #: The reference of a slide not read from a file (a ``dicomweb+`` series); ``path`` is then
    #: only a name for messages.
    remote_source: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        read = cls.__dict__.get("read")
        if read is not None and not getattr(read, "__medagent_guarded__", False):
            setattr(cls, "read", _guarded(read))  # noqa: B010 - mypy refuses assigning a method

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
    def modality(self) -> Modality:
        """What the image is, for prompts and reports; a plain medical image unless the file
        (or whoever opened it) says more."""
        return MODALITIES["image"]

    @property
    def source(self) -> str:
        """Where it was opened from, as manifests record it: the absolute file path, or the
        archive reference of a remote slide (never with credentials)."""
        return self.remote_source or str(self.path.resolve())

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
        with decoder_boundary(self.path, f"reading the associated image {name!r}") as notes:
            image = self._associated_image(name)
        self.add_notes(notes)
        return image

    def _associated_image(self, name: str) -> Image.Image:
        raise InputError(f"{self.path.name} has no associated image {name!r}", path=str(self.path))

    @property
    def notes(self) -> list[str]:
        """What the decoders warned about while this image was opened and read, one line each
        (at most 20): worth showing a user (``slide info`` does), never an error."""
        return list(self._notes())

    def add_notes(self, notes: Iterable[str]) -> None:
        """Keep decoder warnings (duplicates and those past the limit are dropped)."""
        kept = self._notes()
        for note in notes:
            if note not in kept and len(kept) < _MAX_NOTES:
                kept.append(note)

    def _notes(self) -> list[str]:
        # Implementations need not call a base __init__: the list appears on first use.
        kept: list[str] = self.__dict__.setdefault("_decoder_notes", [])
        return kept

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
            modality=self.modality.kind,
            notes=self.notes,
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
        """RGB pixels of ``region`` (inside the slide) at ``level``, ``level_size_of`` in size.

        Implementations just read: the level is checked and failures are made one line for
        them (see the module docstring)."""

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
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")  # no copy to check
        if rgba.getchannel("A").getextrema() == (255, 255):
            return rgba.convert("RGB")  # fully scanned: no compositing needed (4x faster)
        out = Image.new("RGB", rgba.size, background)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return image.convert("RGB")
