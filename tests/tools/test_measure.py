"""The measure tool and its plain helpers: physical units from spacing, px when unknown."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medagent.artifacts import ArtifactStore
from medagent.imaging import ImageSlide, Region, Renderer, open_image
from medagent.tools._measure import (
    MeasureInput,
    MeasureOutput,
    Point,
    Spacing,
    measure,
    measure_angle,
    measure_distance,
    measure_mask,
    measure_polygon,
    measure_polyline,
)
from medagent.tools.base import ToolContext, ToolFailure


def _ctx(tmp_path: Path, slide: ImageSlide | None) -> ToolContext:
    return ToolContext(artifacts=ArtifactStore(tmp_path / "artifacts"), slide=slide)


def _plain(
    width: int = 200, height: int = 100, mpp: tuple[float, float] | None = None
) -> ImageSlide:
    return ImageSlide(Image.new("RGB", (width, height), "white"), mpp=mpp)


def _ok(result: MeasureOutput | ToolFailure) -> MeasureOutput:
    assert isinstance(result, MeasureOutput), result.to_text()
    return result


# -- plain helpers ----------------------------------------------------------------------------


def test_distance_without_spacing_is_in_pixels_and_says_units_are_unknown() -> None:
    out = measure_distance((0, 0), (30, 40))

    assert (out.value, out.unit, out.spacing_known) == (50.0, "px", False)
    assert out.note is not None and "physical units are unknown" in out.note
    assert "physical units are unknown" in out.to_text()


def test_distance_switches_from_micrometres_to_millimetres_at_1000_um() -> None:
    spacing = Spacing(mpp_x=0.5, mpp_y=0.5)

    assert measure_distance((0, 0), (100, 0), spacing).unit == "µm"
    long = measure_distance((0, 0), (4000, 0), spacing)
    assert (long.value, long.unit, long.note) == (2.0, "mm", None)


def test_polyline_sums_its_segments() -> None:
    out = measure_polyline([(0, 0), (3, 4), (3, 14)], Spacing(mpp_x=2.0, mpp_y=2.0))
    assert out.value == pytest.approx(30.0)
    assert out.unit == "µm"


@pytest.mark.parametrize(
    ("points", "area", "perimeter"),
    [
        ([(0, 0), (10, 0), (10, 10), (0, 10)], 100.0, 40.0),
        ([(0, 0), (6, 0), (0, 8)], 24.0, 24.0),
        ([(0, 0), (0, 10), (10, 10), (10, 0)], 100.0, 40.0),  # clockwise: same area
    ],
)
def test_polygon_area_and_perimeter_of_known_shapes(
    points: list[tuple[float, float]], area: float, perimeter: float
) -> None:
    out = measure_polygon(points)

    assert out.kind == "polygon"
    assert out.quantities[0].name == "area" and out.quantities[0].unit == "px²"
    assert out.value == pytest.approx(area)
    assert out.quantities[1].name == "perimeter"
    assert out.quantities[1].value == pytest.approx(perimeter)


def test_polygon_area_becomes_square_millimetres_when_large() -> None:
    square = [(0, 0), (1000, 0), (1000, 1000), (0, 1000)]
    out = measure_polygon(square, Spacing(mpp_x=2.0, mpp_y=2.0))
    assert (out.value, out.unit) == (pytest.approx(4.0), "mm²")
    assert out.quantities[1].value == pytest.approx(8.0) and out.quantities[1].unit == "mm"


def test_right_angle_is_90_degrees() -> None:
    out = measure_angle((10, 0), (0, 0), (0, 25))
    assert (out.value, out.unit) == (pytest.approx(90.0), "°")
    assert measure_angle(Point(x=1, y=0), (0, 0), (1, 1)).value == pytest.approx(45.0)
    assert measure_angle((1, 0), (0, 0), (-1, 0)).value == pytest.approx(180.0)


def test_anisotropic_spacing_scales_each_axis_separately() -> None:
    spacing = Spacing(mpp_x=1.0, mpp_y=2.0)

    assert measure_distance((0, 0), (10, 0), spacing).value == pytest.approx(10.0)
    assert measure_distance((0, 0), (0, 10), spacing).value == pytest.approx(20.0)
    assert measure_distance((0, 0), (3, 2), spacing).value == pytest.approx(5.0)
    assert measure_polygon([(0, 0), (10, 0), (10, 10), (0, 10)], spacing).value == (
        pytest.approx(200.0)
    )
    # 45° in pixels is atan(2) once y pixels are twice as tall.
    angle = measure_angle((1, 0), (0, 0), (1, 1), spacing)
    assert angle.value == pytest.approx(math.degrees(math.atan(2.0)))
    assert angle.note is None


def test_mask_area_and_feret_diameter_of_the_largest_object() -> None:
    mask = np.zeros((50, 60), dtype=bool)
    mask[10:20, 10:40] = True  # 10 rows x 30 columns
    mask[30:33, 50:53] = True  # a smaller second object

    out = measure_mask(mask, Spacing(mpp_x=1.0, mpp_y=2.0))

    assert out.object_count == 2
    area, diameter, total = out.quantities
    assert (area.name, area.value, area.unit) == ("area", pytest.approx(300 * 2.0), "µm²")
    # The caliper spans the pixel squares: a 30 x 10 px box in 1 x 2 µm pixels is 30 x 20 µm.
    assert diameter.name == "max_diameter"
    assert diameter.value == pytest.approx(math.hypot(30, 20))
    assert total.value == pytest.approx((300 + 9) * 2.0)


def test_mask_of_one_pixel_is_a_diagonal_wide() -> None:
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 2] = True
    out = measure_mask(mask)
    assert out.quantities[1].value == pytest.approx(math.sqrt(2))
    assert out.unit == "px²"


def test_empty_mask_is_an_input_error() -> None:
    from medagent.errors import InputError

    with pytest.raises(InputError, match="empty"):
        measure_mask(np.zeros((4, 4), dtype=bool))


# -- the tool ---------------------------------------------------------------------------------


def test_tool_measures_in_level0_pixels_of_a_plain_image(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, _plain())
    out = _ok(measure.run(ctx, {"kind": "distance", "a": [0, 0], "b": {"x": 30, "y": 40}}))
    assert (out.value, out.unit) == (50.0, "px")
    assert "physical units are unknown" in out.to_text()


def test_tool_accepts_keyword_arguments_from_python(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, _plain(mpp=(0.25, 0.25)))
    out = measure(ctx, kind="polyline", points=[(0, 0), (0, 100), (100, 100)])
    assert (out.value, out.unit) == (pytest.approx(50.0), "µm")


@pytest.mark.parametrize(
    "arguments",
    [
        {"kind": "volume", "a": [0, 0]},
        {"kind": "distance", "a": [0, 0]},
        {"kind": "polygon", "points": [[0, 0], [1, 1]]},
        {"kind": "angle", "a": [0, 0], "vertex": "middle", "b": [1, 1]},
        "not json",
    ],
)
def test_invalid_arguments_come_back_as_a_failure(tmp_path: Path, arguments: object) -> None:
    result = measure.run(_ctx(tmp_path, _plain()), arguments)  # type: ignore[arg-type]
    assert isinstance(result, ToolFailure)
    assert result.kind == "invalid_arguments"


def test_points_outside_the_image_are_a_bad_region(tmp_path: Path) -> None:
    result = measure.run(_ctx(tmp_path, _plain()), {"kind": "distance", "a": [0, 0], "b": [500, 0]})
    assert isinstance(result, ToolFailure) and result.kind == "bad_region"
    assert "outside the image" in result.message


def test_degenerate_angle_is_a_bad_input(tmp_path: Path) -> None:
    result = measure.run(
        _ctx(tmp_path, _plain()), {"kind": "angle", "a": [5, 5], "vertex": [5, 5], "b": [9, 9]}
    )
    assert isinstance(result, ToolFailure) and result.kind == "bad_input"


def test_no_open_image_is_a_bad_input(tmp_path: Path) -> None:
    result = measure.run(_ctx(tmp_path, None), {"kind": "distance", "a": [0, 0], "b": [1, 0]})
    assert isinstance(result, ToolFailure) and result.kind == "bad_input"


def test_schema_is_an_object_with_one_branch_per_kind() -> None:
    schema = measure.to_openai_tool()["function"]["parameters"]
    assert schema["type"] == "object"
    kinds = {branch["$ref"].rsplit("/", 1)[-1] for branch in schema["oneOf"]}
    assert kinds == {"DistanceInput", "PolylineInput", "PolygonInput", "AngleInput", "MaskInput"}
    assert MeasureInput.model_validate(
        {"kind": "angle", "a": [0, 0], "vertex": [1, 1], "b": [2, 0]}
    )


def test_output_serialises_to_json(tmp_path: Path) -> None:
    out = _ok(
        measure.run(
            _ctx(tmp_path, _plain(mpp=(0.5, 0.5))),
            {"kind": "polygon", "points": [[0, 0], [10, 0], [10, 10]]},
        )
    )
    data = json.loads(out.model_dump_json())
    assert data["unit"] == "µm²" and data["quantities"][1]["name"] == "perimeter"
    assert MeasureOutput.model_validate(data) == out


def _store_mask(ctx: ToolContext, mask: np.ndarray, region: Region) -> str:
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return ctx.artifacts.put(image, media_type="image/png", kind="mask", region=region).id


def test_mask_artifact_at_reduced_resolution_uses_its_region_scale(tmp_path: Path) -> None:
    slide = _plain(400, 200, mpp=(0.5, 0.5))
    ctx = _ctx(tmp_path, slide)
    mask = np.zeros((50, 100), dtype=bool)
    mask[10:20, 10:30] = True  # 20 x 10 mask px, each 2 x 2 level-0 px of 1 x 1 µm
    region = Region(x=0, y=0, width=200, height=100)
    ref = ctx.artifacts.put(
        Image.fromarray(mask.astype(np.uint8) * 255),
        media_type="image/png",
        kind="mask",
        region=region,
    )

    by_ref = _ok(measure.run(ctx, {"kind": "mask", "mask": ref.model_dump()}))
    by_id = _ok(measure.run(ctx, {"kind": "mask", "mask": ref.id, "region": region.model_dump()}))

    assert (by_ref.value, by_ref.unit) == (pytest.approx(200.0), "µm²")
    assert by_id == by_ref


def test_mask_id_alone_finds_its_region_in_the_store(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, _plain(400, 200, mpp=(0.5, 0.5)))
    mask = np.ones((100, 100), dtype=bool)
    mask_id = _store_mask(ctx, mask, Region(x=0, y=0, width=100, height=100))
    result = _ok(measure.run(ctx, {"kind": "mask", "mask": mask_id}))
    assert (result.value, result.unit) == (pytest.approx(2500.0), "µm²")


def test_mask_without_known_region_must_have_the_image_shape(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, _plain(400, 200))
    mask = np.ones((100, 100), dtype=bool)
    mask_id = _store_mask(ctx, mask, Region(x=0, y=0, width=100, height=100))
    (ctx.artifacts.root / f"{mask_id}.json").unlink()  # e.g. stored by an older run
    result = measure.run(ctx, {"kind": "mask", "mask": mask_id})
    assert isinstance(result, ToolFailure) and result.kind == "bad_input"
    assert "region" in result.message


def test_unknown_mask_id_is_a_bad_input(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, _plain())
    for mask in ("0123456789abcdef0123456789abcdef", "../../etc/passwd"):
        result = measure.run(ctx, {"kind": "mask", "mask": mask})
        assert isinstance(result, ToolFailure) and result.kind == "bad_input"


# -- real DICOM spacing -----------------------------------------------------------------------


@pytest.mark.realdata
def test_dx_image_uses_column_spacing_along_x_and_row_spacing_along_y(
    tmp_path: Path, shared_data: Path
) -> None:
    slide = open_image(shared_data / "radiology" / "dx_image.dcm")
    ctx = ToolContext(artifacts=ArtifactStore(tmp_path), slide=slide)

    across = _ok(measure.run(ctx, {"kind": "distance", "a": [10, 50], "b": [110, 50]}))
    down = _ok(measure.run(ctx, {"kind": "distance", "a": [50, 10], "b": [50, 110]}))

    assert (across.value, across.unit) == (pytest.approx(120.12, abs=1e-3), "mm")
    assert (down.value, down.unit) == (pytest.approx(120.0, abs=1e-3), "mm")
    assert across.note is None and "120.12 mm" in across.to_text()


def test_ct_small_line_is_in_millimetres() -> None:
    from pydicom.data import get_testdata_file

    slide = open_image(get_testdata_file("CT_small.dcm"))
    out = measure_distance((0, 64), (100, 64), Spacing.of(slide))
    assert (out.value, out.unit) == (pytest.approx(66.1468, abs=1e-3), "mm")


def test_liver_segmentation_area_matches_pixel_count_times_spacing(tmp_path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("liver_1frame.dcm")
    ds = pydicom.dcmread(path)
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    row_mm, col_mm = (float(v) for v in measures.PixelSpacing)
    expected_mm2 = int(np.count_nonzero(ds.pixel_array)) * row_mm * col_mm

    slide = open_image(path)
    ctx = ToolContext(artifacts=ArtifactStore(tmp_path), slide=slide)
    view = Renderer(slide).render(Region.whole(slide.dimensions), slide.dimensions.long_side)
    mask_id = _store_mask(ctx, np.asarray(view.image.convert("L")) > 127, view.region)

    out = _ok(measure.run(ctx, {"kind": "mask", "mask": mask_id}))

    total = next(q for q in out.quantities if q.name == "total_area")
    assert (total.value, total.unit) == (pytest.approx(expected_mm2, rel=1e-6), "mm²")
    assert out.unit == "mm²" and out.value <= total.value
    diameter = next(q for q in out.quantities if q.name == "max_diameter")
    assert diameter.unit == "mm" and 0 < diameter.value < 512 * math.sqrt(2) * col_mm
