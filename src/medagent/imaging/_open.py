"""``open_image``: one entry point for slides, plain images and DICOM, with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from medagent.errors import SlideOpenError
from medagent.imaging._decode import DEFAULT_MAX_PIXELS, decode_image
from medagent.imaging.base import Slide

__all__ = ["open_image"]

#: Extensions that promise a vendor whole-slide format: a file named so that OpenSlide does not
#: recognise is mislabelled or damaged, not a plain image to be read another way.
_SLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"}
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "TIFF": "tiff", "BMP": "bmp", "WEBP": "webp"}


def _fail(path: Path, reason: str) -> SlideOpenError:
    return SlideOpenError(f"{path}: {reason}", path=str(path))


def _sniff(path: Path) -> bytes:
    if not path.exists():
        raise _fail(path, "no such file; check the path")
    if path.is_dir():
        raise _fail(path, "is a folder; give the slide file itself (for MRXS, the .mrxs file)")
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except PermissionError:
        raise _fail(path, "permission denied; check the file's permissions") from None
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc})") from None
    if not head:
        raise _fail(path, "is empty (0 bytes); the copy or download may have failed")
    return head


def _is_dicom(head: bytes) -> bool:
    return head[128:132] == b"DICM"


def _pil_kind(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            return image.format
    except (UnidentifiedImageError, OSError):
        return None


def _open_pil(path: Path, max_pixels: int) -> Slide:
    from medagent.imaging._pil import ImageSlide

    decoded = decode_image(path, max_pixels=max_pixels)
    return ImageSlide(
        decoded.image, path=path, format=_PIL_FORMATS.get(decoded.format, decoded.format.lower())
    )


def open_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Slide:
    """Open a whole-slide image, a plain image or a DICOM image as a ``Slide``.

    OpenSlide is tried first for anything it claims; plain images open through PIL as one-level
    slides; DICOM radiology through pydicom. Any failure is a ``SlideOpenError`` naming the file
    and the reason. ``max_pixels`` bounds what a single-level image may decode to (checked
    from the header first); pass less for files from remote clients.
    """
    path = Path(path)
    head = _sniff(path)
    if _is_dicom(head):
        import pydicom

        from medagent.imaging._dicom import WSI_SOP_CLASS, open_dicom

        try:
            sop_class = pydicom.dcmread(str(path), stop_before_pixels=True).SOPClassUID
        except Exception as exc:  # pydicom raises many types for damaged headers
            raise _fail(path, f"not a readable DICOM file ({exc})") from None
        if sop_class != WSI_SOP_CLASS:
            return open_dicom(path)
    from medagent.imaging._openslide import OpenSlideSlide, detect_openslide_format

    vendor = detect_openslide_format(path)
    if vendor is not None:
        try:
            slide: Slide = OpenSlideSlide(path)
        except SlideOpenError:
            # OpenSlide claims every TIFF but refuses untiled ones; PIL reads those.
            if vendor == "generic-tiff" and _pil_kind(path) == "TIFF":
                return _open_pil(path, max_pixels)
            raise
        _check_readable(slide)
        return slide
    if path.suffix.lower() in _SLIDE_SUFFIXES:
        kind = _pil_kind(path)
        found = f"it contains a {kind} image" if kind else "its content is not a slide"
        raise _fail(
            path,
            f"named {path.suffix} but OpenSlide does not recognise it ({found}); "
            "check that the file is complete and correctly named",
        )
    return _open_pil(path, max_pixels)


def _check_readable(slide: Slide) -> None:
    """Read a corner of the coarsest level now, so a truncated file fails at open, not mid-run."""
    from medagent.imaging._region import Region

    level = slide.level_count - 1
    downsample = slide.level_downsamples[level]
    side = int(min(64 * downsample, slide.dimensions.width, slide.dimensions.height))
    try:
        slide.read(Region(x=0, y=0, width=max(1, side), height=max(1, side)), level)
    except SlideOpenError:
        slide.close()
        raise
