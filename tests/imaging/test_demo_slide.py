"""The demo slide: a real-tissue pyramid OpenSlide opens, with tissue on glass, built fast."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import openslide
import pytest
from scipy.ndimage import distance_transform_edt
from skimage.data import immunohistochemistry
from skimage.measure import label
from skimage.morphology import closing, disk

from medagent.errors import ConfigError
from medagent.imaging import (
    Region,
    Renderer,
    Slide,
    TissueParams,
    build_demo_slide,
    open_image,
    tissue_mask,
)

GLASS_TOLERANCE = 6
#: The stain is DAB brown and haematoxylin blue, outside the detector's H&E hue band.
ANY_STAIN = TissueParams()  # the default accepts any stain


@pytest.fixture(scope="module")
def demo_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller demo slide (8000 x 6000, 0.25 µm/px), built once for the module."""
    return build_demo_slide(
        tmp_path_factory.mktemp("demo") / "demo.tif", width=8000, height=6000, mpp=0.25
    )


def _glass(slide: Slide) -> np.ndarray:
    """The glass colour: a slide's corners are glass."""
    return np.asarray(slide.read(Region(x=0, y=0, width=1, height=1), 0), dtype=int)[0, 0]


def _not_glass(pixels: np.ndarray, glass: np.ndarray) -> np.ndarray:
    return np.asarray(np.abs(pixels.astype(int) - glass).max(axis=2) > GLASS_TOLERANCE)


def test_opens_through_openslide_as_a_pyramid_with_spacing(demo_slide: Path) -> None:
    assert openslide.OpenSlide.detect_format(str(demo_slide)) == "generic-tiff"
    slide = open_image(demo_slide)
    assert (slide.dimensions.width, slide.dimensions.height) == (8000, 6000)
    assert slide.level_count >= 3
    assert slide.level_dimensions[-1].long_side <= 1000
    assert slide.level_downsamples[:3] == pytest.approx([1, 2, 4])
    assert slide.mpp_x == pytest.approx(0.25)
    assert slide.mpp_y == pytest.approx(0.25)


def test_tissue_detection_finds_the_pieces_on_glass(demo_slide: Path) -> None:
    mask = tissue_mask(open_image(demo_slide), params=ANY_STAIN)
    assert 0.05 <= mask.tissue_fraction <= 0.70
    # Stroma is pale, so the mask is patchy inside a piece; closed, it is the pieces.
    pieces = label(closing(mask.mask, disk(6)))
    sizes = np.bincount(pieces.ravel())[1:]
    assert 2 <= int((sizes >= 0.01 * mask.mask.size).sum()) <= 4


def test_tissue_has_the_colours_and_texture_of_the_ihc_image(demo_slide: Path) -> None:
    slide = open_image(demo_slide)
    overview = np.asarray(Renderer(slide).overview(1000).image)
    tissue = overview[_not_glass(overview, _glass(slide))]
    source = immunohistochemistry().reshape(-1, 3)
    assert np.abs(tissue.mean(axis=0) - source.mean(axis=0)).max() < 8
    # At full resolution the inside of a piece is textured (nuclei, membranes), not a flat fill.
    mask = tissue_mask(slide, params=ANY_STAIN)
    depth = distance_transform_edt(closing(mask.mask, disk(6)))
    row, col = np.unravel_index(int(depth.argmax()), depth.shape)
    x = mask.region.x + int(col * mask.scale)
    y = mask.region.y + int(row * mask.scale)
    patch = np.asarray(slide.read(Region(x=x - 256, y=y - 256, width=512, height=512), 0), float)
    assert patch.std(axis=(0, 1)).min() > 20


def test_glass_is_near_white_and_plain(demo_slide: Path) -> None:
    slide = open_image(demo_slide)
    for corner in (
        Region(x=0, y=0, width=300, height=300),
        Region(x=7700, y=5700, width=300, height=300),
    ):
        pixels = np.asarray(slide.read(corner, 0)).reshape(-1, 3).astype(int)
        assert pixels.min() >= 235
        assert (pixels.max(axis=1) - pixels.min(axis=1)).max() <= 4
    overview = np.asarray(Renderer(slide).overview(1000).image)
    assert (~_not_glass(overview, _glass(slide))).mean() > 0.3


def test_levels_show_the_same_slide(demo_slide: Path) -> None:
    """Each level is composed on its own; a region must look the same at every level."""
    slide = open_image(demo_slide)
    glass = _glass(slide)
    region = Region(x=1000, y=1000, width=2048, height=2048)
    fine = np.asarray(slide.read(region, 0))
    fine_tissue = _not_glass(fine, glass).mean()
    assert 0.2 < fine_tissue < 0.8  # the region spans an edge of a piece
    for level in range(1, slide.level_count):
        coarse = np.asarray(slide.read(region, level))
        assert np.abs(coarse.mean(axis=(0, 1)) - fine.mean(axis=(0, 1))).max() < 3
        assert abs(_not_glass(coarse, glass).mean() - fine_tissue) < 0.03


def test_written_atomically_with_progress_and_reproducibly(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    first = build_demo_slide(
        tmp_path / "a.tif",
        width=2048,
        height=1536,
        progress=lambda done, total: calls.append((done, total)),
    )
    second = build_demo_slide(tmp_path / "b.tif", width=2048, height=1536)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]
    total = calls[-1][1]
    assert calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert (
        hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    )


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def interrupt(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_demo_slide(tmp_path / "demo.tif", width=2048, height=1536, progress=interrupt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("width", "height", "mpp"), [(512, 4000, 0.5), (4000, 4000, 0.0), (4000, 4000, -1.0)]
)
def test_rejects_sizes_and_spacings_that_make_no_slide(
    tmp_path: Path, width: int, height: int, mpp: float
) -> None:
    with pytest.raises(ConfigError):
        build_demo_slide(tmp_path / "demo.tif", width=width, height=height, mpp=mpp)


@pytest.mark.slow
def test_default_gigapixel_slide_builds_within_a_minute(tmp_path: Path) -> None:
    start = time.perf_counter()
    path = build_demo_slide(tmp_path / "demo.tif")
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"building the demo slide took {elapsed:.1f} s"
    assert path.stat().st_size < 300e6
    slide = open_image(path)
    assert min(slide.dimensions.width, slide.dimensions.height) >= 50_000
    assert slide.mpp_x == pytest.approx(0.5)
    assert slide.level_dimensions[-1].long_side <= 1000
    view = Renderer(slide).overview(1000)
    assert view.size.long_side == 1000
    assert view.level >= slide.level_count - 2  # read from a coarse level, not level 0
    assert 0.05 <= tissue_mask(slide, params=ANY_STAIN).tissue_fraction <= 0.70
