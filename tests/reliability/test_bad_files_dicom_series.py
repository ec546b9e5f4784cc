"""Bad DICOM series, through ``medagent slide info`` as a user meets them: a DICOM WSI instance
cut short at many points, a CT series with a slice missing, one slice with another spacing, two
series in one folder, a series folder also holding a slide. Each is exit code 2 and exactly one
line on stderr that names what is wrong — never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from cli_support import medagent
from medagent.testing import synthetic_tissue, write_ct_phantom, write_dicom_wsi, write_pyramid_tiff

pytestmark = pytest.mark.slow


def one_line_refusal(target: Path, *words: str) -> None:
    done = medagent("slide", "info", str(target), env={"COLUMNS": "300"})
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def wsi_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad-wsi")
    source = write_pyramid_tiff(folder / "s.tif", synthetic_tissue(2000, 1500), mpp=0.5, levels=2)
    return write_dicom_wsi(source, folder / "series", lossless=False)


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ct_phantom(tmp_path_factory.mktemp("bad-ct") / "series")


@pytest.mark.parametrize("fraction", [0.001, 0.02, 0.3, 0.6, 0.95, 0.999])
def test_a_cut_dicom_wsi_level_is_one_line(
    wsi_series: Path, tmp_path: Path, fraction: float
) -> None:
    folder = shutil.copytree(wsi_series, tmp_path / "series")
    level = folder / "level-0.dcm"
    data = level.read_bytes()
    level.write_bytes(data[: max(1, int(len(data) * fraction))])
    one_line_refusal(folder)


def test_a_ct_series_with_a_missing_slice_is_one_line(ct_series: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(ct_series, tmp_path / "series")
    by_position = sorted(
        folder.glob("*.dcm"),
        key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    by_position[len(by_position) // 2].unlink()
    one_line_refusal(folder, "missing")


def test_a_slice_with_another_spacing_is_one_line(ct_series: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(ct_series, tmp_path / "series")
    odd = sorted(folder.glob("*.dcm"))[3]
    header = pydicom.dcmread(odd)
    header.PixelSpacing = [0.5, 0.5]
    header.save_as(odd)
    one_line_refusal(folder, "PixelSpacing")


def test_two_series_in_one_folder_is_one_line(ct_series: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(ct_series, tmp_path / "series")
    write_ct_phantom(tmp_path / "other", series_uid="1.2.826.0.1.3680043.8.498.99", seed=3)
    for file in (tmp_path / "other").glob("*.dcm"):
        shutil.copy(file, folder / f"other-{file.name}")
    one_line_refusal(folder, "series")


def test_a_ct_slice_cut_short_is_one_line(ct_series: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(ct_series, tmp_path / "series")
    victim = sorted(folder.glob("*.dcm"))[5]
    victim.write_bytes(victim.read_bytes()[:900])
    one_line_refusal(folder, victim.name)
