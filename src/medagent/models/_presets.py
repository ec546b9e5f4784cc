"""What each open VLM family expects of a request: image size, tokens per image, roles, quirks.

One row per family, found from a hub id, a ``model_type`` or an architecture name, so a backend
can cap images at the size the family was trained for instead of sending raw pixels. Numbers
are the families' processor defaults as published; token counts are estimates (the processor
has the last word), good enough to budget a context window.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["NO_PRESET", "VLM_PRESETS", "VLMPreset", "detect_preset", "preset_for", "resolve_preset"]

NO_PRESET = "none"
"""The preset name that turns detection off (no family defaults are applied)."""

_CONFIG_LIMIT = 1_000_000
"""Bytes of a model folder's config.json read at most (real ones are a few KB)."""

VLLM_DEFAULT_IMAGE_LIMIT = 999
"""vLLM V1's default ``--limit-mm-per-prompt`` for images (V0 allowed 1)."""


class VLMPreset(BaseModel):
    """One family's request conventions; ``image_long_side`` is the cap a backend applies."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Short key, as typed on the command line.")
    family: str
    hub_ids: tuple[str, ...] = Field(description="Example checkpoints on the Hugging Face hub.")
    model_types: tuple[str, ...] = Field(description="config.json model_type values.")
    architectures: tuple[str, ...] = Field(description="config.json architectures values.")
    image_long_side: int = Field(gt=0, description="Long side (px) to cap images at.")
    max_pixels: int | None = Field(None, description="Processor's pixel budget, if it has one.")
    token_side_px: int | None = Field(
        None, description="Pixels per side of one image token (patch × merge), native resolution."
    )
    tile_px: int | None = Field(None, description="Tile side (px) for tiling processors.")
    tokens_per_tile: int | None = None
    max_tiles: int | None = Field(None, description="Most tiles per image, before any thumbnail.")
    thumbnail_tile: bool = Field(False, description="A downscaled whole-image tile is added.")
    max_images_per_request: int = Field(
        VLLM_DEFAULT_IMAGE_LIMIT, description="vLLM's default --limit-mm-per-prompt for images."
    )
    system_role: Literal["native", "merged", "none"] = Field(
        description="native: own system turn; merged: folded into the first user turn."
    )
    image_position: Literal["interleaved", "first"] = Field(
        description="interleaved: where the image part is; first: before the message's text."
    )
    json_schema: str = Field(description="How JSON-schema decoding is enforced.")
    quirks: str

    def matches(self, key: str) -> bool:
        """True when ``key`` is this family's name, a model_type, an architecture or a hub id."""
        lowered = key.strip().lower()
        names = (self.name, *self.model_types, *self.architectures, *self.hub_ids)
        return lowered in {n.lower() for n in names}

    def image_tokens(self, width: int, height: int) -> int:
        """Estimated tokens for one ``width`` × ``height`` image, after the long-side cap."""
        scale = min(1.0, self.image_long_side / max(width, height))
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        if self.token_side_px is not None:
            if self.max_pixels is not None and w * h > self.max_pixels:
                shrink = math.sqrt(self.max_pixels / (w * h))
                w, h = max(1, int(w * shrink)), max(1, int(h * shrink))
            return math.ceil(w / self.token_side_px) * math.ceil(h / self.token_side_px)
        assert self.tile_px is not None and self.tokens_per_tile is not None
        tiles = math.ceil(w / self.tile_px) * math.ceil(h / self.tile_px)
        tiles = min(tiles, self.max_tiles or tiles)
        if self.thumbnail_tile and tiles > 1:
            tiles += 1
        return tiles * self.tokens_per_tile

    def token_formula(self) -> str:
        """The estimate as a one-line formula, for tables."""
        if self.token_side_px is not None:
            return f"⌈w/{self.token_side_px}⌉·⌈h/{self.token_side_px}⌉"
        tiles = f"tiles of {self.tile_px} px"
        if self.max_tiles:
            tiles += f" (≤{self.max_tiles}{' + thumbnail' if self.thumbnail_tile else ''})"
        return f"{self.tokens_per_tile} per tile, {tiles}"


_XGRAMMAR = "vLLM structured outputs; xgrammar in-process"

