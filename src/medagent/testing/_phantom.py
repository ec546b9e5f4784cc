"""A synthetic CT (or MR) series with known geometry, written as real DICOM files.

A water cylinder (0 HU) in air (-1000 HU) holding spheres of known centre, diameter and value,
on a grid of known spacing and orientation. Files get shuffled names and instance numbers, so
a reader that orders slices by file name or ``InstanceNumber`` instead of by position fails
the tests that use it. ``enhanced=True`` writes the same volume as one multi-frame Enhanced CT
(or MR) file, its frames shuffled too.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["CT_PHANTOM", "Phantom", "PhantomSphere", "write_ct_phantom"]

_SOP = {
    ("CT", False): "1.2.840.10008.5.1.4.1.1.2",
    ("CT", True): "1.2.840.10008.5.1.4.1.1.2.1",
    ("MR", False): "1.2.840.10008.5.1.4.1.1.4",
    ("MR", True): "1.2.840.10008.5.1.4.1.1.4.1",
}


@dataclass(frozen=True)
class PhantomSphere:
    """A ball at a voxel centre (slice, row, col) with a diameter in mm and a value (HU)."""

    name: str
    centre: tuple[int, int, int]
    diameter_mm: float
    value: float


@dataclass(frozen=True)
class Phantom:
    """The volume's grid and contents; voxel (k, r, c) sits at
    ``origin + k·slice_mm·normal + c·pixel_mm·row_dir + r·pixel_mm·col_dir``."""

    slices: int = 40
    size: int = 128
    pixel_mm: float = 0.8
    slice_mm: float = 2.5
    cylinder_radius_mm: float = 45.0
    background: float = -1000.0
    water: float = 0.0
    spheres: tuple[PhantomSphere, ...] = field(
        default_factory=lambda: (
            PhantomSphere("bone", (12, 48, 44), 16.0, 700.0),
            PhantomSphere("fat", (26, 80, 84), 12.0, -100.0),
        )
    )

    def values(self) -> np.ndarray:
        """The voxel values (slices, rows, cols) as float32, in HU for a CT."""
        k, r, c = np.meshgrid(
            np.arange(self.slices), np.arange(self.size), np.arange(self.size), indexing="ij"
        )
        middle = (self.size - 1) / 2
        out = np.full(k.shape, self.background, dtype=np.float32)
        in_plane = np.hypot((r - middle) * self.pixel_mm, (c - middle) * self.pixel_mm)
        out[in_plane <= self.cylinder_radius_mm] = self.water
        for sphere in self.spheres:
            k0, r0, c0 = sphere.centre
            d = np.sqrt(
                ((k - k0) * self.slice_mm) ** 2
                + ((r - r0) * self.pixel_mm) ** 2
                + ((c - c0) * self.pixel_mm) ** 2
            )
            out[d <= sphere.diameter_mm / 2] = sphere.value
        return out

    def distance_mm(self, a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
        """The physical distance between two voxel positions: the grid is orthonormal."""
        return math.sqrt(
            ((a[0] - b[0]) * self.slice_mm) ** 2
            + ((a[1] - b[1]) * self.pixel_mm) ** 2
            + ((a[2] - b[2]) * self.pixel_mm) ** 2
        )


#: The default phantom: 40 slices of 128x128, 0.8 mm pixels, 2.5 mm apart, two spheres.
CT_PHANTOM = Phantom()


def _directions(tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines of an axial plane tilted about the patient's x axis."""
    t = math.radians(tilt_deg)
    return np.array([1.0, 0.0, 0.0]), np.array([0.0, math.cos(t), -math.sin(t)])


def _common(d: Dataset, modality: str, uids: tuple[str, str, str], sop: str) -> None:
    """Identity shared by every file: ``uids`` are (study, series, frame of reference)."""
    from pydicom.uid import generate_uid

    d.SOPClassUID = sop
    d.SOPInstanceUID = generate_uid()
    d.StudyInstanceUID, d.SeriesInstanceUID, d.FrameOfReferenceUID = uids
    d.Modality = modality
    d.SeriesDescription = f"medagent phantom ({modality})"
    d.SeriesNumber = 1
    d.PatientName = "Phantom^Medagent"
    d.PatientID = "PHANTOM"


