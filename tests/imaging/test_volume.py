"""CT/MR volumes from DICOM series: order by position, HU, geometry, views, montage, and the
bad series a hospital export produces — each one line, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medagent.errors import InputError, RegionError, SlideOpenError
from medagent.imaging import (
    WINDOW_PRESETS,
    Region,
    Volume,
    Window,
    open_volume,
    window,
)
from medagent.testing._phantom import CT_PHANTOM, Phantom, write_ct_phantom

BONE, FAT = CT_PHANTOM.spheres


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ct_phantom(tmp_path_factory.mktemp("ct") / "series")


@pytest.fixture(scope="module")
def volume(series: Path) -> Volume:
    return open_volume(series)


def _copy(series: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(series, tmp_path / "copy"))


def _sorted_files(folder: Path) -> list[Path]:
    """The files in position order (as the reader must sort them)."""
    located = []
    for f in folder.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        located.append((float(ds.ImagePositionPatient[2]), f))
    return [f for _, f in sorted(located)]


def _edit(path: Path, **changes: object) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def _refused(path: Path, *words: str, **kwargs: object) -> str:
    with pytest.raises(SlideOpenError) as caught:
        open_volume(path, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


# -- reading ----------------------------------------------------------------------------------


def test_slices_are_ordered_by_position_not_by_file_name_or_instance_number(
    series: Path, volume: Volume
) -> None:
    by_name = sorted(series.iterdir())
    by_position = _sorted_files(series)
    by_instance = sorted(
        series.iterdir(),
        key=lambda f: int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber),
    )
    assert by_name != by_position and by_instance != by_position  # the shuffle bites
    assert np.array_equal(volume.values, CT_PHANTOM.values())
    assert np.all(np.diff(volume.positions[:, 2]) > 0)


def test_values_are_hounsfield_units_at_known_points(volume: Volume) -> None:
    assert volume.values.dtype == np.int16
    assert volume.hu and volume.unit == "HU" and volume.modality.kind == "ct"
    assert volume.values[BONE.centre] == 700
    assert volume.values[FAT.centre] == -100
    assert volume.values[20, 64, 64] == 0  # water
    assert volume.values[0, 0, 0] == -1000  # air


def test_geometry_spacing_shape_and_orientation(volume: Volume) -> None:
    assert volume.shape == (40, 128, 128)
    assert volume.spacing_mm == pytest.approx((2.5, 0.8, 0.8))
    assert volume.plane == "axial"
    assert volume.notes == []
    assert "40 slices of 128x128" in volume.to_text()


def test_a_fractional_rescale_gives_float_hu(tmp_path: Path) -> None:
    v = open_volume(write_ct_phantom(tmp_path / "s", rescale=(0.5, -1024.0)))
    assert v.values.dtype == np.float32
    assert np.array_equal(v.values, CT_PHANTOM.values())


def test_a_tilted_series_keeps_true_distances(tmp_path: Path) -> None:
    v = open_volume(write_ct_phantom(tmp_path / "tilt", tilt_deg=15.0))
    assert np.array_equal(v.values, CT_PHANTOM.values())
    assert v.plane.startswith("oblique") and "15°" in v.plane
    assert any("tilted 15°" in note for note in v.notes)
    known = CT_PHANTOM.distance_mm(BONE.centre, FAT.centre)
    assert v.distance_mm(BONE.centre, FAT.centre) == pytest.approx(known, abs=1e-3)
    assert v.view("coronal", 64).slide.dimensions.height == 125


@pytest.mark.parametrize("as_file", [False, True], ids=["folder", "file"])
def test_an_enhanced_multiframe_file_is_one_volume(tmp_path: Path, as_file: bool) -> None:
    folder = write_ct_phantom(tmp_path / "enh", enhanced=True, tilt_deg=10.0)
    v = open_volume(folder / "volume.dcm" if as_file else folder)
    assert np.array_equal(v.values, CT_PHANTOM.values())
    assert v.spacing_mm == pytest.approx((2.5, 0.8, 0.8), abs=1e-3)


def test_distance_between_sphere_centres_matches_the_geometry(volume: Volume) -> None:
    known = CT_PHANTOM.distance_mm(BONE.centre, FAT.centre)
    assert volume.distance_mm(BONE.centre, FAT.centre) == pytest.approx(known, abs=1e-6)
    # Centres found from the voxels themselves are within one voxel of the truth.
    bone = np.argwhere(volume.values == 700).mean(axis=0)
    fat = np.argwhere(volume.values == -100).mean(axis=0)
    measured = volume.distance_mm(tuple(bone), tuple(fat))  # type: ignore[arg-type]
    assert measured == pytest.approx(known, abs=max(volume.spacing_mm))
    with pytest.raises(RegionError):
        volume.distance_mm((40.0, 0.0, 0.0), (0.0, 0.0, 0.0))


# -- windows and views ----------------------------------------------------------------------------


def test_window_maps_level_and_width_to_grey_levels() -> None:
    values = np.array([-1000, -160, 40, 240, 1000])
    assert window(values, 40, 400).tolist() == [0, 0, 128, 255, 255]
    bone = WINDOW_PRESETS["bone"]
    assert (bone.level, bone.width) == (400, 1800)
    assert (WINDOW_PRESETS["lung"].level, WINDOW_PRESETS["lung"].width) == (-600, 1500)
    assert WINDOW_PRESETS["brain"].width == 80
    with pytest.raises(InputError):
        window(values, 40, 0)


def _pixels(volume: Volume, axis: str, index: int, win: object = None) -> np.ndarray:
    slide = volume.slice(axis, index, win)  # type: ignore[arg-type]
    return np.asarray(slide.read(Region.whole(slide.dimensions), 0).convert("L"))


def test_an_axial_slice_is_a_slide_with_spacing_and_a_note(volume: Volume) -> None:
    view = volume.view("axial", BONE.centre[0], "bone")
    slide = view.slide
    assert (slide.dimensions.width, slide.dimensions.height) == (128, 128)
    assert slide.mpp_x == pytest.approx(800) and slide.mpp_y == pytest.approx(800)
    assert slide.modality.kind == "ct"
    assert view.patient_axis == "z"
    assert view.position_mm == pytest.approx(-40.0 + 12 * 2.5)
    assert slide.notes[0].startswith("axial slice 12 of 39 at z = -10.0 mm")
    pixels = _pixels(volume, "axial", 12, "bone")
    assert pixels[BONE.centre[1], BONE.centre[2]] == round((700 - (400 - 900)) / 1800 * 255)
    assert view.to_voxel(44, 48).model_dump() == {"slice": 12, "row": 48, "col": 44}


def test_reformats_have_square_pixels_superior_up_and_map_back_to_voxels(volume: Volume) -> None:
    view = volume.view("coronal", BONE.centre[1], "bone")
    slide = view.slide
    assert (slide.dimensions.width, slide.dimensions.height) == (128, 125)  # 100 mm of slices
    assert slide.mpp_x == pytest.approx(800) and slide.mpp_y == pytest.approx(800)
    assert "resampled to square pixels" in slide.notes[0]
    pixels = _pixels(volume, "coronal", BONE.centre[1], "bone")
    ys, xs = np.nonzero(pixels > 150)
    found = view.to_voxel(float(xs.mean()), float(ys.mean()))
    assert abs(found.slice - BONE.centre[0]) <= 1 and abs(found.col - BONE.centre[2]) <= 1
    assert ys.mean() > 62  # slice 12 of 40 is below the middle: superior is up
    sagittal = volume.view("sagittal", BONE.centre[2])
    assert sagittal.patient_axis == "x" and sagittal.slide.dimensions.width == 128


def test_sphere_diameter_measured_on_a_slice_in_mm(volume: Volume) -> None:
    slide = volume.slice("axial", BONE.centre[0], "bone")
    bright = _pixels(volume, "axial", BONE.centre[0], "bone") > 150
    cols = np.nonzero(bright[BONE.centre[1]])[0]
    width_mm = len(cols) * slide.mpp_x / 1000  # type: ignore[operator]
    assert width_mm == pytest.approx(BONE.diameter_mm, abs=0.81)  # one pixel


def test_mr_has_no_hu_windows_from_percentiles_and_refuses_presets(tmp_path: Path) -> None:
    v = open_volume(write_ct_phantom(tmp_path / "mr", modality="MR", rescale=(1.0, -1024.0)))
    assert not v.hu and v.unit == "signal units" and v.modality.kind == "mr"
    view = v.view("axial", 20)
    assert view.window.name and "percentiles" in view.window.name
    assert "percentiles" in view.slide.notes[0]
    with pytest.raises(InputError, match="MR"):
        v.view("axial", 20, "lung")
    custom = v.view("axial", 20, Window(level=0, width=200))
    assert custom.window.level == 0


def test_a_bad_index_or_axis_is_a_readable_error(volume: Volume) -> None:
    with pytest.raises(RegionError, match="0 to 39"):
        volume.slice("axial", 40)
    with pytest.raises(InputError, match="axial, coronal or sagittal"):
        volume.slice("oblique", 0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown window"):
        volume.slice("axial", 0, "liver")  # type: ignore[arg-type]


def test_montage_is_a_labelled_grid(volume: Volume) -> None:
    montage = volume.montage(every=4, window="lung")
    assert montage.indices == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert montage.columns == 4 and montage.tile == (128, 128)
    assert montage.image.size == (4 * 128, 3 * 128)
    pixels = np.asarray(montage.image)
    labelled = 0
    for n in range(len(montage.indices)):
        x, y = (n % 4) * 128, (n // 4) * 128
        corner = pixels[y : y + 16, x : x + 24]
        yellow = (corner[..., 0] > 200) & (corner[..., 1] > 200) & (corner[..., 2] < 80)
        labelled += int(yellow.sum() >= 10)  # anti-aliased yellow digits on a black box
    assert labelled == len(montage.indices)
    small = volume.montage(every=1, long_side=512)
    assert max(small.image.size) <= 512 and len(small.indices) == 40


# -- bad series ---------------------------------------------------------------------------------


def test_an_empty_folder_or_a_folder_of_folders_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", "holds no files")
    (tmp_path / "outer" / "inner").mkdir(parents=True)
    _refused(tmp_path / "outer", "1 subfolder")
    _refused(tmp_path / "nowhere", "no such file")


def test_two_series_in_one_folder_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "two"
    write_ct_phantom(folder, series_uid="1.2.3.4", seed=1)
    write_ct_phantom(folder, series_uid="1.2.3.5", seed=2, modality="MR")
    message = _refused(folder, "2 series", "1.2.3.4", "1.2.3.5", "pick one", "MR")
    assert "40 file(s)" in message


def test_a_missing_slice_is_refused_unless_gaps_are_allowed(series: Path, tmp_path: Path) -> None:
    folder = _copy(series, tmp_path)
    gone = _sorted_files(folder)[20]
    gone.unlink()
    _refused(folder, "1 slice(s) missing", "slices 19 and 20", "allow_gaps=True")
    v = open_volume(folder, allow_gaps=True)
    assert v.shape == (39, 128, 128) and not v.uniform
    assert any("missing" in note for note in v.notes)
    # Distances across the gap use true positions: slices 19 and 20 are now 5 mm apart.
    assert v.distance_mm((19, 0, 0), (20, 0, 0)) == pytest.approx(5.0)
    with pytest.raises(InputError, match="missing slices"):
        v.slice("coronal", 64)
    assert v.slice("axial", 25).dimensions.width == 128


def test_inconsistent_spacing_is_refused(series: Path, tmp_path: Path) -> None:
    folder = _copy(series, tmp_path)
    f = _sorted_files(folder)[10]
    x, y, z = pydicom.dcmread(f).ImagePositionPatient
    _edit(f, ImagePositionPatient=[x, y, float(z) + 1.0])
    _refused(folder, "inconsistent slice spacing")


def test_inconsistent_orientation_or_pixel_spacing_is_refused(series: Path, tmp_path: Path) -> None:
    folder = _copy(series, tmp_path)
    f = _sorted_files(folder)[5]
    _edit(f, ImageOrientationPatient=[1, 0, 0, 0, 0.9659258, -0.2588190])
    _refused(folder, "inconsistent ImageOrientationPatient", f.name)
    _edit(f, ImageOrientationPatient=[1, 0, 0, 0, 1, 0], PixelSpacing=[0.7, 0.7])
    _refused(folder, "inconsistent PixelSpacing")


def test_mixed_modalities_in_one_series_are_refused(series: Path, tmp_path: Path) -> None:
    folder = _copy(series, tmp_path)
    _edit(_sorted_files(folder)[3], Modality="MR")
    _refused(folder, "mixed modalities in one series (CT, MR)")


def test_two_slices_at_one_position_are_refused(series: Path, tmp_path: Path) -> None:
    folder = _copy(series, tmp_path)
    files = _sorted_files(folder)
    _edit(files[7], ImagePositionPatient=pydicom.dcmread(files[6]).ImagePositionPatient)
    _refused(folder, "two slices at the same position", "several acquisitions")


@pytest.mark.parametrize("keep", [0.5, 0.02], ids=["pixel-data", "header"])
def test_a_truncated_file_is_named(series: Path, tmp_path: Path, keep: float) -> None:
    folder = _copy(series, tmp_path)
    f = _sorted_files(folder)[12]
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * keep)])
    _refused(folder, f.name, "truncated or corrupt")


def test_a_series_over_the_voxel_budget_is_refused_before_decoding(series: Path) -> None:
    _refused(series, "more than the 100,000 allowed", max_voxels=100_000)


def test_other_files_are_ignored_with_a_note(series: Path, tmp_path: Path) -> None:
    folder = _copy(series, tmp_path)
    (folder / "README.txt").write_text("exported by a PACS")
    v = open_volume(folder)
    assert v.shape == (40, 128, 128)
    assert v.notes == ["ignored 1 file(s) that are not DICOM images (README.txt)"]


def test_a_single_slice_is_not_a_volume(series: Path, tmp_path: Path) -> None:
    one = _sorted_files(series)[0]
    _refused(one, "a single slice")
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(one, folder / one.name)
    _refused(folder, "a single slice")


def test_a_small_custom_phantom(tmp_path: Path) -> None:
    phantom = Phantom(slices=6, size=32, spheres=())
    v = open_volume(write_ct_phantom(tmp_path / "p", phantom))
    assert v.shape == (6, 32, 32)
