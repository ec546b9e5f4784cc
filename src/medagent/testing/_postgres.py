"""A throwaway PostgreSQL server, for testing what runs against Postgres (the web app's
``--checkpoint postgresql://...``) with a real server rather than a stand-in.

``initdb`` into a temporary folder (trust authentication, reachable on 127.0.0.1 only, a free
port), ``pg_ctl start``, and on exit ``pg_ctl stop`` and the folder removed. Uses the server
binaries on ``PATH`` or Debian's ``/usr/lib/postgresql/<version>/bin``. Postgres refuses to run
as root, so under root the folder is handed to the ``postgres`` system user and the binaries
run as that user (``runuser``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from medagent.errors import ConfigError
from medagent.testing._net import free_port

__all__ = ["PostgresServer"]


class PostgresServer:
    """``with PostgresServer() as server: connect(server.url)``."""

    def __init__(self, user: str = "postgres") -> None:
        self.user = user
        self.bin_dir = self.find_binaries()
        if self.bin_dir is None:
            raise ConfigError(
                "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in "
                "/usr/lib/postgresql/*/bin; install them (Debian: apt-get install postgresql)"
            )
        self.port = 0
        self.folder: Path | None = None

    @staticmethod
    def find_binaries() -> Path | None:
        """The folder holding ``initdb`` and ``pg_ctl``, newest version first; None if absent."""
        on_path = shutil.which("initdb")
        if on_path and shutil.which("pg_ctl"):
            return Path(on_path).parent
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        return next(
            (b for b in versions if (b / "initdb").exists() and (b / "pg_ctl").exists()), None
        )

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        assert self.bin_dir is not None
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise ConfigError(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def __enter__(self) -> PostgresServer:
        self.folder = Path(tempfile.mkdtemp(prefix="medagent-pg-"))
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ConfigError("running as root needs a 'postgres' system user") from None
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        data = self.folder / "data"
        self.port = free_port()
        self._run(
            "initdb", "-D", str(data), "-U", self.user, "--auth=trust", "--no-sync", "-E", "UTF8"
        )
        self.start()
        return self

    def start(self) -> None:
        """Start the server (again, after ``stop``) on the same port and data."""
        assert self.folder is not None, "use it as a context manager"
        options = f"-p {self.port} -h 127.0.0.1 -k {self.folder} -F"
        data, log = str(self.folder / "data"), str(self.folder / "log")
        self._run("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """Stop the server, closing every connection (as a database restart does); the
        data stays for ``start``."""
        assert self.folder is not None, "use it as a context manager"
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.folder is None:
            return
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        except ConfigError:
            pass  # not running (start failed): nothing to stop
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
