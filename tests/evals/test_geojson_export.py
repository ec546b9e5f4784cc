"""Runs exported as QuPath GeoJSON: a real GIANT run, a real insight run and a chat folder's
tool results, checked against QuPath's feature schema, the geojson package's validation and
shapely's reading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geojson
import numpy as np
import pytest
from shapely.geometry import shape

from cli_support import medagent
from medagent.agents.base import RunManifest
from medagent.agents.giant import GiantConfig, GiantNavigator, Trajectory
from medagent.agents.insight import InsightAgent, InsightConfig
from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError, InputError
from medagent.evals import export_geojson, read_run_regions, run_geojson
from medagent.imaging import QuPathFeatureCollection, Region, mask_geometry, open_image
from medagent.models import ScriptedModel
from medagent.tools import ToolContext, segment, zoom

ZOOMS = [(1000, 800, 2000, 1500, "the pink blob top left"), (1500, 1000, 400, 300, "nuclei")]


def _zoom(x: int, y: int, w: int, h: int, why: str) -> dict[str, Any]:
    return {"json": {"reasoning": why, "action": "zoom", "x": x, "y": y, "width": w, "height": h}}


def giant_run(slide: Path, folder: Path) -> Path:
    """A GIANT run on a generated slide (scripted model): two zooms, then an answer."""
    replies = [_zoom(*z) for z in ZOOMS]
    replies.append({"json": {"reasoning": "seen", "action": "answer", "answer": "2"}})
    navigator = GiantNavigator(ScriptedModel(replies), GiantConfig(), runs_dir=folder)
    navigator.run(slide, "Tumour?", options=["no", "yes"], run_dir=folder)
    return folder


def check_qupath_file(path: Path) -> dict[str, Any]:
    """The file as QuPath's schema, the geojson package and shapely each read it."""
    text = path.read_text(encoding="utf-8")
    QuPathFeatureCollection.model_validate_json(text)
    loaded = geojson.loads(text)
    assert loaded.is_valid, loaded.errors()
    data: dict[str, Any] = json.loads(text)
    assert data["type"] == "FeatureCollection"
    for feature in data["features"]:
        assert feature["type"] == "Feature"
        assert shape(feature["geometry"]).is_valid
        props = feature["properties"]
        assert props["objectType"] == "annotation" and props["isLocked"] is True
        assert set(props["classification"]) == {"name", "color"}
        assert all(isinstance(v, int | float) for v in props["measurements"].values())
    return data


def test_giant_run_views_become_level0_rectangles(pyramid_tiff: Path, tmp_path: Path) -> None:
    run = giant_run(pyramid_tiff, tmp_path / "run")
    [written] = export_geojson(run)
    assert written == run / "regions.geojson"
    data = check_qupath_file(written)
    trajectory = Trajectory.model_validate_json((run / "trajectory.json").read_text())
    steps = [s for s in trajectory.steps if s.kind == "zoom"]
    assert len(data["features"]) == len(steps) == 2
    for feature, step, (x, y, w, h, why) in zip(data["features"], steps, ZOOMS, strict=True):
        assert shape(feature["geometry"]).bounds == (x, y, x + w, y + h)
        props = feature["properties"]
        assert props["name"] == f"step {step.step} zoom: {why}"
        assert props["metadata"]["reasoning"] == why
        numbers = props["measurements"]
        assert numbers["step"] == step.step and numbers["level"] == step.level
        assert step.artifact is not None
        assert numbers["downsample"] == pytest.approx(w / step.artifact.width, rel=1e-3)
        assert props["classification"]["name"] == "medagent view"
    # The 2000-px view was shrunk more than the 400-px one.
    first, second = (f["properties"]["measurements"]["downsample"] for f in data["features"])
    assert first > second


def test_cli_exports_an_eval_run_one_file_per_item(pyramid_tiff: Path, tmp_path: Path) -> None:
    run = tmp_path / "eval"
    (run / "results.jsonl").parent.mkdir()
    (run / "results.jsonl").write_text("")
    for name in ("a", "b"):
        giant_run(pyramid_tiff, run / "items" / name)
    (run / "items" / "vqa-only").mkdir()  # an image item with no regions: left out
    done = medagent("export", "geojson", str(run), "--out", str(tmp_path / "qupath"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "qupath").iterdir()) == ["a.geojson", "b.geojson"]
    for path in (tmp_path / "qupath").iterdir():
        assert len(check_qupath_file(path)["features"]) == 2
    with pytest.raises(ConfigError, match="give --out a folder"):
        export_geojson(run, tmp_path / "one.geojson")


def test_not_a_run_folder_is_one_line(tmp_path: Path) -> None:
    done = medagent("export", "geojson", str(tmp_path))
    assert done.returncode == 2
    assert "is not a run folder" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "trajectory.json").write_text('{"run_id": ')
    with pytest.raises(InputError, match="cannot be read"):
        read_run_regions(tmp_path)


