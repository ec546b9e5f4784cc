"""Client overhead of the HTTP backend, against the stub server with zero latency.

The stub runs in its own process so the numbers are the client's: requests/s, wall ms per
request, and client CPU ms per request, at concurrency 1, 8 and 64, text-only and with one
1024-px image per request.

    python benchmarks/bench_models.py            # prints a table
    python benchmarks/bench_models.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

from medagent.models import Message, OpenAIBackend


def start_stub() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", "from medagent.testing._stub_server import main; main()"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


async def run_case(
    base_url: str, concurrency: int, requests: int, image: Image.Image | None
) -> dict[str, Any]:
    model = OpenAIBackend("stub-model", [base_url], concurrency=concurrency)
    parts: list[Any] = ["Describe the slide region."] + ([image] if image is not None else [])
    messages = [Message.user(*parts)]
    await model.generate(messages)  # warm the connection pool
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            await model.generate(messages)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await model.aclose()
    return {
        "concurrency": concurrency,
        "image": image is not None,
        "requests": requests,
        "requests_per_s": requests / wall,
        "wall_ms_per_request": 1000 * wall / requests,
        "client_cpu_ms_per_request": 1000 * cpu / requests,
        "client_cpu_util": cpu / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per case")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    process, base_url = start_stub()
    image = Image.effect_mandelbrot((1024, 1024), (-2.0, -1.5, 1.0, 1.5), 100).convert("RGB")
    results = []
    try:
        for with_image in (None, image):
            for concurrency in (1, 8, 64):
                count = args.requests // 4 if with_image is not None else args.requests
                results.append(asyncio.run(run_case(base_url, concurrency, count, with_image)))
    finally:
        process.terminate()
        process.wait()
    print(f"{'conc':>5} {'image':>6} {'req/s':>8} {'wall ms/req':>12} {'cpu ms/req':>11}")
    for r in results:
        print(
            f"{r['concurrency']:>5} {('yes' if r['image'] else 'no'):>6} "
            f"{r['requests_per_s']:>8.0f} {r['wall_ms_per_request']:>12.2f} "
            f"{r['client_cpu_ms_per_request']:>11.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
