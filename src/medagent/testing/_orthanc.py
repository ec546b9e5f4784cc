"""A throwaway Orthanc archive with the DICOMweb plugin, for testing medagent against a real
DICOMweb server rather than a stand-in.

Orthanc 1.10 listens on every interface and cannot be told otherwise, so it runs in a network
namespace of its own (``unshare -n``: a loopback and nothing else), with its DICOM port off,
its storage in a temporary folder, and remote access refused. Tests reach it on 127.0.0.1 of
the host through a Unix socket (``medagent.testing._bridge``). Debian packages: ``orthanc``
and ``orthanc-dicomweb`` (``make system-deps`` installs them).

    with OrthancServer(users={"reader": "secret"}) as archive:
        archive.upload(folder.glob("*.dcm"))
        archive.dicomweb_url   # http://127.0.0.1:PORT/dicom-web
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import httpx

from medagent.errors import ConfigError
from medagent.testing._bridge import TcpToUnixBridge
from medagent.testing._net import free_port

__all__ = ["OrthancServer"]

_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")
_INNER_PORT = 8042  # inside the namespace nothing else listens


def _orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(p).exists()), None
    )


def _dicomweb_plugin() -> Path | None:
    for folder in _PLUGIN_DIRS:
        found = sorted(Path(folder).glob("libOrthancDicomWeb.so*"))
        if found:
            return found[0]
    return None


class OrthancServer:
    """Orthanc on a free 127.0.0.1 port, started on enter and removed on exit.

    ``users`` turns on HTTP basic authentication (name → password); ``stop`` / ``start`` let a
    test take the archive away mid-run and bring it back with its data.
    """

    def __init__(self, *, users: dict[str, str] | None = None) -> None:
        binary, plugin = _orthanc_binary(), _dicomweb_plugin()
        if binary is None or plugin is None:
            raise ConfigError(
                "Orthanc with its DICOMweb plugin is not installed; install it (Debian: "
                "apt-get install orthanc orthanc-dicomweb, or make system-deps)"
            )
        if shutil.which("unshare") is None or shutil.which("ip") is None:
            raise ConfigError("unshare and ip (util-linux, iproute2) are needed to run Orthanc")
        self.binary, self.plugin = binary, plugin
        self.users = dict(users or {})
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="medagent-orthanc-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._bridge: TcpToUnixBridge | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.base_url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.folder / "orthanc.log"

    def _auth(self) -> httpx.BasicAuth | None:
        if not self.users:
            return None
        name, password = next(iter(self.users.items()))
        return httpx.BasicAuth(name, password)

    def _config(self) -> Path:
        config = {
            "Name": "medagent-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": _INNER_PORT,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [str(self.plugin)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "StableAge": 1,
            "SaveJobs": False,
            "HttpThreadsCount": 8,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, timeout_s: float = 60.0) -> OrthancServer:
        """Start Orthanc (its data kept from any earlier start) and wait until it answers."""
        config = self._config()
        socket_path = self.folder / "http.sock"
        socket_path.unlink(missing_ok=True)
        bridge = f"{sys.executable} -m medagent.testing._bridge unix-to-tcp"
        script = (
            f"ip link set lo up && {bridge} {socket_path} 127.0.0.1:{_INNER_PORT} & "
            f"exec {self.binary} {config}"
        )
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", script],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        log.close()
        self._bridge = TcpToUnixBridge(socket_path, self.port).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigError(
                    f"Orthanc exited with code {self._process.returncode}; log: {self.log_tail()}"
                )
            try:
                answer = httpx.get(f"{self.base_url}/system", auth=self._auth(), timeout=2)
                if answer.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ConfigError(f"Orthanc did not answer within {timeout_s:g} s; log: {self.log_tail()}")

    def stop(self) -> None:
        """Stop Orthanc and the bridge (the data stays until the folder is removed)."""
        if self._process is not None and self._process.poll() is None:
            try:
                os.killpg(self._process.pid, signal.SIGTERM)
                self._process.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(5)
        self._process = None
        if self._bridge is not None:
            self._bridge.stop()
            self._bridge = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def upload(self, files: Iterable[Path]) -> list[str]:
        """Store DICOM files in the archive (REST ``POST /instances``); their Orthanc ids."""
        ids: list[str] = []
        with httpx.Client(auth=self._auth(), timeout=120) as client:
            for path in files:
                answer = client.post(f"{self.base_url}/instances", content=path.read_bytes())
                answer.raise_for_status()
                ids.append(str(answer.json()["ID"]))
        return ids

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
