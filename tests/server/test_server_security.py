"""What the web app refuses: paths out of the roots, missing or wrong tokens, foreign Host
headers, oversize or mistyped uploads, associated images, other sessions' crops."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import ValidationError
from server_support import LOOPBACK, SCRIPT

from medagent.errors import ConfigError
from medagent.models import ScriptedModel
from medagent.server import RateLimiter, ServerConfig, create_app, is_loopback
from medagent.testing import synthetic_tissue, write_pyramid_tiff

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A readable slide beside the root, not under it: every way of reaching it must fail."""
    (tmp_path / "outside").mkdir()
    path = tmp_path / "outside" / "secret.tif"
    return write_pyramid_tiff(path, synthetic_tissue(600, 400, seed=9), mpp=None, levels=1)


@pytest.fixture
def linked_root(outside: Path, tmp_path: Path) -> Path:
    """A slide folder (``tmp_path/root``) with links leading out of it (a file, a folder)."""
    root = tmp_path / "root"
    (root / "cases").mkdir(parents=True)
    write_pyramid_tiff(root / "cases" / "ok.tif", synthetic_tissue(300, 200), mpp=None, levels=1)
    (root / "escape.tif").symlink_to(outside)
    (root / "escape-dir").symlink_to(outside.parent, target_is_directory=True)
    return root


def _client(app: Any, base_url: str = LOOPBACK) -> TestClient:
    return TestClient(app, base_url=base_url)


def _app(root: Path, tmp_path: Path, **config: Any) -> Any:
    values: dict[str, Any] = {"slide_roots": (root,), "data_dir": tmp_path / "data", **config}
    return create_app(ServerConfig(**values), model_factory=lambda _: ScriptedModel(SCRIPT))


@pytest.mark.parametrize(
    "requested",
    [
        "../outside/secret.tif",
        "cases/../../outside/secret.tif",
        "..%2foutside%2fsecret.tif",
        "%2e%2e/outside/secret.tif",
        "%252e%252e%252foutside%252fsecret.tif",  # encoded twice
        "..\\outside\\secret.tif",
        "ABSOLUTE",
        "escape.tif",  # a link inside the root to a file outside
        "escape-dir/secret.tif",  # a link inside the root to a folder outside
    ],
)
def test_slide_paths_outside_the_roots_are_refused_with_403(
    linked_root: Path, outside: Path, tmp_path: Path, requested: str
) -> None:
    requested = str(outside) if requested == "ABSOLUTE" else requested
    with _client(_app(linked_root, tmp_path)) as client:
        reply = client.post("/api/sessions", json={"slide": requested})
    assert reply.status_code == 403, reply.text


def test_listing_skips_links_that_lead_out(linked_root: Path, tmp_path: Path) -> None:
    with _client(_app(linked_root, tmp_path)) as client:
        assert client.get("/api/slides").json()["slides"] == ["cases/ok.tif"]
        assert client.post("/api/sessions", json={"slide": "cases/ok.tif"}).status_code == 201


def test_a_missing_slide_is_404_and_a_folder_is_not_a_slide(
    slide_root: Path, tmp_path: Path
) -> None:
    with _client(_app(slide_root, tmp_path)) as client:
        assert client.post("/api/sessions", json={"slide": "nope.svs"}).status_code == 404
        assert client.post("/api/sessions", json={"slide": "cases"}).status_code == 422


# -- the token -----------------------------------------------------------------------------
@pytest.fixture
def exposed(slide_root: Path, tmp_path: Path) -> Any:
    """An app bound to every interface, so it demands the token."""
    with _client(_app(slide_root, tmp_path, host="0.0.0.0", token=TOKEN), "http://10.1.2.3") as c:
        yield c


def test_off_loopback_a_missing_token_is_401(exposed: TestClient) -> None:
    for path in ("/", "/api/slides", "/api/sessions/x/slide.dzi"):
        reply = exposed.get(path)
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"].startswith("Bearer")
    assert exposed.post("/api/sessions", json={"slide": "cases/tissue.tif"}).status_code == 401


