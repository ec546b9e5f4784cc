"""Rendering: GIANT's level rule, output sizes, region edge cases, bounded reads, caching."""

from __future__ import annotations

from pathlib import Path

import openslide
import pytest
from PIL import Image

from medagent.errors import RegionError
from medagent.imaging import (
    ImageSlide,
    Region,
    Renderer,
    RenderPolicy,
    Size,
    choose_level,
    open_image,
)


def test_region_geometry() -> None:
    region = Region(x=10, y=20, width=100, height=50)
    assert region.contains(10, 20) and not region.contains(110, 20)
    assert region.intersect(Region(x=100, y=0, width=50, height=50)) == Region(
        x=100, y=20, width=10, height=30
    )
    assert region.intersect(Region(x=500, y=500, width=1, height=1)) is None
    assert Region(x=-5, y=-5, width=20, height=20).clamp(Size(width=10, height=10)) == Region(
        x=0, y=0, width=10, height=10
    )
    assert Region.parse("1,2,3,4") == Region(x=1, y=2, width=3, height=4)
    with pytest.raises(ValueError, match="X,Y,W,H"):
        Region.parse("1,2,3")


@pytest.mark.parametrize("region_side", [500, 1000, 1500, 2400, 4000])
@pytest.mark.parametrize("target", [256, 500, 1000])
def test_level_rule_matches_openslide_levels(
    pyramid_tiff: Path, region_side: int, target: int
) -> None:
    """Checked against OpenSlide's own level data, independently of our implementation."""
    osr = openslide.OpenSlide(str(pyramid_tiff))
    slide = open_image(pyramid_tiff)
    region = Region(x=0, y=0, width=region_side, height=min(region_side, 3000))
    expected = osr.get_best_level_for_downsample(max(1.0, region.long_side / target * 0.85))
    if expected > 0 and region.long_side / osr.level_downsamples[expected] < target:
        expected -= 1
    assert choose_level(slide, region, target) == expected
    view = Renderer(slide).render(region, target)
    assert view.level == expected
    # The read at that level is never smaller than the output: no upscaling.
    assert region.long_side / osr.level_downsamples[view.level] >= view.image.width - 1
    assert max(view.image.size) == min(target, region.long_side)


def test_small_regions_are_never_upscaled(pyramid_tiff: Path) -> None:
    view = Renderer(open_image(pyramid_tiff)).render(Region(x=100, y=100, width=300, height=120))
    assert view.image.size == (300, 120)
    assert view.level == 0 and view.scale == 1.0


def test_overview_reads_from_a_coarse_level(pyramid_tiff: Path) -> None:
    view = Renderer(open_image(pyramid_tiff)).overview(500)
    assert view.image.size == (500, 375)
    assert view.level == 2  # 4000/500 = 8, biased 6.8 -> level 2 (4x) reads 1000 px >= 500
    assert view.mpp == pytest.approx(0.25 * 8)


def test_zero_area_and_outside_regions_are_rejected(pyramid_tiff: Path) -> None:
    renderer = Renderer(open_image(pyramid_tiff))
    with pytest.raises(RegionError, match="zero area"):
        renderer.render(Region(x=10, y=10, width=0, height=5))
    with pytest.raises(RegionError, match="entirely outside the image"):
        renderer.render(Region(x=5000, y=0, width=100, height=100))


def test_partly_outside_regions_are_clamped_and_say_so(pyramid_tiff: Path) -> None:
    view = Renderer(open_image(pyramid_tiff)).render(Region(x=3900, y=-50, width=200, height=150))
    assert view.clamped and view.region == Region(x=3900, y=0, width=100, height=100)
    assert "clamped from" in view.note()


def test_reads_over_budget_fail_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    slide = ImageSlide(Image.new("RGB", (900, 900)))
    calls: list[object] = []
    monkeypatch.setattr(slide, "read", lambda *a: calls.append(a))
    renderer = Renderer(slide, RenderPolicy(max_read_pixels=100_000))
    with pytest.raises(RegionError, match=r"would read 0.81 MP at level 0 \(limit 0.1 MP\)"):
        renderer.render(Region(x=0, y=0, width=900, height=900), 900)
    assert calls == []


def test_recent_views_are_cached(pyramid_tiff: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slide = open_image(pyramid_tiff)
    renderer = Renderer(slide, RenderPolicy(cache_entries=2))
    reads: list[int] = []
    original = slide.read
    monkeypatch.setattr(slide, "read", lambda r, level: reads.append(level) or original(r, level))
    region = Region(x=0, y=0, width=800, height=800)
    first = renderer.render(region, 400)
    assert renderer.render(region, 400) is first
    assert len(reads) == 1
    renderer.render(Region(x=1, y=0, width=800, height=800), 400)
    renderer.render(Region(x=2, y=0, width=800, height=800), 400)
    renderer.render(region, 400)  # evicted by the two above
    assert len(reads) == 4


def test_scale_and_spacing_of_the_output(pyramid_tiff: Path) -> None:
    view = Renderer(open_image(pyramid_tiff)).render(Region(x=0, y=0, width=2000, height=1000), 500)
    assert view.image.size == (500, 250)
    assert view.scale == pytest.approx(4.0)
    assert view.mpp == pytest.approx(1.0)


@pytest.mark.realdata
def test_real_slide_overview(cmu_slide: Path) -> None:
    view = Renderer(open_image(cmu_slide)).overview(1000)
    assert view.image.size == (748, 1000)
    assert view.mpp == pytest.approx(0.499 * 2967 / 1000, rel=1e-3)
