"""GIANT over a DICOMweb archive against the same slide read from a local folder.

A 20,000 x 15,000 synthetic slide (mpp 0.25, 5 levels, 256-px JPEG tiles) is written as a DICOM
WSI series, uploaded to a throwaway Orthanc (``medagent.testing.OrthancServer``, loopback), and
navigated twice with the same scripted path (overview, 8 zooms coarse to fine, answer): once
from the local files, once over DICOMweb. Per step: the frames fetched, the frames the view
covers at the level read, and the step time. Aim: a zoom fetches only the frames it covers.

    python benchmarks/bench_dicomweb.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pydicom

from medagent.agents.giant import GiantConfig, GiantNavigator
from medagent.imaging import Region, Slide, choose_level, open_image
from medagent.models import ScriptedModel
from medagent.testing import OrthancServer, synthetic_tissue, write_dicom_wsi, write_pyramid_tiff

WIDTH, HEIGHT, TILE, LONG_SIDE = 20_000, 15_000, 256, 1000
ZOOMS = [
    Region(x=4000, y=3000, width=10000, height=7500),
    Region(x=6000, y=4000, width=5000, height=3750),
    Region(x=7000, y=5000, width=2500, height=1875),
    Region(x=7500, y=5500, width=1200, height=900),
    Region(x=12000, y=9000, width=4000, height=3000),
    Region(x=13000, y=10000, width=1600, height=1200),
    Region(x=13400, y=10300, width=800, height=600),
    Region(x=2000, y=1000, width=3000, height=2250),
]


def covered_frames(slide: Slide, region: Region | None) -> int:
    """Tiles of the level a view of ``region`` (or the whole slide) reads, as GIANT renders."""
    area = region or Region(x=0, y=0, width=slide.dimensions.width, height=slide.dimensions.height)
    level = choose_level(slide, area, LONG_SIDE)
    d = slide.level_downsamples[level]
    x0, y0 = int(area.x / d) // TILE, int(area.y / d) // TILE
    x1 = math.ceil((area.x + area.width) / d / TILE)
    y1 = math.ceil((area.y + area.height) / d / TILE)
    return (x1 - x0) * (y1 - y0)


def script() -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [
        {"json": {"reasoning": "closer", "action": "zoom", **r.model_dump()}} for r in ZOOMS
    ]
    return [*steps, {"json": {"reasoning": "seen", "action": "answer", "answer": "1"}}]


def navigate(slide: Slide, workdir: Path) -> list[tuple[str, float, int]]:
    """(step, seconds, frames fetched) per event, timed between events."""
    counter = getattr(slide, "frames", None)
    rows: list[tuple[str, float, int]] = []
    last_time, last_frames = time.perf_counter(), counter.frames if counter else 0

    def on_event(event: Any) -> None:
        nonlocal last_time, last_frames
        if event.kind not in ("overview", "zoom"):
            return
        now, fetched = time.perf_counter(), int(counter.frames) if counter else 0
        rows.append((f"{event.kind} {event.step}", now - last_time, fetched - last_frames))
        last_time, last_frames = now, fetched

    navigator = GiantNavigator(
        ScriptedModel(script()),
        GiantConfig(max_steps=len(ZOOMS) + 1, long_side=LONG_SIDE),
        runs_dir=workdir / "runs",
        on_event=on_event,
    )
    result = navigator.run(slide, "Is there tumour?", options=["yes", "no"])
    assert result.status.startswith("answered"), (result.status, result.error)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    workdir.mkdir(parents=True, exist_ok=True)
    series = workdir / "series"
    started = time.perf_counter()
    if not (series / "level-0.dcm").exists():
        source = write_pyramid_tiff(
            workdir / "source.tif", synthetic_tissue(WIDTH, HEIGHT, seed=7), mpp=0.25, levels=5
        )
        write_dicom_wsi(source, series, tile=TILE, lossless=False)
    print(f"slide written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    header = pydicom.dcmread(series / "level-0.dcm", stop_before_pixels=True)
    with OrthancServer() as archive:
        archive.upload(sorted(series.glob("*.dcm")))
        ref = (
            f"dicomweb+{archive.dicomweb_url}/studies/{header.StudyInstanceUID}"
            f"/series/{header.SeriesInstanceUID}"
        )
        opened = time.perf_counter()
        remote = open_image(ref)
        open_s = time.perf_counter() - opened
        probe = remote.frames.frames  # type: ignore[attr-defined]
        with open_image(series) as local:
            local_rows = navigate(local, workdir / "local")
            covered = [covered_frames(local, None), *(covered_frames(local, r) for r in ZOOMS)]
        remote_rows = navigate(remote, workdir / "remote")
        total = remote.frames  # type: ignore[attr-defined]
        remote.close()
    print(f"DICOMweb open: {open_s * 1000:.0f} ms ({probe} frames fetched to probe and check)")
    print("\n| step | level-0 region | frames covered | frames fetched | local s | DICOMweb s |")
    print("|---|---|---:|---:|---:|---:|")
    regions = ["whole slide", *(f"{r.width} x {r.height}" for r in ZOOMS)]
    for (name, local_s, _), (_, remote_s, fetched), region, cover in zip(
        local_rows, remote_rows, regions, covered, strict=True
    ):
        print(f"| {name} | {region} | {cover} | {fetched} | {local_s:.3f} | {remote_s:.3f} |")
    print(
        f"\nin all: {total.frames} frames in {total.requests} requests, "
        f"{total.bytes / 1e6:.1f} MB; level 0 alone has "
        f"{math.ceil(WIDTH / TILE) * math.ceil(HEIGHT / TILE)} frames"
    )


if __name__ == "__main__":
    main()