def test_off_loopback_a_wrong_token_is_401(exposed: TestClient) -> None:
    for wrong in ("Bearer nope", f"Bearer {TOKEN}x", "Basic " + TOKEN, f"Bearer {TOKEN[:-1]}"):
        reply = exposed.get("/api/slides", headers={"Authorization": wrong})
        assert reply.status_code == 401, wrong
    exposed.cookies.set("medagent_token", "wrong")
    assert exposed.get("/api/slides").status_code == 401
    assert exposed.get(f"/?token={TOKEN}x", follow_redirects=False).status_code == 401


def test_websocket_connections_are_refused_whatever_they_carry(exposed: TestClient) -> None:
    """The app has no WebSocket routes; the guard closes any attempt before routing."""
    from starlette.websockets import WebSocketDisconnect

    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            exposed.websocket_connect("/api/sessions/x/events", headers=headers),
        ):
            pass
        assert closed.value.code == 1008


def test_the_right_token_works_as_header_or_page_cookie(exposed: TestClient) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert exposed.get("/api/slides", headers=bearer).status_code == 200
    entry = exposed.get(f"/?token={TOKEN}&session=abc", follow_redirects=False)
    assert entry.status_code == 303 and entry.headers["location"] == "/?session=abc"
    cookie = entry.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # The cookie from the page entry now opens the page, the API and the tiles.
    assert exposed.get("/").status_code == 200
    session = exposed.post("/api/sessions", json={"slide": "cases/tissue.tif"}).json()
    assert exposed.get(session["dzi"]).status_code == 200


def test_static_files_and_health_need_no_token(exposed: TestClient) -> None:
    vendor = "/static/vendor/openseadragon"
    assert exposed.get(f"{vendor}/openseadragon.min.js").status_code == 200
    assert exposed.get(f"{vendor}/LICENSE.txt").status_code == 200
    assert exposed.get("/healthz").status_code == 200


def test_a_token_is_required_to_bind_off_loopback(slide_root: Path) -> None:
    with pytest.raises(ValidationError, match="token"):
        ServerConfig(slide_roots=(slide_root,), host="0.0.0.0")
    with pytest.raises(ConfigError, match="token"):
        ServerConfig.build(slide_roots=(slide_root,), host="192.168.1.5")
    with pytest.raises(ConfigError, match="token"):
        ServerConfig.build(slide_roots=(slide_root,), host="0.0.0.0", token="short")
    assert ServerConfig(slide_roots=(slide_root,), host="localhost").token is None
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


def test_the_command_refuses_to_bind_off_loopback_without_a_token(slide_root: Path) -> None:
    command = [sys.executable, "-m", "medagent", "serve", "--slides", str(slide_root)]
    command += ["--host", "0.0.0.0", "--backend", "scripted", "--script", "/dev/null"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=_no_token())
    assert done.returncode == 2
    assert "token" in done.stderr and "Traceback" not in done.stderr


def _no_token() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "MEDAGENT_SERVER_TOKEN"}


def test_a_foreign_host_header_is_refused_on_loopback(slide_root: Path, tmp_path: Path) -> None:
    """A page on another site that resolves its name to 127.0.0.1 gets nothing."""
    with _client(_app(slide_root, tmp_path), "http://attacker.example:8000") as client:
        assert client.get("/api/slides").status_code == 400
    with _client(_app(slide_root, tmp_path), "http://localhost:8000") as client:
        assert client.get("/api/slides").status_code == 200
    # With a token the page elsewhere lacks it, whatever the Host header says.
    app = _app(slide_root, tmp_path, token=TOKEN)
    with _client(app, "http://attacker.example:8000") as client:
        assert client.get("/api/slides").status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/slides", headers=bearer).status_code == 200


