"""Fixtures shared by every test folder: real data from ../shared/data, generated slides."""

from __future__ import annotations

from pathlib import Path

import pytest

from medagent.testing import synthetic_tissue, write_pyramid_tiff

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
