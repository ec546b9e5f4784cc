"""Runs as QuPath annotations: every region an agent used, on the slide, for a pathologist.

``run_geojson`` turns what ``read_run_regions`` finds into QuPath GeoJSON: one locked
annotation per region viewed (named by step and reasoning, measured by level and
downsample), one per tool's evidence region and root finding, and each mask a tool wrote as
simplified polygons carrying the tool's measurements. ``export_geojson`` writes the files:
QuPath opens them on the slide with File → Import objects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError, InputError
from medagent.evals._regions import RunRegions, ViewedRegion, read_run_regions
from medagent.imaging import (
    QuPathClass,
    QuPathFeature,
    QuPathFeatureCollection,
    QuPathProperties,
    mask_geometry,
    region_geometry,
    write_feature_collection,
)

__all__ = ["RunGeoJSON", "export_geojson", "run_geojson"]

#: Classes the exported objects get in QuPath (name, colour), by what the region was.
_CLASSES = {
    "view": QuPathClass(name="medagent view", color=(0, 200, 255)),
    "evidence": QuPathClass(name="medagent evidence", color=(255, 165, 0)),
    "finding": QuPathClass(name="medagent finding", color=(255, 0, 255)),
    "mask": QuPathClass(name="medagent mask", color=(0, 220, 0)),
}
#: Longest reasoning kept in a name (the whole text, up to _REASONING, is in metadata).
_NAME_CHARS = 80
_REASONING = 2000


class RunGeoJSON(BaseModel):
    """One run's regions on one slide, as a QuPath feature collection."""

    model_config = ConfigDict(frozen=True)

    name: str
    slide: str
    collection: QuPathFeatureCollection


def _excerpt(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _numbers(region: ViewedRegion) -> dict[str, float]:
    numbers: dict[str, float] = {
        "step": region.step,
        "x": region.region.x,
        "y": region.region.y,
        "width px": region.region.width,
        "height px": region.region.height,
    }
    if region.level is not None:
        numbers["level"] = region.level
    if region.downsample is not None:
        numbers["downsample"] = round(region.downsample, 4)
    if region.mpp is not None:
        numbers["µm per px"] = round(region.mpp, 6)
    return numbers | region.measurements


def _feature(run: RunRegions, region: ViewedRegion, store: ArtifactStore) -> QuPathFeature | None:
    numbers = _numbers(region)
    if region.mask is not None:
        mask = np.asarray(store.get(store.resolve(region.mask)).convert("L")) > 127
        geometry = mask_geometry(mask, region.region)
        if geometry is None:
            return None
        shape = QuPathFeature(geometry=geometry).shape()
        numbers["objects"] = len(getattr(shape, "geoms", [shape]))
        numbers["area px²"] = round(shape.area, 1)
        if run.slide_mpp is not None:
            numbers["area µm²"] = round(shape.area * run.slide_mpp**2, 1)
    else:
        geometry = region_geometry(region.region)
    what = f"step {region.step} {region.tool}"
    name = f"{what}: {_excerpt(region.reasoning, _NAME_CHARS)}" if region.reasoning else what
    metadata = {"tool": region.tool, "run": run.run_dir.name, "agent": run.agent}
    if region.reasoning:
        metadata["reasoning"] = _excerpt(region.reasoning, _REASONING)
    return QuPathFeature(
        geometry=geometry,
        properties=QuPathProperties(
            name=name,
            classification=_CLASSES[region.kind],
            is_locked=True,
            measurements=numbers,
            metadata=metadata,
        ),
    )


def run_geojson(run: str | Path) -> list[RunGeoJSON]:
    """The regions of every run in the folder ``run`` (GIANT, insight, chat, an eval item or a
    whole eval run: see ``read_run_regions``) as QuPath GeoJSON, in level-0 pixels."""
    exports = []
    for found in read_run_regions(run):
        store = ArtifactStore(found.run_dir / "artifacts")
        features = [f for r in found.regions if (f := _feature(found, r, store)) is not None]
        exports.append(
            RunGeoJSON(
                name=found.name,
                slide=found.slide,
                collection=QuPathFeatureCollection(features=features),
            )
        )
    return exports


def export_geojson(run: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write the regions of ``run`` as QuPath GeoJSON; the files written.

    One run on one slide goes to ``out`` (default ``RUN/regions.geojson``). A folder holding
    several (an eval run, an insight run over several images) writes ``NAME.geojson`` per run
    into the folder ``out`` (default ``RUN/geojson/``).
    """
    folder = Path(run)
    exports = run_geojson(folder)
    if not exports:
        raise InputError(
            f"{folder} holds no run with regions of a slide (image-only methods such as vqa "
            "record none)",
            path=str(folder),
        )
    if len(exports) == 1 and not (out is not None and Path(out).is_dir()):
        target = Path(out) if out is not None else folder / "regions.geojson"
        return [write_feature_collection(target, exports[0].collection)]
    into = Path(out) if out is not None else folder / "geojson"
    if into.suffix.lower() in (".geojson", ".json"):
        raise ConfigError(
            f"{folder} holds {len(exports)} runs, one file each: give --out a folder, not "
            f"{into.name}"
        )
    return [write_feature_collection(into / f"{e.name}.geojson", e.collection) for e in exports]
