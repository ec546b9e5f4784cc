"""A ``medagent serve`` (or a test's own server script) as a real process on a loopback port:
started, waited for on ``/healthz``, stopped whatever happened."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

__all__ = ["START_S", "ServerProcess", "start_server", "stop_server"]

#: Generous: a loaded 2-core machine starting a server that imports LangGraph and opens slides.
START_S = 180.0


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def client(self, read_s: float = 180.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=httpx.Timeout(read_s, connect=30.0))


def start_server(command: list[str], port: int, log: Path) -> ServerProcess:
    """``command`` started with its output in ``log``, returned once ``/healthz`` answers;
    the test fails with the log's tail if it exits or does not answer in `START_S`.

    The tests folder is put on the child's ``PYTHONPATH``: a test file run as the server
    script imports its support modules as it does under pytest."""
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path},
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"a server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(server)
    pytest.fail(f"a server did not start in {START_S:.0f} s:\n{log.read_text()[-3000:]}")


def stop_server(server: ServerProcess) -> None:
    """Terminate, and kill after 30 s; a server already gone is left alone."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
