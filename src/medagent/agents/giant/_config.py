"""The navigator's options: one frozen object, recorded in every run's manifest."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["GiantConfig", "Method"]

Method = Literal["giant", "thumbnail", "patches", "random-region"]


class GiantConfig(BaseModel):
    """How a navigation runs. Defaults follow the GIANT paper where it says."""

    model_config = ConfigDict(frozen=True)

    max_steps: int = Field(20, ge=1, le=200, description="turns in all, the answer included (T)")
    long_side: int = Field(
        1000,
        ge=64,
        le=4096,
        description="long side of the overview and every zoom, px: the one default, 1000 "
        "(the paper's setting); lowered to a model's own image cap so stated scales stay true",
    )
    guides_on_crops: bool = Field(True, description="draw level-0 guides on zoomed crops too")
    max_images_in_context: int | None = Field(
        None, ge=1, description="images kept: the latest, and from 2 on the overview and latest N-1"
    )
    fixed_steps: bool = Field(
        False,
        description="benchmarks only: every turn before the last must zoom (a slide) or look "
        "(random-region), so each question makes exactly max_steps requests whatever the model",
    )
    max_corrections: int = Field(3, ge=0, le=10, description="re-asks per turn on invalid output")
    strict_regions: bool = Field(False, description="reject partly-outside regions, don't clamp")
    loop_overlap: float = Field(0.8, gt=0, le=1, description="IoU that counts as the same region")
    temperature: float = Field(0.0, ge=0)
    seed: int | None = 0
    max_tokens: int = Field(1024, ge=16, description="tokens per model reply")
    timeout_s: float = Field(900.0, gt=0, description="per-question time limit")
    look_for: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list,
        max_length=16,
        description="where to look: prompts an image-text model scores the tissue for before "
        "the first turn (the first is mapped); needs a scorer; empty: off",
    )
    # Baselines
    thumbnail_long_side: int = Field(
        1024, ge=64, le=4096, description="thumbnail baseline: long side, px (the paper's 1024)"
    )
    patches: int = Field(30, ge=1, le=500, description="patch baseline: patches sampled")
    patch_px: int = Field(224, ge=32, le=2048, description="patch baseline: patch size, level 0")
    random_region_min_px: int = Field(1000, ge=64, description="random-region: smallest side")
    random_region_min_tissue: float = Field(0.25, ge=0, le=1)
