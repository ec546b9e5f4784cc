"""The volume tools: slice, montage and measure_3d over a CT phantom of known geometry, and
failures a model can read (no volume, bad index, bad window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medagent.artifacts import ArtifactStore
from medagent.imaging import Region, Volume, open_volume
from medagent.testing._phantom import CT_PHANTOM, write_ct_phantom
from medagent.tools import (
    Measure3DOutput,
    MontageOutput,
    SliceOutput,
    ToolContext,
    ToolFailure,
    measure_3d,
    measure_mask,
    montage,
    volume_slice,
)
from medagent.tools._measure import Spacing

BONE, FAT = CT_PHANTOM.spheres


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Volume:
    return open_volume(write_ct_phantom(tmp_path_factory.mktemp("ct") / "series"))


@pytest.fixture
def ctx(tmp_path: Path, volume: Volume) -> ToolContext:
    return ToolContext(artifacts=ArtifactStore(tmp_path / "artifacts"), volume=volume)


def test_without_a_volume_every_tool_fails_readably(tmp_path: Path) -> None:
    empty = ToolContext(artifacts=ArtifactStore(tmp_path / "a"))
    for tool, args in (
        (volume_slice, {"index": 0}),
        (montage, {}),
        (
            measure_3d,
            {"a": {"slice": 0, "row": 0, "col": 0}, "b": {"slice": 1, "row": 0, "col": 0}},
        ),
    ):
        result = tool.run(empty, args)
        assert isinstance(result, ToolFailure) and result.kind == "bad_input"
        assert "needs a CT or MR volume" in result.message


def test_slice_returns_an_artifact_with_number_position_and_spacing(ctx: ToolContext) -> None:
    out = volume_slice.run(ctx, {"axis": "axial", "index": 12, "window": "bone"})
    assert isinstance(out, SliceOutput), out
    assert (out.artifact.width, out.artifact.height) == (128, 128)
    assert out.pixel_mm == pytest.approx((0.8, 0.8))
    assert (out.window.level, out.window.width) == (400, 1800)
    assert out.top_left.model_dump() == {"slice": 12, "row": 0, "col": 0}
    assert out.bottom_right.model_dump() == {"slice": 12, "row": 127, "col": 127}
    text = out.to_text()
    assert "Axial slice 12 of 39 at z = -10.0 mm" in text
    assert "0.8 x 0.8 mm" in text and "bone window level 400 / width 1800 HU" in text
    assert ctx.artifacts.get(out.artifact).size == (128, 128)


def test_a_coronal_slice_says_which_voxels_its_corners_are(ctx: ToolContext) -> None:
    out = volume_slice(ctx, axis="coronal", index=48, level=40, width=400)
    assert out.window.name == "custom"
    assert out.artifact.height == 125  # 40 slices x 2.5 mm at 0.8 mm pixels
    assert out.top_left.slice == pytest.approx(39, abs=0.5)  # superior up
    assert out.bottom_right.slice == pytest.approx(0, abs=0.5)
    assert out.top_left.row == 48


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        ({"index": 40}, "bad_region"),
        ({"index": -1}, "invalid_arguments"),
        ({"index": 0, "level": 40}, "invalid_arguments"),
        ({"index": 0, "window": "bone", "level": 40, "width": 400}, "invalid_arguments"),
        ({"index": 0, "window": "liver"}, "invalid_arguments"),
        ({"index": 0, "axis": "oblique"}, "invalid_arguments"),
    ],
)
def test_bad_slice_arguments_are_failures_a_model_can_read(
    ctx: ToolContext, args: dict[str, object], kind: str
) -> None:
    result = volume_slice.run(ctx, args)
    assert isinstance(result, ToolFailure) and result.kind == kind, result


def test_montage_overview_lists_its_slices(ctx: ToolContext) -> None:
    out = montage.run(ctx, {"every": 5, "window": "lung"})
    assert isinstance(out, MontageOutput), out
    assert out.indices == [0, 5, 10, 15, 20, 25, 30, 35]
    assert out.artifact.kind == "montage"
    assert "every 5" in out.to_text() and "labelled with its slice number" in out.to_text()
    default = montage(ctx)
    assert len(default.indices) <= 24


def test_measure_3d_between_sphere_centres_matches_the_geometry(ctx: ToolContext) -> None:
    a = dict(zip(("slice", "row", "col"), BONE.centre, strict=True))
    b = dict(zip(("slice", "row", "col"), FAT.centre, strict=True))
    out = measure_3d.run(ctx, {"a": a, "b": b})
    assert isinstance(out, Measure3DOutput), out
    known = CT_PHANTOM.distance_mm(BONE.centre, FAT.centre)
    assert out.distance_mm == pytest.approx(known, abs=1e-6)
    assert out.slices_apart == 14
    assert f"{known:.1f} mm" in out.to_text()
    outside = measure_3d.run(ctx, {"a": a, "b": {"slice": 99, "row": 0, "col": 0}})
    assert isinstance(outside, ToolFailure) and outside.kind == "bad_region"


def test_sphere_diameter_on_a_slice_view_with_the_measure_helper(volume: Volume) -> None:
    slide = volume.slice("axial", BONE.centre[0], "bone")
    pixels = np.asarray(slide.read(Region.whole(slide.dimensions), 0).convert("L"))
    spacing = Spacing.of(slide)
    out = measure_mask(pixels > 150, spacing)
    diameter_mm = out.quantities[1].value / (1000 if out.quantities[1].unit == "µm" else 1)
    # Feret diameter of whole pixel squares: at most one pixel diagonal over the true value.
    assert BONE.diameter_mm <= diameter_mm <= BONE.diameter_mm + 0.8 * 2**0.5 + 0.8


def test_tools_have_schemas_for_models() -> None:
    names = [t.to_openai_tool()["function"]["name"] for t in (volume_slice, montage, measure_3d)]
    assert names == ["slice", "montage", "measure_3d"]
    schema = volume_slice.to_openai_tool()["function"]["parameters"]
    assert set(schema["properties"]) >= {"axis", "index", "window", "level", "width"}
