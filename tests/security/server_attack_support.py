"""What the attacks on the web app share: apps over a slide folder, a real server on a free
loopback port, reply checks (imported by name: keep this basename unique). The fixtures that
use them are in ``conftest.py``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medagent.models import ScriptedModel
from medagent.server import ServerConfig, create_app

SLIDE = "cases/tissue.tif"
LOOPBACK = "http://127.0.0.1"
ZOOM = {"name": "zoom", "arguments": {"x": 100, "y": 100, "width": 200, "height": 200}}
#: One turn (a zoom, then the answer), repeated so a session can take several.
SCRIPT: list[dict[str, Any]] = [{"tool_calls": [ZOOM]}, {"text": "An answer."}] * 10
#: Headers a browser's own page sends with its API writes.
SAME_ORIGIN = {"Origin": LOOPBACK, "Sec-Fetch-Site": "same-origin"}


def build_app(root: Path, data: Path, **config: Any) -> Any:
    """The app over ``root`` with state in ``data``, each session replaying ``SCRIPT``."""
    values: dict[str, Any] = {"slide_roots": (root,), "data_dir": data, **config}
    return create_app(ServerConfig(**values), model_factory=lambda _: ScriptedModel(SCRIPT))


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def running(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start within 60 s"
        assert thread.is_alive(), "the server stopped while starting"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def one_line(reply: Any) -> str:
    """The reply's ``detail``, checked to be one short line."""
    detail = reply.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 600, detail
    return detail
