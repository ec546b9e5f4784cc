"""Damaged pyramid levels are found when the file opens, naming the level; every read of every
``Slide`` implementation fails as one line.

Choice: ``open_image`` reads the first and the last tile of every level, and a level that
cannot be read refuses the file (``slide info`` exits 2 naming the level), so a run never
starts on a slide that fails half-way. Damage between those two tiles is still one line when
that part is read.

Cases:
- a tiled pyramid whose tail is zeros (a download into a preallocated file that stopped),
  the zeros starting inside each level's tile data in turn: ``open_image`` and ``slide info``;
- a pyramid cut inside its smallest level: its intact first image opens, with a note;
- a reader (a ``Slide`` written later) whose ``read`` raises ``struct.error``, ``KeyError``,
  ``ValueError``, ``MemoryError`` or ``ZeroDivisionError``: one ``SlideOpenError`` naming the
  file and the level; a level that does not exist is a ``RegionError``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import tifffile
from PIL import Image

from cli_support import medagent
from medagent.errors import SlideOpenError
from medagent.imaging import ImageSlide, Region, open_image
from medagent.testing import synthetic_tissue, write_pyramid_tiff


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("levels")
    return write_pyramid_tiff(folder / "pyramid.tif", synthetic_tissue(2000, 1500, seed=7))


def level_data(path: Path) -> list[tuple[int, int]]:
    """(first, last) byte offset of each level's tile data, level 0 first."""
    with tifffile.TiffFile(path) as tif:
        return [(min(p.dataoffsets), max(p.dataoffsets)) for p in tif.pages]  # type: ignore[union-attr]


def zero_tail(source: Path, target: Path, start: int) -> Path:
    data = bytearray(source.read_bytes())
    data[start:] = bytes(len(data) - start)
    target.write_bytes(bytes(data))
    return target


def test_the_pyramid_has_levels_to_damage(pyramid: Path) -> None:
    assert len(level_data(pyramid)) == 3
    with open_image(pyramid) as slide:
        assert slide.level_count == 3 and slide.notes == []


@pytest.mark.parametrize("level", [0, 1, 2])
def test_a_zero_filled_tail_is_refused_at_open_naming_the_level(
    pyramid: Path, tmp_path: Path, level: int
) -> None:
    first, last = level_data(pyramid)[level]
    damaged = zero_tail(pyramid, tmp_path / f"zeros-from-level{level}.tif", (first + last) // 2)
    with pytest.raises(SlideOpenError) as refused:
        open_image(damaged)
    message = str(refused.value)
    assert "\n" not in message and str(damaged) in message
    # The first level reached whose last tile lies in the zeros is named.
    assert f"reading level {level} at" in message
    assert "check that it is complete" in message


def test_slide_info_exits_2_on_a_damaged_level(pyramid: Path, tmp_path: Path) -> None:
    first, last = level_data(pyramid)[2]
    damaged = zero_tail(pyramid, tmp_path / "zeros.tif", (first + last) // 2)
    result = medagent("slide", "info", str(damaged))
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "level 2" in lines[0] and "Traceback" not in result.stderr


def test_a_pyramid_cut_in_its_smallest_level_opens_its_first_image_with_a_note(
    pyramid: Path, tmp_path: Path
) -> None:
    first, last = level_data(pyramid)[2]
    cut = tmp_path / "cut.tif"
    cut.write_bytes(pyramid.read_bytes()[: (first + last) // 2])
    with open_image(cut) as slide:
        assert slide.dimensions.width == 2000
        assert any("only its first image" in note for note in slide.notes)
    result = medagent("slide", "info", str(cut))
    assert result.returncode == 0 and result.stderr == ""
    assert "note: OpenSlide cannot read it as a tiled pyramid" in result.stdout


class _BrokenReader(ImageSlide):
    """A reader added later that lets its decoder's exception out of ``read``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(Image.new("RGB", (300, 200), "white"), path=Path("/data/broken.xyz"))
        self.error = error

    def read(self, region: Region, level: int) -> Image.Image:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(struct.error("unpack requires a buffer of 4 bytes"), id="struct.error"),
        pytest.param(KeyError("TileOffsets"), id="KeyError"),
        pytest.param(ValueError("buffer is smaller than requested size"), id="ValueError"),
        pytest.param(MemoryError(), id="MemoryError"),
        pytest.param(ZeroDivisionError("division by zero"), id="ZeroDivisionError"),
        pytest.param(OSError(5, "Input/output error"), id="OSError"),
    ],
)
def test_any_reader_error_is_one_slide_open_error(error: BaseException) -> None:
    slide = _BrokenReader(error)
    with pytest.raises(SlideOpenError) as failed:
        slide.read(Region(x=10, y=20, width=30, height=40), 0)
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("/data/broken.xyz: reading level 0 at (x=10, y=20, w=30, h=40)")
    assert "check that it is complete" in message
