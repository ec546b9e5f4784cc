"""The one guard every single image from outside is decoded through.

A 257 KB PNG can declare 9400 x 9400 pixels and cost 350 MB once decoded; a truncated JPEG can
make PIL raise any of half a dozen exception types, or print a warning and carry on. Every
image a client, a model or a file hands in (uploads, mask artifacts, plain-image slides, images
in a dataset) is opened here: the pixel count is read from the header and checked *before* any
pixel is decoded, every decoder failure becomes one ``SlideOpenError`` naming the source, and
library warnings are collected as notes instead of leaking to stderr.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from medagent.errors import SlideOpenError

__all__ = ["DEFAULT_MAX_PIXELS", "Decoded", "decode_image", "image_header_size"]

#: Most pixels a single-level image may have before it is refused unread. PIL's own hard limit
#: (2 x ``Image.MAX_IMAGE_PIXELS``); callers that take images from remote clients pass less.
DEFAULT_MAX_PIXELS = 2 * 89_478_485

Source = str | os.PathLike[str] | bytes


@dataclass
class Decoded:
    """A fully decoded image and what the decoder warned about (one line each)."""

    image: Image.Image
    format: str
    notes: list[str] = field(default_factory=list)


def _label(source: Source, name: str | None) -> str:
    if name is not None:
        return name
    return "image data" if isinstance(source, bytes) else str(source)


def _notes(caught: list[warnings.WarningMessage]) -> list[str]:
    notes: list[str] = []
    for warning in caught:
        text = str(warning.message).splitlines()[0][:200] if str(warning.message) else ""
        if text and text not in notes:
            notes.append(text)
    return notes


def image_header_size(source: Source, *, name: str | None = None) -> tuple[int, int]:
    """(width, height) as the header declares them, without decoding any pixel."""
    label = _label(source, name)
    fp = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(fp) as image:
                return image.size
    except Exception as exc:  # PIL raises many types for damaged headers
        raise SlideOpenError(f"{label}: {_what_failed(exc)}", path=label) from None


def decode_image(
    source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> Decoded:
    """Decode ``source`` (a path or the bytes of a PNG, JPEG, TIFF, …) after checking its size.

    ``name`` is how errors refer to the source (a client must never see a server path, so pass
    the name the client used). Raises ``SlideOpenError`` — and nothing else — for an image over
    ``max_pixels``, an unknown format, or data that is truncated or corrupt.
    """
    label = _label(source, name)
    fp = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(fp) as image:
                width, height = image.size
                frames = int(getattr(image, "n_frames", 1) or 1)
                if width * height > max_pixels:
                    raise SlideOpenError(
                        f"{label}: {width} x {height} px is more than the {max_pixels:,} pixels "
                        "allowed for a single image; send a smaller image, or convert a large "
                        "one to a pyramidal TIFF (vips tiffsave IN OUT.tif --tile --pyramid)",
                        path=label,
                    )
                if width < 1 or height < 1:
                    raise SlideOpenError(f"{label}: the image has no pixels", path=label)
                kind = image.format or "image"
                # Only the first frame is read: an animated PNG cannot multiply the cost.
                if frames > 1:
                    image.seek(0)
                image.load()
                loaded = image.copy()
        except SlideOpenError:
            raise
        except Exception as exc:  # PIL: OSError, SyntaxError, ValueError, struct.error, …
            raise SlideOpenError(
                f"{label}: {_what_failed(exc)}; check that the file is complete", path=label
            ) from None
    return Decoded(image=loaded, format=kind, notes=_notes(caught))


def _what_failed(exc: Exception) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return "too many pixels to decode safely"
    if type(exc).__name__ == "UnidentifiedImageError":
        return (
            "not an image or slide format medagent reads (OpenSlide formats, PNG, JPEG, "
            "TIFF, DICOM)"
        )
    return f"image data is truncated or corrupt ({_reason(exc)})"


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    # PIL names the file it was given; the caller's label already does, and may hide the path.
    return text[:160]
