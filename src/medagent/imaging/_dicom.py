"""DICOM radiology images via pydicom: windowed to 8 bits, spacing from the file.

Whole-slide DICOM (VL Whole Slide Microscopy) goes to OpenSlide instead; see ``open_image``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medagent.errors import SlideOpenError
from medagent.imaging._pil import ImageSlide

__all__ = ["WSI_SOP_CLASS", "open_dicom", "pixel_spacing_mm"]

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


def open_dicom(path: Path) -> ImageSlide:
    """A DICOM image as a one-level slide; multi-frame files show their first frame."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise SlideOpenError(f"{path}: not a readable DICOM file ({exc})", path=str(path)) from None
    if "PixelData" not in ds:
        raise SlideOpenError(
            f"{path}: this DICOM object has no pixel data (it is a {ds.SOPClassUID.name})",
            path=str(path),
        )
    syntax = ds.file_meta.get("TransferSyntaxUID")
    try:
        pixels = ds.pixel_array
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        name = syntax.name if syntax is not None else "an unknown transfer syntax"
        raise SlideOpenError(
            f"{path}: pixel data is compressed as {name} and no installed decoder reads it; "
            "install one: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
            f"(or python-gdcm) [{str(exc).splitlines()[0][:120]}]",
            path=str(path),
        ) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    image = Image.fromarray(_to_uint8(ds, pixels))
    spacing = pixel_spacing_mm(ds)
    properties = {
        "dicom.modality": str(ds.get("Modality", "")),
        "dicom.sop_class": ds.SOPClassUID.name,
        "dicom.photometric": str(ds.get("PhotometricInterpretation", "")),
        "dicom.frames": str(frames),
    }
    return ImageSlide(
        image,
        path=path,
        format="dicom",
        mpp=(spacing[0] * 1000.0, spacing[1] * 1000.0) if spacing else None,
        properties=properties,
    )
