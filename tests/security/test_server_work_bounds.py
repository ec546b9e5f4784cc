"""How much work two hundred clients can make the server do at once, and what it keeps.

Cases: many turns sent together run at most ``active_turns`` at a time and all finish; the
agents' image work runs on ``image_workers`` threads of its own, never more; memory freed after
a burst of concurrent image work (8 threads x 32 decodes of ~24 MB, each like a whole-slide
overview read) goes back to the system once the allocator is set up as ``medagent serve``
does (~200 MB stayed without it).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from server_attack_support import LOOPBACK, SAME_ORIGIN, SCRIPT, SLIDE

from medagent.models import ScriptedModel
from medagent.server import ServerConfig, create_app

UNLIMITED = {"client_session_burst": 1000, "client_message_burst": 1000}


class _Counter:
    def __init__(self) -> None:
        self.lock, self.now, self.most, self.names = threading.Lock(), 0, 0, set[str]()

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.names.add(threading.current_thread().name)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def _ask_together(client: TestClient, count: int) -> list[str]:
    """``count`` sessions, one message each, all sent at once; each turn's last event."""

    def one(_: int) -> str:
        reply = client.post("/api/sessions", json={"slide": SLIDE}, headers=SAME_ORIGIN)
        url = f"/api/sessions/{reply.json()['id']}/messages"
        text = client.post(url, json={"text": "what?"}, headers=SAME_ORIGIN).text
        return [line for line in text.splitlines() if line.startswith("event:")][-1]

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_turns_beyond_the_active_limit_wait_their_turn(slide_root: Path, tmp_path: Path) -> None:
    running = _Counter()

    class Slow(ScriptedModel):
        async def generate(self, messages: Sequence[Any], **kwargs: Any) -> Any:
            running.enter()
            try:
                await asyncio.sleep(0.2)
                return await super().generate(messages, **kwargs)
            finally:
                running.leave()

    config = ServerConfig(
        slide_roots=(slide_root,), data_dir=tmp_path / "data", active_turns=2, **UNLIMITED
    )
    app = create_app(config, model_factory=lambda _: Slow(SCRIPT))
    with TestClient(app, base_url=LOOPBACK) as client:
        ends = _ask_together(client, 6)
    assert ends == ["event: turn_end"] * 6
    assert running.most == 2


def test_image_work_runs_on_its_own_bounded_threads(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medagent.server._tiles import SharedSlide

    reading = _Counter()
    read = SharedSlide.read

    def counted(self: SharedSlide, *args: Any) -> Any:
        reading.enter()
        try:
            return read(self, *args)
        finally:
            reading.leave()

    monkeypatch.setattr(SharedSlide, "read", counted)
    client = make_client(image_workers=1, **UNLIMITED)
    assert _ask_together(client, 6) == ["event: turn_end"] * 6
    assert reading.most == 1
    assert reading.names and all(n.startswith("medagent-image") for n in reading.names)


BURST = """
import gc
from concurrent.futures import ThreadPoolExecutor
from PIL import Image
from medagent.server._app import return_freed_memory

return_freed_memory()

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

def work(i):
    big = Image.new("RGBA", (2000 + i, 3000))
    small = big.convert("RGB").resize((1000, 1500))
    kept = [Image.new("RGB", (300, 300)) for _ in range(3)]
    return small.size, len(kept)

before = rss()
with ThreadPoolExecutor(8) as pool:
    list(pool.map(work, range(32)))
gc.collect()
print(rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; a glibc setting")
def test_memory_freed_after_a_burst_of_image_work_goes_back() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BURST], capture_output=True, text=True, timeout=300, check=True
    )
    grown = float(done.stdout.strip())
    assert grown < 50, f"resident memory stayed {grown:.0f} MB above where it was"
