"""Writing files that a later run reads back: whole, or not at all.

A run killed mid-write (kill -9, a full disk) must not leave half a ``manifest.json`` for the
rerun to choke on. The content goes to a temporary file in the target's own folder (so the
rename never crosses file systems), is flushed to disk, and replaces the target in one
``os.replace``: a reader sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["write_atomic", "write_json_atomic"]


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text is UTF-8) in one step; the folder must exist.

    On any failure the target is left as it was and the temporary file is removed; the
    ``OSError`` is the caller's to report.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    partial = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    # os.open rather than mkstemp: the file gets the usual umask permissions, not 0600.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], value: Any, *, indent: int = 2) -> None:
    """``value`` as JSON (non-JSON values through ``str``), written with `write_atomic`."""
    write_atomic(path, json.dumps(value, indent=indent, default=str, ensure_ascii=False))
