"""GIANT over a CT/MR volume: the montage it starts from, the prompts that say what it is, and
which slice each turn is on.

A volume is navigated like a slide whose "overview" is a labelled montage of every few axial
slices; the model goes to a slice (``SliceAction``), then zooms into regions of it. Every view
is a 2-D ``ImageSlide`` of one slice (``Volume.view``), so zooms, guides, clamping and the
stated scale are the slide path's own, in that slice's pixels and mm.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict

from medagent.agents.giant._config import GiantConfig
from medagent.agents.giant._trajectory import SliceInfo, VolumeInfo
from medagent.errors import ConfigError
from medagent.imaging import Volume, VolumeAxis, VolumeView, WindowPreset
from medagent.prompts import load_template
from medagent.tools import MontageOutput, VolumeFacts

__all__ = [
    "VOLUME_TEMPLATES",
    "SliceAt",
    "check_volume_run",
    "montage_text",
    "slice_info",
    "view_bound",
    "volume_info",
    "volume_system_prompt",
]

#: The templates a volume run uses besides the slide ones it shares (final, correction, nudge).
VOLUME_TEMPLATES = ["giant/system_volume", "giant/question_volume", "giant/after_slice"]

_AXES: tuple[VolumeAxis, ...] = ("axial", "coronal", "sagittal")


class SliceAt(BaseModel):
    """The slice the model is on (graph state): axis, index and the window it is shown
    through (``None``: the volume's default, soft tissue for CT, percentiles for MR)."""

    model_config = ConfigDict(frozen=True)

    axis: VolumeAxis
    index: int
    window: WindowPreset | None = None


def check_volume_run(
    method: str, *, prompts: bool, look_for: bool, fixed_steps: bool = False
) -> None:
    """Refuse, in one line, what only a slide supports."""
    if method != "giant":
        raise ConfigError(
            f"--method {method}: only giant navigates a CT/MR volume (the baselines read one "
            "image); use --method giant"
        )
    if prompts:
        raise ConfigError(
            "compiled prompts describe navigating a slide; run a volume without --prompts"
        )
    if look_for:
        raise ConfigError("look_for maps tissue on a slide; run a volume without it")
    if fixed_steps:
        raise ConfigError("fixed_steps benchmarks slide navigation; run a volume without it")


def counts(volume: Volume) -> dict[VolumeAxis, int]:
    """How many slices there are along each axis."""
    return {axis: volume.count(axis) for axis in _AXES}


def view_bound(volume: Volume) -> int:
    """An upper bound on either side of any view, in pixels: views are resampled to square
    pixels of the finest spacing, so no side is longer than the longest extent in it."""
    finest = min(volume.spacing_mm)
    return max(
        math.ceil(size * spacing / finest - 1e-6)
        for size, spacing in zip(volume.shape, volume.spacing_mm, strict=True)
    )


def volume_info(volume: Volume) -> VolumeInfo:
    """What the manifest and trajectory record of the volume."""
    return VolumeInfo(**VolumeFacts.of(volume).model_dump(), path=str(volume.path))


def slice_info(view: VolumeView, unit: str) -> SliceInfo:
    """What a step record keeps of the slice it showed."""
    return SliceInfo(
        axis=view.axis,
        index=view.index,
        count=view.count,
        position_mm=view.position_mm,
        patient_axis=view.patient_axis,
        window=view.window.to_text(unit),
    )


def _windows(volume: Volume) -> str:
    if volume.hu:
        return (
            '"window" is lung, mediastinum, soft_tissue, bone or brain (HU presets), or null to '
            "keep the current one (soft_tissue at first)."
        )
    return '"window" must be null: an MR has no HU presets, it is shown by its own percentiles.'


def volume_system_prompt(volume: Volume, config: GiantConfig) -> str:
    """The system prompt for a volume, its slots filled from the volume itself."""
    kind: Literal["CT", "MR"] = "CT" if volume.hu else "MR"
    return load_template("giant/system_volume").render(
        reader=volume.modality.reader,
        a_volume=f"a {kind} volume" if kind == "CT" else f"an {kind} volume",
        slices=volume.count("axial"),
        plane="axial",
        windows=_windows(volume),
        steps=config.max_steps,
    )


def montage_text(shown: MontageOutput, unit: str) -> str:
    """What the montage shows, in words: which slices, how laid out, through which window."""
    first, last = shown.indices[0], shown.indices[-1]
    every = shown.indices[1] - first if len(shown.indices) > 1 else 1
    which = "every axial slice" if every == 1 else f"every {_ordinal(every)} axial slice"
    return (
        f"a montage of {which} (slices {first} to {last}), {shown.columns} per row, each tile "
        f"labelled with its slice number, {shown.window.to_text(unit)}"
    )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
