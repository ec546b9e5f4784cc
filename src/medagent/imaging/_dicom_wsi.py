"""DICOM whole-slide images (VL Whole Slide Microscopy) through wsidicom: a file or a series.

A DICOM WSI is a series: one instance per pyramid level, plus label and overview instances,
each a file (or a DICOMweb resource). wsidicom reads them as one slide; ``DicomWsiSlide`` wraps
an opened ``WsiDicom``, wherever it came from (``open_dicom_wsi`` for local files, the DICOMweb
opener for an archive).

Before wsidicom sees a folder, every file's header is read here, so the two mistakes a user
makes — a folder holding several series, or none — are one line naming what was found.
wsidicom skips instances without ``ImageType`` (Type 1, yet some exporters leave it out); such
an instance is given one as it is read: a pyramid level, or a label when it says the label is
in it. The slide's notes say so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from medagent.errors import DependencyMissingError, SlideOpenError
from medagent.imaging._dicom import WSI_SOP_CLASS
from medagent.imaging._guard import failure_reason, one_line
from medagent.imaging._modality import MODALITIES, Modality
from medagent.imaging._region import Region, Size
from medagent.imaging.base import Slide, flatten_rgba

if TYPE_CHECKING:  # _dicomweb imports this module; the counter is only a type here
    from medagent.imaging._dicomweb import FrameCounter

__all__ = ["DicomWsiSlide", "dicom_wsi_files", "open_dicom_wsi"]

#: wsidicom logs skipped files with a traceback; without a handler Python prints it on stderr.
logging.getLogger("wsidicom").addHandler(logging.NullHandler())

#: Names of associated images, as OpenSlide names them for the same DICOM instances.
_LABEL, _MACRO = "label", "macro"


def _import_wsidicom() -> Any:
    try:
        import wsidicom
    except ImportError:
        raise DependencyMissingError(
            "wsidicom", "dicom", "Reading DICOM whole-slide images"
        ) from None
    return wsidicom


def _float(value: Any) -> float | None:
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) and number > 0 else None


class DicomWsiSlide(Slide):
    """A DICOM WSI opened by wsidicom (``wsi``, a ``WsiDicom``), local or over DICOMweb.

    ``path`` names it in messages (a file, a folder or a ``dicomweb+`` reference). Levels are
    those of the first pyramid; reads fail as ``SlideOpenError`` naming ``path`` (and the
    instance file, for a folder)."""

    #: What was fetched from a DICOMweb archive (set by its opener); ``None`` for local files.
    frames: FrameCounter | None = None

    def __init__(self, wsi: Any, path: str | Path, *, format: str = "dicom") -> None:
        self._wsi = wsi
        self.path = Path(path)
        self.format = format
        self._closed = False
        levels = list(wsi.levels)
        base = levels[0]
        self._wsi_levels = [level.level for level in levels]
        self._level_dimensions = [
            Size(width=level.size.width, height=level.size.height) for level in levels
        ]
        # wsidicom maps level-0 coordinates by 2**level (its level numbers are that exponent).
        self._level_downsamples = [float(2**level.level) for level in levels]
        mpp = base.mpp  # µm per pixel (wsidicom converts the DICOM's mm)
        self._mpp = (_float(mpp.width), _float(mpp.height)) if mpp is not None else (None, None)
        self._metadata = wsi.metadata
        self._properties = _properties(wsi, base)
        self._level_files = [_file_names(level) for level in levels]

    # -- facts ------------------------------------------------------------------------------
    @property
    def level_dimensions(self) -> list[Size]:
        return self._level_dimensions

    @property
    def level_downsamples(self) -> list[float]:
        return self._level_downsamples

    @property
    def mpp_x(self) -> float | None:
        return self._mpp[0]

    @property
    def mpp_y(self) -> float | None:
        return self._mpp[1]

    @property
    def objective_power(self) -> float | None:
        for optical_path in self._metadata.pyramid.optical_paths:
            objective = optical_path.objective
            power = _float(objective.objective_power) if objective is not None else None
            if power is not None:
                return power
        return None

    @property
    def modality(self) -> Modality:
        return MODALITIES["pathology"]

    @property
    def vendor(self) -> str | None:
        manufacturer = self._metadata.equipment.manufacturer
        return str(manufacturer) if manufacturer else None

    @property
    def properties(self) -> Mapping[str, str]:
        return dict(self._properties)

    @property
    def associated_image_names(self) -> list[str]:
        names = []
        if self._wsi.labels is not None:
            names.append(_LABEL)
        if self._wsi.overviews is not None:
            names.append(_MACRO)
        return sorted(names)

    def _associated_image(self, name: str) -> Image.Image:
        self._check_open()
        if name == _LABEL and self._wsi.labels is not None:
            return flatten_rgba(self._wsi.read_label())
        if name == _MACRO and self._wsi.overviews is not None:
            return flatten_rgba(self._wsi.read_overview())
        return super()._associated_image(name)

    # -- pixels -----------------------------------------------------------------------------
    def read(self, region: Region, level: int) -> Image.Image:
        self._check_open()
        size = self.level_size_of(region, level)
        downsample = self._level_downsamples[level]
        l_x, l_y = int(region.x // downsample), int(region.y // downsample)
        bounds = self._level_dimensions[level]
        # wsidicom refuses a region past the level's edge; rounding up a level size may reach
        # one pixel past it. What lies outside the scan is shown as glass (white), as OpenSlide.
        width = min(size.width, bounds.width - l_x)
        height = min(size.height, bounds.height - l_y)
        canvas = Image.new("RGB", (size.width, size.height), (255, 255, 255))
        if width > 0 and height > 0:
            try:
                image = self._wsi.read_region((l_x, l_y), self._wsi_levels[level], (width, height))
            except Exception as exc:  # wsidicom's messages do not say which instance failed
                if self.remote_source is not None:
                    from medagent.imaging._dicomweb import archive_read_error

                    raise archive_read_error(self.remote_source, region, exc) from None
                if not self._level_files[level]:
                    raise
                reason = failure_reason(exc)
                raise OSError(f"{self._level_files[level]}: {reason}") from exc
            if (width, height) == (size.width, size.height):
                return flatten_rgba(image)
            canvas.paste(flatten_rgba(image), (0, 0))
        return canvas

    def _check_open(self) -> None:
        if self._closed:
            raise SlideOpenError(
                f"{self.path.name} was closed; open it again to read it", path=str(self.path)
            )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wsi.close()


def _file_names(level: Any) -> str:
    """The level's instance file names (none for DICOMweb), for error messages."""
    try:
        files = level.default_instance.image_data.files  # UPaths; absent for DICOMweb
        return ", ".join(Path(str(file)).name for file in files)
    except (AttributeError, TypeError):
        return ""


