"""DICOM radiology images via pydicom: windowed to 8 bits, spacing from the file.

Whole-slide DICOM (VL Whole Slide Microscopy) goes to wsidicom instead (``_dicom_wsi``), and CT/MR
series to ``open_volume``; see ``open_image``.

pydicom reads a cut file without complaint as far as it goes: a header cut short is an empty
or partial dataset, a value cut short is a short value, pixel data cut short is only noticed
when decoded. So each step below says which of those it found, in words a user can act on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medagent.errors import SlideOpenError
from medagent.imaging._decode import DEFAULT_MAX_PIXELS
from medagent.imaging._guard import failure_reason
from medagent.imaging._modality import dicom_modality
from medagent.imaging._pil import ImageSlide

__all__ = ["WSI_SOP_CLASS", "dicom_sop_class", "open_dicom", "pixel_spacing_mm"]

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


def pixel_spacing_mm(ds: Any) -> tuple[float, float] | None:
    """(x, y) mm per pixel: PixelSpacing, else the per-frame functional groups, else the
    detector's ImagerPixelSpacing. DICOM lists spacing as (row, column) = (y, x)."""
    candidates = [ds.get("PixelSpacing")]
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if group in ds and ds[group].value:
            measures = ds[group][0].get("PixelMeasuresSequence")
            if measures:
                candidates.append(measures[0].get("PixelSpacing"))
    candidates.append(ds.get("ImagerPixelSpacing"))
    for spacing in candidates:
        if spacing is not None and len(spacing) == 2 and float(spacing[0]) > 0:
            return float(spacing[1]), float(spacing[0])
    return None


def _to_uint8(ds: Any, pixels: np.ndarray) -> np.ndarray:
    """Modality LUT, then the file's VOI window (or min–max), MONOCHROME1 inverted."""
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        if photometric.startswith("YBR"):
            from pydicom.pixels.processing import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        return np.asarray(np.clip(pixels, 0, 255), dtype=np.uint8)
    if int(ds.get("BitsAllocated", 8)) == 1:
        return (pixels > 0).astype(np.uint8) * 255
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    if photometric == "MONOCHROME1":
        scaled = 255.0 - scaled
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _fail(path: Path, reason: str) -> SlideOpenError:
    return SlideOpenError(f"{path}: {reason}", path=str(path))


def _truncated(path: Path, what: str) -> SlideOpenError:
    return _fail(path, f"{what}; the file is truncated or corrupt: check that it is complete")


def _read(path: Path, *, header_only: bool) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=header_only)
    except Exception as exc:  # pydicom: InvalidDicomError, struct.error, EOFError, …
        reason = failure_reason(exc, hide=str(path))
        raise _truncated(path, f"DICOM data cannot be read ({reason})") from None


def _sop_class(path: Path, ds: Any) -> Any:
    sop = ds.get("SOPClassUID")
    if sop is None:
        raise _truncated(path, "the DICOM header is incomplete (it has no SOP Class UID)")
    if not sop.is_valid:
        raise _truncated(path, f"the DICOM header is damaged (SOP Class UID {str(sop)[:64]!r})")
    return sop


def dicom_sop_class(path: Path) -> str:
    """The file's SOP Class UID, read from its header only (no pixel data)."""
    return str(_sop_class(path, _read(path, header_only=True)))


def _decoder_available(syntax: Any) -> bool:
    from pydicom.pixels.decoders.base import get_decoder

    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:  # a transfer syntax pydicom has no decoder for at all
        return False


def _check_pixel_count(path: Path, header: Any, max_pixels: int) -> None:
    """Refuse, from the header alone, an image whose decoded pixels would exceed the bound.

    A deflated or compressed DICOM can be a few KB on disk and gigabytes decoded; pydicom
    decodes every frame at once, so the bound counts them all.
    """
    try:
        rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
        frames = int(header.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise _truncated(path, "the DICOM header has unreadable image dimensions") from None
    if rows * columns * max(frames, 1) > max_pixels:
        raise _fail(
            path,
            f"{columns} x {rows} px x {frames} frame(s) is more than the {max_pixels:,} pixels "
            "allowed for one image; export a smaller image or a single frame",
        )


def open_dicom(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageSlide:
    """A DICOM image as a one-level slide; multi-frame files show their first frame.

    ``max_pixels`` bounds rows x columns x frames, checked from the header before decoding.
    """
    header = _read(path, header_only=True)
    sop = _sop_class(path, header)
    _check_pixel_count(path, header, max_pixels)
    ds = _read(path, header_only=False)
    if "SOPClassUID" not in ds:
        # pydicom gives up on the whole dataset when encapsulated pixel data is cut short.
        raise _truncated(path, "the file ends inside its pixel data")
    if "PixelData" not in ds:
        # An image whose pixel data is missing was cut short; other objects (reports, plans,
        # presentation states) never had any.
        if "Rows" in ds or "Columns" in ds or "Image" in sop.name or "Segmentation" in sop.name:
            raise _truncated(path, f"the file ends before its pixel data (a {sop.name})")
        raise _fail(path, f"this DICOM object has no pixel data (it is a {sop.name})")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom and its plugins raise many types
        reason = failure_reason(exc, hide=str(path))
        if syntax is not None and syntax.is_compressed and not _decoder_available(syntax):
            raise _fail(
                path,
                f"pixel data is compressed as {syntax.name} and no installed decoder reads it; "
                "install one: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
                f"(or python-gdcm) [{reason}]",
            ) from None
        raise _truncated(path, f"its pixel data cannot be decoded ({reason})") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    image = Image.fromarray(_to_uint8(ds, pixels))
    spacing = pixel_spacing_mm(ds)
    properties = {
        "dicom.modality": str(ds.get("Modality", "")),
        "dicom.sop_class": sop.name,
        "dicom.photometric": str(ds.get("PhotometricInterpretation", "")),
        "dicom.frames": str(frames),
    }
    return ImageSlide(
        image,
        path=path,
        format="dicom",
        mpp=(spacing[0] * 1000.0, spacing[1] * 1000.0) if spacing else None,
        properties=properties,
        modality=dicom_modality(str(ds.get("Modality", ""))),
    )
