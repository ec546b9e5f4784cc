"""DICOM whole-slide images written from any slide medagent opens, for tests and smoke checks.

A TEST DOUBLE for a scanner's DICOM export: one VL Whole Slide Microscopy instance per pyramid
level (TILED_FULL frames), plus a label and an overview instance, all in one series. Written
with pydicom alone — ``wsidicomizer`` would do it, but its releases that take wsidicom 0.36
need Python 3.12 — and tiles encoded by Pillow: JPEG 2000 lossless (pixel-exact) or JPEG
baseline (lossy, YCbCr 4:2:2 like most scanners).
"""

from __future__ import annotations

import io
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

__all__ = ["write_dicom_wsi"]

_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
_JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
_JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
_JPEG_QUALITY = 95


def _encode(tile: Image.Image, lossless: bool) -> bytes:
    buffer = io.BytesIO()
    if lossless:
        # A raw codestream (DICOM wants no JP2 box), reversible wavelet, no colour transform:
        # the photometric interpretation stays RGB.
        tile.save(buffer, "JPEG2000", irreversible=False, no_jp2=True, mct=0)
    else:
        tile.save(buffer, "JPEG", quality=_JPEG_QUALITY, subsampling=1)  # 4:2:2
    return buffer.getvalue()


def _tiles(image: Image.Image, tile: int) -> list[Image.Image]:
    """Row-major tiles (TILED_FULL order), the right and bottom ones padded with white."""
    columns, rows = math.ceil(image.width / tile), math.ceil(image.height / tile)
    tiles = []
    for row in range(rows):
        for column in range(columns):
            box = (column * tile, row * tile, (column + 1) * tile, (row + 1) * tile)
            piece = image.crop(
                (box[0], box[1], min(box[2], image.width), min(box[3], image.height))
            )
            if piece.size != (tile, tile):
                padded = Image.new("RGB", (tile, tile), (255, 255, 255))
                padded.paste(piece, (0, 0))
                piece = padded
            tiles.append(piece)
    return tiles


