"""Fixtures for agent tests: a generated slide and a scripted model factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from medagent.testing import synthetic_tissue, write_pyramid_tiff


@pytest.fixture(scope="session")
def nav_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8000 x 6000 px, 5 levels, mpp 0.25: big enough for real level choices."""
    path = tmp_path_factory.mktemp("giant") / "nav.tif"
    return write_pyramid_tiff(path, synthetic_tissue(8000, 6000, seed=3), mpp=0.25, levels=5)
