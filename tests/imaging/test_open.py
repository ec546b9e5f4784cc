"""Opening images: every supported kind, and every kind of bad input as one clear error."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medagent.errors import InputError, PHIRefusedError, SlideOpenError
from medagent.imaging import ImageSlide, Region, open_image


def test_generated_pyramid_opens_with_levels_and_spacing(pyramid_tiff: Path) -> None:
    with open_image(pyramid_tiff) as slide:
        assert slide.format == "generic-tiff"
        assert (slide.dimensions.width, slide.dimensions.height) == (4000, 3000)
        assert slide.level_downsamples == [1.0, 2.0, 4.0, 8.0]
        assert slide.mpp_x == pytest.approx(0.25) and slide.mpp_y == pytest.approx(0.25)
        assert slide.read(Region(x=0, y=0, width=400, height=200), 1).size == (200, 100)


def test_spacing_is_none_when_the_file_does_not_say(no_spacing_tiff: Path) -> None:
    with open_image(no_spacing_tiff) as slide:
        assert slide.mpp_x is None and slide.mpp_y is None
        assert slide.info.spacing_known is False


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_plain_images_are_one_level_slides(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"plain{suffix}"
    Image.new("RGB", (300, 200), (200, 100, 150)).save(path)
    slide = open_image(path)
    assert isinstance(slide, ImageSlide)
    assert slide.level_count == 1 and slide.mpp_x is None
    assert slide.read(Region(x=10, y=10, width=50, height=40), 0).size == (50, 40)


def test_large_plain_images_get_reduced_levels(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (5000, 2500), "white").save(path)
    slide = open_image(path)
    assert slide.level_downsamples == pytest.approx([1.0, 4.0, 16.0], rel=0.01)
    assert slide.level_dimensions[-1].width == 313


@pytest.mark.realdata
def test_real_aperio_slide(cmu_slide: Path) -> None:
    with open_image(cmu_slide) as slide:
        info = slide.info
        assert info.vendor == "aperio"
        assert info.mpp_x == pytest.approx(0.499)
        assert info.objective_power == 20
        assert info.associated_images == ["label", "macro", "thumbnail"]


@pytest.mark.realdata
def test_label_image_stays_hidden_unless_allowed(cmu_slide: Path) -> None:
    with open_image(cmu_slide) as slide:
        with pytest.raises(PHIRefusedError, match="may show patient identifiers"):
            slide.associated_image("label")
        assert slide.associated_image("label", allow_phi=True).mode == "RGB"
        assert "label" not in slide.info.model_dump_json().replace('"label"', "")


@pytest.mark.realdata
def test_dicom_radiograph_spacing_and_monochrome1(shared_data: Path) -> None:
    path = shared_data / "radiology" / "dx_image.dcm"
    slide = open_image(path)
    assert slide.format == "dicom"
    # DICOM PixelSpacing is (row, column) = (y, x) in mm.
    assert slide.mpp_x == pytest.approx(1201.2)
    assert slide.mpp_y == pytest.approx(1200.0)
    raw = pydicom.dcmread(path).pixel_array.astype(float)
    shown = np.asarray(slide.read(Region.whole(slide.dimensions), 0).convert("L"), dtype=float)
    # MONOCHROME1: high stored values are dark, so the rendering is inverted.
    assert np.corrcoef(raw.ravel(), shown.ravel())[0, 1] < -0.9


def test_dicom_ct_is_windowed_to_8_bits() -> None:
    slide = open_image(get_testdata_file("CT_small.dcm"))
    assert slide.mpp_x == pytest.approx(661.468)
    pixels = np.asarray(slide.read(Region.whole(slide.dimensions), 0))
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255


def test_compressed_dicom_decodes_when_a_decoder_is_installed() -> None:
    slide = open_image(get_testdata_file("MR_small_jp2klossless.dcm"))
    assert slide.dimensions.width == 64


def test_compressed_dicom_without_decoder_names_the_package() -> None:
    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    with pytest.raises(SlideOpenError, match=r"JPEG-LS.*pip install pylibjpeg"):
        open_image(path)


def _bad_inputs(tmp: Path, source_tiff: Path) -> dict[str, tuple[Path, str]]:
    folder = tmp / "a-folder"
    folder.mkdir()
    empty = tmp / "empty.svs"
    empty.write_bytes(b"")
    truncated = tmp / "truncated.tif"
    truncated.write_bytes(source_tiff.read_bytes()[:3000])
    random_svs = tmp / "random.svs"
    random_svs.write_bytes(np.random.default_rng(0).bytes(5000))
    png_svs = tmp / "really-a-png.svs"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    png_svs.write_bytes(buffer.getvalue())
    text = tmp / "notes.txt"
    text.write_text("not an image\n")
    truncated_png = tmp / "truncated.png"
    Image.new("RGB", (400, 400), (10, 200, 30)).save(buffer := io.BytesIO(), format="PNG")
    truncated_png.write_bytes(buffer.getvalue()[:200])
    return {
        "missing": (tmp / "nope.svs", "no such file"),
        "directory": (folder, "is a folder"),
        "zero bytes": (empty, "is empty"),
        "truncated tiff": (truncated, "truncated or corrupt"),
        "random bytes .svs": (random_svs, "OpenSlide does not recognise it"),
        "png named .svs": (png_svs, "it contains a PNG image"),
        "text file": (text, "not an image or slide format"),
        "truncated png": (truncated_png, "truncated or corrupt"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "directory",
        "zero bytes",
        "truncated tiff",
        "random bytes .svs",
        "png named .svs",
        "text file",
        "truncated png",
    ],
)
def test_bad_input_is_one_line_naming_file_and_reason(
    tmp_path: Path, pyramid_tiff: Path, case: str
) -> None:
    path, reason = _bad_inputs(tmp_path, pyramid_tiff)[case]
    with pytest.raises(SlideOpenError) as info:
        open_image(path)
    message = str(info.value)
    assert str(path) in message and reason in message
    assert "\n" not in message
    assert isinstance(info.value, InputError)


def test_permission_denied_is_reported(
    tmp_path: Path, pyramid_tiff: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, where chmod 000 does not stop reads: simulate the OS refusal.
    target = tmp_path / "locked.tif"
    shutil.copy(pyramid_tiff, target)
    real_open = Path.open

    def refusing_open(self: Path, *args: object, **kwargs: object) -> object:
        if self == target:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", refusing_open)
    with pytest.raises(SlideOpenError, match="permission denied"):
        open_image(target)


@pytest.mark.realdata
def test_truncated_real_svs(tmp_path: Path, cmu_slide: Path) -> None:
    data = cmu_slide.read_bytes()
    target = tmp_path / "cut.svs"
    target.write_bytes(data[: len(data) // 3])
    with pytest.raises(SlideOpenError, match=r"cut\.svs"):
        open_image(target)
