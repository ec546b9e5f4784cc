"""Loopback stand-ins for the sources `medagent data pull` fetches from, and a MultiPathQA CSV
naming their files.

One threaded HTTP server on 127.0.0.1 plays all three: the GDC API (``/gdc/files/ID`` metadata
as ``{"data": {...}}``, ``/gdc/data/ID`` bytes), the GTEx image service (``/gtex/SLIDE_ID``) and
Kaggle (``/kaggle/NAME``, basic auth required). Bytes are served with Range support. Faults are
queued per file and used one request each:

- ``"drop"``: headers with the full Content-Length, half the body, then the connection closes;
- ``"500"``: HTTP 500;
- ``"norange"``: a Range request answered 200 with the whole file.

``bad_md5`` names GDC files whose published md5 is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medagent.testing import synthetic_tissue, write_pyramid_tiff

KAGGLE_USER = ("stub-user", "stub-key")

CSV_HEADER = (
    "benchmark_name,benchmark_id,image_path,answer,options,image_exists,patch_exists,"
    "is_valid,metric_type,file_id,prompt\n"
)


@dataclass
class StubFile:
    """One file a source serves: its CSV name, its id at the source, its bytes."""

    task: str
    name: str
    file_id: str
    body: bytes

    @property
    def md5(self) -> str:
        return hashlib.md5(self.body).hexdigest()


def slide_bytes(tmp: Path, seed: int, size: int = 640) -> bytes:
    """A small pyramidal TIFF that OpenSlide opens, as bytes."""
    path = tmp / f"seed{seed}.tiff"
    write_pyramid_tiff(path, synthetic_tissue(size, size, seed=seed), levels=2, tile=128)
    data = path.read_bytes()
    path.unlink()
    return data


def stub_files(tmp: Path) -> list[StubFile]:
    """Two TCGA slides, one GTEx slide, one PANDA slide (small, distinct)."""
    return [
        StubFile(
            "tcga",
            "TCGA-AA-0001-01Z-00-DX1.svs",
            "11111111-2222-3333-4444-555555555555",
            slide_bytes(tmp, 1),
        ),
        StubFile(
            "tcga_expert_vqa",
            "TCGA-AA-0002-01Z-00-DX1.svs",
            "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            slide_bytes(tmp, 2),
        ),
        StubFile("gtex", "GTEX-AAAA-0001.tiff", "GTEX-AAAA-0001", slide_bytes(tmp, 3)),
        StubFile(
            "panda",
            "0123456789abcdef0123456789abcdef.tiff",
            "0123456789abcdef0123456789abcdef.tiff",
            slide_bytes(tmp, 4),
        ),
    ]


def write_csv(path: Path, files: list[StubFile]) -> Path:
    """A MultiPathQA CSV with one question per file (plus a repeat of the first TCGA slide)."""
    lines = [CSV_HEADER]
    rows = [*files, files[0]]
    for number, f in enumerate(rows):
        answer = {"panda": "2", "gtex": "a"}.get(f.task, "1")
        options = "" if f.task == "panda" else "\"['a', 'b']\""
        lines.append(
            f"{f.task},{number},{f.name},{answer},{options},True,False,True,accuracy,"
            f"{f.file_id},Which one?\n"
        )
    path.write_text("".join(lines), encoding="utf-8")
    return path


@dataclass
class Seen:
    """One request the stub received."""

    path: str
    range: str | None


@dataclass
class SourceStub:
    """The three sources on one loopback server; use as a context manager."""

    files: list[StubFile]
    faults: dict[str, deque[str]] = field(default_factory=dict)
    bad_md5: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server: http.server.ThreadingHTTPServer | None = None

    def fault(self, name: str, *faults: str) -> None:
        self.faults.setdefault(name, deque()).extend(faults)

    @property
    def root(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """MEDAGENT_* variables pointing `data pull` at this stub; Kaggle credentials too."""
        return {
            "MEDAGENT_GDC_URL": f"{self.root}/gdc",
            "MEDAGENT_GTEX_URL": f"{self.root}/gtex/{{slide_id}}",
            "MEDAGENT_PANDA_URL": f"{self.root}/kaggle/{{name}}",
            "KAGGLE_USERNAME": KAGGLE_USER[0],
            "KAGGLE_KEY": KAGGLE_USER[1],
        }

    def data_requests(self, name: str) -> list[Seen]:
        f = self._by_name(name)
        return [
            s for s in self.seen if s.path.endswith("/" + f.file_id) and "/files/" not in s.path
        ]

    def _by_name(self, name: str) -> StubFile:
        return next(f for f in self.files if f.name == name)

    def __enter__(self) -> SourceStub:
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                stub.seen.append(Seen(self.path, self.headers.get("Range")))
                stub._answer(self)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        parts = handler.path.split("?")[0].strip("/").split("/")
        if parts[:2] == ["gdc", "files"] and len(parts) == 3:
            match = [f for f in self.files if f.file_id == parts[2]]
            if not match:
                return _send(handler, 404, b'{"message": "not found"}')
            f = match[0]
            md5 = "0" * 32 if f.name in self.bad_md5 else f.md5
            body = {"data": {"file_name": f.name, "md5sum": md5, "file_size": len(f.body)}}
            return _send(handler, 200, json.dumps({**body, "warnings": {}}).encode())
        if parts[:2] == ["gdc", "data"] or parts[0] in ("gtex", "kaggle"):
            key = parts[-1]
            match = [f for f in self.files if key in (f.file_id, f.name)]
            if not match:
                return _send(handler, 404, b"not found")
            if parts[0] == "kaggle" and not _authorized(handler):
                return _send(handler, 401, b'{"message": "unauthorized"}')
            return self._bytes(handler, match[0])
        return _send(handler, 404, b"not found")

    def _bytes(self, handler: http.server.BaseHTTPRequestHandler, f: StubFile) -> None:
        queue = self.faults.get(f.name)
        fault = queue.popleft() if queue else None
        if fault == "500":
            return _send(handler, 500, b"internal error")
        wanted = handler.headers.get("Range")
        start = 0
        if wanted and fault != "norange":
            start = int(wanted.removeprefix("bytes=").split("-")[0])
        body = f.body[start:]
        handler.send_response(206 if start else 200)
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(f.body) - 1}/{len(f.body)}")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Accept-Ranges", "bytes")
        handler.end_headers()
        if fault == "drop":
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(body)


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (it gave up, or the test ended) is no news


def _authorized(handler: http.server.BaseHTTPRequestHandler) -> bool:
    token = base64.b64encode(f"{KAGGLE_USER[0]}:{KAGGLE_USER[1]}".encode()).decode()
    return handler.headers.get("Authorization") == f"Basic {token}"


def _send(handler: http.server.BaseHTTPRequestHandler, code: int, body: bytes) -> None:
    handler.send_response(code)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
