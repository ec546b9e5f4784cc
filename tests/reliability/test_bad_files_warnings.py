"""Library warnings never reach stderr: they become notes where they matter, nowhere else.

Cases:
- a JPEG with corrupt EXIF (PIL "Corrupt EXIF data"): opens, the warning is a note, and
  ``slide info`` prints it as a "note:" line with nothing on stderr; named ``.svs`` it is one
  error line with no warning text before it;
- a DICOM cut inside its SOP Class UID (pydicom "Invalid value for VR UI") and one cut inside
  encapsulated pixel data (pydicom "End of file reached before delimiter"): one line each;
- a deflate TIFF with one strip zeroed (libtiff "ZIPDecode: Decoding error" written by C code
  straight to stderr): one line;
- warnings raised while a region is read become the slide's notes;
- captures in parallel threads keep their own notes, other threads' warnings are untouched,
  and the warnings machinery is restored afterwards.
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path

import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from cli_support import medagent
from medagent.errors import SlideOpenError
from medagent.imaging import ImageSlide, Region, open_image
from medagent.testing import synthetic_tissue

#: An EXIF block whose first IFD promises an entry that is not there.
_BAD_EXIF = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + b"\x00" * 20


def corrupt_exif_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "JPEG", exif=_BAD_EXIF)
    path.write_bytes(buffer.getvalue())
    return path


def _dicom(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None
    return Path(path)


def test_corrupt_exif_is_a_note_not_a_warning(tmp_path: Path) -> None:
    path = corrupt_exif_jpeg(tmp_path / "photo.jpg")
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        with open_image(path) as slide:
            notes = slide.notes
            info = slide.info
    assert leaked == []
    assert any("Corrupt EXIF data" in note for note in notes)
    assert info.notes == notes


def test_slide_info_prints_decoder_warnings_as_notes_and_nothing_on_stderr(
    tmp_path: Path,
) -> None:
    path = corrupt_exif_jpeg(tmp_path / "photo.jpg")
    result = medagent("slide", "info", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "note: Corrupt EXIF data" in result.stdout
    rendered = medagent("slide", "render", str(path), "--out", str(tmp_path / "view.png"))
    assert rendered.returncode == 0 and rendered.stderr == ""
    assert "note:" not in rendered.stdout  # notes are shown where they matter only


@pytest.mark.parametrize(
    "make",
    ["exif-named-svs", "dicom-cut-in-uid", "dicom-cut-in-encapsulated-pixels", "zeroed-strip-tiff"],
)
def test_errors_after_library_warnings_are_one_line(tmp_path: Path, make: str) -> None:
    if make == "exif-named-svs":
        path = corrupt_exif_jpeg(tmp_path / "scan.svs")
    elif make == "dicom-cut-in-uid":
        source = _dicom("CT_small.dcm").read_bytes()
        path = tmp_path / "ct.dcm"
        uid = b"1.2.840.10008.5.1.4.1.1.2"
        in_dataset = source.index(uid, source.index(uid, 132) + 1)  # the 2nd is (0008,0016)
        path.write_bytes(source[: in_dataset + 4])  # its value reads "1.2."
    elif make == "dicom-cut-in-encapsulated-pixels":
        source = _dicom("MR_small_jp2klossless.dcm").read_bytes()
        path = tmp_path / "mr.dcm"
        path.write_bytes(source[: len(source) // 2])
    else:
        path = tmp_path / "zeros.tif"
        synthetic_tissue(400, 300).convert("RGB").save(path, compression="tiff_adobe_deflate")
        with Image.open(path) as image:
            strip = image.tag_v2[273][len(image.tag_v2[273]) // 2]  # StripOffsets
        data = bytearray(path.read_bytes())
        data[strip : strip + 400] = bytes(400)  # zeros over one strip, the tags intact
        path.write_bytes(bytes(data))
    result = medagent("slide", "info", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for noise in ("Warning", "warn_and_log", "EXIF", "delimiter", "ZIPDecode", "Traceback"):
        assert noise not in result.stderr


class _WarningSlide(ImageSlide):
    """A reader whose reads warn, as a decoder reading a damaged tile would."""

    def read(self, region: Region, level: int) -> Image.Image:
        warnings.warn("tile 3 was short; padded", UserWarning, stacklevel=1)
        return super().read(region, level)


def test_warnings_while_reading_become_the_slides_notes() -> None:
    slide = _WarningSlide(Image.new("RGB", (64, 64), "white"))
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        for _ in range(3):
            slide.read(Region(x=0, y=0, width=8, height=8), 0)
    assert leaked == []
    assert slide.notes == ["tile 3 was short; padded"]


def test_captures_in_parallel_threads_keep_their_own_notes() -> None:
    from medagent.imaging._guard import captured_warnings

    notes: dict[int, list[str]] = {}
    start = threading.Barrier(6)

    def capture(number: int) -> None:
        start.wait()
        with captured_warnings() as seen:
            for _ in range(50):
                warnings.warn(f"from thread {number}", UserWarning, stacklevel=1)
        notes[number] = seen

    threads = [threading.Thread(target=capture, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert notes == {n: [f"from thread {n}"] for n in range(6)}
    # Outside any capture, warnings behave as before: shown, or turned into errors.
    with pytest.warns(UserWarning, match="not captured"):
        warnings.warn("not captured", UserWarning, stacklevel=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning):
            warnings.warn("an error outside", UserWarning, stacklevel=1)
    assert warnings.showwarning.__module__ != "medagent.imaging._guard"
    assert not any(type(f[1]).__name__ == "_CapturingThread" for f in warnings.filters)


def test_an_error_filter_does_not_turn_a_decoder_warning_into_a_failure(tmp_path: Path) -> None:
    """Under ``-W error`` the EXIF warning is still a note, not an unreadable file."""
    path = corrupt_exif_jpeg(tmp_path / "photo.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_image(path) as slide:
            assert any("Corrupt EXIF" in note for note in slide.notes)


def test_a_bomb_warning_is_a_note_or_an_error_never_stderr(tmp_path: Path) -> None:
    """PIL warns (DecompressionBombWarning) between its limit and twice it; medagent's own
    limit decides, and the warning is not printed."""
    path = tmp_path / "big.png"
    Image.new("1", (12_000, 8_000)).save(path)
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 60_000_000  # 96 Mpx is between the limit and twice it
    try:
        with warnings.catch_warnings(record=True) as leaked:
            warnings.simplefilter("always")
            with pytest.raises(SlideOpenError, match="more than the 50,000,000 pixels"):
                open_image(path, max_pixels=50_000_000)
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    assert leaked == []
