"""Display windows: which range of CT numbers (or MR signal) becomes the 256 grey levels.

A CT holds about 4,000 HU of range; a screen (and a VLM) sees 256 grey levels. Radiologists
look at the same slice through several windows — lung, mediastinum, bone, brain — because
each makes different tissue visible. MR has no absolute unit, so its default window comes
from the volume's own percentiles, and HU presets are refused for it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medagent.errors import InputError

__all__ = ["WINDOW_PRESETS", "Window", "WindowPreset", "percentile_window", "window"]

WindowPreset = Literal["lung", "mediastinum", "soft_tissue", "bone", "brain"]


class Window(BaseModel):
    """A linear window: ``level - width/2`` shows black, ``level + width/2`` white."""

    model_config = ConfigDict(frozen=True)

    level: float
    width: float = Field(gt=0)
    name: str | None = Field(None, description="the preset's name, or how it was chosen")

    def to_text(self, unit: str = "HU") -> str:
        label = f"{self.name} " if self.name else ""
        return f"{label}window level {self.level:g} / width {self.width:g} {unit}".strip()


#: The usual CT presets (level, width in HU); soft tissue is the mediastinal window.
WINDOW_PRESETS: dict[WindowPreset, Window] = {
    "lung": Window(level=-600, width=1500, name="lung"),
    "mediastinum": Window(level=40, width=400, name="mediastinum"),
    "soft_tissue": Window(level=40, width=400, name="soft_tissue"),
    "bone": Window(level=400, width=1800, name="bone"),
    "brain": Window(level=40, width=80, name="brain"),
}


def window(values: np.ndarray, level: float, width: float) -> np.ndarray:
    """``values`` mapped linearly to uint8: ``level ± width/2`` to 0 and 255, clipped."""
    if not width > 0:
        raise InputError(f"a window width must be positive, not {width:g}")
    low = level - width / 2.0
    scaled = (np.asarray(values, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / width)
    out: np.ndarray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return out


def percentile_window(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> Window:
    """A window spanning the ``low``–``high`` percentiles: for MR, which has no HU.

    Air outside the body is most of many MR volumes; zeros are left out so the window spans
    the tissue. A subsample keeps this fast on big volumes.
    """
    flat = np.asarray(values).ravel()
    if flat.size > 2_000_000:
        flat = flat[:: flat.size // 2_000_000]
    inside = flat[flat != 0]
    sample = inside if inside.size else flat
    lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    if hi <= lo:
        hi = lo + 1.0
    return Window(
        level=(lo + hi) / 2, width=hi - lo, name=f"percentiles {low:g}-{high:g} of the volume"
    )
