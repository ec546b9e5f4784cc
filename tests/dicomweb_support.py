"""A DICOM WSI series in a real Orthanc archive, for the front ends' DICOMweb tests."""

from __future__ import annotations

from pathlib import Path

import pydicom

from medagent.testing import OrthancServer, synthetic_tissue, write_dicom_wsi, write_pyramid_tiff

__all__ = ["PASSWORD", "USER", "make_series", "series_ref"]

USER, PASSWORD = "reader", "s3cret-Pa55"


def make_series(folder: Path, *, tile: int = 256) -> Path:
    """A 3-level 4000 x 3000 lossless DICOM WSI series (0.25 µm/px) in ``folder/series``."""
    source = write_pyramid_tiff(
        folder / "source.tif", synthetic_tissue(4000, 3000, seed=5), mpp=0.25, levels=3
    )
    return write_dicom_wsi(source, folder / "series", tile=tile, lossless=True)


def series_ref(archive: OrthancServer, series: Path) -> str:
    """The ``dicomweb+`` reference of ``series`` once uploaded to ``archive``."""
    header = pydicom.dcmread(series / "level-0.dcm", stop_before_pixels=True)
    return (
        f"dicomweb+{archive.dicomweb_url}/studies/{header.StudyInstanceUID}"
        f"/series/{header.SeriesInstanceUID}"
    )
