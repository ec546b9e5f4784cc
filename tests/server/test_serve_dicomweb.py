"""The web app over a real Orthanc archive (no mocks): an allowed archive's whole-slide series
are listed beside the slide folders, a session opens on one, the viewer's Deep Zoom tiles come
from its frames and equal the local copy's, and the agent answers; other archives are refused.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from server_support import ANSWER, LOOPBACK

from dicomweb_support import PASSWORD, USER
from medagent.errors import ConfigError
from medagent.imaging import Region, open_image
from medagent.server import ServerConfig
from medagent.testing import OrthancServer, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def client(
    make_app: Callable[..., Any], dicomweb_archive: OrthancServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("MEDAGENT_DICOMWEB_BASIC", f"{USER}:{PASSWORD}")
    down = f"http://127.0.0.1:{free_port()}/dicom-web"  # listed after, and left out
    app = make_app(dicomweb_archives=(dicomweb_archive.dicomweb_url + "/", down))
    with TestClient(app, base_url=LOOPBACK) as test_client:
        yield test_client


def test_the_archive_series_are_listed_beside_the_folders(
    client: TestClient, dicomweb_ref: str
) -> None:
    slides = client.get("/api/slides").json()["slides"]
    assert slides == ["cases/tissue.tif", dicomweb_ref]


def test_a_session_on_a_series_serves_its_tiles_from_the_frames(
    client: TestClient, dicomweb_ref: str, dicomweb_series: Path, ask: Callable[..., Any]
) -> None:
    created = client.post("/api/sessions", json={"slide": dicomweb_ref})
    assert created.status_code == 201, created.text
    info = created.json()
    assert (info["width"], info["height"], info["mpp_x"]) == (4000, 3000, 0.25)
    assert 'Width="4000" Height="3000"' in client.get(info["dzi"]).text
    frames = client.app.state.tiles.slide(dicomweb_ref).slide.frames  # type: ignore[attr-defined]
    before = frames.frames
    # 4000 px wide: Deep Zoom levels 0..12, level 12 full resolution; tile (3, 2) covers
    # level-0 pixels 761..1016 x 507..762 (254 px tiles, 1 px overlap): 2 x 2 of the
    # archive's 256 px frames, and only those are fetched.
    tile = client.get(f"/api/sessions/{info['id']}/slide_files/12/3_2.jpeg")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    served = np.asarray(Image.open(io.BytesIO(tile.content)).convert("RGB"), dtype=float)
    with open_image(dicomweb_series) as local:
        expected = np.asarray(
            local.read(Region(x=761, y=507, width=256, height=256), 0), dtype=float
        )
    assert served.shape == expected.shape
    assert np.abs(served - expected).mean() < 4  # the same pixels, through JPEG
    assert frames.frames - before == 4

    events = ask(client, info["id"], "What is here?")
    assert events[-2]["type"] == "answer" and events[-2]["text"] == ANSWER
    data_dir = Path(client.app.state.config.data_dir)  # type: ignore[attr-defined]
    manifest = next((data_dir / "sessions").rglob("manifest.json"))
    assert PASSWORD not in manifest.read_text()


@pytest.mark.parametrize(
    "change",
    [
        lambda dicomweb_ref: dicomweb_ref.replace("/dicom-web/", "/dicom-web-2/"),
        lambda dicomweb_ref: dicomweb_ref.replace("127.0.0.1", "127.0.0.1.evil.example"),
        lambda dicomweb_ref: dicomweb_ref.replace("http://", "http://reader:x@"),
        lambda dicomweb_ref: dicomweb_ref.replace("/dicom-web/", "/dicom-web/../dicom-web/"),
    ],
)
def test_other_archives_are_refused_in_one_line(
    client: TestClient, dicomweb_ref: str, change: Callable[[str], str]
) -> None:
    reply = client.post("/api/sessions", json={"slide": change(dicomweb_ref)})
    assert reply.status_code in (403, 404), reply.text
    detail = reply.json()["detail"]
    assert "\n" not in detail and PASSWORD not in detail


def test_without_an_allowed_archive_a_reference_is_refused(
    make_app: Callable[..., Any], dicomweb_ref: str
) -> None:
    with TestClient(make_app(), base_url=LOOPBACK) as plain:
        assert plain.get("/api/slides").json()["slides"] == ["cases/tissue.tif"]
        reply = plain.post("/api/sessions", json={"slide": dicomweb_ref})
        assert reply.status_code == 403 and "opens no DICOMweb archive" in reply.json()["detail"]


def test_a_bad_archive_root_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dicomweb_archives"):
        ServerConfig.build(slide_roots=(tmp_path,), dicomweb_archives=("https://u:p@pacs/dw",))


def test_json_of_a_listing_names_no_credentials(client: TestClient) -> None:
    assert PASSWORD not in json.dumps(client.get("/api/slides").json())


def test_serve_refuses_a_bad_archive_flag_in_one_line(tmp_path: Path) -> None:
    from cli_support import medagent

    done = medagent("serve", "--slides", str(tmp_path), "--dicomweb-archive", "https://u:p@x/dw")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "dicomweb_archives" in done.stderr and "Traceback" not in done.stderr
