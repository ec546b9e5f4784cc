"""What an image is — pathology slide, radiograph, CT or MR slice, photograph — in words a
prompt can use.

The model must be told the truth about the pixels it is shown: a chest radiograph is not "a
whole-slide image", its spacing is in millimetres, and an image whose file records no spacing
gets no unit claim at all. ``Slide.modality`` answers from the file (the opener knows the
format; DICOM says its ``Modality``); a caller who knows better passes ``modality=`` when
opening a plain image.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["MODALITIES", "Modality", "ModalityKind", "dicom_modality", "modality"]

ModalityKind = Literal[
    "pathology", "radiograph", "mammogram", "ct", "mr", "ultrasound", "photo", "image"
]


class Modality(BaseModel):
    """How to speak about one kind of image: what it is, who reads it, which unit its spacing
    is stated in (``None``: the kind has no natural unit; spacing is then given in µm)."""

    model_config = ConfigDict(frozen=True)

    kind: ModalityKind
    name: str  # "whole-slide pathology image", "radiograph", ...
    whole: str  # how the full field of view is called: "the whole slide", "the whole image"
    reader: str  # the expert who reads it: "pathologist", "radiologist", ...
    unit: Literal["µm", "mm"] | None

    @property
    def article(self) -> str:
        return "an" if self.name[:1].lower() in "aeiou" else "a"

    def spacing(self, mpp: float | None) -> str:
        """The pixel spacing in this kind's unit, or a plain statement that it is unknown.

        ``mpp`` is micrometres per pixel (how ``Slide`` stores every spacing).
        """
        if mpp is None:
            return "pixel spacing unknown"
        unit = self.unit or ("mm" if mpp >= 50 else "µm")
        value = mpp / 1000.0 if unit == "mm" else mpp
        return f"{_number(value)} {unit} per pixel"

    def length(self, microns: float) -> str:
        """A physical length in this kind's unit (``microns`` in µm)."""
        unit = self.unit or ("mm" if microns >= 1000 else "µm")
        value = microns / 1000.0 if unit == "mm" else microns
        return f"{_number(value)} {unit}"


def _number(value: float) -> str:
    """Three significant digits, without an exponent for large values."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


MODALITIES: dict[ModalityKind, Modality] = {
    m.kind: m
    for m in (
        Modality(
            kind="pathology",
            name="whole-slide pathology image",
            whole="the whole slide",
            reader="pathologist",
            unit="µm",
        ),
        Modality(
            kind="radiograph",
            name="radiograph",
            whole="the whole image",
            reader="radiologist",
            unit="mm",
        ),
        Modality(
            kind="mammogram",
            name="mammogram",
            whole="the whole image",
            reader="radiologist",
            unit="mm",
        ),
        Modality(
            kind="ct", name="CT slice", whole="the whole slice", reader="radiologist", unit="mm"
        ),
        Modality(
            kind="mr", name="MR slice", whole="the whole slice", reader="radiologist", unit="mm"
        ),
        Modality(
            kind="ultrasound",
            name="ultrasound image",
            whole="the whole image",
            reader="radiologist",
            unit="mm",
        ),
        Modality(
            kind="photo",
            name="clinical photograph",
            whole="the whole image",
            reader="clinician",
            unit=None,
        ),
        Modality(
            kind="image",
            name="medical image",
            whole="the whole image",
            reader="medical image reader",
            unit=None,
        ),
    )
}

#: DICOM ``Modality`` codes (PS3.3 C.7.3.1.1.1) and the kind each is.
_DICOM: dict[str, ModalityKind] = {
    "CR": "radiograph",
    "DX": "radiograph",
    "RF": "radiograph",
    "XA": "radiograph",
    "IO": "radiograph",
    "PX": "radiograph",
    "MG": "mammogram",
    "CT": "ct",
    "MR": "mr",
    "US": "ultrasound",
    "SM": "pathology",
    "XC": "photo",
    "ES": "photo",
    "OP": "photo",
    "GM": "photo",
}


def modality(kind: ModalityKind | str) -> Modality:
    """The ``Modality`` for a kind name (one of ``MODALITIES``)."""
    try:
        return MODALITIES[kind]  # type: ignore[index]
    except KeyError:
        raise ValueError(
            f"unknown image kind {kind!r}; choose from {', '.join(MODALITIES)}"
        ) from None


def dicom_modality(code: str | None) -> Modality:
    """The kind a DICOM ``Modality`` code names; an unknown code is a plain medical image."""
    return MODALITIES[_DICOM.get((code or "").strip().upper(), "image")]
