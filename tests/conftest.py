"""Fixtures shared by every test folder: real data from ../shared/data, generated slides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from medagent.errors import MedagentError
from medagent.testing import OrthancServer, synthetic_tissue, write_pyramid_tiff

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's real test data; tests needing it skip, saying why, when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data test: {SHARED_DATA} is not present on this machine")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cmu_slide(shared_data: Path) -> Path:
    """Real Aperio SVS, 2220x2967, one level, mpp 0.499, with label/macro/thumbnail images."""
    return shared_data / "slides" / "cmu-1-small-region.svs"


@pytest.fixture(scope="session")
def pyramid_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 4000x3000 tiled TIFF with 4 levels (downsamples 1, 2, 4, 8), mpp 0.25."""
    path = tmp_path_factory.mktemp("slides") / "pyramid.tif"
    return write_pyramid_tiff(path, synthetic_tissue(4000, 3000, seed=1), mpp=0.25, levels=4)


@pytest.fixture(scope="session")
def no_spacing_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 1200x900 tiled TIFF with 2 levels and no pixel spacing."""
    path = tmp_path_factory.mktemp("slides") / "no-spacing.tif"
    return write_pyramid_tiff(path, synthetic_tissue(1200, 900, seed=2), mpp=None, levels=2)


# -- a DICOM WSI series in a real Orthanc archive (DICOMweb tests, any folder) ---------------


@pytest.fixture(scope="module")
def dicomweb_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-level 4000 x 3000 lossless DICOM WSI series (0.25 µm/px), 256-px tiles."""
    from dicomweb_support import make_series

    return make_series(tmp_path_factory.mktemp("dicomweb"))


@pytest.fixture(scope="module")
def dicomweb_archive(dicomweb_series: Path) -> Iterator[OrthancServer]:
    """A throwaway Orthanc holding ``dicomweb_series``, with basic auth (dicomweb_support)."""
    from dicomweb_support import PASSWORD, USER

    try:
        server = OrthancServer(users={USER: PASSWORD})
    except MedagentError as exc:
        pytest.fail(f"the Orthanc archive cannot run here: {exc}")
    with server:
        server.upload(sorted(dicomweb_series.glob("*.dcm")))
        yield server


@pytest.fixture(scope="module")
def dicomweb_ref(dicomweb_archive: OrthancServer, dicomweb_series: Path) -> str:
    """The ``dicomweb+`` reference of the series in the archive."""
    from dicomweb_support import series_ref

    return series_ref(dicomweb_archive, dicomweb_series)


@pytest.fixture
def dicomweb_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The archive's user, in the environment as a user would set it."""
    from dicomweb_support import PASSWORD, USER

    monkeypatch.setenv("MEDAGENT_DICOMWEB_BASIC", f"{USER}:{PASSWORD}")
