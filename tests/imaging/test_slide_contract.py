"""The ``Slide`` contract, checked the same way on every kind of slide.

Everything above the imaging layer (rendering, tissue, tools, agents) works on ``Slide`` alone,
so each implementation must keep the same promises: consistent levels, reads of the promised
size in RGB, OpenSlide's level-choice rule, a one-line error for a level that does not exist,
an ``info`` that survives JSON, a ``modality`` whose unit states the spacing, and a ``close``
that may be called twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medagent.errors import MedagentError, RegionError
from medagent.imaging import (
    Modality,
    Region,
    Slide,
    SlideInfo,
    open_image,
)

#: Each kind: how to open it (from the test's fixtures and tmp folder), the ``format`` the
#: opener must report, and the modality kind it must say.
_Opener = Callable[[pytest.FixtureRequest, Path], Slide]


def _pyramid(request: pytest.FixtureRequest, _tmp: Path) -> Slide:
    return open_image(request.getfixturevalue("pyramid_tiff"))


def _no_spacing_pyramid(request: pytest.FixtureRequest, _tmp: Path) -> Slide:
    return open_image(request.getfixturevalue("no_spacing_tiff"))


def _png(_request: pytest.FixtureRequest, tmp: Path) -> Slide:
    # Larger than one level, so the reduced in-memory levels are checked too.
    path = tmp / "plain.png"
    Image.new("RGB", (2600, 1300), (200, 100, 150)).save(path)
    return open_image(path)


def _png_radiograph(_request: pytest.FixtureRequest, tmp: Path) -> Slide:
    path = tmp / "chest.png"
    Image.new("L", (640, 480), 90).save(path)
    return open_image(path, modality="radiograph")


def _dicom_ct(_request: pytest.FixtureRequest, _tmp: Path) -> Slide:
    path = get_testdata_file("CT_small.dcm")
    assert isinstance(path, str)
    return open_image(path)


def _real_svs(request: pytest.FixtureRequest, _tmp: Path) -> Slide:
    return open_image(request.getfixturevalue("cmu_slide"))


@pytest.fixture(scope="module")
def dicom_wsi_series(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The generated pyramid written as a DICOM WSI series (wsidicom needs pixel spacing)."""
    pytest.importorskip("wsidicom", reason="DICOM WSI needs the [dicom] extra (wsidicom)")
    from medagent.testing._dicom_wsi import write_dicom_wsi

    source: Path = request.getfixturevalue("pyramid_tiff")
    return write_dicom_wsi(source, tmp_path_factory.mktemp("dicom-wsi") / "series")


