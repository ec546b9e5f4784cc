"""Decompression bombs at the imaging layer: refused from the header, before decoding.

Cases: a PNG declaring 9400 x 9400 px (~100 KB on disk), a PNG past PIL's own hard limit, an
RLE DICOM declaring 3000 x 3000 px, a multi-frame DICOM whose frames multiply the count; each
through ``decode_image`` / ``open_image`` with a bound, and each under the bound still opens.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from test_server_decompression_bombs import rle_dicom

from medagent.errors import SlideOpenError
from medagent.imaging import decode_image, open_image


def _png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_png_bomb_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[tuple[int, int]] = []
    original = Image.Image.load

    def spy(self: Image.Image) -> object:
        loads.append(self.size)
        return original(self)

    bomb = _png(9400)
    assert len(bomb) < 200_000
    monkeypatch.setattr(Image.Image, "load", spy)
    with pytest.raises(SlideOpenError, match=r"upload.png: 9400 x 9400 px is more than") as info:
        decode_image(bomb, max_pixels=40_000_000, name="upload.png")
    assert "\n" not in str(info.value)
    assert (9400, 9400) not in loads


def test_an_image_past_pils_own_limit_is_one_line_without_advice_to_check_the_file() -> None:
    with pytest.raises(SlideOpenError, match="too many pixels to decode safely") as info:
        decode_image(_png(14_000), name="huge.png")
    assert "check that the file is complete" not in str(info.value)


def test_a_dicom_bomb_is_refused_by_open_image_before_pixel_data_is_decoded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ct.dcm"
    path.write_bytes(rle_dicom(3000))
    with pytest.raises(SlideOpenError, match=r"3000 x 3000 px x 1 frame\(s\) is more than"):
        open_image(path, max_pixels=4_000_000)
    small = tmp_path / "small.dcm"
    small.write_bytes(rle_dicom(512))
    with open_image(small, max_pixels=4_000_000) as slide:
        assert slide.dimensions.width == 512


def test_frames_count_towards_a_dicoms_pixels(tmp_path: Path) -> None:
    import pydicom

    path = tmp_path / "frames.dcm"
    path.write_bytes(rle_dicom(512))
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 40  # 512 x 512 x 40 = 10.5 Mpx declared
    ds.save_as(path)
    with pytest.raises(SlideOpenError, match="40 frame"):
        open_image(path, max_pixels=4_000_000)