def _properties(wsi: Any, base: Any) -> dict[str, str]:
    """Technical attributes only: never patient, accession or device-identifying ones."""
    equipment, uids = wsi.metadata.equipment, wsi.uids
    image = base.default_instance.image_data
    found = {
        "dicom.Manufacturer": equipment.manufacturer,
        "dicom.ManufacturerModelName": equipment.model_name,
        "dicom.SoftwareVersions": ", ".join(equipment.software_versions or []),
        "dicom.StudyInstanceUID": uids.study_instance if uids else None,
        "dicom.SeriesInstanceUID": uids.series_instance if uids else None,
        "dicom.TransferSyntaxUID": image.transfer_syntax,
        "dicom.PhotometricInterpretation": image.photometric_interpretation,
        "dicom.TileSize": f"{base.tile_size.width}x{base.tile_size.height}",
    }
    return {key: str(value) for key, value in found.items() if value}


def _tag(keyword: str) -> Any:
    from pydicom.datadict import tag_for_keyword

    return tag_for_keyword(keyword)


# -- local files ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Instance:
    path: Path
    series: str
    image_type: tuple[str, ...] | None
    label_in_image: bool


def _is_wsi_file(path: Path) -> bool:
    """Whether the file meta says whole-slide microscopy (reads a few hundred bytes)."""
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info

    try:
        with path.open("rb") as handle:
            if handle.read(132)[128:132] != b"DICM":
                return False
        meta = read_file_meta_info(path)
    except (OSError, InvalidDicomError, ValueError, EOFError, KeyError, TypeError):
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) == WSI_SOP_CLASS


def _is_damaged_dicom(path: Path) -> bool:
    """A file that says it is DICOM (the magic at byte 128, or a ``.dcm`` name) but whose file
    meta cannot be read."""
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info

    try:
        with path.open("rb") as handle:
            if handle.read(132)[128:132] != b"DICM":
                return path.suffix.lower() == ".dcm"
        meta = read_file_meta_info(path)
    except (InvalidDicomError, ValueError, EOFError, KeyError, TypeError):
        return True
    except OSError:
        return False
    # pydicom reads a meta group cut short as far as it goes, without complaint: the group's
    # stated length (after its own 12-byte element at byte 132) must fit in the file.
    length = meta.get("FileMetaInformationGroupLength")
    if not isinstance(length, int) or path.stat().st_size < 144 + length:
        return True
    return not (meta.get("MediaStorageSOPClassUID") and meta.get("TransferSyntaxUID"))


