"""The web app under a bounded abuse run: memory and health-check latency, phase by phase.

Starts ``medagent serve`` (its own process, loopback, scripted backend, uploads on) and runs,
one phase after another:

1. ``bodies``: 100 MB bodies to a JSON route and to the upload route, declared
   (Content-Length) and chunked, 4 at a time;
2. ``bombs``: eight ~100 KB PNGs declaring 9400 x 9400 px uploaded at once;
3. ``sse``: 200 concurrent chat turns streamed as server-sent events, each from its own
   loopback address (127.0.0.x) so the per-client limits do not apply;
4. ``flood``: 300 new sessions at once from one address (the per-client limit's 429s).

All along, a thread polls ``/healthz`` every 50 ms and reads the server's resident memory
(VmRSS in /proc/PID/status). Prints a table: per phase, RSS at its end and its peak, the
maximum and 95th percentile health-check latency, and the replies by status. Targets: RSS
after the run within 20 % of the warm baseline, ``/healthz`` under 200 ms throughout.

    python benchmarks/bench_abuse.py [--sse 200] [--flood 300] [--body-mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import httpx
from bench_server import bench_slide, start_server

MIB = 1024 * 1024


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Phase:
    name: str
    started: float = field(default_factory=time.monotonic)
    ended: float = float("inf")
    latencies: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    replies: Counter[str] = field(default_factory=Counter)

    @property
    def seconds(self) -> float:
        return self.ended - self.started if self.ended != float("inf") else 0.0


def _poll(base: str, pid: int, stop: EventType, out: Connection) -> None:
    """In its own process, so the load's client work cannot delay it: ``/healthz`` every
    50 ms and the server's RSS, sent back as (time, latency s or inf, RSS MiB)."""
    samples: list[tuple[float, float, float]] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ok = client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed = time.perf_counter() - started
            samples.append((time.monotonic(), elapsed if ok else float("inf"), _rss_mib(pid)))
            stop.wait(max(0.0, 0.05 - elapsed))
    out.send(samples)


class Monitor:
    """Phases as time spans; the polling process's samples are filed under them at the end."""

    def __init__(self, base: str, pid: int) -> None:
        self.phases: list[Phase] = []
        self._stop = multiprocessing.Event()
        self._receive, send = multiprocessing.Pipe(duplex=False)
        self._process = multiprocessing.Process(
            target=_poll, args=(base, pid, self._stop, send), daemon=True
        )

    def begin(self, name: str) -> Phase:
        if self.phases:
            self.phases[-1].ended = time.monotonic()
        self.phases.append(Phase(name))
        return self.phases[-1]

    def start(self) -> None:
        self._process.start()

    def stop(self) -> None:
        self.phases[-1].ended = time.monotonic()
        self._stop.set()
        samples: list[tuple[float, float, float]] = self._receive.recv()
        self._process.join(timeout=10)
        for when, latency, rss in samples:
            for phase in self.phases:
                if phase.started <= when < phase.ended:
                    phase.latencies.append(latency)
                    phase.rss.append(rss)


