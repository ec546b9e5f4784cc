"""Reading one CT/MR series from DICOM: which files, which frames, in which order, with what
geometry — checked before a single pixel is decoded.

Slices are ordered by their position along the slice normal (``ImagePositionPatient`` ·
(row cosine x column cosine)), never by file name or ``InstanceNumber``: exporters number and
name files in any order. Everything the checks find wrong is one ``SlideOpenError`` naming the
folder or file and what to do; what is only worth knowing becomes a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medagent.errors import SlideOpenError
from medagent.imaging._guard import failure_reason

__all__ = ["DEFAULT_MAX_VOXELS", "SeriesFrame", "SeriesGeometry", "read_frames", "series_geometry"]

#: Most voxels a volume may hold: a 512x512 CT of 1,200 slices (630 MB as int16).
DEFAULT_MAX_VOXELS = 512 * 512 * 1200
#: DICOMDIR: an index of a media folder, not an image.
_DICOMDIR = "1.2.840.10008.1.3.10"
#: Positions closer than this (mm) are the same position.
_SAME_MM = 0.01


def _fail(path: Path, reason: str) -> SlideOpenError:
    return SlideOpenError(f"{path}: {reason}", path=str(path))


@dataclass(frozen=True)
class SeriesFrame:
    """One 2-D frame of the series: where it comes from and where it lies."""

    source: Path
    frame: int | None  # index in a multi-frame file; None for a single-frame file
    series_uid: str
    modality: str
    rows: int
    columns: int
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    thickness: float | None
    slope: float
    intercept: float
    description: str


def _is_dicom(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _header(path: Path) -> Any | None:
    """The header without pixels; ``None`` for a file that is not DICOM at all."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except InvalidDicomError:
        if _is_dicom(path):
            raise _fail(
                path, "the DICOM header cannot be read; the file is truncated or corrupt"
            ) from None
        return None
    except Exception as exc:  # pydicom: struct.error, EOFError, ValueError, …
        reason = failure_reason(exc, hide=str(path))
        raise _fail(
            path, f"DICOM data cannot be read ({reason}); the file is truncated or corrupt"
        ) from None


