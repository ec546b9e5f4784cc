"""Cross-site writes: a page on another origin must not change anything on the server.

Cases, on every write route (new session, message, upload): ``Sec-Fetch-Site: cross-site``;
``same-site`` from another port of the same host; an ``Origin`` of another port, another host
or ``null``; JSON routes sent as ``text/plain``, as a form, or with no Content-Type; each is
refused (403/415) and leaves nothing behind. The app's own origin still writes, a client that
sends neither header (curl, scripts) still writes, and an extra origin can be allowed. Then the
same from a real Chromium page served on a second loopback origin: its fetches (plain and
``no-cors``) to a server without a token, with uploads on, change nothing.
"""

from __future__ import annotations

import http.server
import io
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from server_attack_support import LOOPBACK, SAME_ORIGIN, SLIDE, build_app, one_line, running

from browser_support import chromium_page

OTHER_PORT = "http://127.0.0.1:9999"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def _files(folder: Path) -> list[Path]:
    """What is in ``folder`` (created on the first upload: absent is empty)."""
    return list(folder.iterdir()) if folder.exists() else []


def _sessions(data: Path) -> int:
    with sqlite3.connect(data / "sessions.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM medagent_sessions").fetchone()[0])


@pytest.fixture
def uploads(make_client: Callable[..., TestClient], tmp_path: Path) -> TestClient:
    return make_client(upload_dir=tmp_path / "uploads")


FOREIGN = [
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://attacker.example"},
    {"Sec-Fetch-Site": "cross-site"},  # Origin left out: Sec-Fetch-Site alone refuses
    {"Sec-Fetch-Site": "same-site", "Origin": OTHER_PORT},  # another port is "same-site"
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": OTHER_PORT},  # an older browser: Origin only
    {"Origin": "http://localhost"},  # same machine, different origin
    {"Origin": "null"},  # sandboxed frames, file:// pages
]


@pytest.mark.parametrize(
    "headers", FOREIGN, ids=lambda h: "+".join(f"{k}={v}" for k, v in h.items())
)
def test_writes_from_another_origin_are_403_and_change_nothing(
    uploads: TestClient, tmp_path: Path, headers: dict[str, str]
) -> None:
    session = uploads.post("/api/sessions", json={"slide": SLIDE}, headers=SAME_ORIGIN).json()
    before = _sessions(tmp_path / "data")
    attempts = [
        ("/api/sessions", {"json": {"slide": SLIDE}}),
        (f"/api/sessions/{session['id']}/messages", {"json": {"text": "hello"}}),
        ("/api/uploads?filename=x.png", {"content": _png()}),
    ]
    for url, body in attempts:
        reply = uploads.post(url, headers=headers, **body)
        assert reply.status_code == 403, (url, reply.text)
        assert "refused" in one_line(reply)
    assert _sessions(tmp_path / "data") == before
    assert _files(tmp_path / "uploads") == []
    history = uploads.get(f"/api/sessions/{session['id']}/history").json()
    assert history == {"events": []}


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_json_routes_take_only_json_bodies(
    make_client: Callable[..., TestClient], tmp_path: Path, content_type: str | None
) -> None:
    """The types a page elsewhere may send without asking first (a CORS "simple" request)."""
    client = make_client()
    session = client.post("/api/sessions", json={"slide": SLIDE}, headers=SAME_ORIGIN).json()
    headers = {"Content-Type": content_type} if content_type else {}
    for url, body in (
        ("/api/sessions", b'{"slide": "cases/tissue.tif"}'),
        (f"/api/sessions/{session['id']}/messages", b'{"text": "hello"}'),
    ):
        reply = client.post(url, content=body, headers=headers)
        assert reply.status_code == 415, (url, content_type, reply.text)
        assert "application/json" in one_line(reply)
    assert _sessions(tmp_path / "data") == 1


