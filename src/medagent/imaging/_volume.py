"""CT and MR volumes: a series of slices as one voxel array with its geometry, and the views
an agent looks at — a slice along any axis, windowed, and a labelled montage overview.

Voxel indices are (slice, row, col) in the series' own order: slices sorted along the slice
normal, rows and columns as stored. Views follow the radiological display convention whatever
the acquisition plane (axial: patient's right on the image's left, anterior up; coronal and
sagittal: superior up; sagittal: anterior on the left), so a model sees what a radiologist
would. Reformatted views are resampled to square pixels, so anatomy is not squashed by a
slice spacing coarser than the pixels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel, ConfigDict

from medagent.errors import InputError, RegionError, SlideOpenError
from medagent.imaging._guard import decoder_boundary, failure_reason
from medagent.imaging._modality import MODALITIES, Modality
from medagent.imaging._pil import ImageSlide
from medagent.imaging._region import Region
from medagent.imaging._volume_read import (
    DEFAULT_MAX_VOXELS,
    SeriesFrame,
    SeriesGeometry,
    read_frames,
    series_geometry,
)
from medagent.imaging._window import WINDOW_PRESETS, Window, WindowPreset, percentile_window
from medagent.imaging._window import window as apply_window

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "Montage",
    "Volume",
    "VolumeAxis",
    "VolumeView",
    "VoxelPoint",
    "open_volume",
]

VolumeAxis = Literal["axial", "coronal", "sagittal"]
_PATIENT = "xyz"  # DICOM patient axes: x to the left, y to the back, z up (LPS)
#: Per view: the patient axis it is fixed along, then (patient axis, sign) running right on
#: the image and running down it.
_VIEWS: dict[VolumeAxis, tuple[int, tuple[int, int], tuple[int, int]]] = {
    "axial": (2, (0, 1), (1, 1)),
    "coronal": (1, (0, 1), (2, -1)),
    "sagittal": (0, (1, 1), (2, -1)),
}


class VoxelPoint(BaseModel):
    """A point in the volume in voxel indices (fractions allowed): slice, row, column."""

    model_config = ConfigDict(frozen=True)

    slice: float
    row: float
    col: float


PointLike = VoxelPoint | tuple[float, float, float]


def _point(p: PointLike) -> VoxelPoint:
    return p if isinstance(p, VoxelPoint) else VoxelPoint(slice=p[0], row=p[1], col=p[2])


@dataclass(frozen=True)
class VolumeView:
    """One 2-D view of a volume and how its pixels map back to voxels."""

    slide: ImageSlide
    axis: VolumeAxis
    index: int
    count: int  # how many views there are along ``axis``
    position_mm: float  # patient coordinate (along ``patient_axis``) of the plane's centre
    patient_axis: str  # "x", "y" or "z"
    window: Window
    to_voxel: Callable[[float, float], VoxelPoint]

    def to_text(self) -> str:
        image = self.slide.dimensions
        return (
            f"{self.axis} view {self.index} of {self.count - 1} at {self.patient_axis} = "
            f"{self.position_mm:+.1f} mm, {image.width}x{image.height} px of "
            f"{self.slide.mpp_x / 1000:.3g} x {self.slide.mpp_y / 1000:.3g} mm"  # type: ignore[operator]
        )


@dataclass(frozen=True)
class Montage:
    """Every ``every``-th view along ``axis`` in a labelled grid: where an agent starts."""

    image: Image.Image
    axis: VolumeAxis
    indices: list[int]
    columns: int
    tile: tuple[int, int]
    window: Window


def _assign_axes(directions: Sequence[np.ndarray]) -> list[tuple[int, int]]:
    """For each array axis, the patient axis it runs closest to and the sign: the permutation
    with the largest total |cosine| (so even a 45° oblique gets three distinct axes)."""
    best = max(
        itertools.permutations(range(3)),
        key=lambda perm: sum(abs(float(d[p])) for d, p in zip(directions, perm, strict=True)),
    )
    return [(p, 1 if float(d[p]) >= 0 else -1) for d, p in zip(directions, best, strict=True)]


class Volume:
    """A CT or MR series as voxels (slice, row, col) with its geometry in mm.

    ``values`` are HU for CT (rescale slope/intercept applied) and scanner signal for MR,
    int16 when exact, else float32. ``spacing_mm`` is (between slices, between rows, between
    columns). ``notes`` say what was odd but readable.
    """

    def __init__(
        self,
        values: np.ndarray,
        geometry: SeriesGeometry,
        *,
        path: Path,
        modality: Modality,
        description: str = "",
        notes: list[str] | None = None,
    ) -> None:
        self.values = values
        self.path = path
        self.modality = modality
        self.description = description
        self.spacing_mm = geometry.spacing_mm
        self.positions = geometry.positions
        self.row_dir, self.col_dir, self.normal = (
            geometry.row_dir,
            geometry.col_dir,
            geometry.normal,
        )
        self.uniform = geometry.uniform
        self.notes = list(notes or [])
        directions = [self.normal, self.col_dir, self.row_dir]
        self._axes = _assign_axes(directions)
        tilt = math.degrees(math.acos(min(1.0, abs(float(self.normal[self._axes[0][0]])))))
        self.tilt_deg = tilt
        nearest = {2: "axial", 1: "coronal", 0: "sagittal"}[self._axes[0][0]]
        #: The acquisition plane: axial, coronal, sagittal, or oblique near one of them.
        self.plane = nearest
        if tilt > 1.0:
            self.plane = f"oblique (near {nearest}, tilted {tilt:.0f}°)"
            self.notes.append(
                f"slices are tilted {tilt:.0f}° from the true {nearest} plane: views follow "
                "the nearest patient axes, unresampled"
            )

    # -- facts ------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.values.shape
        return int(s[0]), int(s[1]), int(s[2])

    @property
    def hu(self) -> bool:
        """Whether values are Hounsfield units (CT); MR signal has no absolute unit."""
        return self.modality.kind == "ct"

    @property
    def unit(self) -> str:
        return "HU" if self.hu else "signal units"

    def to_text(self) -> str:
        n, rows, cols = self.shape
        ds, dr, dc = self.spacing_mm
        kind = "CT" if self.hu else "MR"
        return (
            f"{kind} volume of {n} slices of {cols}x{rows} px, voxels {dc:.3g} x {dr:.3g} x "
            f"{ds:.3g} mm (column x row x slice), {self.plane} acquisition, values in {self.unit}"
        )

    def facts(self) -> dict[str, Any]:
        """JSON-able facts (``medagent slide info --json``): shape, spacing, unit, plane."""
        return {
            "path": str(self.path),
            "modality": self.modality.kind,
            "shape": list(self.shape),
            "spacing_mm": [float(s) for s in self.spacing_mm],
            "unit": self.unit,
            "plane": self.plane,
            "notes": list(self.notes),
        }

    def __repr__(self) -> str:
        return f"Volume({self.path.name!r}, {'x'.join(map(str, self.shape))}, {self.modality.kind})"

    # -- geometry ---------------------------------------------------------------------------
    def world_mm(self, point: PointLike) -> np.ndarray:
        """Patient coordinates (mm, LPS) of a voxel point; between slices, positions are
        interpolated from the two neighbours' true positions (right across a gap)."""
        p = _point(point)
        n, rows, cols = self.shape
        for name, value, size in (
            ("slice", p.slice, n),
            ("row", p.row, rows),
            ("col", p.col, cols),
        ):
            if not -0.5 <= value <= size - 0.5:
                raise RegionError(f"{name} {value:g} is outside the volume (0 to {size - 1})")
        k = min(max(p.slice, 0.0), n - 1.0)
        low = min(math.floor(k), n - 2)
        origin = self.positions[low] + (k - low) * (self.positions[low + 1] - self.positions[low])
        _, d_row, d_col = self.spacing_mm
        return np.asarray(origin + p.col * d_col * self.row_dir + p.row * d_row * self.col_dir)

    def distance_mm(self, a: PointLike, b: PointLike) -> float:
        """The physical distance between two voxel points (slice, row, col), in mm."""
        return float(np.linalg.norm(self.world_mm(a) - self.world_mm(b)))

    # -- views ------------------------------------------------------------------------------
    def resolve_window(self, window: WindowPreset | Window | None = None) -> Window:
        """A preset name, an explicit window, or the default: soft tissue for CT, the volume's
        1st–99th percentiles for MR (it has no HU)."""
        if isinstance(window, Window):
            return window
        if window is None:
            return WINDOW_PRESETS["soft_tissue"] if self.hu else percentile_window(self.values)
        if not self.hu:
            raise InputError(
                f"the {window!r} preset is in HU, which an MR does not have; give level and "
                "width in its signal units, or no window for its percentile default"
            )
        if window not in WINDOW_PRESETS:
            raise InputError(f"unknown window {window!r}; choose from {', '.join(WINDOW_PRESETS)}")
        return WINDOW_PRESETS[window]

    def count(self, axis: VolumeAxis) -> int:
        """How many views there are along ``axis``."""
        return self.shape[self._array_axis(_VIEWS[axis][0])]

    def _array_axis(self, patient_axis: int) -> int:
        return next(a for a, (p, _) in enumerate(self._axes) if p == patient_axis)

    def view(
        self, axis: VolumeAxis, index: int, window: WindowPreset | Window | None = None
    ) -> VolumeView:
        """The ``index``-th plane along ``axis`` as a windowed 2-D slide (see ``slice``)."""
        if axis not in _VIEWS:
            raise InputError(f"unknown axis {axis!r}; choose axial, coronal or sagittal")
        fixed, (h_patient, h_sign), (v_patient, v_sign) = _VIEWS[axis]
        a_f, a_h, a_v = (self._array_axis(p) for p in (fixed, h_patient, v_patient))
        count = self.shape[a_f]
        if not 0 <= index < count:
            raise RegionError(f"{axis} index {index} is outside the volume (0 to {count - 1})")
        if not self.uniform and a_f != 0:
            raise InputError(
                f"the series has missing slices, so a {axis} view (a reformat across slices) "
                "would misplace anatomy; look at the acquired slices instead"
            )
        chosen = self.resolve_window(window)
        plane = np.take(self.values, index, axis=a_f)
        if a_v > a_h:  # the remaining axes come in array order; put the vertical one first
            plane = plane.T
        flip_h = self._axes[a_h][1] != h_sign
        flip_v = self._axes[a_v][1] != v_sign
        plane = plane[:: -1 if flip_v else 1, :: -1 if flip_h else 1]
        pixels = apply_window(plane, chosen.level, chosen.width)
        height, width = pixels.shape
        s_h, s_v = self.spacing_mm[a_h], self.spacing_mm[a_v]
        finest = min(s_h, s_v)
        out_w, out_h = max(1, round(width * s_h / finest)), max(1, round(height * s_v / finest))
        image = Image.fromarray(pixels, mode="L")
        if (out_w, out_h) != (width, height):
            image = image.resize((out_w, out_h), Image.Resampling.BILINEAR)
        mpp = (width * s_h / out_w * 1000.0, height * s_v / out_h * 1000.0)
        scale_h, scale_v = width / out_w, height / out_h

        def to_voxel(x: float, y: float) -> VoxelPoint:
            """Image pixel (x, y) of this view → voxel point (pixel centres map to voxels)."""
            u = (x + 0.5) * scale_h - 0.5
            v = (y + 0.5) * scale_v - 0.5
            coords = [0.0, 0.0, 0.0]
            coords[a_f] = float(index)
            coords[a_h] = (width - 1 - u) if flip_h else u
            coords[a_v] = (height - 1 - v) if flip_v else v
            return VoxelPoint(slice=coords[0], row=coords[1], col=coords[2])

        centre = [0.0, 0.0, 0.0]
        centre[a_f] = float(index)
        for a in (a_h, a_v):
            centre[a] = (self.shape[a] - 1) / 2
        position = float(self.world_mm(tuple(centre))[fixed])  # type: ignore[arg-type]
        slide = ImageSlide(
            image.convert("RGB"),
            path=self.path,
            format="dicom-volume",
            mpp=mpp,
            modality=self.modality,
            properties={
                "volume.axis": axis,
                "volume.index": str(index),
                "volume.count": str(count),
                "volume.position_mm": f"{position:.2f}",
                "volume.window": chosen.to_text(self.unit),
            },
        )
        resampled = " (resampled to square pixels)" if (out_w, out_h) != (width, height) else ""
        slide.add_notes(
            [
                f"{axis} slice {index} of {count - 1} at {_PATIENT[fixed]} = {position:+.1f} mm"
                f"{resampled}; {chosen.to_text(self.unit)}"
            ]
        )
        return VolumeView(
            slide=slide,
            axis=axis,
            index=index,
            count=count,
            position_mm=position,
            patient_axis=_PATIENT[fixed],
            window=chosen,
            to_voxel=to_voxel,
        )

    def slice(
        self, axis: VolumeAxis, index: int, window: WindowPreset | Window | None = None
    ) -> ImageSlide:
        """One plane as a 2-D slide with its spacing in mm and a note of index and position."""
        return self.view(axis, index, window).slide

    def montage(
        self,
        every: int = 1,
        window: WindowPreset | Window | None = None,
        *,
        axis: VolumeAxis = "axial",
        long_side: int = 2048,
    ) -> Montage:
        """Every ``every``-th view along ``axis`` in a near-square grid at most ``long_side``
        pixels wide or tall, each tile labelled with its index."""
        if every < 1:
            raise InputError(f"every must be at least 1, not {every}")
        indices = list(range(0, self.count(axis), every))
        chosen = self.resolve_window(window)
        views = [self.view(axis, i, chosen).slide for i in indices]
        tile_w, tile_h = views[0].dimensions.width, views[0].dimensions.height
        columns = math.ceil(math.sqrt(len(indices)))
        rows = math.ceil(len(indices) / columns)
        scale = min(1.0, long_side / max(columns * tile_w, rows * tile_h))
        tile = (max(1, int(tile_w * scale)), max(1, int(tile_h * scale)))
        grid = Image.new("RGB", (columns * tile[0], rows * tile[1]), (0, 0, 0))
        draw = ImageDraw.Draw(grid)
        font = ImageFont.load_default(size=max(8, tile[1] // 10))
        for n, (index, view) in enumerate(zip(indices, views, strict=True)):
            x, y = (n % columns) * tile[0], (n // columns) * tile[1]
            image = view.read(Region.whole(view.dimensions), 0)
            grid.paste(image.resize(tile, Image.Resampling.BILINEAR), (x, y))
            left, top, right, bottom = draw.textbbox((x + 2, y + 2), str(index), font=font)
            draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
            draw.text((x + 2, y + 2), str(index), font=font, fill=(255, 255, 0))
        return Montage(
            image=grid, axis=axis, indices=indices, columns=columns, tile=tile, window=chosen
        )


def _decode(geometry: SeriesGeometry) -> np.ndarray:
    """Read pixels in the sorted order, rescaled; int16 while every value fits exactly."""
    import pydicom

    frames = geometry.frames
    exact = all(float(f.slope).is_integer() and float(f.intercept).is_integer() for f in frames)
    first = frames[0]
    out = np.empty((len(frames), first.rows, first.columns), np.int16 if exact else np.float32)
    by_source: dict[Path, list[tuple[int, SeriesFrame]]] = {}
    for k, f in enumerate(frames):
        by_source.setdefault(f.source, []).append((k, f))
    for source, items in by_source.items():
        try:
            ds = pydicom.dcmread(str(source))
            pixels = ds.pixel_array
        except Exception as exc:  # pydicom and its plugins raise many types
            reason = failure_reason(exc, hide=str(source))
            raise SlideOpenError(
                f"{source}: its pixel data cannot be decoded ({reason}); the file is "
                "truncated or corrupt: check that it is complete",
                path=str(source),
            ) from None
        for k, f in items:
            plane = pixels[f.frame] if f.frame is not None else pixels
            if plane.shape != (first.rows, first.columns):
                raise SlideOpenError(
                    f"{source}: a frame of {plane.shape} px where the series has "
                    f"{(first.rows, first.columns)}; is it a colour or damaged image?",
                    path=str(source),
                )
            values = plane.astype(np.float64) * f.slope + f.intercept
            if out.dtype == np.int16 and (values.min() < -32768 or values.max() > 32767):
                out = out.astype(np.float32)
            out[k] = values
    return out


def open_volume(
    path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS, allow_gaps: bool = False
) -> Volume:
    """A CT or MR volume from a folder holding one series (single-frame files) or from one
    multi-frame (enhanced) DICOM file.

    Refused, each with one line saying what to do: an empty folder, several series, mixed
    modalities, inconsistent size/spacing/orientation, two slices at one position, a truncated
    file, more than ``max_voxels``, and a missing slice (a gap in positions) unless
    ``allow_gaps`` — then axial views and distances still work, reformats are refused.
    """
    path = Path(path)
    with decoder_boundary(path, "reading the DICOM series") as notes:
        frames, read_notes = read_frames(path)
        geometry = series_geometry(path, frames, max_voxels=max_voxels, allow_gaps=allow_gaps)
        values = _decode(geometry)
    first = geometry.frames[0]
    return Volume(
        values,
        geometry,
        path=path,
        modality=MODALITIES["ct" if first.modality == "CT" else "mr"],
        description=first.description,
        notes=[*read_notes, *geometry.notes, *notes],
    )
