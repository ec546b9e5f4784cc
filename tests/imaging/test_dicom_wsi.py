"""DICOM whole-slide images through wsidicom: a series folder, one instance file, an instance
without ``ImageType``, damaged files and folders that are not one series.

The DICOM files are written here from slides OpenSlide reads (a generated pyramid and the
real CMU slide), so every read can be compared with the source: lossless (JPEG 2000) reads
equal it pixel for pixel; JPEG baseline (quality 95, 4:2:2) reads stay within
``_JPEG_MEAN``/``_JPEG_P99`` (mean and 99th percentile of the absolute difference per channel,
0–255; measured 0.2–0.6 / 5–11 on the generated pyramid, 2.2 / 19 on the CMU slide).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from cli_support import medagent
from medagent.errors import DependencyMissingError, InputError, PHIRefusedError, SlideOpenError
from medagent.imaging import Region, Slide, list_under_roots, open_image, resolve_under_roots
from medagent.imaging._dicom_wsi import DicomWsiSlide, open_dicom_wsi
from medagent.testing import synthetic_tissue, write_pyramid_tiff
from medagent.testing._dicom_wsi import write_dicom_wsi

pytest.importorskip("wsidicom", reason="DICOM WSI needs the [dicom] extra (wsidicom)")

_JPEG_MEAN = 3.0
_JPEG_P99 = 24.0


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 levels pyramid of odd size (edge tiles, uneven level sizes), mpp 0.25."""
    path = tmp_path_factory.mktemp("source") / "pyramid.tif"
    return write_pyramid_tiff(path, synthetic_tissue(1500, 1100, seed=3), mpp=0.25, levels=3)