def test_the_apps_own_origin_and_headerless_clients_may_write(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(upload_dir=tmp_path / "uploads")
    own = [SAME_ORIGIN, {"Sec-Fetch-Site": "none"}, {"Origin": LOOPBACK}, {}]
    for headers in own:
        assert (
            client.post("/api/sessions", json={"slide": SLIDE}, headers=headers).status_code == 201
        )
    json_utf8 = {"Content-Type": "application/json; charset=utf-8"}
    reply = client.post(
        "/api/sessions", content=b'{"slide": "cases/tissue.tif"}', headers=json_utf8
    )
    assert reply.status_code == 201
    reply = client.post("/api/uploads?filename=ok.png", content=_png(), headers=SAME_ORIGIN)
    assert reply.status_code == 201, reply.text


def test_an_allowed_extra_origin_may_write(make_client: Callable[..., TestClient]) -> None:
    """Behind a proxy the page's origin is the public address, not the Host the app sees."""
    client = make_client(allowed_origins=("https://slides.example.org",))
    headers = {"Origin": "https://slides.example.org", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/sessions", json={"slide": SLIDE}, headers=headers).status_code == 201
    headers = {"Origin": "https://evil.example.org", "Sec-Fetch-Site": "same-site"}
    assert client.post("/api/sessions", json={"slide": SLIDE}, headers=headers).status_code == 403


# -- a real browser on a second loopback origin ----------------------------------------------
ATTACKER_PAGE = b"<!doctype html><title>elsewhere</title><p>another origin</p>"
#: What the attacker's page runs: each write, plainly and as no-cors; what the page can observe.
ATTACK = """async ([base, session]) => {
  const png = Uint8Array.from(atob(%r), (c) => c.charCodeAt(0));
  const writes = [
    [`${base}/api/uploads?filename=evil.png`, new Blob([png])],
    [`${base}/api/uploads?filename=evil2.png`, new Blob([png], {type: "image/png"})],
    [`${base}/api/sessions`, new Blob([JSON.stringify({slide: "cases/tissue.tif"})])],
    [`${base}/api/sessions`, JSON.stringify({slide: "cases/tissue.tif"})],
    [`${base}/api/sessions/${session}/messages`, new Blob([JSON.stringify({text: "hi"})])],
    [`${base}/api/sessions/${session}/messages`, JSON.stringify({text: "hi"})],
  ];
  const seen = [];
  for (const [url, body] of writes) {
    for (const mode of ["cors", "no-cors"]) {
      try {
        const reply = await fetch(url, {method: "POST", body, mode});
        seen.push(`${mode} ${reply.type} ${reply.status}`);
      } catch (error) {
        seen.push(`${mode} failed`);
      }
    }
  }
  return seen;
}"""


@pytest.fixture
def attacker_origin() -> Iterator[str]:
    """A page on a second loopback origin (another port): what a site on this machine is."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(ATTACKER_PAGE)))
            self.end_headers()
            self.wfile.write(ATTACKER_PAGE)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser_page() -> Iterator[Any]:
    with chromium_page() as page:
        yield page


@pytest.mark.browser
@pytest.mark.slow
def test_a_page_on_another_loopback_origin_cannot_write(
    slide_root: Path, tmp_path: Path, attacker_origin: str, browser_page: Any
) -> None:
    import base64

    import httpx

    data, upload_dir = tmp_path / "data", tmp_path / "uploads"
    app = build_app(slide_root, data, upload_dir=upload_dir)  # no token: loopback
    statuses: list[int] = []
    with running(app) as base:
        session = httpx.post(f"{base}/api/sessions", json={"slide": SLIDE}).json()["id"]
        browser_page.on(
            "response", lambda r: statuses.append(r.status) if r.url.startswith(base) else None
        )
        browser_page.goto(f"{attacker_origin}/")
        script = ATTACK % base64.b64encode(_png()).decode()
        seen = browser_page.evaluate(script, [base, session])
        history = httpx.get(f"{base}/api/sessions/{session}/history").json()
    assert len(seen) == 12, seen
    assert not any(s.endswith((" 200", " 201")) for s in seen), seen
    assert _files(upload_dir) == []
    assert _sessions(data) == 1  # only the one made above, directly
    assert history == {"events": []}
    assert statuses and all(s in (403, 415) for s in statuses), statuses
