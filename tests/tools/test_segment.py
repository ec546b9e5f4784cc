"""The segment tool: nuclei, tissue and SAM on generated images and the real CMU slide."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from medagent.artifacts import ArtifactStore
from medagent.imaging import ImageSlide, Region, Slide, open_image
from medagent.tools import SamSegmenter
from medagent.tools._measure import MeasureOutput, measure
from medagent.tools._segment import SegmentOutput, segment, segment_nuclei
from medagent.tools.base import ToolContext, ToolFailure

PINK = (236, 164, 204)
NUCLEUS = (88, 58, 140)


def _he_image(
    centres: list[tuple[int, int]], radius: int = 8, size: tuple[int, int] = (240, 160)
) -> Image.Image:
    """Pink stroma with dark purple round nuclei, softened like a scan."""
    image = Image.new("RGB", size, PINK)
    draw = ImageDraw.Draw(image)
    for x, y in centres:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=NUCLEUS)
    return image.filter(ImageFilter.GaussianBlur(0.8))


GRID = [(30 + 45 * i, 30 + 50 * j) for i in range(5) for j in range(3)]


def _ctx(tmp_path: Path, slide: Slide | None, sam_model: Path | None = None) -> ToolContext:
    return ToolContext(
        artifacts=ArtifactStore(tmp_path / "artifacts"),
        slide=slide,
        segmenter=SamSegmenter(sam_model) if sam_model else None,
    )


def _ok(result: SegmentOutput | ToolFailure) -> SegmentOutput:
    assert isinstance(result, SegmentOutput), result.to_text()
    return result


# -- nuclei on generated images ---------------------------------------------------------------


def test_nuclei_are_counted_and_sized_in_square_micrometres(tmp_path: Path) -> None:
    slide = ImageSlide(_he_image(GRID), mpp=(0.5, 0.5))
    out = _ok(segment.run(_ctx(tmp_path, slide), {"method": "nuclei"}))

    assert out.count == len(GRID) == len(out.areas)
    assert out.area_unit == "µm²"
    true_area = math.pi * 8**2 * 0.25
    assert out.median_area == pytest.approx(true_area, rel=0.25)
    assert out.mean_area is not None and out.total_area == pytest.approx(sum(out.areas), rel=1e-3)
    assert out.analysis_mpp == pytest.approx(0.5) and out.scale == pytest.approx(1.0)
    assert f"{len(GRID)} nuclei" in out.to_text() and "µm²" in out.to_text()


def test_nuclei_objects_are_located_in_level0_pixels(tmp_path: Path) -> None:
    slide = ImageSlide(_he_image([(200, 120)], size=(400, 300)), mpp=(0.5, 0.5))
    out = _ok(
        segment.run(
            _ctx(tmp_path, slide),
            {"method": "nuclei", "region": {"x": 150, "y": 80, "width": 100, "height": 100}},
        )
    )

    assert out.count == 1 and out.region == Region(x=150, y=80, width=100, height=100)
    (nucleus,) = out.objects
    assert nucleus.centroid.x == pytest.approx(200, abs=1.5)
    assert nucleus.centroid.y == pytest.approx(120, abs=1.5)
    assert nucleus.box.contains(200, 120) and 14 <= nucleus.box.width <= 20
    assert "1 nucleus" in out.to_text()


def test_touching_nuclei_are_split_and_stay_apart_in_the_mask(tmp_path: Path) -> None:
    slide = ImageSlide(_he_image([(100, 80), (114, 80)], size=(220, 160)), mpp=(0.5, 0.5))
    ctx = _ctx(tmp_path, slide)
    out = _ok(segment.run(ctx, {"method": "nuclei"}))

    assert out.count == 2
    mask = ctx.artifacts.get(out.mask)
    assert out.mask.media_type == "image/png" and mask.size == (220, 160)
    measured = measure.run(ctx, {"kind": "mask", "mask": out.mask.id})
    assert isinstance(measured, MeasureOutput) and measured.object_count == 2


def test_glass_and_debris_yield_no_nuclei(tmp_path: Path) -> None:
    glass = Image.new("RGB", (200, 200), (242, 240, 244))
    ImageDraw.Draw(glass).ellipse((90, 90, 100, 100), fill=(20, 20, 20))  # a dark speck
    out = _ok(segment.run(_ctx(tmp_path, ImageSlide(glass, mpp=(0.5, 0.5))), {"method": "nuclei"}))
    assert out.count == 0 and out.areas == [] and out.median_area is None
    assert "0 nuclei" in out.to_text()


def test_size_bounds_are_physical_when_spacing_is_known() -> None:
    from medagent.tools._measure import Spacing

    image = _he_image(GRID)
    # The same 8-px nuclei are 0.1 µm² at 0.02 µm/px (too small) and 16 µm² at 0.25 µm/px.
    assert segment_nuclei(image, Spacing(mpp_x=0.02, mpp_y=0.02)).max() == 0
    assert segment_nuclei(image, Spacing(mpp_x=0.5, mpp_y=0.5)).max() == len(GRID)


def test_without_spacing_areas_are_level0_pixels_with_a_note(tmp_path: Path) -> None:
    out = _ok(segment.run(_ctx(tmp_path, ImageSlide(_he_image(GRID))), {"method": "nuclei"}))

    assert out.area_unit == "px²" and out.analysis_mpp is None
    assert out.count == len(GRID)
    assert out.median_area == pytest.approx(math.pi * 64, rel=0.25)
    assert any("physical units are unknown" in note for note in out.notes)
    assert "physical units are unknown" in out.to_text()


def test_downsampled_analysis_reports_areas_in_level0_units(tmp_path: Path) -> None:
    big = _he_image([(x * 2, y * 2) for x, y in GRID], radius=16, size=(480, 320))
    full = _ok(segment.run(_ctx(tmp_path, ImageSlide(big)), {"method": "nuclei"}))
    half = _ok(segment.run(_ctx(tmp_path, ImageSlide(big)), {"method": "nuclei", "long_side": 240}))
    assert half.scale == pytest.approx(2.0) and full.scale == pytest.approx(1.0)
    assert half.count == full.count == len(GRID)
    assert half.median_area == pytest.approx(full.median_area, rel=0.15)
    assert any("analysed at 240x160" in note for note in half.notes)


def test_nuclei_in_a_region_too_large_to_resolve_is_a_bad_region(tmp_path: Path) -> None:
    slide = ImageSlide(Image.new("RGB", (3000, 3000), PINK), mpp=(1.0, 1.0))
    result = segment.run(_ctx(tmp_path, slide), {"method": "nuclei", "long_side": 512})
    assert isinstance(result, ToolFailure) and result.kind == "bad_region"
    assert "at most 1024 level-0 pixels" in result.message


# -- tissue -----------------------------------------------------------------------------------


def test_tissue_pieces_are_labelled_from_tissue_pixels(tmp_path: Path) -> None:
    image = Image.new("RGB", (300, 200), (245, 245, 247))
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 20, 119, 119), fill=PINK)
    draw.rectangle((200, 50, 249, 149), fill=PINK)
    ctx = _ctx(tmp_path, ImageSlide(image, mpp=(2.0, 2.0)))
    out = _ok(segment.run(ctx, {"method": "tissue"}))

    assert out.count == 2
    assert out.areas == pytest.approx([100 * 100 * 4.0, 50 * 100 * 4.0])
    assert out.objects[0].box == Region(x=20, y=20, width=100, height=100)
    assert out.area_fraction == pytest.approx(15000 / 60000)


# -- tool contract ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"method": "cells"},
        {"method": "nuclei", "box": {"x": 0, "y": 0, "width": 10, "height": 10}},
        {"method": "tissue", "points": [[1, 2]]},
        {"method": "sam"},
        {"method": "nuclei", "long_side": 8},
        {"method": "nuclei", "region": {"x": 0, "y": 0, "width": -5, "height": 10}},
        "{not json",
    ],
)
def test_invalid_arguments_come_back_as_a_failure(tmp_path: Path, arguments: object) -> None:
    slide = ImageSlide(_he_image(GRID), mpp=(0.5, 0.5))
    result = segment.run(_ctx(tmp_path, slide), arguments)  # type: ignore[arg-type]
    assert isinstance(result, ToolFailure)
    assert result.kind == "invalid_arguments"
    assert "\n" not in result.message


def test_region_outside_the_image_is_a_bad_region(tmp_path: Path) -> None:
    slide = ImageSlide(_he_image(GRID), mpp=(0.5, 0.5))
    result = segment.run(
        _ctx(tmp_path, slide),
        {"method": "nuclei", "region": {"x": 5000, "y": 0, "width": 10, "height": 10}},
    )
    assert isinstance(result, ToolFailure) and result.kind == "bad_region"


def test_no_open_image_is_a_bad_input(tmp_path: Path) -> None:
    result = segment.run(_ctx(tmp_path, None), {"method": "tissue"})
    assert isinstance(result, ToolFailure) and result.kind == "bad_input"


def test_output_serialises_to_json_without_pixels(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, ImageSlide(_he_image(GRID), mpp=(0.5, 0.5)))
    out = _ok(segment.run(ctx, {"method": "nuclei", "max_objects": 3}))

    text = out.model_dump_json()
    data = json.loads(text)
    assert len(text) < 5000
    assert data["artifact"]["kind"] == "segmentation" and data["mask"]["kind"] == "mask"
    assert len(data["objects"]) == 3 and len(data["areas"]) == len(GRID)
    assert SegmentOutput.model_validate(data) == out
    assert ctx.artifacts.path(out.artifact).exists() and ctx.artifacts.path(out.mask).exists()
    overlay = ctx.artifacts.get(out.artifact)
    assert overlay.size == (240, 160)


def test_schema_is_an_object_naming_the_methods() -> None:
    schema = segment.to_openai_tool()["function"]["parameters"]
    assert schema["type"] == "object" and "method" in schema["required"]
    assert schema["properties"]["method"]["enum"] == ["nuclei", "tissue", "sam"]


# -- SAM --------------------------------------------------------------------------------------


def test_sam_without_a_model_is_a_one_line_failure(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, ImageSlide(_he_image(GRID), mpp=(0.5, 0.5)))
    result = segment.run(ctx, {"method": "sam", "points": [[30, 30]]})

    assert isinstance(result, ToolFailure) and result.kind == "failed"
    assert "MEDAGENT_SAM_MODEL" in result.message and "\n" not in result.message


def test_sam_without_torch_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    ctx = _ctx(tmp_path, ImageSlide(_he_image(GRID), mpp=(0.5, 0.5)), tmp_path / "no-torch")
    result = segment.run(ctx, {"method": "sam", "points": [[30, 30]]})
    assert isinstance(result, ToolFailure) and result.kind == "failed"
    assert "pip install 'medagent[hf]'" in result.message


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medagent.testing._tiny_sam import build_tiny_sam

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return build_tiny_sam(tmp_path_factory.mktemp("tiny_sam"))


@pytest.mark.slow
@pytest.mark.hf
def test_sam_box_prompt_returns_a_mask_and_statistics(tmp_path: Path, tiny_sam: Path) -> None:
    slide = ImageSlide(_he_image(GRID, size=(300, 200)), mpp=(0.5, 0.5))
    ctx = _ctx(tmp_path, slide, tiny_sam)
    out = _ok(
        segment.run(ctx, {"method": "sam", "box": {"x": 10, "y": 10, "width": 60, "height": 50}})
    )

    # Random weights: the mask is noise; check its shape and the statistics' types.
    assert out.method == "sam" and out.region == Region(x=0, y=0, width=300, height=200)
    mask = ctx.artifacts.get(out.mask)
    assert out.mask.media_type == "image/png" and mask.size == (300, 200)
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert out.count == len(out.areas) and all(isinstance(a, float) for a in out.areas)
    assert out.score is not None and 0.0 <= out.score <= 1.0
    assert out.area_unit == "µm²" and "predicted IoU" in out.to_text()
    json.loads(out.model_dump_json())


@pytest.mark.slow
@pytest.mark.hf
def test_sam_point_prompt_in_a_subregion(tmp_path: Path, tiny_sam: Path) -> None:
    slide = ImageSlide(_he_image(GRID, size=(300, 200)), mpp=(0.5, 0.5))
    ctx = _ctx(tmp_path, slide, tiny_sam)
    region = {"x": 50, "y": 20, "width": 120, "height": 90}
    out = _ok(segment.run(ctx, {"method": "sam", "region": region, "points": [[75, 30]]}))
    assert ctx.artifacts.get(out.mask).size == (120, 90)
    assert out.artifact.region == Region(**region)

    outside = segment.run(ctx, {"method": "sam", "region": region, "points": [[5, 5]]})
    assert isinstance(outside, ToolFailure) and outside.kind == "bad_region"


@pytest.mark.slow
@pytest.mark.hf
def test_sam_model_is_loaded_once_by_the_segmenter_given(tmp_path: Path, tiny_sam: Path) -> None:
    segmenter = SamSegmenter(tiny_sam)
    assert segmenter._loaded is None  # building one costs nothing
    ctx = ToolContext(
        artifacts=ArtifactStore(tmp_path / "artifacts"),
        slide=ImageSlide(_he_image(GRID), mpp=(0.5, 0.5)),
        segmenter=segmenter,
    )
    for _ in range(2):
        _ok(segment.run(ctx, {"method": "sam", "points": [[30, 30]]}))
    model = segmenter.model
    assert segmenter.model is model  # loaded once, kept by the object, not by the process


@pytest.mark.slow
@pytest.mark.hf
def test_sam_model_folder_that_is_not_sam_is_a_config_failure(tmp_path: Path) -> None:
    for folder in (tmp_path / "missing", tmp_path):
        ctx = _ctx(tmp_path, ImageSlide(_he_image(GRID), mpp=(0.5, 0.5)), folder)
        result = segment.run(ctx, {"method": "sam", "points": [[30, 30]]})
        assert isinstance(result, ToolFailure) and result.kind == "failed"
        assert "SAM" in result.message and "\n" not in result.message


# -- the real slide ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cmu_context(cmu_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> ToolContext:
    return ToolContext(
        artifacts=ArtifactStore(tmp_path_factory.mktemp("cmu")), slide=open_image(cmu_slide)
    )


@pytest.mark.realdata
def test_cellular_region_of_the_cmu_slide_has_plausible_nuclei(cmu_context: ToolContext) -> None:
    region = {"x": 800, "y": 1000, "width": 600, "height": 400}
    out = _ok(segment.run(cmu_context, {"method": "nuclei", "region": region}))

    assert out.area_unit == "µm²" and out.analysis_mpp == pytest.approx(0.499)
    assert 50 <= out.count <= 400
    assert out.median_area is not None and 10 <= out.median_area <= 80
    assert max(out.areas) <= 400


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("region", "most"),
    [
        ({"x": 100, "y": 1500, "width": 400, "height": 400}, 0),  # glass
        ({"x": 1900, "y": 2200, "width": 300, "height": 300}, 0),  # glass, a pen dot, debris
        ({"x": 0, "y": 0, "width": 300, "height": 300}, 5),  # glass and a small tissue scrap
    ],
)
def test_background_of_the_cmu_slide_has_no_nuclei(
    cmu_context: ToolContext, region: dict[str, int], most: int
) -> None:
    out = _ok(segment.run(cmu_context, {"method": "nuclei", "region": region}))
    assert out.count <= most