def _instance(
    image: Image.Image,
    *,
    flavour: str,
    series: dict[str, Any],
    number: int,
    tile: int,
    lossless: bool,
    mpp: float | None,
) -> Any:
    """One instance holding ``image``: a pyramid level (tiled) or a label/overview (one frame)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, generate_uid

    tiled = flavour == "VOLUME"
    tile_w, tile_h = (tile, tile) if tiled else image.size
    frames = _tiles(image, tile) if tiled else [image]
    sop_uid = generate_uid()
    syntax = _JPEG2000_LOSSLESS if lossless else _JPEG_BASELINE

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_WSI_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = UID(syntax)
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _WSI_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL" if number == 1 else "DERIVED", "PRIMARY", flavour, "NONE"]
    ds.Modality = "SM"
    ds.Manufacturer = "medagent.testing"
    ds.ManufacturerModelName = "write_dicom_wsi"
    ds.StudyDate = ds.ContentDate = series["date"]
    ds.StudyTime = ds.ContentTime = series["time"]
    ds.AcquisitionDateTime = series["date"] + series["time"]
    ds.PatientName = "Test^Slide"
    ds.PatientID = "medagent-test"
    ds.StudyInstanceUID = series["study"]
    ds.SeriesInstanceUID = series["series"]
    ds.FrameOfReferenceUID = series["frame_of_reference"]
    ds.ContainerIdentifier = "medagent-test-slide"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.SpecimenLabelInImage = "YES" if flavour == "LABEL" else "NO"
    ds.BurnedInAnnotation = ds.SpecimenLabelInImage
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.VolumetricProperties = "VOLUME"
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.Rows, ds.Columns = tile_h, tile_w
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = image.size
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB" if lossless else "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00" if lossless else "01"
    if not lossless:
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.LossyImageCompressionRatio = 10.0

    origin = pydicom.Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20.0
    origin.YOffsetInSlideCoordinateSystem = 40.0
    ds.TotalPixelMatrixOriginSequence = Sequence([origin])
    ds.ImageOrientationSlide = [0.0, -1.0, 0.0, -1.0, 0.0, 0.0]
    optical = pydicom.Dataset()
    optical.OpticalPathIdentifier = "1"
    optical.ObjectiveLensPower = 20.0
    illumination = pydicom.Dataset()
    illumination.CodeValue, illumination.CodingSchemeDesignator = "111744", "DCM"
    illumination.CodeMeaning = "Brightfield illumination"
    optical.IlluminationTypeCodeSequence = Sequence([illumination])
    colour = pydicom.Dataset()
    colour.CodeValue, colour.CodingSchemeDesignator = "414298005", "SCT"
    colour.CodeMeaning = "Full Spectrum"
    optical.IlluminationColorCodeSequence = Sequence([colour])
    ds.OpticalPathSequence = Sequence([optical])

    if mpp is not None:
        spacing_mm = mpp / 1000.0
        measures = pydicom.Dataset()
        measures.PixelSpacing = [spacing_mm, spacing_mm]
        measures.SliceThickness = 0.001
        shared = pydicom.Dataset()
        shared.PixelMeasuresSequence = Sequence([measures])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        ds.ImagedVolumeWidth = image.width * spacing_mm
        ds.ImagedVolumeHeight = image.height * spacing_mm
        ds.ImagedVolumeDepth = 0.001

    ds.PixelData = encapsulate([_encode(frame, lossless) for frame in frames])
    ds["PixelData"].VR = "OB"
    return ds


def _label(size: tuple[int, int]) -> Image.Image:
    """A slide label with a barcode-like pattern and text standing for patient identifiers."""
    label = Image.new("RGB", size, (250, 250, 235))
    draw = ImageDraw.Draw(label)
    for x in range(10, size[0] - 10, 6):
        draw.rectangle((x, 10, x + (x % 4) + 1, size[1] // 2), fill=(0, 0, 0))
    draw.text((10, size[1] // 2 + 10), "TEST^SLIDE 0001", fill=(0, 0, 0))
    return label


def write_dicom_wsi(
    source: str | Path,
    folder: str | Path,
    *,
    tile: int = 256,
    lossless: bool = True,
    single_file: bool = False,
) -> Path:
    """Write the slide at ``source`` as a DICOM WSI series into ``folder``; return the folder.

    Every level of ``source`` becomes one instance (``level-N.dcm``), with the source's mpp;
    a label and an overview instance (``label.dcm``, ``overview.dcm``) come from the source's
    ``label``/``macro`` images, or are drawn when it has none. ``single_file`` writes level 0
    alone and returns that file. ``lossless`` chooses JPEG 2000 lossless (reads equal the
    source pixel for pixel) over JPEG baseline at quality 95, 4:2:2.
    """
    import pydicom
    from pydicom.uid import generate_uid

    from medagent.imaging import Region, open_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now()
    series = {
        "study": generate_uid(),
        "series": generate_uid(),
        "frame_of_reference": generate_uid(),
        "date": now.strftime("%Y%m%d"),
        "time": now.strftime("%H%M%S"),
    }
    written: list[Path] = []
    with open_image(source) as slide:
        levels = 1 if single_file else slide.level_count
        for level in range(levels):
            image = slide.read(Region(x=0, y=0, **slide.dimensions.model_dump()), level)
            level_size = slide.level_dimensions[level]
            image = image.crop((0, 0, level_size.width, level_size.height))
            downsample = slide.level_downsamples[level]
            mpp = slide.mpp_x * downsample if slide.mpp_x is not None else None
            ds = _instance(
                image,
                flavour="VOLUME",
                series=series,
                number=level + 1,
                tile=tile,
                lossless=lossless,
                mpp=mpp,
            )
            written.append(folder / f"level-{level}.dcm")
            pydicom.dcmwrite(written[-1], ds, enforce_file_format=True)
        if single_file:
            return written[0]
        names = slide.associated_image_names
        overview = (
            slide.associated_image("macro", allow_phi=True)
            if "macro" in names
            else slide.read(
                Region(x=0, y=0, **slide.dimensions.model_dump()), slide.level_count - 1
            )
        )
        label = (
            slide.associated_image("label", allow_phi=True)
            if "label" in names
            else _label((300, 200))
        )
    for name, flavour, image in (("label", "LABEL", label), ("overview", "OVERVIEW", overview)):
        ds = _instance(
            image.convert("RGB"),
            flavour=flavour,
            series=series,
            number=len(written) + 1,
            tile=tile,
            lossless=lossless,
            mpp=None,
        )
        written.append(folder / f"{name}.dcm")
        pydicom.dcmwrite(written[-1], ds, enforce_file_format=True)
    return folder
