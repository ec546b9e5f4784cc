"""The web app under load: concurrent chat sessions and Deep Zoom tiles on loopback.

Starts ``medagent serve`` (its own process, scripted backend: each turn is a zoom then an
answer, so the time measured is the server's — agent graph, checkpoints, crop encoding, SSE —
not a model's). Then:

1. ``--sessions`` (50) clients at once each open a session and send ``--turns`` (3) messages,
   reading the streamed events; every error (HTTP status, missing turn_end, error event) is
   counted. Latency of an event = time from sending the message to the event's arrival;
   reported as p50/p95 for the first event, for every event, and for turn_end.
2. Tiles: every tile of the Deep Zoom pyramid fetched once by 16 clients (cold: rendered), then
   again (warm: from the tile cache): tiles per second.
3. The server's resident memory (VmRSS) idle, after the chat (and per session: the growth over
   the sessions it holds) and after the tiles, and its peak (VmHWM), from /proc.

With ``--proxy`` the same load goes through nginx with the shipped ``deploy/nginx/medagent.conf``
in front of ``--replicas`` (2) servers sharing one throwaway Postgres (``--checkpoint``; one
replica without Postgres keeps SQLite), each with a token and ``--trusted-proxy 127.0.0.1``:
tiles cold are rendered by a replica, cached ones come from nginx's cache after the app's
access check; memory is reported per replica.

    python benchmarks/bench_server.py [--sessions 50] [--turns 3] [--slide PATH]
    python benchmarks/bench_server.py --proxy --sessions 500 --turns 3
    python benchmarks/bench_server.py --sessions 1000 --turns 1   # memory per session

Without ``--slide`` it uses the real CMU slide from ../shared/data when present, else a
generated 20,000 x 15,000 px pyramid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

ZOOM = {"name": "zoom", "arguments": {"x": 400, "y": 300, "width": 800, "height": 600}}
CMU = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides" / "cmu-1-small-region.svs"
NGINX_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "medagent.conf"
TOKEN = "bench-server-token-0123456789"


def bench_slide(
    work: Path, given: str | None = None, size: tuple[int, int] = (20_000, 15_000)
) -> Path:
    """``given``, else the real CMU slide from ../shared/data, else a generated pyramid."""
    if given:
        return Path(given).resolve()
    if CMU.exists():
        return CMU
    from medagent.testing import synthetic_tissue, write_pyramid_tiff

    path = work / "slides" / "bench.tif"
    path.parent.mkdir(parents=True)
    levels = 5 if max(size) > 10_000 else 3
    return write_pyramid_tiff(path, synthetic_tissue(*size, seed=1), mpp=0.5, levels=levels)


def start_server(
    slide: Path, work: Path, turns: int, extra: list[str], log: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``medagent serve`` over ``slide``'s folder on a free loopback port, each turn scripted
    as a zoom then an answer (``turns`` of them); returns the process and its base URL."""
    from medagent.testing import free_port

    script = work / "script.jsonl"
    lines = [json.dumps({"tool_calls": [ZOOM]}), json.dumps({"text": "An answer."})]
    script.write_text("\n".join(lines * turns))
    port = free_port()
    command = [sys.executable, "-m", "medagent", "serve", "--slides", str(slide.parent)]
    command += ["--port", str(port), "--data", str(work / "data"), "--backend", "scripted"]
    command += ["--script", str(script), *extra]
    env = {**os.environ, "MEDAGENT_SERVER_TOKEN": TOKEN} if "--trusted-proxy" in extra else None
    output = log.open("wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start within 60 s")


async def _session(
    client: httpx.AsyncClient, slide: str, turns: int, stats: dict[str, list[float]]
) -> int:
    """One user: a session and ``turns`` messages; returns the number of errors seen."""
    errors = 0
    reply = await client.post("/api/sessions", json={"slide": slide})
    if reply.status_code != 201:
        return turns
    session = reply.json()["id"]
    for turn in range(turns):
        sent = time.perf_counter()
        ended, first = False, True
        async with client.stream(
            "POST", f"/api/sessions/{session}/messages", json={"text": f"question {turn}"}
        ) as stream:
            if stream.status_code != 200:
                errors += 1
                continue
            async for line in stream.aiter_lines():
                if not line.startswith("data:"):
                    continue
                elapsed = time.perf_counter() - sent
                event = json.loads(line[5:])
                stats["event"].append(elapsed)
                if first:
                    stats["first"].append(elapsed)
                    first = False
                if event["type"] == "error":
                    errors += 1
                if event["type"] == "turn_end":
                    stats["turn_end"].append(elapsed)
                    ended = True
        errors += 0 if ended else 1
    return errors


def _headers(proxied: bool) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"} if proxied else {}


async def _chat_load(
    base: str, slide: str, sessions: int, turns: int, proxied: bool = False
) -> dict[str, Any]:
    stats: dict[str, list[float]] = {"first": [], "event": [], "turn_end": []}
    limits = httpx.Limits(max_connections=sessions + 10)
    async with httpx.AsyncClient(
        base_url=base, timeout=300, limits=limits, headers=_headers(proxied)
    ) as client:
        started = time.perf_counter()
        errors = await asyncio.gather(
            *(_session(client, slide, turns, stats) for _ in range(sessions))
        )
        wall = time.perf_counter() - started
    return {"errors": sum(errors), "wall_s": wall, **stats}


