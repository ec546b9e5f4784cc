"""Decompression bombs and memory the web app must not give away.

Cases: a ~100 KB PNG declaring 9400 x 9400 px uploaded (refused from its header, no pixel
decoded); an RLE DICOM declaring more rows x columns than allowed (refused before pydicom
decodes it); the pixel limit is configurable; the same PNG placed in the slide folder (a session
on it is a one-line 4xx without server paths); eight uploads at once are opened at most
``upload_checks`` at a time; the open-slide cache is bounded by the bytes its slides hold, and a
session's agent keeps no evicted image alive.
"""

from __future__ import annotations

import gc
import io
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFile
from server_attack_support import SAME_ORIGIN, one_line

from medagent.imaging import Region
from medagent.server import TileService

BOMB_SIDE = 9400


@pytest.fixture(scope="module")
def png_bomb() -> bytes:
    """A PNG of 9400 x 9400 black pixels: ~100 KB on disk, 88 Mpx (265 MB as RGB) decoded."""
    buffer = io.BytesIO()
    Image.new("L", (BOMB_SIDE, BOMB_SIDE)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 200_000
    return buffer.getvalue()


def rle_dicom(side: int) -> bytes:
    """A DICOM of ``side`` x ``side`` zeros, RLE-compressed by hand: 64 times smaller."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless, SecondaryCaptureImageStorage, generate_uid

    full, rest = divmod(side * side, 128)
    segment = b"\x81\x00" * full + (bytes([257 - rest, 0]) if rest else b"")  # runs of zeros
    frame = struct.pack("<16I", 1, 64, *[0] * 14) + segment
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = RLELossless
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def decoded_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every image PIL decodes pixels of, while the test runs."""
    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return sizes


def _png(side: int, color: tuple[int, int, int] = (180, 90, 140)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_png_bomb_upload_is_refused_from_its_header(
    make_client: Callable[..., TestClient],
    tmp_path: Path,
    png_bomb: bytes,
    decoded_sizes: list[tuple[int, int]],
) -> None:
    client = make_client(upload_dir=tmp_path / "uploads")
    reply = client.post("/api/uploads?filename=scan.png", content=png_bomb, headers=SAME_ORIGIN)
    assert reply.status_code == 415, reply.text
    detail = one_line(reply)
    assert "9400 x 9400 px" in detail and detail.startswith("scan.png:")
    assert str(tmp_path) not in detail
    assert (BOMB_SIDE, BOMB_SIDE) not in decoded_sizes  # not one pixel of it decoded
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == []


def test_a_dicom_bomb_upload_is_refused_before_pydicom_decodes_it(
    make_client: Callable[..., TestClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pydicom.dataset

    decoded: list[int] = []
    pixel_array = pydicom.dataset.Dataset.pixel_array

    def spy(self: Any) -> Any:
        decoded.append(int(self.Rows))
        return pixel_array.fget(self)  # type: ignore[attr-defined]

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(spy))
    client = make_client(upload_dir=tmp_path / "uploads", max_image_mpx=4)
    bomb = rle_dicom(3000)  # 9 Mpx from ~140 KB; the same at 65,535 px a side is 4 GB
    reply = client.post("/api/uploads?filename=ct.dcm", content=bomb, headers=SAME_ORIGIN)
    assert reply.status_code == 415, reply.text
    assert "3000 x 3000 px" in one_line(reply)
    assert decoded == []
    # Under the limit, the same kind of file is accepted.
    reply = client.post("/api/uploads?filename=ok.dcm", content=rle_dicom(512), headers=SAME_ORIGIN)
    assert reply.status_code == 201, reply.text


def test_the_pixel_limit_is_configurable(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(upload_dir=tmp_path / "uploads", max_image_mpx=0.5)
    url = "/api/uploads?filename=photo.png"
    assert client.post(url, content=_png(800), headers=SAME_ORIGIN).status_code == 415
    assert client.post(url, content=_png(600), headers=SAME_ORIGIN).status_code == 201


def test_a_bomb_in_the_slide_folder_is_a_one_line_4xx_without_server_paths(
    make_client: Callable[..., TestClient],
    tmp_path: Path,
    png_bomb: bytes,
    decoded_sizes: list[tuple[int, int]],
) -> None:
    root = tmp_path / "slides"
    (root / "inbox").mkdir(parents=True)
    (root / "inbox" / "big.png").write_bytes(png_bomb)
    client = make_client(root=root)
    assert client.get("/api/slides").json()["slides"] == ["inbox/big.png"]
    reply = client.post("/api/sessions", json={"slide": "inbox/big.png"}, headers=SAME_ORIGIN)
    assert reply.status_code == 422, reply.text
    detail = one_line(reply)
    assert "inbox/big.png" in detail and "pixels" in detail
    assert str(tmp_path) not in detail
    assert (BOMB_SIDE, BOMB_SIDE) not in decoded_sizes


def test_uploads_are_opened_a_few_at_a_time(
    make_client: Callable[..., TestClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight at once must not cost eight decoded images: at most ``upload_checks`` are open."""
    from medagent.server import _uploads

    lock, now, most = threading.Lock(), [0], [0]
    real_open = _uploads.open_image

    def slow_open(path: Path, **kwargs: Any) -> Any:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        try:
            time.sleep(0.3)
            return real_open(path, **kwargs)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(_uploads, "open_image", slow_open)
    client = make_client(upload_dir=tmp_path / "uploads", upload_checks=2)

    def upload(number: int) -> int:
        body = _png(64, (number * 20, 100, 100))
        url = f"/api/uploads?filename=u{number}.png"
        return client.post(url, content=body, headers=SAME_ORIGIN).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(upload, range(8)))
    assert statuses == [201] * 8
    assert most[0] <= 2, most[0]


@pytest.fixture
def images(tmp_path: Path) -> Iterator[list[Path]]:
    """Four 1000 x 1000 PNGs: ~4 MB each once decoded (with their smaller levels)."""
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for number in range(4):
        path = folder / f"i{number}.png"
        path.write_bytes(_png(1000, (40 * number, 80, 120)))
        paths.append(path)
    yield paths


def test_the_open_slide_cache_is_bounded_by_bytes(images: list[Path]) -> None:
    tiles = TileService(open_slides=16, open_slides_bytes=9 * 1024 * 1024)
    for path in images:
        tiles.slide(path)
        assert tiles.open_bytes <= 9 * 1024 * 1024
    assert tiles.open_bytes >= 3 * 1000 * 1000  # the latest one is kept


def test_a_sessions_agent_keeps_no_evicted_image_alive(images: list[Path]) -> None:
    tiles = TileService(open_slides=16, open_slides_bytes=5 * 1024 * 1024)
    held = tiles.shared(images[0])  # what a session's agent holds
    first = weakref.ref(tiles.slide(images[0]).slide)
    for path in images[1:]:
        tiles.slide(path)
    gc.collect()
    assert first() is None  # evicted, and nothing else kept its pixels
    crop = held.read(Region(x=0, y=0, width=10, height=10), 0)  # opened again on use
    assert crop.getpixel((0, 0)) == (0, 80, 120)
    assert held.dimensions.width == 1000


def test_sessions_on_many_images_stay_within_the_cache_bound(
    make_client: Callable[..., TestClient], images: list[Path]
) -> None:
    client = make_client(root=images[0].parent, open_slides_mb=5)
    for path in images:
        reply = client.post("/api/sessions", json={"slide": path.name}, headers=SAME_ORIGIN)
        assert reply.status_code == 201, reply.text
    tiles: TileService = client.app.state.tiles  # type: ignore[attr-defined]
    assert tiles.open_bytes <= 5 * 1024 * 1024
