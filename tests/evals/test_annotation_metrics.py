"""Pathologists' annotations: QuPath files read through the guard, trajectory metrics worked out
by hand on known boxes, and ``eval run --annotations`` recorded per item and reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli_support import medagent
from medagent.errors import InputError
from medagent.evals import ViewedRegion, annotation_metrics, load_results
from medagent.imaging import AnnotationLimits, read_annotations, region_geometry
from medagent.imaging import Region as R
from medagent.testing import synthetic_tissue, write_pyramid_tiff


def square(x: float, y: float, side: float) -> list[list[float]]:
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]


def feature(rings: Any, kind: str = "Polygon", **properties: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": kind, "coordinates": rings},
        "properties": {"objectType": "annotation", **properties},
    }


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def view(step: int, x: int, y: int, w: int, h: int, downsample: float) -> ViewedRegion:
    return ViewedRegion(
        step=step, kind="view", tool="zoom", region=R(x=x, y=y, width=w, height=h),
        downsample=downsample,
    )  # fmt: skip


def test_metrics_by_hand_on_known_boxes(tmp_path: Path) -> None:
    # Tumour: 1000 x 1000 at (0, 0); a second region 500 x 500 at (3000, 3000). Area 1,250,000.
    path = write(
        tmp_path / "s.geojson",
        {
            "type": "FeatureCollection",
            "features": [
                feature([square(0, 0, 1000)],
                        classification={"name": "Tumor", "color": [200, 0, 0]}),
                feature([[square(3000, 3000, 500)]], "MultiPolygon",
                        classification={"names": ["Stroma"]}),
            ],
        },
    )  # fmt: skip
    annotations = read_annotations(path)
    assert annotations.classes == ["Stroma", "Tumor"]
    views = [
        view(1, 5000, 5000, 1000, 1000, 1.0),  # off every annotation
        view(2, 500, 0, 1000, 500, 8.0),  # on the tumour, but coarse
        view(3, 0, 500, 500, 500, 2.0),  # on the tumour, close: 250,000 px²
        view(4, 3000, 3000, 250, 500, 4.0),  # on the second, at the threshold: 125,000 px²
    ]
    metrics = annotation_metrics(views, annotations, max_downsample=4.0)
    assert metrics.steps == 4 and metrics.regions == 2
    assert metrics.steps_on_annotation == pytest.approx(3 / 4)
    assert metrics.first_step_on_annotation == 2
    assert metrics.area_viewed == pytest.approx((250_000 + 125_000) / 1_250_000)
    # A coarser threshold admits view 2 (500 x 500 of the tumour, 250,000 px² more).
    loose = annotation_metrics(views, annotations, max_downsample=8.0)
    assert loose.area_viewed == pytest.approx(625_000 / 1_250_000)
    never = annotation_metrics(views[:1], annotations)
    assert never.first_step_on_annotation is None and never.steps_on_annotation == 0
    assert annotation_metrics([], annotations).steps_on_annotation is None


def test_qupath_forms_are_read_and_other_objects_skipped(tmp_path: Path) -> None:
    legacy = {"name": "Tumor", "colorRGB": -3670016}  # QuPath 0.2's packed colour
    features = [
        feature([square(0, 0, 10)], classification=legacy,
                measurements=[{"name": "a", "value": 1}]),
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {}},
        {**feature([square(0, 0, 5)]), "properties": {"objectType": "detection"}},
    ]  # fmt: skip
    found = read_annotations(write(tmp_path / "bare.json", features))  # a bare list of features
    assert len(found.shapes) == 1 and found.skipped == 2
    assert found.shapes[0].classification == "Tumor" and found.shapes[0].shape().area == 100
    # A self-crossing ring (a bow tie) is repaired, not refused.
    bow = read_annotations(
        write(tmp_path / "bow.json", feature([[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]))
    )
    assert bow.shapes[0].shape().is_valid and bow.union().area == pytest.approx(50)
    corners = set(region_geometry(R(x=1, y=2, width=3, height=4)).coordinates[0])
    assert corners == {(1.0, 2.0), (4.0, 2.0), (4.0, 6.0), (1.0, 6.0)}


@pytest.mark.parametrize(
    ("content", "limits", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, None, "nested deeper"),
        (json.dumps({"type": "FeatureCollection", "features": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}),
         None, "nested deeper"),
        (json.dumps(feature([square(0, 0, 10)])), AnnotationLimits(max_points=3),
         "more than 3 points"),
        (json.dumps(feature([square(0, 0, 10)])), AnnotationLimits(max_bytes=50), "byte cap"),
        ('{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[NaN, 0]]]}}',
         None, "not a finite number"),
        (json.dumps(feature([[[9, 0], [1, 0], [1, 1], [9, 0]]])).replace("9", "1e999"), None,
         "feature 1"),
        (json.dumps(feature([[[3e9, 0], [1, 0], [1, 1], [3e9, 0]]])), None, "feature 1"),
        (json.dumps(feature([[[0, 0], [1, 0]]])), None, "feature 1"),
        (json.dumps({"type": "Topology"}), None, "not a GeoJSON FeatureCollection"),
        ("not json", None, "not valid JSON"),
        (b"\xff\xfe{}", None, "not UTF-8"),
    ],
)  # fmt: skip
def test_hostile_files_are_refused_in_one_line(
    tmp_path: Path, content: str | bytes, limits: AnnotationLimits | None, message: str
) -> None:
    path = tmp_path / "slide.geojson"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InputError, match=message) as caught:
        read_annotations(path, limits)
    assert "\n" not in str(caught.value) and str(tmp_path) not in str(caught.value)
    with pytest.raises(InputError, match="cannot read"):
        read_annotations(tmp_path / "missing.geojson")


def _zoom(x: int, y: int, w: int, h: int) -> dict[str, Any]:
    return {
        "json": {"reasoning": "look", "action": "zoom", "x": x, "y": y, "width": w, "height": h}
    }


def test_eval_run_records_metrics_and_report_shows_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lines = []
    for name in ("s1", "s2", "s3"):
        write_pyramid_tiff(
            data / f"{name}.tif", synthetic_tissue(3000, 2000, seed=1), mpp=0.5, levels=3
        )
        lines.append({"id": name, "task": "t", "slide": f"{name}.tif", "question": "Tumour?",
                      "options": ["no", "yes"], "answer": "2"})  # fmt: skip
    (data / "items.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    answer = {"json": {"reasoning": "done", "action": "answer", "answer": "2"}}
    # Each item: a coarse 2000-px view (off the annotation), then a close 500-px view on it.
    replies = [_zoom(0, 0, 2000, 1500), _zoom(2000, 1000, 500, 500), answer] * 3
    script = tmp_path / "replies.jsonl"
    script.write_text("\n".join(json.dumps(r) for r in replies) + "\n")
    notes = tmp_path / "annotations"
    notes.mkdir()
    write(
        notes / "s1.geojson",
        {"type": "FeatureCollection", "features": [feature([square(2000, 1000, 1000)])]},
    )
    write(notes / "s2.geojson", "{" * 50)  # refused: a note, and no metrics for s2
    run_dir = tmp_path / "run"
    done = medagent(
        "eval", "run", "--dataset", "jsonl", "--data", str(data / "items.jsonl"),
        "--method", "giant", "--backend", "scripted", "--script", str(script),
        "--concurrency", "1", "--steps", "5",
        "--annotations", str(notes), "--out", str(run_dir),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "annotations not used: s2.geojson: refused" in done.stderr
    assert "annotation metrics for 1 of 3 items" in done.stderr
    results = load_results(run_dir / "results.jsonl")
    assert (
        "annotations" not in results["s2"].metadata and "annotations" not in results["s3"].metadata
    )
    metrics = results["s1"].metadata["annotations"]
    assert metrics["steps"] == 2 and metrics["steps_on_annotation"] == 0.5
    assert metrics["first_step_on_annotation"] == 2
    # 500 x 500 of the 1000 x 1000 annotation seen at 1 px per px; the coarse view not counted.
    assert metrics["area_viewed"] == pytest.approx(0.25)
    report = medagent("eval", "report", str(run_dir))
    assert report.returncode == 0, report.stderr
    assert "## Views against annotations" in report.stdout
    assert "| run | t | 1 | 50.0% | 100.0% | 2.0 | 25.0% |" in report.stdout
    missing = medagent(
        "eval", "run", "--dataset", "jsonl", "--data", str(data / "items.jsonl"),
        "--annotations", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2"),
    )  # fmt: skip
    assert missing.returncode == 2 and "not a folder" in missing.stderr
