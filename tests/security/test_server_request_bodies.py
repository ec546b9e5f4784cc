"""Request bodies the web app must refuse before it parses them, and replies that echo nothing.

Cases: a JSON body over the limit with Content-Length declared, the same sent in chunks (no
Content-Length), each on every JSON write route; an upload over the upload limit, declared and
chunked; the limits are configurable; a large body that fails validation (a 900 KB field, an
unknown 900 KB key, 5,000 bad items) gets a short 422 that quotes none of it; ``NaN`` and
``Infinity`` in JSON are a 422, not a 500; /healthz answers while a 40 MB body is refused on a
real server.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from server_attack_support import SAME_ORIGIN, SLIDE, build_app, one_line, running

JSON = {**SAME_ORIGIN, "Content-Type": "application/json"}
MIB = 1024 * 1024


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _big_json(nbytes: int) -> bytes:
    return json.dumps({"slide": "x" * nbytes}).encode()


def _write_routes(client: TestClient) -> list[str]:
    session = client.post("/api/sessions", json={"slide": SLIDE}, headers=SAME_ORIGIN).json()
    return ["/api/sessions", f"/api/sessions/{session['id']}/messages"]


def test_an_oversize_json_body_is_413_before_parsing(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    body = _big_json(2 * MIB)
    for route in _write_routes(client):
        reply = client.post(route, content=body, headers=JSON)
        assert reply.status_code == 413, (route, reply.text[:200])
        assert len(reply.content) < 100 and b"\n" not in reply.content
        assert "request body too large" in one_line(reply)  # as for a chunked body


def test_an_oversize_chunked_json_body_is_413(make_client: Callable[..., TestClient]) -> None:
    """No Content-Length: the bytes are counted as they stream in."""
    client = make_client()
    body = _big_json(2 * MIB)
    for route in _write_routes(client):
        reply = client.post(route, content=_chunks(body), headers=JSON)
        assert reply.status_code == 413, (route, reply.text[:200])
        assert "request body too large" in one_line(reply)


def test_the_json_limit_is_configurable(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_kb=4)
    small = {"slide": "y" * 5000}
    assert client.post("/api/sessions", json=small, headers=SAME_ORIGIN).status_code == 413
    client = make_client(max_body_kb=64)
    reply = client.post("/api/sessions", json=small, headers=SAME_ORIGIN)
    assert reply.status_code == 422  # parsed: too long a slide name, not too large a body


def test_uploads_have_their_own_larger_limit(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(upload_dir=tmp_path / "uploads", max_upload_mb=3, max_body_kb=16)
    big = b"II*\x00" + b"\x00" * (4 * MIB)
    url = "/api/uploads?filename=big.tif"
    assert client.post(url, content=big, headers=SAME_ORIGIN).status_code == 413
    assert client.post(url, content=_chunks(big), headers=SAME_ORIGIN).status_code == 413
    # Under the upload limit, over the JSON limit: read in full, then refused as no TIFF.
    reply = client.post(url, content=big[: 2 * MIB], headers=SAME_ORIGIN)
    assert reply.status_code == 415
    assert list((tmp_path / "uploads").iterdir()) == []


@pytest.mark.parametrize(
    "body",
    [
        {"slide": "z" * 900_000},
        {"slide": "cases/tissue.tif", "k" * 900_000: 1},
        {"slide": ["w" * 100] * 5000},
    ],
    ids=["long-value", "long-unknown-key", "many-items"],
)
def test_a_large_invalid_body_gets_a_short_422_that_echoes_nothing(
    make_client: Callable[..., TestClient], body: dict[str, object]
) -> None:
    reply = make_client().post("/api/sessions", json=body, headers=SAME_ORIGIN)
    assert reply.status_code == 422
    assert len(reply.content) < 1000
    for echoed in ("zzzzzzzzzz", "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", "wwwwwwwwww"):
        assert echoed not in reply.text
    assert "input" not in reply.json()
    one_line(reply)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "12345678901234567890"])
def test_non_finite_and_huge_numbers_in_a_region_are_422(
    make_client: Callable[..., TestClient], value: str
) -> None:
    client = make_client()
    session = client.post("/api/sessions", json={"slide": SLIDE}, headers=SAME_ORIGIN).json()
    body = '{"text": "here?", "region": {"x": ' + value + ', "y": 0, "width": 10, "height": 10}}'
    reply = client.post(f"/api/sessions/{session['id']}/messages", content=body, headers=JSON)
    assert reply.status_code == 422, reply.text
    assert "region.x" in one_line(reply)


def _send_declared(base: str, nbytes: int, result: dict[str, object]) -> None:
    """A raw POST declaring ``nbytes`` of JSON and sending as much as the server will take."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        head = (
            f"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {nbytes}\r\n\r\n"
        )
        sock.sendall(head.encode())
        chunk = b"1," * (MIB // 2)
        sent = 0
        try:
            while sent < nbytes:
                part = chunk[: nbytes - sent]
                sock.sendall(part)
                sent += len(part)
        except OSError:  # the server answered and closed: it will not read the rest
            pass
        result["reply"] = sock.recv(200).decode("latin-1", "replace")


@pytest.mark.slow
def test_health_checks_answer_while_a_large_body_is_refused(
    slide_root: Path, tmp_path: Path
) -> None:
    with running(build_app(slide_root, tmp_path / "data")) as base:
        result: dict[str, object] = {}
        sender = threading.Thread(target=_send_declared, args=(base, 40 * MIB, result))
        sender.start()
        latencies = []
        with httpx.Client(base_url=base, timeout=30) as client:
            while sender.is_alive() or len(latencies) < 5:
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.05)
        sender.join()
    assert str(result["reply"]).startswith("HTTP/1.1 413"), result
    assert max(latencies) < 2.0, latencies  # generous: a loaded machine, not a stall
