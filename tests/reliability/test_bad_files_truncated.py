"""Truncated files: every cut is one ``SlideOpenError`` line naming the file, never a traceback.

Cases (each file cut at 12-15 points: inside the first bytes, the DICOM preamble and header,
and at 10 %-99.9 % of its length), opened with ``open_image`` and every level read:
- DICOM: the shared chest radiograph (uncompressed), pydicom's CT (uncompressed), MR
  (JPEG 2000, encapsulated: pydicom returns an empty dataset, which used to end in an
  ``AttributeError``), liver segmentation (1-bit, sequences);
- the shared Aperio SVS and a generated tiled pyramid TIFF (OpenSlide);
- generated PNG, JPEG and deflate-compressed TIFF (PIL; libtiff printed to stderr).
Through the CLI: ``slide info``, ``slide render`` and ``ask`` on cuts of each kind — exit
code 2, exactly one line on stderr, no warning text, no "Traceback".
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from cli_support import medagent
from medagent.errors import SlideOpenError
from medagent.imaging import Region, Slide, open_image
from medagent.testing import synthetic_tissue, write_pyramid_tiff

#: Byte offsets inside magic numbers, the DICOM preamble (128 bytes + "DICM") and headers.
_HEAD_CUTS = (1, 8, 64, 131, 132, 200, 400)
_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9, 0.97, 0.999)
#: What every truncation message ends with: what to do about it.
_ADVICE = re.compile(r"check that (the file|it) is complete")


def cut_points(size: int) -> list[int]:
    return sorted({c for c in _HEAD_CUTS if c < size} | {int(size * f) for f in _FRACTIONS})


def write_cuts(source: Path, folder: Path) -> Iterator[Path]:
    data = source.read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    for cut in cut_points(len(data)):
        target = folder / f"{source.stem}-cut{cut}{source.suffix}"
        target.write_bytes(data[:cut])
        yield target


def read_every_level(slide: Slide) -> None:
    """Each level whole when small, else its four corners."""
    for level, (size, downsample) in enumerate(
        zip(slide.level_dimensions, slide.level_downsamples, strict=True)
    ):
        side = min(512, size.width, size.height)
        corners = {(0, 0), (size.width - side, 0), (0, size.height - side)}
        corners.add((size.width - side, size.height - side))
        if size.width * size.height <= 2_000_000:
            corners, side_w, side_h = {(0, 0)}, size.width, size.height
        else:
            side_w = side_h = side
        for l_x, l_y in corners:
            slide.read(
                Region(
                    x=int(l_x * downsample),
                    y=int(l_y * downsample),
                    width=int(side_w * downsample),
                    height=int(side_h * downsample),
                ),
                level,
            )


def assert_each_cut_is_one_line(
    cuts: list[Path], capfd: pytest.CaptureFixture[str]
) -> dict[str, int]:
    """Open and read every cut; return how many failed cleanly and how many still opened."""
    outcome = {"refused": 0, "opened": 0}
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        for path in cuts:
            try:
                with open_image(path) as slide:
                    read_every_level(slide)
                outcome["opened"] += 1
            except SlideOpenError as exc:
                message = str(exc)
                assert "\n" not in message, message
                assert str(path) in message, message
                assert _ADVICE.search(message), message
                outcome["refused"] += 1
    assert [str(w.message) for w in leaked] == []
    captured = capfd.readouterr()
    assert captured.err == "", captured.err  # nothing printed by C libraries either
    return outcome


def _pydicom_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom ships {name}"
    return Path(path)


@pytest.mark.realdata
def test_cuts_of_the_shared_radiograph_are_one_line(
    shared_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cuts = list(write_cuts(shared_data / "radiology" / "dx_image.dcm", tmp_path))
    assert len(cuts) >= 10
    outcome = assert_each_cut_is_one_line(cuts, capfd)
    assert outcome["refused"] == len(cuts)


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_jp2klossless.dcm", "liver_1frame.dcm", "SC_rgb_rle.dcm"]
)
def test_cuts_of_dicom_files_are_one_line(
    name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cuts = list(write_cuts(_pydicom_file(name), tmp_path))
    outcome = assert_each_cut_is_one_line(cuts, capfd)
    # CT_small ends in 40 bytes of padding after its pixel data: cut there, it is whole.
    assert outcome["refused"] >= len(cuts) - 1


@pytest.mark.realdata
def test_cuts_of_the_shared_svs_are_one_line(
    cmu_slide: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cuts = list(write_cuts(cmu_slide, tmp_path))
    outcome = assert_each_cut_is_one_line(cuts, capfd)
    assert outcome["refused"] == len(cuts)


@pytest.fixture(scope="module")
def small_pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pyramid")
    return write_pyramid_tiff(folder / "pyramid.tif", synthetic_tissue(1200, 900, seed=5))


def test_cuts_of_a_tiled_pyramid_are_one_line_or_its_intact_first_level(
    small_pyramid: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cuts = list(write_cuts(small_pyramid, tmp_path))
    outcome = assert_each_cut_is_one_line(cuts, capfd)
    # A cut inside the last (smallest) level leaves level 0 whole: it opens, and says so.
    assert outcome["refused"] >= len(cuts) - 3
    for path in cuts[-2:]:
        try:
            with open_image(path) as slide:
                assert any("only its first image" in note for note in slide.notes)
        except SlideOpenError:
            pass


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("image.png", {}),
        ("image.jpg", {"quality": 90}),
        ("deflate.tif", {"compression": "tiff_adobe_deflate"}),
        ("jpeg.tif", {"compression": "jpeg"}),
    ],
)
def test_cuts_of_plain_images_are_one_line(
    name: str, options: dict[str, object], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / name
    synthetic_tissue(640, 480, seed=3).convert("RGB").save(source, **options)  # type: ignore[arg-type]
    cuts = list(write_cuts(source, tmp_path / "cuts"))
    assert len(cuts) >= 10
    outcome = assert_each_cut_is_one_line(cuts, capfd)
    # A PNG cut inside its end marker (the 99.9 % cut) still holds every pixel.
    assert outcome["refused"] >= len(cuts) - 1


# -- the same through the command line --------------------------------------------------------


def _cut(source: Path, folder: Path, fraction: float | int) -> Path:
    data = source.read_bytes()
    cut = fraction if isinstance(fraction, int) else int(len(data) * fraction)
    target = folder / f"{source.stem}-{cut}{source.suffix}"
    target.write_bytes(data[:cut])
    return target


def assert_one_line_error(result: object, path: Path) -> None:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 2, stderr  # type: ignore[attr-defined]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert path.name in lines[0]
    assert "Traceback" not in stderr and "Warning" not in stderr


def _cli_cases(shared: Path | None, tmp_path: Path) -> list[Path]:
    mr = _pydicom_file("MR_small_jp2klossless.dcm")
    cases = [_cut(mr, tmp_path, 300), _cut(mr, tmp_path, 0.9)]
    png = tmp_path / "tile.png"
    synthetic_tissue(300, 200).convert("RGB").save(png)
    deflate = tmp_path / "plain.tif"
    synthetic_tissue(300, 200).convert("RGB").save(deflate, compression="tiff_adobe_deflate")
    cases += [_cut(png, tmp_path, 0.5), _cut(deflate, tmp_path, 0.999)]
    if shared is not None:
        dx = shared / "radiology" / "dx_image.dcm"
        cases += [_cut(dx, tmp_path, 200), _cut(dx, tmp_path, 400)]
        cases += [_cut(dx, tmp_path, 0.3), _cut(dx, tmp_path, 0.9)]
        cases += [_cut(shared / "slides" / "cmu-1-small-region.svs", tmp_path, 0.5)]
    return cases


@pytest.mark.slow
def test_slide_info_and_render_on_cut_files_print_one_line(tmp_path: Path) -> None:
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    for path in _cli_cases(shared if shared.is_dir() else None, tmp_path):
        assert_one_line_error(medagent("slide", "info", str(path)), path)
        rendered = medagent("slide", "render", str(path), "--out", str(tmp_path / "v.png"))
        assert_one_line_error(rendered, path)
        assert not (tmp_path / "v.png").exists()


@pytest.mark.slow
def test_ask_on_a_cut_dicom_prints_one_line(tmp_path: Path) -> None:
    script = tmp_path / "replies.jsonl"
    script.write_text("")
    mr = _pydicom_file("MR_small_jp2klossless.dcm")
    for path in (_cut(mr, tmp_path, 0.3), _cut(mr, tmp_path, 0.9)):
        result = medagent(
            "ask", str(path), "What is shown?", "--backend", "scripted", "--script", str(script)
        )
        assert_one_line_error(result, path)


def test_an_intact_image_still_opens(tmp_path: Path) -> None:
    """The guard refuses damage, not images: the uncut sources open and read."""
    png = tmp_path / "whole.png"
    Image.new("RGB", (40, 30), "white").save(png)
    for path in (png, _pydicom_file("MR_small_jp2klossless.dcm")):
        with open_image(path) as slide:
            read_every_level(slide)
            assert slide.notes == []
