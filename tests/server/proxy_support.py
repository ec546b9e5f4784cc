"""The web app behind the shipped nginx config: replicas under uvicorn in threads, on loopback.

Imported by name (keep this basename unique). Skips, saying why, when nginx is not installed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from medagent.testing import NginxProxy

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "medagent.conf"
TOKEN = "proxy-test-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def require_nginx() -> None:
    if NginxProxy.find_binary() is None:
        pytest.skip("proxy test: nginx is not installed (apt-get install nginx; make system-deps)")


@contextmanager
def replica(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port, in a thread, as ``medagent serve`` runs
    it (proxy headers not taken from uvicorn); yields ``host:port``."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", proxy_headers=False)
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    try:
        while not runner.started:
            assert thread.is_alive(), "the replica stopped while starting"
            assert time.monotonic() < deadline, "the replica did not start within 60 s"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        runner.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def behind_nginx(apps: Sequence[Any]) -> Iterator[tuple[str, list[str]]]:
    """Each app as a replica behind nginx with the shipped config: ``(proxy URL, [direct
    URLs])``."""
    require_nginx()
    with ExitStack() as stack:
        addresses = [stack.enter_context(replica(app)) for app in apps]
        proxy = stack.enter_context(NginxProxy(SHIPPED, addresses))
        yield proxy.url, [f"http://{address}" for address in addresses]