@pytest.fixture(scope="module")
def series(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A series folder, JPEG 2000 lossless: one instance per level, a label, an overview."""
    return write_dicom_wsi(source, tmp_path_factory.mktemp("dicom") / "series", tile=256)


def _pixels(slide: Slide, region: Region, level: int) -> np.ndarray:
    return np.asarray(slide.read(region, level), dtype=np.int16)


def _regions(slide: Slide) -> list[Region]:
    """The whole slide, an inner region off the tile grid, and one at the bottom-right edge.

    Corners on multiples of the coarsest downsample: OpenSlide interpolates a level read that
    starts between two of the level's pixels, where the DICOM reader starts at the pixel."""
    d = slide.dimensions
    return [
        Region(x=0, y=0, width=d.width, height=d.height),
        Region(x=300, y=156, width=516, height=388),
        Region(x=d.width - 300, y=d.height - 200, width=300, height=200),
    ]


def _assert_reads_equal(dicom: Slide, reference: Slide) -> None:
    for level in range(reference.level_count):
        for region in _regions(reference):
            expected = _pixels(reference, region, level)
            assert np.array_equal(_pixels(dicom, region, level), expected), (level, region)


def test_a_series_folder_has_the_source_levels_spacing_and_pixels(
    series: Path, source: Path
) -> None:
    with open_image(series) as dicom, open_image(source) as reference:
        assert isinstance(dicom, DicomWsiSlide)
        assert (dicom.format, dicom.modality.kind) == ("dicom", "pathology")
        assert dicom.level_dimensions == reference.level_dimensions
        assert dicom.level_downsamples == reference.level_downsamples == [1.0, 2.0, 4.0]
        assert (dicom.mpp_x, dicom.mpp_y) == pytest.approx((0.25, 0.25))
        assert dicom.objective_power == 20.0
        assert dicom.vendor == "medagent.testing"
        assert dicom.associated_image_names == ["label", "macro"]
        assert dicom.properties["dicom.TransferSyntaxUID"] == "1.2.840.10008.1.2.4.90"
        assert not any("Patient" in key for key in dicom.properties)
        _assert_reads_equal(dicom, reference)


@pytest.mark.parametrize("name", ["label", "macro"])
def test_label_and_overview_are_behind_the_phi_guard(series: Path, name: str) -> None:
    with open_image(series) as slide:
        with pytest.raises(PHIRefusedError, match="patient identifiers"):
            slide.associated_image(name)
        image = slide.associated_image(name, allow_phi=True)
    assert image.mode == "RGB" and image.width > 0


def test_an_associated_image_it_lacks_is_a_one_line_error(series: Path) -> None:
    with open_image(series) as slide, pytest.raises(InputError, match="no associated image"):
        slide.associated_image("thumbnail", allow_phi=True)


def test_a_single_instance_file_opens_as_a_one_level_slide(series: Path, source: Path) -> None:
    with open_image(series / "level-1.dcm") as dicom, open_image(source) as reference:
        assert dicom.level_count == 1
        assert dicom.dimensions == reference.level_dimensions[1]
        assert dicom.mpp_x == pytest.approx(0.5)
        region = Region(x=0, y=0, width=dicom.dimensions.width, height=dicom.dimensions.height)
        level_1 = Region(x=0, y=0, **reference.dimensions.model_dump())
        assert np.array_equal(_pixels(dicom, region, 0), _pixels(reference, level_1, 1))


def test_single_file_writes_level_0_alone(source: Path, tmp_path: Path) -> None:
    path = write_dicom_wsi(source, tmp_path / "one", single_file=True)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == [path.name]
    with open_image(path) as slide:
        assert slide.level_count == 1 and slide.associated_image_names == []


def _without_image_type(path: Path) -> None:
    ds = pydicom.dcmread(path)
    del ds.ImageType
    ds.save_as(path, enforce_file_format=True)


def test_an_instance_without_image_type_opens_and_says_so(series: Path, tmp_path: Path) -> None:
    """OpenSlide refused these as "truncated or corrupt"; wsidicom alone skips them."""
    folder = shutil.copytree(series, tmp_path / "series")
    _without_image_type(folder / "level-0.dcm")
    with open_image(folder) as slide, open_image(series) as intact:
        assert slide.level_dimensions == intact.level_dimensions
        assert any("level-0.dcm has no ImageType" in note for note in slide.notes)
        _assert_reads_equal(slide, intact)
    with open_image(folder / "level-0.dcm") as single:
        assert single.dimensions == intact.dimensions


def test_jpeg_baseline_reads_are_within_tolerance(source: Path, tmp_path: Path) -> None:
    folder = write_dicom_wsi(source, tmp_path / "jpeg", lossless=False)
    with open_image(folder) as dicom, open_image(source) as reference:
        assert dicom.properties["dicom.PhotometricInterpretation"] == "YBR_FULL_422"
        for level in range(reference.level_count):
            region = _regions(reference)[0]
            difference = np.abs(_pixels(dicom, region, level) - _pixels(reference, region, level))
            assert difference.mean() <= _JPEG_MEAN
            assert np.percentile(difference, 99) <= _JPEG_P99


@pytest.mark.parametrize("cut", ["in the header", "in the middle", "in the last tile"])
def test_a_truncated_instance_is_a_one_line_error(series: Path, tmp_path: Path, cut: str) -> None:
    folder = shutil.copytree(series, tmp_path / "series")
    level_0 = folder / "level-0.dcm"
    data = level_0.read_bytes()
    keep = {"in the header": 400, "in the middle": len(data) // 2, "in the last tile": -100}[cut]
    level_0.write_bytes(data[:keep])
    for path in (folder, level_0):
        with pytest.raises(SlideOpenError) as info:
            open_image(path).close()
        message = str(info.value)
        assert "\n" not in message and str(path) in message and "level-0.dcm" in message


def test_a_series_without_pixel_spacing_says_so(tmp_path: Path) -> None:
    source = write_pyramid_tiff(tmp_path / "no-mpp.tif", synthetic_tissue(600, 400), mpp=None)
    folder = write_dicom_wsi(source, tmp_path / "series")
    with pytest.raises(SlideOpenError, match="states no pixel spacing") as info:
        open_image(folder)
    assert "\n" not in str(info.value)


def test_a_folder_with_two_series_names_them(series: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(series, tmp_path / "two")
    other = pydicom.dcmread(folder / "level-2.dcm")
    other.SeriesInstanceUID = pydicom.uid.generate_uid()
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    other.save_as(folder / "other-series.dcm", enforce_file_format=True)
    with pytest.raises(SlideOpenError, match="holds 2 DICOM WSI series") as info:
        open_image(folder)
    assert "\n" not in str(info.value)


def test_a_folder_without_whole_slide_instances_is_still_refused(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm")
    assert isinstance(ct, str)
    folder = tmp_path / "ct-series"
    folder.mkdir()
    shutil.copy(ct, folder / "1.dcm")
    (folder / "notes.txt").write_text("not DICOM")
    with pytest.raises(SlideOpenError, match="holds a CT/MR series, a volume, not a slide"):
        open_image(folder)
    with pytest.raises(SlideOpenError, match="holds no DICOM whole-slide instance"):
        open_dicom_wsi(folder)


def test_only_the_series_files_count_in_a_folder(series: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(series, tmp_path / "with-extras")
    (folder / "README").write_text("scanner export")
    Image.new("RGB", (8, 8)).save(folder / "preview.png")
    with open_image(folder) as slide:
        assert slide.level_count == 3


def test_without_wsidicom_the_error_names_the_extra(
    series: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wsidicom", None)
    with pytest.raises(DependencyMissingError, match=r"medagent\[dicom\]"):
        open_dicom_wsi(series)


def test_reading_after_close_says_it_was_closed(series: Path) -> None:
    slide = open_image(series)
    slide.close()
    with pytest.raises(SlideOpenError, match="was closed"):
        slide.read(Region(x=0, y=0, width=10, height=10), 0)
    slide.close()


def test_slide_info_prints_the_levels_and_spacing(series: Path) -> None:
    result = medagent("slide", "info", str(series))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "dicom" in out and "0.25 x 0.25 µm/px" in out
    assert "level 2" in out and "375 x 275 (downsample 4)" in out
    assert "label, macro" in out


def test_slide_info_on_a_truncated_instance_is_one_line(series: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.dcm"
    data = (series / "level-0.dcm").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    result = medagent("slide", "info", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- the real CMU slide ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cmu_series(cmu_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dicom_wsi(cmu_slide, tmp_path_factory.mktemp("cmu") / "series")


@pytest.mark.realdata
def test_the_cmu_slide_as_dicom_reads_as_the_svs(cmu_series: Path, cmu_slide: Path) -> None:
    with open_image(cmu_series) as dicom, open_image(cmu_slide) as svs:
        assert dicom.dimensions == svs.dimensions
        assert (dicom.mpp_x, dicom.mpp_y) == pytest.approx((svs.mpp_x, svs.mpp_y))
        assert dicom.mpp_x == pytest.approx(0.499)
        label = dicom.associated_image("label", allow_phi=True)
        assert label.size == svs.associated_image("label", allow_phi=True).size
        _assert_reads_equal(dicom, svs)


@pytest.mark.realdata
def test_the_cmu_slide_as_jpeg_is_within_tolerance(cmu_slide: Path, tmp_path: Path) -> None:
    path = write_dicom_wsi(cmu_slide, tmp_path / "jpeg", lossless=False, single_file=True)
    with open_image(path) as dicom, open_image(cmu_slide) as svs:
        region = Region(x=0, y=0, **svs.dimensions.model_dump())
        difference = np.abs(_pixels(dicom, region, 0) - _pixels(svs, region, 0))
        assert difference.mean() <= _JPEG_MEAN
        assert np.percentile(difference, 99) <= _JPEG_P99


def test_a_series_folder_is_listed_as_one_slide_under_the_roots(
    series: Path, tmp_path: Path
) -> None:
    root = tmp_path / "slides"
    shutil.copytree(series, root / "case-1" / "wsi")
    Image.new("RGB", (8, 8)).save(root / "case-1" / "photo.png")
    listed = list_under_roots([root])
    assert listed == ["case-1/photo.png", "case-1/wsi"]
    with open_image(resolve_under_roots("case-1/wsi", [root])) as slide:
        assert slide.level_count == 3
