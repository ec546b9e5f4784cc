"""Image vectors from a timm vision transformer: UNI, UNI2-h, Virchow2, Prov-GigaPath, H-optimus.

Built with ``timm.create_model("local-dir:FOLDER", pretrained=True, **arguments)``, the loader the
model cards use: the folder's ``config.json`` names the architecture and the preset adds the
arguments the published snippet passes (``SwiGLUPacked``, ``SiLU``, register tokens...). Strict
weight loading means a wrong argument fails at load, not as silently wrong vectors. Images only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from medagent.errors import ConfigError
from medagent.models.hf_loading import first_line, pick_device, pick_dtype
from medagent.retrieval._default_embedder import _as_rgb
from medagent.retrieval._hub import model_folder
from medagent.retrieval._presets import EmbedderPreset
from medagent.retrieval._torch_embedding import require, unit_batches
from medagent.retrieval.base import Vectors

__all__ = ["TimmEmbedder"]

_PURPOSE = "The 'timm' embedder"


class TimmEmbedder:
    """An ``Embedder`` over a timm model, fed and pooled as its preset says."""

    def __init__(
        self,
        preset: EmbedderPreset,
        model: str | Path | None = None,
        *,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, not {batch_size}")
        require("torch", "pathology", _PURPOSE)
        require("timm", "pathology", _PURPOSE)
        import timm
        import torch
        from timm.data.transforms_factory import create_transform

        self.preset = preset
        self.batch_size = batch_size
        folder = model_folder(model or preset.hub_id, "config.json", gated=preset.gated)
        saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        saved_args = saved.get("model_args") or {}
        arguments = {k: v for k, v in preset.model_args.items() if k not in saved_args}
        arguments.update(preset.layer_classes())
        try:
            network = timm.create_model(f"local-dir:{folder}", pretrained=True, **arguments)
        except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"cannot load {folder} as {preset.name} ({preset.architecture}): {first_line(exc)}"
            ) from None
        self._device = pick_device(torch, device)
        self._dtype = pick_dtype(torch, dtype, self._device)
        self._model: Any = network.to(self._device, self._dtype).eval()
        self._transform: Any = create_transform(
            input_size=(3, preset.image_size, preset.image_size),
            interpolation="bicubic",
            mean=preset.mean,
            std=preset.std,
            crop_pct=preset.image_size / preset.resize,
            crop_mode="center",
        )
        self.name = f"{preset.name}:{folder.name}"
        features: Any = network.num_features  # an int; nn.Module attributes type as Tensor
        self.dim: int = preset.pooled_dim(int(features))

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        """(len(images), dim) float32, L2-normalized rows."""
        return unit_batches(list(images), self.batch_size, self.dim, self.name, self._batch)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Always raises ``ConfigError``: these are vision-only models."""
        raise ConfigError(
            f"{self.preset.name} is a vision-only model and cannot embed text; use a "
            "vision-language preset (plip, quiltnet, coca) for text queries"
        )

    def _batch(self, images: list[Image.Image]) -> Any:
        import torch

        pixels = torch.stack([self._transform(_as_rgb(image)) for image in images])
        with torch.inference_mode():
            tokens = self._model.forward_features(pixels.to(self._device, self._dtype))
            first_patch = int(getattr(self._model, "num_prefix_tokens", 1))
            pooled = tokens[:, 0]
            if self.preset.pooling == "cls+mean":  # register tokens sit between, skipped
                pooled = torch.cat([pooled, tokens[:, first_patch:].mean(dim=1)], dim=-1)
            return pooled.float().cpu().numpy()
