"""The one guard every single image from outside is decoded through.

A 257 KB PNG can declare 9400 x 9400 pixels and cost 350 MB once decoded; a truncated JPEG can
make PIL raise any of half a dozen exception types, or print a warning and carry on. Every
image a client, a model or a file hands in (uploads, mask artifacts, plain-image slides, images
in a dataset) is opened here: the pixel count is read from the header and checked *before* any
pixel is decoded, every decoder failure becomes one ``SlideOpenError`` naming the source, and
library warnings are collected as notes instead of leaking to stderr.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from medagent.errors import SlideOpenError
from medagent.imaging._guard import captured_warnings, failure_reason

__all__ = ["DEFAULT_MAX_PIXELS", "Decoded", "decode_image", "image_header_size", "magic_kind"]

#: Most pixels a single-level image may have before it is refused unread. PIL's own hard limit
#: (2 x ``Image.MAX_IMAGE_PIXELS``); callers that take images from remote clients pass less.
DEFAULT_MAX_PIXELS = 2 * 89_478_485

#: The bound for images a remote client hands in (web uploads, MCP): 40 Mpx covers radiographs
#: (~9 Mpx), mammograms (~20 Mpx) and photos, and decodes to at most ~160 MB. Larger images
#: belong in a pyramidal format, which is read a region at a time and is not bounded by this.
REMOTE_MAX_PIXELS = 40_000_000

Source = str | os.PathLike[str] | bytes

#: How image files start: a file that starts so but does not open is damaged, not foreign.
_MAGIC = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
)


def magic_kind(head: bytes) -> str | None:
    """The image format ``head`` (a file's first bytes) starts like, or ``None``."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


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


def image_header_size(source: Source, *, name: str | None = None) -> tuple[int, int]:
    """(width, height) as the header declares them, without decoding any pixel."""
    label = _label(source, name)
    fp = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    try:
        with captured_warnings(), Image.open(fp) as image:
            return image.size
    except Exception as exc:  # PIL raises many types for damaged headers
        raise SlideOpenError(f"{label}: {_what_failed(exc, source)}", path=label) from None


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
    with captured_warnings() as notes:
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
                if kind == "TIFF":
                    _check_tiff_data(image, _size_of(source), label)
                    _quiet_pillow_libtiff()
                # Only the first frame is read: an animated PNG cannot multiply the cost.
                if frames > 1:
                    image.seek(0)
                image.load()
                loaded = image.copy()
        except SlideOpenError:
            raise
        except Image.DecompressionBombError:
            # PIL's own bound, met before ours when the header declares an absurd size.
            raise SlideOpenError(
                f"{label}: declares too many pixels to decode safely; send a smaller image",
                path=label,
            ) from None
        except Exception as exc:  # PIL: OSError, SyntaxError, ValueError, struct.error, …
            raise SlideOpenError(
                f"{label}: {_what_failed(exc, source)}; check that the file is complete", path=label
            ) from None
    return Decoded(image=loaded, format=kind, notes=notes)


def _size_of(source: Source) -> int:
    return len(source) if isinstance(source, bytes) else os.path.getsize(source)


def _check_tiff_data(image: Image.Image, size: int, label: str) -> None:
    """Refuse a TIFF whose strips or tiles lie past the end of the file before libtiff reads
    them: libtiff would print its complaint straight to stderr, where no caller can catch it."""
    tags = getattr(image, "tag_v2", {})
    offsets = tags.get(324, tags.get(273))  # TileOffsets, else StripOffsets
    counts = tags.get(325, tags.get(279))  # TileByteCounts, else StripByteCounts
    if isinstance(offsets, int):
        offsets = (offsets,)
    if isinstance(counts, int):
        counts = (counts,)
    if not offsets or not counts or len(offsets) != len(counts):
        raise SlideOpenError(
            f"{label}: the TIFF directory is incomplete (no strip or tile table); the file is "
            "truncated or corrupt: check that it is complete",
            path=label,
        )
    end = max(int(o) + int(c) for o, c in zip(offsets, counts, strict=True))
    if end > size:
        raise SlideOpenError(
            f"{label}: image data is truncated (the TIFF's pixel data runs to byte {end:,}, "
            f"the file has {size:,}); check that the file is complete",
            path=label,
        )


@functools.cache
def _quiet_pillow_libtiff() -> None:
    """Stop the libtiff that Pillow's wheels bundle from printing its errors to stderr.

    Pillow silences libtiff's warnings but not its errors, which libtiff writes straight to
    stderr ("ZIPDecode: Decoding error at scanline 144") before Pillow raises its own
    exception, which this module already turns into one line. Only Pillow's private copy is
    touched (a system libtiff other libraries share is left alone); nothing happens where the
    copy cannot be found.
    """
    import PIL

    private = Path(PIL.__file__).resolve().parent
    places = [private.parent / "pillow.libs", private / ".dylibs"]
    for folder in places:
        for library in sorted(folder.glob("libtiff*")) if folder.is_dir() else []:
            try:
                ctypes.CDLL(str(library)).TIFFSetErrorHandler(None)
            except (OSError, AttributeError):
                continue


def _head(source: Source) -> bytes:
    if isinstance(source, bytes):
        return source[:16]
    try:
        with open(source, "rb") as handle:
            return handle.read(16)
    except OSError:
        return b""


def _what_failed(exc: Exception, source: Source) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return "too many pixels to decode safely"
    if type(exc).__name__ == "UnidentifiedImageError":
        kind = magic_kind(_head(source))
        if kind is not None:
            return f"it starts as a {kind} file but cannot be read: it is truncated or corrupt"
        return (
            "not an image or slide format medagent reads (OpenSlide formats, PNG, JPEG, "
            "TIFF, DICOM)"
        )
    # PIL may name the file it was given; the caller's label does, and may hide the path.
    hide = None if isinstance(source, bytes) else str(source)
    return f"image data is truncated or corrupt ({failure_reason(exc, hide=hide)})"