async def _repeat(chunk: bytes, total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield chunk
        sent += len(chunk)


async def _oversize(client: httpx.AsyncClient, url: str, total: int, declared: bool) -> str:
    """One oversize body; the reply's status, or how the connection ended."""
    chunk = b"1," * (MIB // 2)
    headers = {"Content-Type": "application/json"}
    if declared:
        headers["Content-Length"] = str(total)
    try:
        reply = await client.post(url, content=_repeat(chunk, total), headers=headers)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return str(reply.status_code)


async def _bounded(tasks: list[Callable[[], Awaitable[str]]], at_once: int) -> list[str]:
    gate = asyncio.Semaphore(at_once)

    async def run(task: Callable[[], Awaitable[str]]) -> str:
        async with gate:
            return await task()

    return list(await asyncio.gather(*(run(task) for task in tasks)))


async def _bodies(base: str, total: int) -> list[str]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        tasks: list[Callable[[], Awaitable[str]]] = []
        for url in ("/api/sessions", "/api/uploads?filename=big.tif"):
            for declared in (True, False):
                for _ in range(3):
                    tasks.append(functools.partial(_oversize, client, url, total, declared))
        return await _bounded(tasks, 4)


def _png_bomb() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (9400, 9400)).save(buffer, format="PNG")
    return buffer.getvalue()


async def _bombs(base: str, bomb: bytes, count: int = 8) -> list[str]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def upload(number: int) -> str:
            url = f"/api/uploads?filename=bomb{number}.png"
            return str((await client.post(url, content=bomb)).status_code)

        return list(await asyncio.gather(*(upload(n) for n in range(count))))


async def _turn(base: str, slide: str, address: str) -> str:
    """One user from ``address``: a session and one streamed turn; "200" when it ended well."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=base, timeout=300, transport=transport) as client:
        reply = await client.post("/api/sessions", json={"slide": slide})
        if reply.status_code != 201:
            return f"session {reply.status_code}"
        url = f"/api/sessions/{reply.json()['id']}/messages"
        async with client.stream("POST", url, json={"text": "What is it?"}) as stream:
            if stream.status_code != 200:
                return str(stream.status_code)
            ended = False
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    kind = json.loads(line[5:])["type"]
                    if kind == "error":
                        return "error event"
                    ended = ended or kind == "turn_end"
    return "200" if ended else "no turn_end"


async def _sse(base: str, slide: str, count: int) -> list[str]:
    addresses = [f"127.0.{2 + n // 250}.{1 + n % 250}" for n in range(count)]
    return list(await asyncio.gather(*(_turn(base, slide, a) for a in addresses)))


async def _flood(base: str, slide: str, count: int) -> list[str]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def new() -> str:
            return str((await client.post("/api/sessions", json={"slide": slide})).status_code)

        return list(await asyncio.gather(*(new() for _ in range(count))))


def _settle(pid: int, seconds: float = 6.0) -> float:
    """RSS once it stops falling (or after ``seconds``)."""
    last = _rss_mib(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _rss_mib(pid)
        if abs(now - last) < 0.5:
            return now
        last = now
    return last


def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def _run_phase(
    monitor: Monitor, name: str, work: Callable[[], Coroutine[object, object, list[str]]]
) -> Phase:
    phase = monitor.begin(name)
    phase.replies.update(asyncio.run(work()))
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sse", type=int, default=200, help="concurrent streamed turns")
    parser.add_argument("--flood", type=int, default=300, help="sessions opened at once")
    parser.add_argument("--body-mb", type=int, default=100, help="size of each oversize body")
    args = parser.parse_args()
    bomb = _png_bomb()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        slide = bench_slide(work, size=(4000, 3000))
        extra = ["--uploads", str(work / "uploads"), "--max-upload-mb", "64"]
        process, base = start_server(slide, work, 3, extra, log=work / "server.log")
        monitor = Monitor(base, process.pid)
        try:
            start_rss = _rss_mib(process.pid)
            monitor.start()
            # Warm-up: the first turn loads the agent graph and encoders; measure from there.
            warm = monitor.begin("baseline")
            warm.replies.update(asyncio.run(_sse(base, slide.name, 1)))
            baseline = _settle(process.pid)
            _run_phase(monitor, "bodies", lambda: _bodies(base, args.body_mb * MIB))
            _run_phase(monitor, "bombs", lambda: _bombs(base, bomb))
            _run_phase(monitor, "sse", lambda: _sse(base, slide.name, args.sse))
            _run_phase(monitor, "flood", lambda: _flood(base, slide.name, args.flood))
            monitor.begin("after")
            after = _settle(process.pid)
            time.sleep(0.5)
            monitor.stop()
        finally:
            process.terminate()
            process.wait(timeout=30)
    _report(monitor.phases, start_rss, baseline, after, bomb)


def _cell(value: float, spec: str) -> str:
    return f"{'-' if value != value else format(value, spec):>8}"  # NaN: no sample then


def _report(
    phases: list[Phase], start_rss: float, baseline: float, after: float, bomb: bytes
) -> None:
    print(f"server: medagent serve (scripted); {os.cpu_count()} CPUs; bomb PNG {len(bomb):,} B")
    print(f"RSS at start {start_rss:.0f} MiB; warm baseline (after one turn) {baseline:.0f} MiB")
    head = f"{'phase':<9} {'s':>5} {'RSS end':>8} {'RSS max':>8} {'hz max':>8} {'hz p95':>8}"
    print(head + "  replies (status x count)")
    worst = 0.0
    for phase in phases:
        rss_end = phase.rss[-1] if phase.rss else float("nan")
        rss_max = max(phase.rss) if phase.rss else float("nan")
        lat = [1000 * v for v in phase.latencies]
        top = max(lat) if lat else float("nan")
        worst = max(worst, top) if lat else worst
        replies = ", ".join(f"{k} x{v}" for k, v in sorted(phase.replies.items()))
        print(
            f"{phase.name:<9} {phase.seconds:5.1f} {_cell(rss_end, '.0f')} {_cell(rss_max, '.0f')} "
            f"{_cell(top, '.1f')} {_cell(_p95(lat), '.1f')}  {replies or '-'}"
        )
    within = abs(after - baseline) <= 0.2 * baseline
    print(
        f"memory after the run: {after:.0f} MiB, {100 * (after - baseline) / baseline:+.0f} % "
        f"of the warm baseline ({'within' if within else 'NOT within'} 20 %)"
    )
    print(f"/healthz worst {worst:.1f} ms ({'under' if worst < 200 else 'NOT under'} 200 ms)")
    if not within or worst >= 200:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
