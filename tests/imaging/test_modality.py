"""Every opened image says what it is, and states its spacing in that kind's unit."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medagent.imaging import (
    MODALITIES,
    ImageSlide,
    build_demo_slide,
    dicom_modality,
    modality,
    open_image,
)


def test_whole_slide_files_are_pathology_in_micrometres(tmp_path: Path) -> None:
    with open_image(build_demo_slide(tmp_path / "demo.tiff")) as slide:
        assert slide.modality.kind == "pathology"
        assert slide.modality.reader == "pathologist"
        assert slide.info.modality == "pathology"
        assert slide.modality.spacing(0.25) == "0.25 µm per pixel"


@pytest.mark.parametrize(
    ("name", "kind", "unit"), [("CT_small.dcm", "ct", "mm"), ("MR_small.dcm", "mr", "mm")]
)
def test_dicom_says_its_modality_and_spacing_is_in_millimetres(
    name: str, kind: str, unit: str
) -> None:
    with open_image(get_testdata_file(name)) as slide:
        assert slide.modality.kind == kind
        assert slide.modality.reader == "radiologist"
        assert slide.mpp_x is not None
        stated = slide.modality.spacing(slide.mpp_x)
        assert stated.endswith(f"{unit} per pixel") and "µm" not in stated
        assert float(stated.split()[0]) == pytest.approx(slide.mpp_x / 1000, rel=1e-2)


def test_radiograph_codes_map_and_unknown_codes_make_no_claim() -> None:
    assert dicom_modality("DX").name == "radiograph"
    assert dicom_modality("cr ").kind == "radiograph"
    assert dicom_modality("SM").kind == "pathology"
    assert dicom_modality("XYZ") == MODALITIES["image"]
    assert dicom_modality(None).unit is None


def test_plain_image_is_a_medical_image_unless_the_caller_says(tmp_path: Path) -> None:
    path = tmp_path / "chest.png"
    Image.new("RGB", (64, 48), "gray").save(path)
    with open_image(path) as slide:
        assert slide.modality.kind == "image"
        assert slide.modality.spacing(slide.mpp_x) == "pixel spacing unknown"
    with open_image(path, modality="radiograph") as slide:
        assert slide.modality.name == "radiograph"
        assert slide.modality.whole == "the whole image"


def test_no_unit_is_claimed_without_spacing_and_a_known_spacing_reads_naturally() -> None:
    for kind in MODALITIES.values():
        assert kind.spacing(None) == "pixel spacing unknown"
    image = ImageSlide(Image.new("RGB", (8, 8)), mpp=(143.0, 143.0), modality=modality("photo"))
    assert image.modality.spacing(image.mpp_x) == "0.143 mm per pixel"
    assert modality("pathology").length(1500) == "1500 µm"
    assert modality("ct").length(1500) == "1.5 mm"
    with pytest.raises(ValueError, match="unknown image kind"):
        modality("xray")
