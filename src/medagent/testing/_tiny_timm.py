"""A tiny random-weight timm model of a preset's architecture: a test double for its loader.

Same architecture and arguments as the published model (``SwiGLUPacked``, ``SiLU``, register
tokens, ``init_values``...), tiny widths. Saved the way the hub repos are (``config.json`` with
the architecture, plus weights), but the config holds only the tiny sizes: the loader must add the
preset's own arguments, or strict weight loading fails. Vectors mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["TINY_TIMM_WIDTH", "build_tiny_timm"]

TINY_TIMM_WIDTH = 32
"""Token width of every tiny timm model (the preset's pooling decides the vector length)."""
_TINY = {"embed_dim": TINY_TIMM_WIDTH, "depth": 2, "num_heads": 2, "img_size": 224}


def build_tiny_timm(path: str | Path, preset: str, seed: int = 0) -> Path:
    """Write a tiny ``preset`` (e.g. ``"virchow2"``) to ``path``; about a second, under 1 MB."""
    import timm
    import torch
    from safetensors.torch import save_file

    from medagent.retrieval import PRESETS

    spec = PRESETS[preset]
    layers = spec.layer_classes()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(
            spec.architecture, pretrained=False, **{**spec.model_args, **_TINY, **layers}
        )
        for name, parameter in model.named_parameters():
            if name.endswith(".gamma"):  # layer scale starts at 1e-5: let the image through
                parameter.data.fill_(1.0)
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    config = {  # the hub layout: architecture, the saved sizes, preprocessing
        "architecture": spec.architecture,
        "num_classes": 0,
        "num_features": TINY_TIMM_WIDTH,
        "model_args": _TINY,
        "pretrained_cfg": {
            "input_size": [3, spec.image_size, spec.image_size],
            "interpolation": "bicubic",
            "mean": list(spec.mean),
            "std": list(spec.std),
            "num_classes": 0,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }
    (target / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    weights = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(weights, str(target / "model.safetensors"))
    return target
