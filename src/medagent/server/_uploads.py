"""Slide uploads (off unless ``--uploads DIR``): size, name, type and readability checked.

The body is the raw file (``POST /api/uploads?filename=NAME``), streamed to a temporary file:
nothing is buffered in memory, an oversize body is cut off at the limit (413, by the route's
body limit), a name or content that is not a single-file slide or image format is refused
(415), and only a file ``open_image`` can read is kept. A plain image is checked against the
server's pixel limit from its header before any pixel is decoded (a 100 KB PNG can declare
9400 x 9400 px, a small RLE DICOM as many), and only ``upload_checks`` uploads are opened at
once.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import BinaryIO

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from medagent.errors import MedagentError
from medagent.imaging import open_image
from medagent.server._config import ServerConfig

__all__ = ["PLAIN_NAME", "UPLOAD_SUFFIXES", "upload_router"]

_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Single-file formats only (MRXS and friends are folders) and the magic bytes each must start
#: with, so a renamed file of another kind is refused before it is parsed.
UPLOAD_SUFFIXES: dict[str, tuple[bytes, ...]] = {
    ".svs": _TIFF,
    ".tif": _TIFF,
    ".tiff": _TIFF,
    ".ndpi": _TIFF,
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".dcm": (),  # DICOM: "DICM" after a 128-byte preamble, checked below
}
#: A plain file name: no separators, no leading dot (so never ".."), bounded. Run folder names
#: from clients of the review page are checked part by part against it too.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,150}")


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _type_ok(suffix: str, head: bytes) -> bool:
    if suffix == ".dcm":
        return head[128:132] == b"DICM"
    return head.startswith(UPLOAD_SUFFIXES[suffix])


def _unreadable(path: Path, name: str, max_pixels: int) -> str | None:
    """Why the file at ``path`` cannot be kept (one line naming it ``name``), or ``None``."""
    try:
        open_image(path, max_pixels=max_pixels).close()
    except MedagentError as exc:
        return str(exc).replace(str(path), name)
    return None


def _free_name(folder: Path, name: str) -> Path:
    path = folder / name
    number = 1
    while path.exists():
        path = folder / f"{Path(name).stem}-{number}{Path(name).suffix}"
        number += 1
    return path


def upload_router() -> APIRouter:
    """``POST /api/uploads``; its body may reach the upload limit (``RequestGuard`` applies it,
    and the smaller JSON limit to every other route)."""
    router = APIRouter()

    @router.post("/api/uploads", status_code=201, response_model=None)
    async def upload(request: Request, filename: str) -> JSONResponse | dict[str, str]:
        """Store one slide file; its name in the reply opens a session like any other."""
        config: ServerConfig = request.app.state.config
        if config.upload_dir is None:
            return _error(404, "uploads are off; start the server with --uploads DIR")
        limit = config.max_upload_mb * 1024 * 1024
        name = Path(filename).name
        if not PLAIN_NAME.fullmatch(name):
            return _error(400, "file name: letters, digits, '.', '_', '-' and spaces only")
        suffix = Path(name).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            kinds = ", ".join(sorted(UPLOAD_SUFFIXES))
            return _error(415, f"{suffix or 'no extension'}: uploads must be one of {kinds}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(413, f"file larger than the upload limit ({config.max_upload_mb} MB)")
        folder = config.upload_dir.expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        # The suffix stays, so the file is opened as what its name says.
        partial = folder / f".upload-{secrets.token_hex(8)}{suffix}"
        try:
            size, head = await _receive(request, partial, limit)
            if size > limit:
                return _error(413, f"file larger than the upload limit ({config.max_upload_mb} MB)")
            if not _type_ok(suffix, head):
                return _error(415, f"the content is not a {suffix} file")
            checks: CapacityLimiter = request.app.state.upload_checks
            why = await to_thread.run_sync(
                _unreadable, partial, name, config.max_image_pixels, limiter=checks
            )
            if why is not None:
                return _error(415, why)
            final = _free_name(folder, name)
            partial.replace(final)
        finally:
            partial.unlink(missing_ok=True)
        return {"slide": str(final), "name": final.name, "bytes": str(size)}

    return router


async def _receive(request: Request, partial: Path, limit: int) -> tuple[int, bytes]:
    """Write the body to ``partial``; stop reading once past ``limit`` (size > limit then)."""
    size = 0
    head = b""
    handle: BinaryIO = await to_thread.run_sync(partial.open, "wb")
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                break
            if len(head) < 132:
                head += chunk[: 132 - len(head)]
            await to_thread.run_sync(handle.write, chunk)
    finally:
        await to_thread.run_sync(handle.close)
    return size, head