def test_chat_folder_masks_become_polygons_with_measurements(
    pyramid_tiff: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "chat"
    store = ArtifactStore(folder / "artifacts")
    RunManifest(
        agent="chat", method="chat", model="m", backend="b", inputs={"slide_path": "pyramid.tif"}
    ).write(folder)
    with open_image(pyramid_tiff) as slide:
        ctx = ToolContext(artifacts=store, slide=slide)
        zoom(ctx, x=500, y=500, width=1000, height=800)
        found = segment(ctx, method="tissue", region=Region(x=0, y=0, width=4000, height=3000))
    [export] = run_geojson(folder)
    kinds = [
        f.properties.classification.name
        for f in export.collection.features
        if f.properties.classification
    ]
    assert "medagent view" in kinds and "medagent mask" in kinds
    masks = [f for f in export.collection.features if f.properties.metadata.get("tool") == "mask"]
    [mask] = masks
    outline = mask.shape()
    # The polygons cover what the mask covers, in level-0 pixels (within the simplification).
    tissue_px = found.area_fraction * 4000 * 3000
    assert outline.area == pytest.approx(tissue_px, rel=0.05)
    assert mask.properties.measurements["area px²"] == pytest.approx(outline.area, rel=1e-3)
    minx, miny, maxx, maxy = outline.bounds
    assert 0 <= minx < maxx <= 4000 and 0 <= miny < maxy <= 3000
    path = export_geojson(folder)[0]
    check_qupath_file(path)


def test_mask_geometry_keeps_holes_and_scales_to_level0() -> None:
    mask = np.zeros((50, 100), dtype=bool)
    mask[10:30, 10:30] = True
    mask[15:25, 15:25] = False  # a hole
    mask[5:45, 60:90] = True
    geometry = mask_geometry(mask, Region(x=1000, y=2000, width=400, height=200))
    assert geometry is not None and geometry.type == "MultiPolygon"
    found = shape(geometry.model_dump())
    # Scale 4 in both axes; contours run half a pixel inside pixel edges (corners cut).
    ring, block = 20 * 20 - 10 * 10, 40 * 30
    assert found.area == pytest.approx((ring + block) * 16, rel=0.06)
    polygons = sorted(found.geoms, key=lambda p: p.bounds[0])
    assert len(polygons[0].interiors) == 1 and not polygons[1].interiors
    assert polygons[1].bounds == pytest.approx((1240, 2020, 1360, 2180), abs=4)
    assert mask_geometry(np.zeros((5, 5), dtype=bool), Region(x=0, y=0, width=5, height=5)) is None


def _insight_tool(action: str, **arguments: Any) -> dict[str, Any]:
    return {"json": {"reasoning": f"use {action}", "action": action, **arguments}}


FINDING = {"x": 100, "y": 200, "width": 600, "height": 500}
VIEWED = {"x": 1000, "y": 800, "width": 1200, "height": 900}
SEGMENTED = {"x": 0, "y": 0, "width": 2000, "height": 1500}


def test_insight_run_finding_evidence_and_mask_become_features(
    pyramid_tiff: Path, tmp_path: Path
) -> None:
    """A real insight run (scripted model): the root finder's finding, a zoom and a tissue
    segmentation, exported with the mask as polygons measuring what the tool measured."""
    finding = {"description": "a dense cellular area", "image": 1, "region": FINDING}
    answer = {"reasoning": "seen", "action": "answer", "answer": "a", "insight": "Dense."}
    model = ScriptedModel(
        [
            {"json": {"findings": [finding], "questions": ["Where is the tissue?"]}},
            _insight_tool("zoom", image=1, region=VIEWED),
            _insight_tool("segment", image=1, method="tissue", region=SEGMENTED),
            {"json": {**answer, "confidence": 70}},
            {"json": {"summary": "Dense tissue.", "ranking": [1], "duplicates": []}},
        ]
    )
    report = InsightAgent(model, InsightConfig(roots=1, depth=1)).run(
        pyramid_tiff, "Characterize the tissue.", run_dir=tmp_path / "run"
    )
    assert report.status == "completed", report.error

    [written] = export_geojson(tmp_path / "run")

    assert written == tmp_path / "run" / "regions.geojson"
    data = check_qupath_file(written)
    features = data["features"]
    kinds = [f["properties"]["classification"]["name"] for f in features]
    assert kinds == ["medagent finding", "medagent view", "medagent evidence", "medagent mask"]
    assert {f["properties"]["metadata"]["agent"] for f in features} == {"insight"}
    finding_box, view, evidence, mask = (shape(f["geometry"]) for f in features)

    def bounds(region: dict[str, int]) -> tuple[float, ...]:
        x, y, w, h = region["x"], region["y"], region["width"], region["height"]
        return (x, y, x + w, y + h)

    assert finding_box.bounds == bounds(FINDING)
    assert view.bounds == bounds(VIEWED)
    assert evidence.bounds == bounds(SEGMENTED)
    assert features[0]["properties"]["name"] == "step 1 finding: a dense cellular area"
    # The mask lies inside the segmented region and covers what the tool measured.
    assert evidence.covers(mask) and mask.area > 0
    numbers = features[3]["properties"]["measurements"]
    step = report.questions[0].steps[1]
    assert step.tool == "segment" and step.evidence is not None
    measured = {m.name: m.value for m in step.evidence.measurements}
    assert numbers["area px²"] == pytest.approx(mask.area, rel=1e-3)
    assert numbers["area µm²"] == pytest.approx(measured["total_area"], rel=0.02)
    # The tool's measurements, named with their units as QuPath shows them.
    assert numbers["tissue_count"] == measured["tissue_count"] == 1
    assert numbers["area_fraction (%)"] == pytest.approx(measured["area_fraction"])
