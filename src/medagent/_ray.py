"""Joining a Ray cluster, or starting a local one, for every ``--executor ray`` command.

Shared by the eval runner and the index builder, so both say the same one line when a
cluster cannot be reached. A local instance is bound to loopback: left to itself Ray picks
the machine's outward interface as the node address (it asks the routing table for the way
to a public address, and even replaces an explicit 127.0.0.1 with it) and its servers listen
on every interface, which a laptop on a hospital network should not open ports on.

Workers ship their files back as tar archives; ``unpack_tar`` is the one guard every driver
unpacks them through, since an archive from another machine is input, not trusted.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from medagent.errors import DependencyMissingError, InputError, MedagentError

__all__ = ["LOOPBACK", "check_reachable", "connect_ray", "size_text", "unpack_tar"]

LOOPBACK = "127.0.0.1"
_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's own switch (off on Windows and macOS) for an instance that is one machine's only."""


def connect_ray(address: str | None, num_cpus: int, *, what: str = "--executor ray") -> bool:
    """Join the cluster at ``address`` (or start a local instance with ``num_cpus`` CPUs on
    loopback); True when this call did, so the caller knows to ``ray.shutdown()``."""
    try:
        import ray
    except ImportError:
        raise DependencyMissingError("ray", "distributed", what) from None
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "ignore_reinit_error": True,
    }
    if address:
        check_reachable(address)  # ray.init retries an unreachable address for ever
        options["address"] = address
    else:
        # "local", not None: ray.init(None) would join whatever RAY_ADDRESS names.
        options["address"] = "local"
        options["num_cpus"] = max(1, num_cpus)
        options["_node_ip_address"] = LOOPBACK
    try:
        if address:
            ray.init(**options)
        else:
            with _loopback_only():
                ray.init(**options)
    except Exception as exc:  # Ray says it with a ConnectionError, RuntimeError, ValueError…
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[0][:300] if lines else type(exc).__name__
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise MedagentError(f"cannot reach {where}: {reason}") from None
    return True


@contextmanager
def _loopback_only() -> Iterator[None]:
    """While a local instance starts, Ray's single-machine switch is on: the driver keeps
    127.0.0.1 as the node address, and every process the instance starts (each inherits the
    variable) listens on loopback only. Restored afterwards, so a later ``ray.init`` in the
    same process joins a cluster as usual."""
    constants: Any = importlib.import_module("ray._private.ray_constants")
    saved_env, saved = os.environ.get(_SINGLE_MACHINE), constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_MACHINE] = "0"
    constants.ENABLE_RAY_CLUSTER = False  # read at import; the driver has imported Ray by now
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(_SINGLE_MACHINE, None)
        else:
            os.environ[_SINGLE_MACHINE] = saved_env


def check_reachable(address: str) -> None:
    """One line, soon, when nothing listens at a ``host:port`` address (other forms, such as
    ``auto`` or ``ray://``, are left to Ray)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=10):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise MedagentError(f"cannot reach the Ray cluster at {address}: {reason}") from None


_COPY_BYTES = 1 << 20


def size_text(size: int) -> str:
    """``size`` bytes as a person reads it: ``512 bytes``, ``3.5 KiB``, ``512.0 MiB``."""
    if size < 1024:
        return f"{size} bytes"
    if size < 2**20:
        return f"{size / 1024:.1f} KiB"
    if size < 2**30:
        return f"{size / 2**20:.1f} MiB"
    return f"{size / 2**30:.1f} GiB"


def unpack_tar(archive: Path, dest: Path, *, max_bytes: int) -> int:
    """Unpack ``archive`` into ``dest`` (created here; it must not exist); the bytes written.

    Only regular files and folders, at relative paths that stay inside ``dest``, at most
    ``max_bytes`` in all (counted as written, not as the headers claim). Anything else (an
    absolute path, ``..``, a link, a device) refuses the whole archive with one
    ``InputError``, and ``dest`` is removed: nothing half-unpacked is left behind.
    """
    dest.mkdir()
    try:
        with tarfile.open(archive, "r:") as tar:
            return _unpack_members(tar, dest, max_bytes, archive)
    except tarfile.TarError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise InputError(f"{archive.name} is not a readable tar archive: {exc}") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _unpack_members(tar: tarfile.TarFile, dest: Path, max_bytes: int, archive: Path) -> int:
    written = 0
    for member in tar:
        name = member.name
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or ".." in parts or "\\" in name or "\0" in name:
            raise InputError(f"{archive.name}: refused {name!r}: a path outside the folder")
        if not (member.isreg() or member.isdir()):
            raise InputError(f"{archive.name}: refused {name!r}: not a file or folder")
        target = dest.joinpath(*parts)
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if not parts:
            raise InputError(f"{archive.name}: refused a file with no name")
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        if source is None:
            raise InputError(f"{archive.name}: refused {name!r}: no content")
        # O_NOFOLLOW: no link was unpacked, but a file must never be written through one.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        with source, os.fdopen(os.open(target, flags, 0o666), "wb") as out:
            while block := source.read(_COPY_BYTES):
                written += len(block)
                if written > max_bytes:
                    raise InputError(
                        f"{archive.name}: refused: over {size_text(max_bytes)} unpacked"
                    )
                out.write(block)
    return written
