"""Hostile values on every route: a one-line 4xx, never a 500, never a server path.

Cases: slide names with a component over 255 bytes, a path over 4096 bytes, a symlink loop
(file, two links, a looping folder), a NUL, a lone surrogate, a folder, a truncated TIFF, PNG or
empty file (the listing still works, and says nothing of the loop); session ids, crop ids and
associated-image names that are too long, traversal, non-UTF-8 or absolute; an artifact id that
is well formed but unknown, whose file is gone, or whose index entry is corrupt; Deep Zoom levels
and tile addresses of 10^30; regions with NaN, infinity, 1e308, 2^31 and strings; malformed,
deeply nested and non-object JSON; broken cookies and an undecodable Content-Length. Any other
failure is a one-line 500 whose details stay in the server log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_attack_support import SAME_ORIGIN, SLIDE, one_line

from medagent.testing import synthetic_tissue, write_pyramid_tiff

JSON = {**SAME_ORIGIN, "Content-Type": "application/json"}
LONG = "a" * 300
UNLIMITED = {"client_session_burst": 1000, "client_message_burst": 1000}


@pytest.fixture
def hostile_root(tmp_path: Path) -> Path:
    """A slide folder with one good slide beside links that loop and files that are broken."""
    root = tmp_path / "slides"
    (root / "cases").mkdir(parents=True)
    write_pyramid_tiff(root / SLIDE, synthetic_tissue(600, 400, seed=3), mpp=0.5, levels=1)
    (root / "self.tif").symlink_to(root / "self.tif")
    (root / "ping.svs").symlink_to(root / "pong.svs")
    (root / "pong.svs").symlink_to(root / "ping.svs")
    (root / "cases" / "again").symlink_to(root, target_is_directory=True)
    (root / "truncated.tif").write_bytes((root / SLIDE).read_bytes()[:600])
    (root / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x01" * 100)
    (root / "empty.svs").write_bytes(b"")
    return root


@pytest.fixture
def client(make_client: Callable[..., TestClient], hostile_root: Path) -> TestClient:
    return make_client(root=hostile_root, **UNLIMITED)


def _refused(reply: object, tmp_path: Path) -> str:
    """The reply is a 4xx with a one-line detail that names no server folder."""
    status = reply.status_code  # type: ignore[attr-defined]
    assert 400 <= status < 500, (status, reply.text[:300])  # type: ignore[attr-defined]
    detail = one_line(reply)
    assert str(tmp_path) not in detail and "/tmp/" not in detail, detail
    return detail


def test_a_symlink_loop_does_not_break_the_listing(client: TestClient, tmp_path: Path) -> None:
    reply = client.get("/api/slides")
    assert reply.status_code == 200
    slides = reply.json()["slides"]
    assert SLIDE in slides and "truncated.tif" in slides
    assert not {"self.tif", "ping.svs", "pong.svs"} & set(slides)


@pytest.mark.parametrize(
    ("slide", "says"),
    [
        (LONG, "too long"),
        (f"cases/{LONG}.tif", "too long"),
        ("/".join(["b" * 100] * 10), "no file"),
        ("self.tif", "symlink loop"),
        ("ping.svs", "symlink loop"),
        ("cases/again/cases/again/self.tif", "symlink loop"),
        ("x\x00y.tif", "NUL"),
        ("cases", "folder"),
        ("truncated.tif", "truncated.tif"),
        ("truncated.png", "truncated.png"),
        ("empty.svs", "empty"),
    ],
)
def test_bad_slide_names_are_a_one_line_4xx(
    client: TestClient, tmp_path: Path, slide: str, says: str
) -> None:
    reply = client.post("/api/sessions", json={"slide": slide}, headers=SAME_ORIGIN)
    assert says in _refused(reply, tmp_path)


def test_an_overlong_or_undecodable_slide_path_is_a_4xx(
    make_client: Callable[..., TestClient], hostile_root: Path, tmp_path: Path
) -> None:
    client = make_client(root=hostile_root, **UNLIMITED)
    too_deep = "/".join(["c" * 250] * 5)  # each part allowed, the whole over the 1024 limit
    reply = client.post("/api/sessions", json={"slide": too_deep}, headers=SAME_ORIGIN)
    assert "1024" in _refused(reply, tmp_path)
    lone_surrogate = b'{"slide": "\\ud800.tif"}'
    reply = client.post("/api/sessions", content=lone_surrogate, headers=JSON)
    _refused(reply, tmp_path)


def _session(client: TestClient) -> str:
    reply = client.post("/api/sessions", json={"slide": SLIDE}, headers=SAME_ORIGIN)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def test_hostile_path_parameters_are_a_one_line_4xx(client: TestClient, tmp_path: Path) -> None:
    session = _session(client)
    base = f"/api/sessions/{session}"
    paths = [
        f"/api/sessions/{LONG}",
        "/api/sessions/%ff%fe",
        "/api/sessions/..%2f..%2fsessions.sqlite",
        f"{base}/history/../../x",
        f"{base}/crops/{LONG}",
        f"{base}/crops/{'0' * 32}",
        f"{base}/crops/%ff",
        f"{base}/crops/..%2f..%2fsessions.sqlite",
        f"{base}/crops/%2fetc%2fpasswd",
        f"{base}/associated/{LONG * 20}",
        f"{base}/slide_files/{10**30}/0_0.jpeg",
        f"{base}/slide_files/0/{10**30}_{10**30}.jpeg",
        f"{base}/slide_files/99/0_0.jpeg",
        f"{base}/slide_files/{'9' * 5000}/0_0.jpeg",
        f"{LONG}/{LONG}",
    ]
    for path in paths:
        reply = client.get(path)
        detail = _refused(reply, tmp_path)
        assert LONG * 2 not in detail and "9" * 100 not in detail, path


def test_a_crop_is_found_only_through_the_sessions_store(
    client: TestClient, tmp_path: Path
) -> None:
    """Unknown, gone and corrupt artifacts: all 404, none read from a joined path."""
    session = _session(client)
    reply = client.post(
        f"/api/sessions/{session}/messages", json={"text": "look"}, headers=SAME_ORIGIN
    )
    crop_events = [line for line in reply.text.splitlines() if '"type": "crop"' in line]
    crop = json.loads(crop_events[0].removeprefix("data:"))["artifact_id"]
    url = f"/api/sessions/{session}/crops"
    assert client.get(f"{url}/{crop}").status_code == 200
    assert "no such crop" in _refused(client.get(f"{url}/{'f' * 32}"), tmp_path)
    store = tmp_path / "data" / "sessions" / session / "crops"
    for image in store.glob(f"{crop}.*"):
        if image.suffix != ".json":
            image.unlink()  # the index entry stays, its file is gone
    assert "no such crop" in _refused(client.get(f"{url}/{crop}"), tmp_path)
    (store / f"{crop}.json").write_text("{not json")
    assert "no such crop" in _refused(client.get(f"{url}/{crop}"), tmp_path)


@pytest.mark.parametrize(
    "region",
    [
        '{"x": NaN, "y": 0, "width": 10, "height": 10}',
        '{"x": 0, "y": Infinity, "width": 10, "height": 10}',
        '{"x": 0, "y": 0, "width": -Infinity, "height": 10}',
        '{"x": 1e308, "y": 0, "width": 10, "height": 10}',
        '{"x": 0, "y": 0, "width": 2147483648, "height": 10}',
        '{"x": -2147483648, "y": 0, "width": 10, "height": 10}',
        '{"x": 0.5, "y": 0, "width": 10, "height": 10}',
        '{"x": "0", "y": 0, "width": "ten", "height": 10}',
        '{"x": 0, "y": 0, "width": 10}',
        '"0,0,10,10"',
        '{"x": 5000, "y": 5000, "width": 10, "height": 10}',
    ],
)
def test_hostile_regions_are_a_one_line_4xx(
    client: TestClient, tmp_path: Path, region: str
) -> None:
    session = _session(client)
    body = '{"text": "here?", "region": ' + region + "}"
    reply = client.post(f"/api/sessions/{session}/messages", content=body, headers=JSON)
    assert reply.status_code == 422, reply.text
    _refused(reply, tmp_path)


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b"null", b'"x"', b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe", b'{"slide": 1}'],
    ids=["truncated", "array", "null", "string", "deeply-nested", "not-utf8", "wrong-type"],
)
def test_malformed_json_is_a_one_line_4xx(client: TestClient, tmp_path: Path, body: bytes) -> None:
    _refused(client.post("/api/sessions", content=body, headers=JSON), tmp_path)


def test_broken_headers_are_not_a_500(
    make_client: Callable[..., TestClient], hostile_root: Path, tmp_path: Path
) -> None:
    client = make_client(root=hostile_root, token="t0ken-for-hostile-tests")
    for cookie in ('medagent_token="unterminated', "medagent_token=\x7f; ;;==", "=" * 5000):
        reply = client.get("/api/slides", headers={"Cookie": cookie})
        _refused(reply, tmp_path)
    not_ascii = ("Bearer " + "é" * 50).encode("latin-1")
    reply = client.get("/api/slides", headers={"Authorization": not_ascii})  # type: ignore[dict-item]
    _refused(reply, tmp_path)


def test_any_other_failure_is_a_one_line_500_logged_on_the_server(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from medagent.server import _routes

    def broken(*args: object, **kwargs: object) -> list[str]:
        raise RuntimeError("internal detail /srv/secret/path")

    monkeypatch.setattr(_routes, "list_under_roots", broken)
    with caplog.at_level(logging.ERROR):
        reply = client.get("/api/slides")
    assert reply.status_code == 500
    detail = one_line(reply)
    assert "secret" not in detail and "RuntimeError" not in detail
    assert "server log" in detail