# -- what is never served ------------------------------------------------------------------
@pytest.mark.realdata
def test_label_and_macro_images_are_refused_with_403(cmu_slide: Path, tmp_path: Path) -> None:
    with _client(_app(cmu_slide.parent, tmp_path)) as client:
        info = client.post("/api/sessions", json={"slide": cmu_slide.name}).json()
        assert info["associated_images"] == ["label", "macro", "thumbnail"]  # names only
        for name in ("label", "macro", "thumbnail"):
            reply = client.get(f"/api/sessions/{info['id']}/associated/{name}")
            assert reply.status_code == 403
            assert "patient identifiers" in reply.json()["detail"]


def test_crops_are_scoped_to_their_session(client: TestClient, ask: Callable[..., Any]) -> None:
    one = client.post("/api/sessions", json={"slide": "cases/tissue.tif"}).json()["id"]
    other = client.post("/api/sessions", json={"slide": "cases/tissue.tif"}).json()["id"]
    crop = ask(client, one, "What is it?")[4]["artifact_id"]
    assert client.get(f"/api/sessions/{one}/crops/{crop}").status_code == 200
    assert client.get(f"/api/sessions/{other}/crops/{crop}").status_code == 404
    assert client.get(f"/api/sessions/{one}/crops/..%2f..%2fsessions.sqlite").status_code == 404


# -- uploads -------------------------------------------------------------------------------
def _tiff_bytes(tmp_path: Path) -> bytes:
    path = write_pyramid_tiff(
        tmp_path / "up.tif", synthetic_tissue(512, 512, seed=3), mpp=0.5, levels=1
    )
    return path.read_bytes()


@pytest.fixture
def uploads(slide_root: Path, tmp_path: Path) -> Any:
    app = _app(slide_root, tmp_path, upload_dir=tmp_path / "uploads", max_upload_mb=1)
    with _client(app) as client:
        yield client


def test_an_oversize_upload_is_413_and_leaves_nothing(uploads: TestClient, tmp_path: Path) -> None:
    big = b"II*\x00" + b"\x00" * (2 * 1024 * 1024)
    reply = uploads.post("/api/uploads?filename=big.tif", content=big)
    assert reply.status_code == 413
    # Without a Content-Length (chunked), the limit is enforced while reading.
    chunked = uploads.post("/api/uploads?filename=big.tif", content=iter([big[:700_000]] * 3))
    assert chunked.status_code == 413
    assert list((tmp_path / "uploads").iterdir()) == []


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_uploads_of_the_wrong_type_are_415(uploads: TestClient, tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    assert uploads.post("/api/uploads?filename=x.exe", content=b"MZ").status_code == 415
    assert uploads.post("/api/uploads?filename=x.tif", content=png.getvalue()).status_code == 415
    broken = b"II*\x00" + b"\x01" * 1000  # says TIFF, is not one
    assert uploads.post("/api/uploads?filename=x.svs", content=broken).status_code == 415
    assert uploads.post("/api/uploads?filename=.hidden.tif", content=b"").status_code == 400
    assert list((tmp_path / "uploads").iterdir()) == []


def test_a_valid_upload_can_be_opened_as_a_session(uploads: TestClient, tmp_path: Path) -> None:
    reply = uploads.post(
        "/api/uploads?filename=../../my%20slide.tif", content=_tiff_bytes(tmp_path)
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["name"] == "my slide.tif"  # folders in the name are dropped
    session = uploads.post("/api/sessions", json={"slide": reply.json()["slide"]})
    assert session.status_code == 201 and session.json()["width"] == 512


def test_uploads_are_off_unless_configured(client: TestClient) -> None:
    assert client.post("/api/uploads?filename=a.tif", content=b"II*\x00").status_code == 404


def test_the_rate_limiter_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=6, burst=2, clock=lambda: now[0])
    assert limiter.take("a") == 0 and limiter.take("a") == 0
    assert limiter.take("a") == 10  # one message per 10 s
    assert limiter.take("b") == 0
    now[0] = 10.0
    assert limiter.take("a") == 0 and limiter.take("a") > 0