VLM_PRESETS: tuple[VLMPreset, ...] = (
    VLMPreset(
        name="qwen2.5-vl",
        family="Qwen2.5-VL",
        hub_ids=("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct"),
        model_types=("qwen2_5_vl",),
        architectures=("Qwen2_5_VLForConditionalGeneration",),
        image_long_side=1024,
        max_pixels=12_845_056,
        token_side_px=28,
        system_role="native",
        image_position="interleaved",
        json_schema=_XGRAMMAR,
        quirks="native resolution: 14-px patches merged 2×2; sides rounded to 28 px",
    ),
    VLMPreset(
        name="qwen3-vl",
        family="Qwen3-VL",
        hub_ids=("Qwen/Qwen3-VL-8B-Instruct", "Qwen/Qwen3-VL-4B-Instruct"),
        model_types=("qwen3_vl", "qwen3_vl_moe"),
        architectures=("Qwen3VLForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration"),
        image_long_side=1024,
        max_pixels=16_777_216,
        token_side_px=32,
        system_role="native",
        image_position="interleaved",
        json_schema=_XGRAMMAR,
        quirks="16-px patches merged 2×2; Thinking variants emit <think> blocks",
    ),
    VLMPreset(
        name="gemma3",
        family="Gemma 3 (MedGemma)",
        hub_ids=("google/medgemma-4b-it", "google/gemma-3-4b-it", "google/gemma-3-27b-it"),
        model_types=("gemma3",),
        architectures=("Gemma3ForConditionalGeneration",),
        image_long_side=896,
        tile_px=896,
        tokens_per_tile=256,
        max_tiles=1,
        system_role="merged",
        image_position="interleaved",
        json_schema=_XGRAMMAR,
        quirks="every image squashed to 896×896 (256 tokens) unless pan-and-scan is on; "
        "no system turn: the template prepends it to the first user turn",
    ),
    VLMPreset(
        name="internvl3",
        family="InternVL3",
        hub_ids=("OpenGVLab/InternVL3-8B-hf", "OpenGVLab/InternVL3-2B-hf"),
        model_types=("internvl",),
        architectures=("InternVLForConditionalGeneration",),
        image_long_side=1344,
        tile_px=448,
        tokens_per_tile=256,
        max_tiles=12,
        thumbnail_tile=True,
        system_role="native",
        image_position="interleaved",
        json_schema=_XGRAMMAR,
        quirks="the -hf checkpoints load in transformers; the originals need trust_remote_code",
    ),
    VLMPreset(
        name="llava-onevision",
        family="LLaVA-OneVision",
        hub_ids=(
            "llava-hf/llava-onevision-qwen2-7b-ov-hf",
            "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        ),
        model_types=("llava_onevision",),
        architectures=("LlavaOnevisionForConditionalGeneration",),
        image_long_side=1152,
        tile_px=384,
        tokens_per_tile=729,
        max_tiles=9,
        thumbnail_tile=True,
        system_role="native",
        image_position="first",
        json_schema=_XGRAMMAR,
        quirks="anyres tiling, pooled when over 9 tiles; images placed before the text",
    ),
    VLMPreset(
        name="idefics3",
        family="Idefics3 / SmolVLM",
        hub_ids=(
            "HuggingFaceM4/Idefics3-8B-Llama3",
            "HuggingFaceTB/SmolVLM-Instruct",
            "HuggingFaceTB/SmolVLM-256M-Instruct",
        ),
        model_types=("idefics3", "smolvlm"),
        architectures=("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"),
        image_long_side=1536,
        tile_px=512,
        tokens_per_tile=64,
        max_tiles=9,
        thumbnail_tile=True,
        system_role="native",
        image_position="interleaved",
        json_schema=_XGRAMMAR,
        quirks="split into 512-px crops plus a global view (Idefics3-8B: 364 px, 169 tokens)",
    ),
    VLMPreset(
        name="llava",
        family="LLaVA (tiny test double)",
        hub_ids=("llava-hf/llava-1.5-7b-hf",),
        model_types=("llava",),
        architectures=("LlavaForConditionalGeneration",),
        image_long_side=336,
        tile_px=336,
        tokens_per_tile=576,
        max_tiles=1,
        system_role="native",
        image_position="interleaved",
        json_schema=_XGRAMMAR,
        quirks="one 336-px crop, 576 tokens (build_tiny_vlm: 56 px, 16 tokens)",
    ),
)


def preset_for(key: str) -> VLMPreset | None:
    """The preset whose name, model_type, architecture or hub id is ``key``; else ``None``.

    A hub id not in the table is matched by its family's name in the id (``.../medgemma-...``).
    """
    for preset in VLM_PRESETS:
        if preset.matches(key):
            return preset
    lowered = key.lower().rsplit("/", 1)[-1]
    hints = (
        ("qwen2.5-vl", "qwen2.5-vl"),
        ("lingshu", "qwen2.5-vl"),  # Lingshu-7B/32B: Qwen2.5-VL fine-tunes
        ("qwen3-vl", "qwen3-vl"),
        ("medgemma", "gemma3"),
        ("gemma-3", "gemma3"),
        ("internvl3", "internvl3"),
        ("onevision", "llava-onevision"),
        ("smolvlm", "idefics3"),
        ("idefics3", "idefics3"),
        ("llava", "llava"),
    )
    for hint, name in hints:
        if hint in lowered:
            return next(p for p in VLM_PRESETS if p.name == name)
    return None


def _folder_keys(model: str) -> list[str]:
    """Architecture names and model_type from a local model folder's config.json, if any."""
    config = Path(model).expanduser() / "config.json"
    try:
        if not config.is_file() or config.stat().st_size > _CONFIG_LIMIT:
            return []
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    names = data.get("architectures")
    keys = [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
    return [*keys, *([data["model_type"]] if isinstance(data.get("model_type"), str) else [])]


def detect_preset(model: str) -> VLMPreset | None:
    """The family of ``model``: a local folder's config.json first, else the name or hub id."""
    for key in _folder_keys(model):
        found = preset_for(key)
        if found is not None:
            return found
    return preset_for(model)


def resolve_preset(model: str | None, preset: str | None) -> VLMPreset | None:
    """The preset a backend follows: ``preset`` by name, ``none`` for none, else detected.

    Raises ``ConfigError`` naming the known presets when ``preset`` is not one of them.
    """
    from medagent.errors import ConfigError

    if preset is not None:
        if preset.strip().lower() == NO_PRESET:
            return None
        found = preset_for(preset)
        if found is None:
            known = ", ".join(p.name for p in VLM_PRESETS)
            raise ConfigError(
                f"unknown preset {preset!r}; known: {known}, or {NO_PRESET} "
                "(`medagent model presets` lists them)"
            )
        return found
    return detect_preset(model) if model else None