async def _tiles(
    base: str, slide: str, clients: int = 16, proxied: bool = False
) -> tuple[int, float, float]:
    async with httpx.AsyncClient(base_url=base, timeout=120, headers=_headers(proxied)) as client:
        reply = await client.post("/api/sessions", json={"slide": slide})
        if reply.status_code != 201:
            raise SystemExit(f"could not open a session for the tile sweep: {reply.text}")
        info = reply.json()
        urls = _tile_urls((await client.get(info["dzi"])).text, info["id"])
        rates = []
        for _ in ("cold", "warm"):
            queue = list(urls)
            started = time.perf_counter()
            await asyncio.gather(*(_fetch_all(client, queue) for _ in range(clients)))
            rates.append(len(urls) / (time.perf_counter() - started))
    return len(urls), rates[0], rates[1]


async def _fetch_all(client: httpx.AsyncClient, queue: list[str]) -> None:
    """One client taking tile URLs from the shared list until it is empty."""
    while queue:
        reply = await client.get(queue.pop())
        reply.raise_for_status()


def _tile_urls(dzi: str, session: str, max_tiles: int = 4000) -> list[str]:
    """Every tile of the pyramid, coarse levels first, up to ``max_tiles``."""
    import math
    import re

    found = re.search(r'TileSize="(\d+)".*Width="(\d+)" Height="(\d+)"', dzi, re.S)
    assert found is not None, dzi
    tile, width, height = (int(v) for v in found.groups())
    levels = math.ceil(math.log2(max(width, height))) + 1
    urls = []
    for level in range(levels):
        scale = 2 ** (levels - 1 - level)
        w, h = math.ceil(width / scale), math.ceil(height / scale)
        for col in range(math.ceil(w / tile)):
            for row in range(math.ceil(h / tile)):
                urls.append(f"/api/sessions/{session}/slide_files/{level}/{col}_{row}.jpeg")
    return urls[:max_tiles]


def _memory(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _pct(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _replicas(
    slide: Path, work: Path, args: argparse.Namespace, limits: list[str], stack: ExitStack
) -> tuple[list[subprocess.Popen[bytes]], str, str]:
    """The servers under test and the URL the clients use: one ``medagent serve``, or
    ``--replicas`` of them on one Postgres behind nginx. Also says what state they share."""
    if not args.proxy:
        process, base = start_server(slide, work, args.turns, limits)
        stack.callback(_stop, process)
        return [process], base, "one server, SQLite"
    from medagent.testing import NginxProxy, PostgresServer

    shared = ["--trusted-proxy", "127.0.0.1"]
    state = "SQLite (one replica)"
    if args.replicas > 1:
        url = stack.enter_context(PostgresServer()).url
        shared += ["--checkpoint", url]
        state = "one Postgres, a shared --data folder"
    processes, addresses = [], []
    for _ in range(args.replicas):
        process, direct = start_server(slide, work, args.turns, [*shared, *limits])
        stack.callback(_stop, process)
        processes.append(process)
        addresses.append(direct.removeprefix("http://"))
    proxy = stack.enter_context(NginxProxy(NGINX_CONFIG, addresses))
    return processes, proxy.url, f"{args.replicas} replicas behind nginx, {state}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--slide", default=None, help="slide file (default: the CMU slide)")
    parser.add_argument("--proxy", action="store_true", help="through nginx, several replicas")
    parser.add_argument("--replicas", type=int, default=2, help="with --proxy (default 2)")
    parser.add_argument(
        "serve_args",
        nargs="*",
        help="more `medagent serve` options, after --, e.g. -- --active-turns 64",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        slide = bench_slide(work, args.slide)
        # Every simulated user comes from 127.0.0.1: the per-client limits must admit them all.
        users = args.sessions + 1
        limits = ["--burst", str(args.turns), "--messages-per-minute", "600"]
        limits += ["--client-session-burst", str(users), "--client-sessions-per-minute", "6000"]
        limits += ["--client-max-sessions", str(users)]
        limits += ["--client-message-burst", str(users * args.turns)]
        limits += ["--client-messages-per-minute", "60000", *args.serve_args]
        processes, base, setup = _replicas(slide, work, args, limits, stack)
        idle = [_memory(process.pid)[0] for process in processes]
        chat = asyncio.run(_chat_load(base, slide.name, args.sessions, args.turns, args.proxy))
        loaded = [_memory(process.pid)[0] for process in processes]
        count, cold, warm = asyncio.run(_tiles(base, slide.name, proxied=args.proxy))
        after = [_memory(process.pid) for process in processes]
    print(f"slide: {slide.name}; {os.cpu_count()} CPUs; {setup}; medagent serve (scripted)")
    turns = args.sessions * args.turns
    print(
        f"chat: {args.sessions} sessions x {args.turns} turns = {turns} turns in "
        f"{chat['wall_s']:.1f} s ({turns / chat['wall_s']:.1f} turns/s), errors: {chat['errors']}"
    )
    for name in ("first", "event", "turn_end"):
        values = chat[name]
        print(
            f"  latency to {name + ' event' if name != 'event' else 'each event':<16} "
            f"p50 {1000 * _pct(values, 50):7.1f} ms   p95 {1000 * _pct(values, 95):7.1f} ms"
            f"   (n={len(values)})"
        )
    cached = "from nginx's cache" if args.proxy else "from the tile cache"
    print(f"tiles: {count} tiles, cold {cold:.0f} tiles/s, warm ({cached}) {warm:.0f} tiles/s")
    for number, (idle_rss, chat_rss, (rss, peak)) in enumerate(
        zip(idle, loaded, after, strict=True), 1
    ):
        # Sessions spread over the replicas: each holds about its share.
        per_session = (chat_rss - idle_rss) * 1024 / max(1, args.sessions / len(processes))
        print(
            f"server {number} memory: idle {idle_rss:.0f} MiB, after the chat {chat_rss:.0f} MiB "
            f"({per_session:.0f} KiB per session), after the tiles {rss:.0f} MiB, "
            f"peak {peak:.0f} MiB"
        )
    if chat["errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
