"""GIANT's own overhead: a 20-step navigation on the 100,000 x 80,000 benchmark slide.

The model is the scripted test double answering instantly, so what is timed is everything but
the model: rendering, guides, JPEG, artifacts, the run log, LangGraph and its SQLite
checkpoints. Compared with the raw cost of the same views (OpenSlide best-level read, resize,
JPEG encode). Also reports peak RSS and checkpoint bytes per step.

    python benchmarks/bench_giant.py [--workdir DIR]   # reuses bench_slide_read's pyramid
    python benchmarks/bench_giant.py --questions 16    # steps/s with 16 questions in flight
    python benchmarks/bench_giant.py --trace           # per-step cost of OpenTelemetry spans

``--trace`` runs the navigation with tracing off and on, alternately, and compares the median
step. Spans go over OTLP/HTTP where ``OTEL_EXPORTER_OTLP_ENDPOINT`` points (a local receiver,
e.g. ``phoenix serve``) when it is set, else to an exporter that drops them (the spans are still
built, labelled and batched: what tracing costs the agent, without a receiver's I/O).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import math
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from bench_slide_read import DEFAULT_SOURCE, build_pyramid

from medagent.agents.giant import GiantConfig, GiantNavigator, Trajectory
from medagent.imaging import Region
from medagent.models import ScriptedModel

STEPS = 20
TARGET = 1000


def plan(width: int, height: int, seed: int = 0) -> list[Region]:
    """A coarse-to-fine path: each region about a third of the previous, drifting randomly."""
    rng = random.Random(seed)
    regions, w, h, x, y = [], width // 2, height // 2, width // 4, height // 4
    for _ in range(STEPS - 1):
        regions.append(Region(x=x, y=y, width=w, height=h))
        if w > 3000:
            w, h = max(1000, w // 3), max(800, h // 3)
        x = min(max(0, x + rng.randrange(-w // 2, w)), width - w)
        y = min(max(0, y + rng.randrange(-h // 2, h)), height - h)
    return regions


def raw_view_ms(slide_path: Path, region: Region, level: int | None = None) -> float:
    """What the same view costs without medagent: read, Lanczos resize, JPEG encode.

    ``level`` None: OpenSlide's best level for the downsample (what a plain caller reads);
    else the level medagent chose (GIANT's rule reads finer, up to 1/0.85 per side).
    """
    import openslide

    osr = openslide.OpenSlide(str(slide_path))
    started = time.perf_counter()
    if level is None:
        level = osr.get_best_level_for_downsample(max(1.0, region.long_side / TARGET))
    ds = osr.level_downsamples[level]
    pixels = osr.read_region(
        (region.x, region.y),
        level,
        (math.ceil(region.width / ds), math.ceil(region.height / ds)),
    ).convert("RGB")
    scale = min(1.0, TARGET / region.long_side)
    pixels = pixels.resize(
        (max(1, round(region.width * scale)), max(1, round(region.height * scale))),
        Image.Resampling.LANCZOS,
    )
    pixels.save(io.BytesIO(), format="JPEG", quality=90)
    elapsed = (time.perf_counter() - started) * 1000
    osr.close()
    return elapsed


def in_flight(slide_path: Path, questions: int, steps: int = 6) -> dict[str, float]:
    """Steps/s the agent side sustains with ``questions`` in flight and a model that answers
    at once: how fast it could feed a server, with every core the machine gives it."""

    def script(seed: int) -> list[dict[str, Any]]:
        rng = random.Random(seed)
        lines: list[dict[str, Any]] = []
        for _ in range(steps - 1):
            w = rng.choice([2000, 4000, 8000])
            x, y = rng.randrange(0, 90_000), rng.randrange(0, 70_000)
            zoom = {"action": "zoom", "x": x, "y": y, "width": w, "height": w * 3 // 4}
            lines.append({"json": {"reasoning": "closer", **zoom}})
        return [*lines, {"json": {"reasoning": "final", "answer": "1"}}]

    async def run_all(runs: str) -> list[Any]:
        config = GiantConfig(max_steps=steps, fixed_steps=True)
        navigators = [
            GiantNavigator(ScriptedModel(script(i)), config, runs_dir=runs)
            for i in range(questions)
        ]
        return await asyncio.gather(
            *(n.arun(slide_path, f"Which organ? ({i})") for i, n in enumerate(navigators))
        )

    with tempfile.TemporaryDirectory() as tmp:
        started, cpu = time.perf_counter(), time.process_time()
        results = asyncio.run(run_all(tmp))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert all(r.status == "answered_at_limit" for r in results), [r.status for r in results]
    return {
        "questions_in_flight": questions,
        "steps_per_s": round(questions * steps / wall, 1),
        "cpu_ms_per_step": round(cpu * 1000 / (questions * steps), 1),
    }


def _drop_spans() -> Any:
    """An exporter that accepts every batch and keeps nothing (the cost of making spans)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class DropSpans(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    return DropSpans()


def navigate(
    slide_path: Path, script: list[dict[str, Any]], tracing: Any = None
) -> tuple[list[float], float, Any]:
    """One navigation: per-step milliseconds, total seconds, the result (with ``tracing``
    made current and the model spanned)."""
    from medagent.models import TracedModel

    with tempfile.TemporaryDirectory() as tmp:
        marks: list[float] = []

        def on_event(event: Any) -> None:
            if event.kind == "thinking":  # a new turn starts: the previous one is complete
                marks.append(time.perf_counter())

        model: Any = ScriptedModel(script)
        if tracing is not None:
            model = TracedModel(model)
        navigator = GiantNavigator(
            model, GiantConfig(max_steps=STEPS), runs_dir=tmp, on_event=on_event
        )
        started = time.perf_counter()
        if tracing is None:
            result = navigator.run(slide_path, "Which organ?", options=["lung", "liver"])
        else:
            with tracing.active():
                result = navigator.run(slide_path, "Which organ?", options=["lung", "liver"])
            tracing.provider.force_flush()
        total_s = time.perf_counter() - started
    return [(b - a) * 1000 for a, b in itertools.pairwise(marks)], total_s, result


def trace_overhead(slide_path: Path, script: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """Median step with tracing off and on, runs alternating so drift hits both alike."""
    import os

    from medagent._trace import Tracing

    receiver = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    tracing = Tracing.otlp() if receiver else Tracing.to(_drop_spans())
    navigate(slide_path, script)  # warm the slide's caches and the imports
    off: list[float] = []
    on: list[float] = []
    for _ in range(rounds):
        off += navigate(slide_path, script)[0]
        on += navigate(slide_path, script, tracing)[0]
    tracing.shutdown()
    median_off, median_on = statistics.median(off), statistics.median(on)
    return {
        "exporter": f"OTLP/HTTP to {receiver}" if receiver else "none (spans dropped)",
        "rounds": rounds,
        "steps_timed_each": len(off),
        "median_step_off_ms": round(median_off, 2),
        "median_step_on_ms": round(median_on, 2),
        "mean_step_off_ms": round(statistics.fmean(off), 2),
        "mean_step_on_ms": round(statistics.fmean(on), 2),
        "overhead_median_pct": round(100 * (median_on - median_off) / median_off, 2),
        "overhead_mean_pct": round(
            100 * (statistics.fmean(on) - statistics.fmean(off)) / statistics.fmean(off), 2
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(".medagent/bench"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--questions", type=int, help="instead: steps/s with this many questions in flight"
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="instead: median step with OpenTelemetry tracing off and on (see the docstring)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--trace: runs of each")
    args = parser.parse_args()
    slide_path = args.workdir / "pyramid-100k.tif"
    build_pyramid(DEFAULT_SOURCE, slide_path)
    if args.questions:
        for key, value in in_flight(slide_path, args.questions).items():
            print(f"{key:>26}: {value}")
        return

    regions = plan(100_000, 80_000)
    script: list[dict[str, Any]] = [
        {
            "json": {
                "reasoning": "looking closer at the densest area " * 4,
                "action": "zoom",
                "x": r.x,
                "y": r.y,
                "width": r.width,
                "height": r.height,
            }
        }
        for r in regions
    ]
    script.append({"json": {"reasoning": "final", "answer": "1"}})
    if args.trace:
        overhead = trace_overhead(slide_path, script, args.rounds)
        for key, value in overhead.items():
            print(f"{key:>26}: {value}")
        if args.json:
            args.json.write_text(json.dumps(overhead, indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        marks: list[float] = []

        def on_event(event: Any) -> None:
            if event.kind == "thinking":  # a new turn starts: the previous one is complete
                marks.append(time.perf_counter())

        navigator = GiantNavigator(
            ScriptedModel(script), GiantConfig(max_steps=STEPS), runs_dir=tmp, on_event=on_event
        )
        started = time.perf_counter()
        result = navigator.run(slide_path, "Which organ?", options=["lung", "liver"])
        total_s = time.perf_counter() - started
        trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
        with sqlite3.connect(result.run_dir / "checkpoints.sqlite") as db:
            stored = db.execute(
                "SELECT coalesce(sum(length(checkpoint)),0) + coalesce(sum(length(metadata)),0) "
                "FROM checkpoints"
            ).fetchone()[0]
            stored += db.execute("SELECT coalesce(sum(length(value)),0) FROM writes").fetchone()[0]
        html_mb = result.html_path.stat().st_size / 1e6 if result.html_path else 0.0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    zoom_steps = [s for s in trajectory.steps if s.kind == "zoom"]
    # Per step, start of one turn to start of the next: the model call (~0 here), the zoom
    # (render, guides, JPEG, artifact), the run log, LangGraph and its SQLite checkpoints.
    per_step = [(b - a) * 1000 for a, b in itertools.pairwise(marks)]
    render_only = [(s.tool_s + s.model_s) * 1000 for s in zoom_steps]
    raw = [raw_view_ms(slide_path, r) for r in regions]
    same_level = [
        raw_view_ms(slide_path, s.region, s.level) for s in zoom_steps if s.region is not None
    ]
    results = {
        "status": result.status,
        "steps": len(trajectory.steps),
        "run_total_s": round(total_s, 2),
        "median_step_ms": round(statistics.median(per_step), 1),
        "median_zoom_tool_ms": round(statistics.median(render_only), 1),
        "median_raw_view_ms": round(statistics.median(raw), 1),
        "ratio_to_raw_best_level": round(statistics.median(per_step) / statistics.median(raw), 2),
        "median_raw_same_level_ms": round(statistics.median(same_level), 1),
        "ratio_to_raw_same_level": round(
            statistics.median(per_step) / statistics.median(same_level), 2
        ),
        "wall_ms_per_step": round(total_s * 1000 / len(trajectory.steps), 1),
        "peak_rss_mb": round(peak_mb, 1),
        "checkpoint_bytes_per_step": round(stored / len(trajectory.steps)),
        "trajectory_html_mb": round(html_mb, 2),
    }
    for key, value in results.items():
        print(f"{key:>26}: {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