@pytest.fixture(scope="module")
def cmu_dicom_wsi(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("wsidicom", reason="DICOM WSI needs the [dicom] extra (wsidicom)")
    from medagent.testing._dicom_wsi import write_dicom_wsi

    source: Path = request.getfixturevalue("cmu_slide")
    return write_dicom_wsi(source, tmp_path_factory.mktemp("cmu-dicom-wsi") / "series")


def _dicom_wsi(request: pytest.FixtureRequest, _tmp: Path) -> Slide:
    return open_image(request.getfixturevalue("dicom_wsi_series"))


def _real_dicom_wsi(request: pytest.FixtureRequest, _tmp: Path) -> Slide:
    return open_image(request.getfixturevalue("cmu_dicom_wsi"))


def _real_radiograph(request: pytest.FixtureRequest, _tmp: Path) -> Slide:
    shared: Path = request.getfixturevalue("shared_data")
    return open_image(shared / "radiology" / "dx_image.dcm")


KINDS: dict[str, tuple[_Opener, str, str]] = {
    "openslide pyramid": (_pyramid, "generic-tiff", "pathology"),
    "openslide without spacing": (_no_spacing_pyramid, "generic-tiff", "pathology"),
    "png": (_png, "png", "image"),
    "png declared a radiograph": (_png_radiograph, "png", "radiograph"),
    "dicom ct": (_dicom_ct, "dicom", "ct"),
    "real svs": (_real_svs, "aperio", "pathology"),
    "real dicom radiograph": (_real_radiograph, "dicom", "radiograph"),
    "dicom wsi series": (_dicom_wsi, "dicom", "pathology"),
    "real svs as dicom wsi": (_real_dicom_wsi, "dicom", "pathology"),
}
_REAL = {"real svs", "real dicom radiograph", "real svs as dicom wsi"}


@pytest.fixture(
    params=[
        pytest.param(name, marks=pytest.mark.realdata) if name in _REAL else name for name in KINDS
    ]
)
def slide(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Slide]:
    opener, file_format, kind = KINDS[request.param]
    opened = opener(request, tmp_path)
    assert opened.format == file_format
    assert opened.modality.kind == kind
    yield opened
    opened.close()


def _probe(slide: Slide) -> Region:
    """A region inside the slide, off the origin, covering about a third of each side."""
    d = slide.dimensions
    return Region(
        x=d.width // 3, y=d.height // 4, width=max(1, d.width // 3), height=max(1, d.height // 3)
    )


def test_levels_are_consistent(slide: Slide) -> None:
    dims, downsamples = slide.level_dimensions, slide.level_downsamples
    assert slide.dimensions == dims[0]
    assert slide.level_count == len(dims) == len(downsamples) >= 1
    assert downsamples[0] == pytest.approx(1.0)
    assert downsamples == sorted(downsamples)
    for size, downsample in zip(dims, downsamples, strict=True):
        assert size.width == pytest.approx(dims[0].width / downsample, abs=1)
        assert size.height == pytest.approx(dims[0].height / downsample, abs=1)


def test_read_returns_rgb_of_the_promised_size_at_every_level(slide: Slide) -> None:
    region = _probe(slide)
    for level in range(slide.level_count):
        image = slide.read(region, level)
        assert image.mode == "RGB"
        expected = slide.level_size_of(region, level)
        assert image.size == (expected.width, expected.height)


def test_best_level_is_the_coarsest_not_above_the_downsample(slide: Slide) -> None:
    downsamples = slide.level_downsamples
    assert slide.best_level_for_downsample(0.5) == 0
    assert slide.best_level_for_downsample(downsamples[-1] * 10) == slide.level_count - 1
    for level, downsample in enumerate(downsamples):
        assert slide.best_level_for_downsample(downsample) == level
        if level:
            just_below = (downsamples[level - 1] + downsample) / 2
            assert slide.best_level_for_downsample(just_below) == level - 1


@pytest.mark.parametrize("where", ["past the last", "negative"])
def test_a_level_that_does_not_exist_is_a_one_line_region_error(slide: Slide, where: str) -> None:
    level = slide.level_count if where == "past the last" else -1
    with pytest.raises(RegionError) as info:
        slide.read(_probe(slide), level)
    message = str(info.value)
    assert "\n" not in message
    assert slide.path.name in message and f"no level {level}" in message


def test_info_round_trips_and_agrees_with_the_slide(slide: Slide) -> None:
    info = slide.info
    assert SlideInfo.model_validate_json(info.model_dump_json()) == info
    assert info.dimensions == slide.dimensions
    assert info.level_dimensions == slide.level_dimensions
    assert info.level_downsamples == slide.level_downsamples
    assert (info.mpp_x, info.mpp_y) == (slide.mpp_x, slide.mpp_y)
    assert info.modality == slide.modality.kind
    assert info.spacing_known == (slide.mpp_x is not None and slide.mpp_y is not None)


def test_modality_states_spacing_in_its_unit(slide: Slide) -> None:
    modality = slide.modality
    assert isinstance(modality, Modality)
    assert modality.spacing(None) == "pixel spacing unknown"
    stated = modality.spacing(slide.mpp_x)
    if slide.mpp_x is None:
        assert stated == "pixel spacing unknown"
    elif modality.unit is not None:
        assert stated.endswith(f" {modality.unit} per pixel")
    if modality.unit is not None:
        assert modality.spacing(1.0).endswith(f" {modality.unit} per pixel")
        assert modality.length(1000.0).endswith(f" {modality.unit}")


def test_close_may_be_called_twice(slide: Slide) -> None:
    slide.close()
    slide.close()


def test_reading_a_closed_slide_works_or_says_it_was_closed(slide: Slide) -> None:
    """A kind holding a file handle refuses in one line; one holding pixels keeps working."""
    holds_a_handle = type(slide).close is not Slide.close
    slide.close()
    if not holds_a_handle:
        assert slide.read(_probe(slide), 0).mode == "RGB"
        return
    with pytest.raises(MedagentError, match="was closed") as info:
        slide.read(_probe(slide), 0)
    assert "\n" not in str(info.value)
