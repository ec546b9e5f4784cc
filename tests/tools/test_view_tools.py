"""The tool framework and the view tools (overview, zoom, tissue)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medagent.artifacts import ArtifactStore
from medagent.errors import InputError
from medagent.imaging import GuideStyle, Region, open_image
from medagent.tools import (
    OverviewOutput,
    ToolContext,
    ToolFailure,
    ZoomInput,
    ZoomOutput,
    overview,
    tissue,
    zoom,
)


@pytest.fixture
def ctx(tmp_path: Path, pyramid_tiff: Path) -> ToolContext:
    return ToolContext(
        artifacts=ArtifactStore(tmp_path / "artifacts"), slide=open_image(pyramid_tiff)
    )


def test_overview_is_an_artifact_with_slide_facts(ctx: ToolContext) -> None:
    result = overview(ctx)
    assert isinstance(result, OverviewOutput)
    assert (result.artifact.width, result.artifact.height) == (1000, 750)
    assert result.artifact.kind == "overview" and result.artifact.region == result.region
    assert result.slide.mpp_x == pytest.approx(0.25)
    assert ctx.artifacts.path(result.artifact).exists()
    assert "4000 x 3000" in result.to_text()


def test_overview_with_boxes_differs_from_plain(ctx: ToolContext) -> None:
    plain = overview(ctx)
    boxed = overview(ctx, boxes=[Region(x=100, y=100, width=1000, height=800)])
    assert plain.artifact.id != boxed.artifact.id


def test_zoom_reports_region_level_and_spacing(ctx: ToolContext) -> None:
    result = zoom(ctx, x=1000, y=500, width=2000, height=1000, long_side=500)
    assert isinstance(result, ZoomOutput)
    assert result.region == Region(x=1000, y=500, width=2000, height=1000)
    assert result.level == 1 and result.mpp == pytest.approx(1.0)
    assert (result.artifact.width, result.artifact.height) == (500, 250)
    assert "pyramid level 1" in result.to_text()


def test_zoom_clamps_and_says_so(ctx: ToolContext) -> None:
    result = zoom(ctx, ZoomInput(x=-500, y=-500, width=1000, height=1000))
    assert result.clamped and result.region == Region(x=0, y=0, width=500, height=500)
    assert "clamped" in result.to_text()


@pytest.mark.parametrize(
    ("arguments", "kind", "words"),
    [
        ({"x": 1, "y": 2, "width": 0, "height": 5}, "invalid_arguments", "width"),
        ({"x": 1, "y": 2}, "invalid_arguments", "Field required"),
        ('{"x": 1, ', "invalid_arguments", "not valid JSON"),
        (None, "invalid_arguments", "could not be read"),
        ({"x": 9000, "y": 0, "width": 10, "height": 10}, "bad_region", "entirely outside"),
    ],
)
def test_model_calls_never_raise(
    ctx: ToolContext, arguments: object, kind: str, words: str
) -> None:
    result = zoom.run(ctx, arguments)  # type: ignore[arg-type]
    assert isinstance(result, ToolFailure)
    assert result.kind == kind and words in result.message
    assert result.to_text().startswith("Tool zoom failed")


def test_python_calls_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs an open image"):
        overview(ToolContext(artifacts=ArtifactStore(tmp_path)))


def test_guides_can_be_turned_off(ctx: ToolContext, tmp_path: Path) -> None:
    bare = ToolContext(artifacts=ctx.artifacts, slide=ctx.slide, guides=None)
    assert overview(bare).artifact.id != overview(ctx).artifact.id
    styled = ToolContext(artifacts=ctx.artifacts, slide=ctx.slide, guides=GuideStyle(count=2))
    assert overview(styled).artifact.id != overview(ctx).artifact.id


def test_tissue_tool(ctx: ToolContext) -> None:
    result = tissue(ctx)
    assert 0.02 < result.tissue_fraction < 0.6
    assert result.components and result.mask.media_type == "image/png"
    assert "Tissue covers" in result.to_text()


def test_one_definition_gives_openai_and_mcp_schemas() -> None:
    openai = zoom.to_openai_tool()
    assert openai["function"]["name"] == "zoom"
    assert set(openai["function"]["parameters"]["required"]) == {"x", "y", "width", "height"}
    mcp = zoom.to_mcp_tool()
    assert mcp["inputSchema"] == openai["function"]["parameters"]
    assert "artifact" in mcp["outputSchema"]["properties"]
    assert zoom.spec().parameters == openai["function"]["parameters"]


def test_outputs_serialise_without_pixels(ctx: ToolContext) -> None:
    dumped = zoom(ctx, x=0, y=0, width=100, height=100).model_dump_json()
    assert "base64" not in dumped and len(dumped) < 2000
    assert json.loads(dumped)["artifact"]["kind"] == "zoom"


def test_results_name_the_image_kind_and_state_spacing_in_its_unit(tmp_path: Path) -> None:
    from PIL import Image

    from medagent.imaging import ImageSlide, modality

    pixels = Image.new("RGB", (2000, 1500), "gray")
    radiograph = ImageSlide(pixels, mpp=(150.0, 150.0), modality=modality("radiograph"))
    rctx = ToolContext(artifacts=ArtifactStore(tmp_path / "r"), slide=radiograph)
    text = overview(rctx).to_text() + zoom(rctx, x=0, y=0, width=1000, height=1000).to_text()
    assert "radiograph 2000 x 1500" in text and "mm per" in text and "µm" not in text
    plain = ToolContext(artifacts=ArtifactStore(tmp_path / "p"), slide=ImageSlide(pixels))
    text = overview(plain).to_text() + zoom(plain, x=0, y=0, width=500, height=500).to_text()
    assert "medical image" in text and "µm" not in text and " mm" not in text


def test_a_model_cannot_ask_for_a_view_bigger_than_its_backend_sends(ctx: ToolContext) -> None:
    capped = ToolContext(artifacts=ctx.artifacts, slide=ctx.slide, max_long_side=300)
    out = zoom.run(capped, {"x": 0, "y": 0, "width": 2000, "height": 1000, "long_side": 2000})
    assert isinstance(out, ZoomOutput) and max(out.artifact.width, out.artifact.height) == 300
    assert max(overview(capped).artifact.width, overview(capped).artifact.height) == 300