def _is_image(path: Path, ds: Any) -> bool:
    """Whether a DICOM file is an image; an image header cut short is an error, not skipped.

    pydicom reads a cut header as far as it goes, so a slice cut inside its header looks like
    a dataset without ``Rows``: its SOP class (or its absence) tells it from a report.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR:
        return False
    sop = ds.get("SOPClassUID")
    if sop is None or not sop.is_valid:
        raise _fail(path, "the DICOM header is incomplete; the file is truncated or corrupt")
    if "Rows" in ds:
        return True
    if "Image" in sop.name:
        raise _fail(
            path, f"the file ends inside its header (a {sop.name}); it is truncated or corrupt"
        )
    return False


def _item(ds: Any, sequence: str) -> Any | None:
    if sequence in ds and ds[sequence].value:
        return ds[sequence][0]
    return None


def _find(ds: Any, frame: int | None, sequence: str, attribute: str) -> Any:
    """An attribute of one frame: per-frame functional group, shared group, then top level."""
    groups = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if frame < len(per_frame):
            groups.append(per_frame[frame])
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    if shared is not None:
        groups.append(shared)
    for group in groups:
        item = _item(group, sequence)
        if item is not None and attribute in item:
            return item.get(attribute)
    return ds.get(attribute)


def _floats(path: Path, value: Any, count: int, name: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count or not all(np.isfinite(numbers)):
        raise _fail(path, f"{name} is missing or unreadable; slices cannot be placed in 3-D")
    return numbers


def _frame(ds: Any, path: Path, frame: int | None) -> SeriesFrame:
    position = _find(ds, frame, "PlanePositionSequence", "ImagePositionPatient")
    orientation = _find(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _floats(
        path, _find(ds, frame, "PixelMeasuresSequence", "PixelSpacing"), 2, "PixelSpacing"
    )
    if min(spacing) <= 0:
        raise _fail(path, f"PixelSpacing {spacing} is not positive")
    thickness = _find(ds, frame, "PixelMeasuresSequence", "SliceThickness")
    slope = _find(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _find(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise _fail(path, "the DICOM header has no readable Rows/Columns") from None
    return SeriesFrame(
        source=path,
        frame=frame,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        modality=str(ds.get("Modality", "")).strip().upper(),
        rows=rows,
        columns=columns,
        position=_floats(path, position, 3, "ImagePositionPatient"),  # type: ignore[arg-type]
        orientation=_floats(path, orientation, 6, "ImageOrientationPatient"),
        pixel_spacing=spacing,  # type: ignore[arg-type]
        thickness=float(thickness) if thickness not in (None, "") else None,
        slope=float(slope) if slope not in (None, "") else 1.0,
        intercept=float(intercept) if intercept not in (None, "") else 0.0,
        description=str(ds.get("SeriesDescription", "")),
    )


def _frames_of(path: Path, ds: Any) -> list[SeriesFrame]:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return [_frame(ds, path, i) for i in range(frames)]
    return [_frame(ds, path, None)]


def _series_label(frames: list[SeriesFrame]) -> str:
    first = frames[0]
    described = f" {first.description!r}" if first.description else ""
    files = len({f.source for f in frames})
    return f"{first.series_uid or '(no UID)'} ({first.modality}{described}, {files} file(s))"


def read_frames(path: Path) -> tuple[list[SeriesFrame], list[str]]:
    """Every frame of the one series at ``path`` (a folder, or a multi-frame file), unordered,
    with notes about files left out. Reads headers only."""
    notes: list[str] = []
    if not path.exists():
        raise _fail(path, "no such file or folder")
    if path.is_file():
        ds = _header(path)
        if ds is None:
            raise _fail(path, "not a DICOM file")
        single = _frames_of(path, ds)
        if len(single) < 2:
            raise _fail(
                path,
                "a single slice, not a volume; give the folder that holds its whole series",
            )
        return single, notes
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    if not files:
        folders = len(entries) - len(files)
        where = (
            f" (it has {folders} subfolder(s): give the folder of one series)" if folders else ""
        )
        raise _fail(path, f"the folder holds no files{where}")
    frames: list[SeriesFrame] = []
    skipped: list[str] = []
    for file in files:
        ds = _header(file)
        if ds is not None and not _is_image(file, ds):
            ds = None
        if ds is None:
            skipped.append(file.name)
            continue
        frames.extend(_frames_of(file, ds))
    if skipped:
        shown = ", ".join(skipped[:3]) + (", …" if len(skipped) > 3 else "")
        notes.append(f"ignored {len(skipped)} file(s) that are not DICOM images ({shown})")
    if not frames:
        raise _fail(path, f"the folder holds no DICOM images ({len(files)} other file(s))")
    series: dict[str, list[SeriesFrame]] = {}
    for f in frames:
        series.setdefault(f.series_uid, []).append(f)
    if len(series) > 1:
        named = "; ".join(_series_label(group) for group in series.values())
        raise _fail(
            path,
            f"the folder holds {len(series)} series: {named}; pick one: put each series in "
            "a folder of its own",
        )
    return frames, notes


@dataclass(frozen=True)
class SeriesGeometry:
    """The checked geometry of a series, frames sorted along the slice normal."""

    frames: list[SeriesFrame]
    row_dir: np.ndarray  # direction of increasing column index
    col_dir: np.ndarray  # direction of increasing row index
    normal: np.ndarray
    positions: np.ndarray  # (n, 3) each sorted frame's ImagePositionPatient, mm
    spacing_mm: tuple[float, float, float]  # (between slices, between rows, between columns)
    uniform: bool  # False when slices are missing (allowed with allow_gaps)
    notes: list[str]


def _same(path: Path, frames: list[SeriesFrame], what: str, values: list[Any], tol: float) -> None:
    first = np.asarray(values[0], dtype=np.float64)
    for f, value in zip(frames, values, strict=True):
        if np.max(np.abs(np.asarray(value, dtype=np.float64) - first)) > tol:
            raise _fail(
                path,
                f"inconsistent {what} in one series ({values[0]} in {frames[0].source.name}, "
                f"{value} in {f.source.name}); the series cannot form one volume",
            )


def _check_uniform(path: Path, frames: list[SeriesFrame]) -> str:
    modalities = sorted({f.modality for f in frames})
    if len(modalities) > 1:
        raise _fail(path, f"mixed modalities in one series ({', '.join(modalities)})")
    if modalities[0] not in ("CT", "MR"):
        raise _fail(
            path,
            f"a {modalities[0] or 'modality-less'} series; volumes are read for CT and MR only",
        )
    _same(path, frames, "image size (rows, columns)", [(f.rows, f.columns) for f in frames], 0)
    _same(path, frames, "PixelSpacing", [f.pixel_spacing for f in frames], 1e-3)
    _same(path, frames, "ImageOrientationPatient", [f.orientation for f in frames], 1e-4)
    return modalities[0]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / float(np.linalg.norm(v))


def series_geometry(
    path: Path, frames: list[SeriesFrame], *, max_voxels: int, allow_gaps: bool
) -> SeriesGeometry:
    """Sort ``frames`` along the slice normal and check the volume they make (no pixels read)."""
    _check_uniform(path, frames)
    first = frames[0]
    if len(frames) < 2:
        raise _fail(path, "a single slice, not a volume; open the file itself as an image")
    voxels = first.rows * first.columns * len(frames)
    if voxels > max_voxels:
        raise _fail(
            path,
            f"{len(frames)} slices of {first.columns} x {first.rows} are {voxels:,} voxels, more "
            f"than the {max_voxels:,} allowed; give a smaller series or raise max_voxels",
        )
    row_dir = _unit(np.asarray(first.orientation[:3]))
    col_dir = _unit(np.asarray(first.orientation[3:]))
    normal = np.cross(row_dir, col_dir)
    if abs(float(np.dot(row_dir, col_dir))) > 1e-3 or np.linalg.norm(normal) < 0.99:
        raise _fail(path, f"ImageOrientationPatient {first.orientation} is not two unit axes")
    location = {id(f): float(np.dot(f.position, normal)) for f in frames}
    ordered = sorted(frames, key=lambda f: location[id(f)])
    where = np.array([location[id(f)] for f in ordered])
    steps = np.diff(where)
    for i, step in enumerate(steps):
        if step < _SAME_MM:
            a, b = ordered[i], ordered[i + 1]
            raise _fail(
                path,
                f"two slices at the same position {where[i]:.2f} mm ({a.source.name}, "
                f"{b.source.name}): the series holds several acquisitions (echoes, phases); "
                "split them into one folder each",
            )
    nominal = float(np.median(steps))
    tolerance = max(_SAME_MM, 0.01 * nominal)
    notes: list[str] = []
    uniform = True
    for i, step in enumerate(steps):
        if abs(step - nominal) <= tolerance:
            continue
        missing = round(step / nominal) - 1
        if missing >= 1 and abs(step - (missing + 1) * nominal) <= tolerance * (missing + 1):
            gap = (
                f"{missing} slice(s) missing between {where[i]:.2f} and {where[i + 1]:.2f} mm "
                f"(slices {i} and {i + 1}, {ordered[i].source.name} and "
                f"{ordered[i + 1].source.name})"
            )
            if not allow_gaps:
                raise _fail(
                    path,
                    f"{gap}; the series is incomplete: export it again, or open it with "
                    "allow_gaps=True (axial views only)",
                )
            notes.append(f"{gap}: reformatted views are refused, distances use true positions")
            uniform = False
            continue
        raise _fail(
            path,
            f"inconsistent slice spacing: {step:.3f} mm between slices {i} and {i + 1} where "
            f"the rest are {nominal:.3f} mm apart; the series cannot form one volume",
        )
    thickness = first.thickness
    if thickness is not None and abs(thickness - nominal) > tolerance:
        notes.append(
            f"slice thickness {thickness:g} mm differs from the spacing between slices "
            f"{nominal:.3g} mm; spacing is taken from the slice positions"
        )
    positions = np.array([f.position for f in ordered], dtype=np.float64)
    drift = positions - positions[0] - np.outer(where - where[0], normal)
    if float(np.abs(drift).max()) > 0.1:
        notes.append(
            f"slices shift up to {float(np.abs(drift).max()):.1f} mm in-plane along the series "
            "(gantry tilt); 3-D distances use each slice's true position"
        )
    return SeriesGeometry(
        frames=ordered,
        row_dir=row_dir,
        col_dir=col_dir,
        normal=normal,
        positions=positions,
        spacing_mm=(nominal, first.pixel_spacing[0], first.pixel_spacing[1]),
        uniform=uniform,
        notes=notes,
    )