def _pixels(d: Dataset, frame_values: np.ndarray, frames: int) -> None:
    d.SamplesPerPixel = 1
    d.PhotometricInterpretation = "MONOCHROME2"
    d.Rows, d.Columns = frame_values.shape[-2:]
    d.BitsAllocated = 16
    d.BitsStored = 16
    d.HighBit = 15
    d.PixelRepresentation = 0
    if frames > 1:
        d.NumberOfFrames = frames
    d.PixelData = frame_values.astype("<u2").tobytes()


def write_ct_phantom(
    folder: Path,
    phantom: Phantom = CT_PHANTOM,
    *,
    tilt_deg: float = 0.0,
    rescale: tuple[float, float] = (1.0, -1024.0),
    modality: Literal["CT", "MR"] = "CT",
    enhanced: bool = False,
    seed: int = 0,
    series_uid: str | None = None,
    origin: tuple[float, float, float] = (-50.0, -50.0, -40.0),
) -> Path:
    """Write ``phantom`` into ``folder`` (created) as one series and return the folder.

    ``rescale`` is (slope, intercept): stored = (value - intercept) / slope. Single-frame
    files are named ``IM_<random>.dcm`` in shuffled order with shuffled ``InstanceNumber``;
    ``enhanced`` writes one ``volume.dcm`` whose frames are shuffled. Returns the folder.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    slope, intercept = rescale
    stored = np.rint((phantom.values() - intercept) / slope)
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError("rescale puts the phantom's values outside 16-bit unsigned storage")
    row_dir, col_dir = _directions(tilt_deg)
    normal = np.cross(row_dir, col_dir)
    origin_v = np.asarray(origin, dtype=np.float64)
    positions = [origin_v + k * phantom.slice_mm * normal for k in range(phantom.slices)]
    orientation = [round(float(v), 6) for v in (*row_dir, *col_dir)]
    spacing = [phantom.pixel_mm, phantom.pixel_mm]
    uids = (generate_uid(), series_uid or generate_uid(), generate_uid())
    sop = _SOP[(modality, enhanced)]
    order = list(range(phantom.slices))
    rng.shuffle(order)

    def meta(ds: Dataset) -> None:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian

    def rescale_attrs(item: Dataset) -> None:
        item.RescaleSlope = f"{slope:g}"
        item.RescaleIntercept = f"{intercept:g}"
        item.RescaleType = "HU" if modality == "CT" else "US"

    if enhanced:
        ds = Dataset()
        _common(ds, modality, uids, sop)
        measures = Dataset()
        measures.PixelSpacing = spacing
        measures.SliceThickness = phantom.slice_mm
        measures.SpacingBetweenSlices = phantom.slice_mm
        plane = Dataset()
        plane.ImageOrientationPatient = orientation
        transform = Dataset()
        rescale_attrs(transform)
        shared = Dataset()
        shared.PixelMeasuresSequence = Sequence([measures])
        shared.PlaneOrientationSequence = Sequence([plane])
        shared.PixelValueTransformationSequence = Sequence([transform])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        per_frame = []
        for k in order:
            position = Dataset()
            position.ImagePositionPatient = [round(float(v), 4) for v in positions[k]]
            item = Dataset()
            item.PlanePositionSequence = Sequence([position])
            per_frame.append(item)
        ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
        _pixels(ds, stored[order], len(order))
        meta(ds)
        path = folder / "volume.dcm"
        ds.save_as(path, enforce_file_format=True)
        return folder

    instance_numbers = list(range(1, phantom.slices + 1))
    rng.shuffle(instance_numbers)
    for k in order:
        ds = Dataset()
        _common(ds, modality, uids, sop)
        ds.InstanceNumber = instance_numbers[k]
        ds.ImagePositionPatient = [round(float(v), 4) for v in positions[k]]
        ds.ImageOrientationPatient = orientation
        ds.PixelSpacing = spacing
        ds.SliceThickness = phantom.slice_mm
        rescale_attrs(ds)
        _pixels(ds, stored[k], 1)
        meta(ds)
        ds.save_as(folder / f"IM_{rng.getrandbits(40):010x}.dcm", enforce_file_format=True)
    return folder
