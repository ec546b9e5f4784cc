"""A tiny random-weight open_clip model of a preset's architecture (CLIP ViT, CoCa).

The architecture's own open_clip config with every width and depth shrunk, written as the hub
repos are (``open_clip_config.json`` + ``open_clip_model.safetensors``), so the preset loader
reads it with ``local-dir:``. Uses open_clip's bundled tokenizer (offline). Vectors mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["TINY_OPEN_CLIP_DIM", "build_tiny_open_clip"]

TINY_OPEN_CLIP_DIM = 16
"""Length of the tiny models' image and text vectors."""
_IMAGE = 32
_CONTEXT = 16


def _shrink(tower: dict[str, Any]) -> dict[str, Any]:
    small = dict(tower)
    small.update(layers=2, width=32)
    if "image_size" in small:  # vision towers set heads through head_width
        small["head_width"] = 16
    else:
        small["heads"] = 2
    if "context_length" in small:
        small["context_length"] = _CONTEXT
    if "image_size" in small:
        small.update(image_size=_IMAGE, patch_size=8)
    if "attn_pooler_heads" in small:
        small["attn_pooler_heads"] = 2
    return small


def build_tiny_open_clip(path: str | Path, preset: str, seed: int = 0) -> Path:
    """Write a tiny ``preset`` (``"quiltnet"`` or ``"coca"``) to ``path``; about a second."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from medagent.retrieval import PRESETS

    spec = PRESETS[preset]
    config = open_clip.get_model_config(spec.architecture)
    if config is None:
        raise ValueError(f"open_clip has no architecture {spec.architecture!r}")
    tiny: dict[str, Any] = {
        key: _shrink(value) if key.endswith("_cfg") else value for key, value in config.items()
    }
    tiny["embed_dim"] = TINY_OPEN_CLIP_DIM
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    preprocess = {"mean": list(spec.mean), "std": list(spec.std), "size": _IMAGE}
    (target / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": tiny, "preprocess_cfg": preprocess}), encoding="utf-8"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = open_clip.create_model(f"local-dir:{target}", load_weights=False)
    save_file(
        {k: v.contiguous() for k, v in network.state_dict().items()},
        str(target / "open_clip_model.safetensors"),
    )
    return target
