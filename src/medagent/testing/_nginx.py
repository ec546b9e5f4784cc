"""A throwaway nginx in front of web-app replicas, from the repository's own config.

Takes the shipped ``deploy/nginx/medagent.conf`` (an http{}-level file) and changes only where
it points: its ``listen`` to a free loopback port, its upstream ``server`` lines to the given
replicas, its tile cache to a temporary folder. Everything else (buffering, timeouts, body
limits, the tile cache and its access check) is tested as shipped. Runs Debian's ``nginx``
binary in the foreground with its own prefix, so nothing under /etc or /var is touched.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from medagent.errors import ConfigError
from medagent.testing._net import free_port

__all__ = ["NginxProxy"]

_LISTEN = re.compile(r"^(\s*)listen\s+[^;]+;", re.M)
_UPSTREAM = re.compile(r"(upstream\s+\w+\s*\{)(.*?)(\})", re.S)
_SERVER_LINE = re.compile(r"^\s*server\s+[^;]+;\n", re.M)
_CACHE_PATH = re.compile(r"proxy_cache_path\s+(\S+)")
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class NginxProxy:
    """``with NginxProxy(config, ["127.0.0.1:8001"]) as proxy: httpx.get(proxy.url + "/")``."""

    def __init__(self, config: Path, replicas: Sequence[str]) -> None:
        binary = self.find_binary()
        if binary is None:
            raise ConfigError("no nginx binary on PATH or in /usr/sbin; apt-get install nginx")
        self.binary = binary
        self.config = config
        self.replicas = list(replicas)
        self.port = 0
        self.folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def derive(shipped: str, *, port: int, replicas: Sequence[str], cache_dir: Path) -> str:
        """``shipped`` listening on ``127.0.0.1:port``, proxying to ``replicas`` (``host:port``),
        caching tiles in ``cache_dir``; a ``ConfigError`` when it lacks one of those parts."""
        if not replicas:
            raise ConfigError("give at least one replica address (host:port)")
        text, listens = _LISTEN.subn(rf"\g<1>listen 127.0.0.1:{port};", shipped)
        upstream = _UPSTREAM.search(text)
        cache = _CACHE_PATH.search(text)
        if listens != 1 or upstream is None or cache is None:
            raise ConfigError(
                "the nginx config needs one listen line, an upstream block and a proxy_cache_path"
            )
        body = _SERVER_LINE.sub("", upstream.group(2))
        servers = "".join(f"    server {address};\n" for address in replicas)
        text = (
            text[: upstream.start(2)] + "\n" + servers + body.lstrip("\n") + text[upstream.end(2) :]
        )
        return _CACHE_PATH.sub(f"proxy_cache_path {cache_dir}", text, count=1)

    @staticmethod
    def find_binary() -> Path | None:
        found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
        return Path(found) if found else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> str:
        """What nginx logged so far (warnings and errors), for a failing test's message."""
        log = self.folder / "error.log" if self.folder else None
        return log.read_text(errors="replace") if log and log.exists() else ""

    def _main_config(self, folder: Path) -> str:
        # As root, workers would run as "nobody" and could not enter the temporary folder.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
        temps = "".join(f"    {name}_temp_path {folder / name};\n" for name in _TEMP_PATHS)
        return (
            f"{user}daemon off;\nworker_processes 2;\npid {folder / 'nginx.pid'};\n"
            f"error_log {folder / 'error.log'} warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            f"    access_log {folder / 'access.log'};\n{temps}"
            f"    include {folder / 'medagent.conf'};\n"
            "}\n"
        )

    def __enter__(self) -> NginxProxy:
        self.folder = folder = Path(tempfile.mkdtemp(prefix="medagent-nginx-"))
        self.port = free_port()
        derived = self.derive(
            self.config.read_text(),
            port=self.port,
            replicas=self.replicas,
            cache_dir=folder / "tiles",
        )
        (folder / "medagent.conf").write_text(derived)
        (folder / "nginx.conf").write_text(self._main_config(folder))
        command = [str(self.binary), "-p", str(folder), "-c", str(folder / "nginx.conf")]
        command += ["-e", str(folder / "error.log")]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
        if checked.returncode != 0:
            self.__exit__(None, None, None)
            raise ConfigError(f"nginx refused the config: {checked.stderr.strip()[-500:]}")
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    log = self.error_log.strip()[-500:]
                    self.__exit__(None, None, None)
                    raise ConfigError(f"nginx did not start: {log}") from None
                time.sleep(0.05)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