def dicom_wsi_files(folder: Path) -> list[Path]:
    """The DICOM WSI instances directly in ``folder`` (by their file meta), sorted by name."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [entry for entry in entries if entry.is_file() and _is_wsi_file(entry)]


#: The last attribute read from each header (SpecimenLabelInImage): a sparse level's per-frame
#: functional groups, after it, can hold a hundred thousand items.
_LAST_TAG = 0x0048_0010


def _header(path: Path) -> _Instance:
    from pydicom.filereader import read_partial

    with path.open("rb") as handle:
        ds = read_partial(
            handle,
            stop_when=lambda tag, _vr, _length: tag > _LAST_TAG,
            defer_size=4096,
            specific_tags=[0x0008_0008, 0x0020_000E, _LAST_TAG],  # ImageType, SeriesInstanceUID
        )
    series = str(ds.get("SeriesInstanceUID", ""))
    if not series:  # pydicom reads a cut header as far as it goes, without complaint
        raise _fail(
            path,
            "the DICOM header is damaged (no SeriesInstanceUID); the file is truncated or "
            "corrupt: check that it is complete",
        )
    image_type = ds.get("ImageType")
    return _Instance(
        path=path,
        series=series,
        image_type=tuple(str(v) for v in image_type) if image_type else None,
        label_in_image=str(ds.get("SpecimenLabelInImage", "")).upper() == "YES",
    )


def _fail(path: Path, reason: str) -> SlideOpenError:
    return SlideOpenError(f"{path}: {reason}", path=str(path))


def _instances(path: Path) -> list[_Instance]:
    """The WSI instances ``path`` names (a file, or a folder of one series), checked."""
    if path.is_dir():
        files = dicom_wsi_files(path)
        if not files:
            raise _fail(
                path,
                "holds no DICOM whole-slide instance (VL Whole Slide Microscopy); "
                "give a folder holding the files of one slide's series",
            )
        damaged = [f for f in sorted(path.iterdir()) if f.is_file() and _is_damaged_dicom(f)]
        if damaged:
            # A level cut short must not leave a pyramid that silently starts lower down.
            raise _fail(
                damaged[0],
                "is a DICOM file whose header cannot be read beside the series' instances; "
                "the file is truncated or corrupt: check that it is complete",
            )
    elif _is_wsi_file(path):
        files = [path]
    else:
        raise _fail(path, "is not a DICOM whole-slide instance (VL Whole Slide Microscopy)")
    instances = [_header(file) for file in files]
    series = sorted({instance.series for instance in instances})
    if len(series) > 1:
        raise _fail(
            path,
            f"holds {len(series)} DICOM WSI series ({', '.join(s[-12:] for s in series)}); "
            "give a folder holding one slide's series",
        )
    return instances


def _stream(instance: _Instance, notes: list[str]) -> Any:
    """A wsidicom stream over the file; one without ``ImageType`` is given one as it is read."""
    from pydicom.dataelem import DataElement
    from upath import UPath
    from wsidicom.file.io.wsidicom_io import WsiDicomReadIO

    handle = instance.path.open("rb")
    if instance.image_type is not None:
        return WsiDicomReadIO(handle, UPath(instance.path))
    flavour = "LABEL" if instance.label_in_image else "VOLUME"
    notes.append(
        f"{instance.path.name} has no ImageType; read as a "
        f"{'label' if flavour == 'LABEL' else 'pyramid level'}"
    )

    # wsidicom ships no annotations: its stream class is Any to mypy.
    class _TypedReadIO(WsiDicomReadIO):  # type: ignore[misc]
        def read_elements_until(self, stop_tag: Any, into: dict[Any, Any]) -> Any:
            stopped = super().read_elements_until(stop_tag, into)
            image_type = _tag("ImageType")
            if image_type not in into:
                value = ["DERIVED", "PRIMARY", flavour, "NONE"]
                into[image_type] = DataElement(image_type, "CS", value)
            return stopped

    return _TypedReadIO(handle, UPath(instance.path))


@contextmanager
def _wsidicom_log(notes: list[str], hide: str) -> Iterator[None]:
    """wsidicom's warnings and errors while opening, as notes (one line each)."""

    class _Notes(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            note = one_line(record.getMessage(), hide=hide)
            if note and note not in notes:
                notes.append(note)

    logger = logging.getLogger("wsidicom")
    handler = _Notes(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def open_dicom_wsi(path: Path) -> DicomWsiSlide:
    """Open a DICOM WSI: one instance file, or a folder holding one series' instances.

    A folder with several series, or none, and a file that is not a WSI instance are one-line
    ``SlideOpenError``s; what wsidicom fails on is turned into one by ``open_image``'s
    boundary."""
    wsidicom = _import_wsidicom()
    from wsidicom.file import WsiDicomFileSource

    instances = _instances(path)
    notes: list[str] = []
    streams = [_stream(instance, notes) for instance in instances]
    try:
        with _wsidicom_log(notes, str(path)):
            source = WsiDicomFileSource(streams)
            wsi = wsidicom.WsiDicom(source, source_owned=True)
    except wsidicom.errors.WsiDicomNotFoundError:
        for stream in streams:
            stream.close()
        reason = "; ".join(notes[:2]) or "no instance is a pyramid level wsidicom can read"
        raise _fail(path, f"holds no readable whole-slide level ({reason})") from None
    except wsidicom.errors.WsiDicomNoResolutionError:
        for stream in streams:
            stream.close()
        raise _fail(
            path,
            "states no pixel spacing (PixelMeasuresSequence), which a DICOM whole-slide image "
            "must: its levels cannot be placed; re-export it with its spacing",
        ) from None
    except BaseException:
        for stream in streams:
            stream.close()
        raise
    slide = DicomWsiSlide(wsi, path)
    slide.add_notes(notes)
    return slide
