"""Overlays (guides, boxes, masks, scale bar) and tissue detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medagent.errors import RegionError
from medagent.imaging import (
    GuideStyle,
    ImageSlide,
    Region,
    Renderer,
    draw_boxes,
    draw_guides,
    draw_mask,
    draw_scale_bar,
    iter_tissue_tiles,
    open_image,
    tissue_mask,
    tissue_pixels,
)

WHITE = Image.new("RGB", (1000, 500), "white")
GUIDE = GuideStyle().color


def column_has(image: Image.Image, x: int, color: tuple[int, int, int]) -> bool:
    pixels = np.asarray(image)[:, x]
    return bool((pixels == color).all(axis=1).mean() > 0.5)


def test_guides_sit_at_fifths_with_level0_labels() -> None:
    region = Region(x=10_000, y=20_000, width=4000, height=2000)
    out = draw_guides(WHITE, region)
    for i in range(1, 5):
        assert column_has(out, round(i * 1000 / 5), GUIDE)
    assert not column_has(out, 100, GUIDE)
    # Border and the origin label's dark box at the top-left.
    assert tuple(np.asarray(out)[250, 0]) == GUIDE
    assert np.asarray(out)[5:15, 5:60].mean() < 128
    assert WHITE.getpixel((200, 250)) == (255, 255, 255)  # the input is not modified


def test_guide_count_is_configurable_and_font_scales() -> None:
    out = draw_guides(WHITE, Region(x=0, y=0, width=1000, height=500), GuideStyle(count=2))
    assert column_has(out, 333, GUIDE) and column_has(out, 667, GUIDE)
    small = draw_guides(Image.new("RGB", (200, 100), "white"), Region(x=0, y=0, width=2, height=1))
    assert small.size == (200, 100)


def test_boxes_are_drawn_where_their_level0_region_falls() -> None:
    region = Region(x=0, y=0, width=10_000, height=5000)
    out = np.asarray(draw_boxes(WHITE, region, [Region(x=2000, y=1000, width=4000, height=2000)]))
    assert tuple(out[200, 200]) == (255, 200, 0)  # left edge at x = 2000/10
    assert tuple(out[200, 400]) == (255, 255, 255)  # inside stays clear


def test_mask_is_tinted_with_alpha() -> None:
    mask = np.zeros((50, 100), dtype=bool)
    mask[:, 50:] = True  # right half, at a tenth of the resolution
    out = np.asarray(draw_mask(WHITE, mask, color=(0, 0, 0), alpha=0.5))
    assert out[250, 900, 0] == pytest.approx(128, abs=2)
    assert out[250, 100, 0] == 255


def test_scale_bar_only_says_what_spacing_gives() -> None:
    out = np.asarray(draw_scale_bar(WHITE, 2.0))
    assert out[470:495, 10:200].min() == 0  # a dark bar near the bottom-left


@pytest.mark.realdata
def test_real_tissue_tiles_outscore_blank_and_pen_tiles(shared_data: Path) -> None:
    tiles = sorted((shared_data / "tiles").glob("*.png"))
    scores = {t.name: float(tissue_pixels(Image.open(t)).mean()) for t in tiles}
    tissue = [v for k, v in scores.items() if k.startswith("tissue-")]
    other = [v for k, v in scores.items() if not k.startswith("tissue-")]
    assert len(tissue) == 6 and len(other) == 8
    assert min(tissue) > max(other) + 0.15, scores


def test_slide_tissue_mask_components_and_tiles(pyramid_tiff: Path) -> None:
    slide = open_image(pyramid_tiff)
    mask = tissue_mask(slide)
    assert 0.02 < mask.tissue_fraction < 0.6
    components = mask.components()
    assert 1 <= len(components) <= 3  # three blobs, which may touch
    biggest = components[0]
    assert mask.fraction(biggest) > 0.4
    assert mask.fraction(Region(x=0, y=0, width=300, height=300)) == 0.0
    tiles = list(iter_tissue_tiles(slide, mask, tile_px=256, level=1, min_tissue=0.5))
    assert tiles and all(t.region.width == 512 and t.tissue >= 0.5 for t in tiles)
    by_mpp = list(iter_tissue_tiles(slide, mask, tile_px=224, mpp=1.0, min_tissue=0.5))
    assert by_mpp[0].region.width == 896 and by_mpp[0].level == 2


def test_tiles_by_mpp_need_known_spacing(no_spacing_tiff: Path) -> None:
    slide = open_image(no_spacing_tiff)
    with pytest.raises(RegionError, match="does not record"):
        next(iter_tissue_tiles(slide, tissue_mask(slide), mpp=0.5))


def test_blank_image_has_no_tissue() -> None:
    slide = ImageSlide(Image.new("RGB", (600, 400), (245, 245, 245)))
    assert tissue_mask(Renderer(slide)).tissue_fraction == 0.0
