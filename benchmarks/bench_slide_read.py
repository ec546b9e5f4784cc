"""Slide reading at gigapixel scale: medagent's renderer against raw OpenSlide reads.

Builds (once, then reuses) a 100,000 x 80,000 JPEG pyramid by tiling the real CMU-1 slide with
pyvips, then measures in one run:

- the overview (1000 px);
- zooms to 1000 px of 1k, 5k, 20k and whole-slide regions, each against OpenSlide's raw
  best-level ``read_region`` + Lanczos resize of the same region (ratio, target <= 1.3);
- the 5k region against a naive level-0 read + resize (ratio);
- peak RSS added by a whole-slide zoom, in a fresh process (target <= 300 MB).

    python benchmarks/bench_slide_read.py [--source SVS] [--workdir DIR] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from medagent.imaging import Region, Renderer, RenderPolicy, open_image

SIZE = (100_000, 80_000)
TARGET = 1000
DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared/data/slides/cmu-1-small-region.svs"


def build_pyramid(source: Path, out: Path) -> float:
    """Tile ``source`` into a SIZE JPEG pyramid with pyvips; seconds taken (0 if it existed)."""
    if out.exists():
        return 0.0
    import pyvips

    started = time.perf_counter()
    image = pyvips.Image.new_from_file(str(source))
    if image.bands == 4:
        image = image.flatten(background=[255, 255, 255])
    across, down = math.ceil(SIZE[0] / image.width), math.ceil(SIZE[1] / image.height)
    big = image.replicate(across, down).crop(0, 0, *SIZE)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.tif")
    big.tiffsave(
        str(partial),
        tile=True,
        tile_width=256,
        tile_height=256,
        pyramid=True,
        compression="jpeg",
        Q=85,
        bigtiff=True,
    )
    partial.replace(out)
    return time.perf_counter() - started


def raw_best_level(osr: object, region: Region) -> Image.Image:
    """What a caller of OpenSlide would write: best level for the downsample, read, resize."""
    import openslide

    assert isinstance(osr, openslide.OpenSlide)
    downsample = region.long_side / TARGET
    level = osr.get_best_level_for_downsample(max(1.0, downsample))
    ds = osr.level_downsamples[level]
    size = (math.ceil(region.width / ds), math.ceil(region.height / ds))
    pixels = osr.read_region((region.x, region.y), level, size).convert("RGB")
    scale = TARGET / region.long_side
    out = (max(1, round(region.width * scale)), max(1, round(region.height * scale)))
    return pixels.resize(out, Image.Resampling.LANCZOS)


def naive_level0(osr: object, region: Region) -> Image.Image:
    import openslide

    assert isinstance(osr, openslide.OpenSlide)
    pixels = osr.read_region((region.x, region.y), 0, (region.width, region.height))
    return pixels.convert("RGB").resize((TARGET, round(TARGET * region.height / region.width)))


def timed(function: Callable[[Region], object], regions: list[Region]) -> float:
    """Median milliseconds over ``regions`` (distinct places, so no cached views are reused)."""
    samples = []
    for region in regions:
        started = time.perf_counter()
        function(region)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def regions_of(side: int, count: int, rng: random.Random) -> list[Region]:
    width, height = min(side, SIZE[0]), min(round(side * 0.8), SIZE[1])
    return [
        Region(
            x=rng.randrange(0, SIZE[0] - width + 1),
            y=rng.randrange(0, SIZE[1] - height + 1),
            width=width,
            height=height,
        )
        for _ in range(count)
    ]


def memory_probe(path: Path) -> None:
    """Run in a fresh process: RSS after opening, peak RSS after a whole-slide zoom (MB)."""

    def status(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        return float("nan")

    slide = open_image(path)
    before = status("VmRSS")
    Renderer(slide).render(Region.whole(slide.dimensions), TARGET)
    print(json.dumps({"rss_before_mb": before, "peak_mb": status("VmHWM")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--workdir", type=Path, default=Path(".medagent/bench"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--memory-probe", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return

    import openslide

    path = args.workdir / "pyramid-100k.tif"
    build_s = build_pyramid(args.source, path)
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # page cache
    slide = open_image(path)
    osr = openslide.OpenSlide(str(path))
    renderer = Renderer(slide, RenderPolicy(long_side=TARGET, cache_entries=0))
    rng = random.Random(0)
    results: dict[str, object] = {
        "slide": f"{slide.dimensions.width}x{slide.dimensions.height}",
        "levels": slide.level_count,
        "build_s": round(build_s, 1),
    }
    started = time.perf_counter()
    renderer.overview()
    results["overview_ms"] = round((time.perf_counter() - started) * 1000, 1)
    rows = []
    for label, side in (("1k", 1000), ("5k", 5000), ("20k", 20_000), ("whole", SIZE[0])):
        regions = regions_of(side, args.repeats if side < SIZE[0] else 3, rng)
        ours = timed(lambda r: renderer.render(r, TARGET), regions)
        raw = timed(lambda r: raw_best_level(osr, r), regions_of(side, len(regions), rng))
        row = {
            "region": label,
            "medagent_ms": round(ours, 1),
            "raw_best_level_ms": round(raw, 1),
            "ratio": round(ours / raw, 2),
            "level": renderer.render(regions[0], TARGET).level,
        }
        if label == "5k":
            naive = timed(lambda r: naive_level0(osr, r), regions_of(side, 3, rng))
            row["naive_level0_ms"] = round(naive, 1)
            row["naive_over_medagent"] = round(naive / ours, 1)
        rows.append(row)
    results["zoom"] = rows
    probe = subprocess.run(
        [sys.executable, __file__, "--memory-probe", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    memory = json.loads(probe.stdout)
    results["whole_slide_added_rss_mb"] = round(memory["peak_mb"] - memory["rss_before_mb"], 1)

    print(
        f"slide {results['slide']}, {results['levels']} levels; overview "
        f"{results['overview_ms']} ms; pyramid built in {results['build_s']} s (0 = reused)"
    )
    print(f"{'region':>7} {'level':>5} {'medagent ms':>12} {'raw ms':>8} {'ratio':>6}")
    for row in rows:
        print(
            f"{row['region']:>7} {row['level']:>5} {row['medagent_ms']:>12} "
            f"{row['raw_best_level_ms']:>8} {row['ratio']:>6}"
        )
    five = next(r for r in rows if r["region"] == "5k")
    print(
        f"naive level-0 read of a 5k region: {five['naive_level0_ms']} ms "
        f"({five['naive_over_medagent']}x medagent)"
    )
    print(f"whole-slide zoom added RSS: {results['whole_slide_added_rss_mb']} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
