"""Image and text vectors from an open_clip model: QuiltNet (CLIP), CoCa and their kin.

Loaded with ``open_clip.create_model_and_transforms("local-dir:FOLDER")``, which reads the
folder's ``open_clip_config.json`` (architecture and preprocessing) and its weights, exactly as
``hf-hub:ORG/NAME`` does after a download. Images and texts share one space, so text search and
the zero-shot tool work.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from medagent.errors import ConfigError
from medagent.models.hf_loading import first_line, pick_device
from medagent.retrieval._default_embedder import _as_rgb
from medagent.retrieval._hub import model_folder
from medagent.retrieval._presets import EmbedderPreset
from medagent.retrieval._torch_embedding import require, unit_batches
from medagent.retrieval.base import Vectors

__all__ = ["OpenCLIPEmbedder"]

_PURPOSE = "The 'open_clip' embedder"


class OpenCLIPEmbedder:
    """An ``Embedder`` over an open_clip model (``encode_image``/``encode_text``)."""

    def __init__(
        self,
        preset: EmbedderPreset,
        model: str | Path | None = None,
        *,
        device: str = "auto",
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, not {batch_size}")
        require("torch", "pathology", _PURPOSE)
        require("open_clip", "pathology", _PURPOSE)
        import open_clip
        import torch

        self.preset = preset
        self.batch_size = batch_size
        folder = model_folder(model or preset.hub_id, "open_clip_config.json", gated=preset.gated)
        if not any(any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.pth")):
            # open_clip would go on with random weights and only log a warning
            raise ConfigError(f"{folder} holds no weights (*.safetensors, *.bin or *.pth)")
        self._device = pick_device(torch, device)
        source = f"local-dir:{folder}"
        try:
            network, _, preprocess = open_clip.create_model_and_transforms(
                source, device=self._device
            )
            self._tokenizer: Any = open_clip.get_tokenizer(source)
        except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"cannot load {folder} as {preset.name} ({preset.architecture}): {first_line(exc)}"
            ) from None
        self._model: Any = network.eval()
        self._preprocess: Any = preprocess
        self.name = f"{preset.name}:{folder.name}"
        self.dim: int = int(open_clip.get_model_config(source)["embed_dim"])

    @property
    def logit_scale(self) -> float | None:
        """The learned temperature of image-text logits (exp of ``logit_scale``), so zero-shot
        shares are as sharp as in training; ``None`` for a model without one."""
        value = getattr(self._model, "logit_scale", None)
        return None if value is None else float(value.detach().float().exp().item())

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        """(len(images), dim) float32, L2-normalized rows."""
        return unit_batches(list(images), self.batch_size, self.dim, self.name, self._image_batch)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Texts in the images' space."""
        return unit_batches(list(texts), self.batch_size, self.dim, self.name, self._text_batch)

    def _image_batch(self, images: list[Image.Image]) -> Any:
        import torch

        pixels = torch.stack([self._preprocess(_as_rgb(image)) for image in images])
        with torch.inference_mode():
            return self._model.encode_image(pixels.to(self._device)).float().cpu().numpy()

    def _text_batch(self, texts: list[str]) -> Any:
        import torch

        tokens = self._tokenizer(texts)
        with torch.inference_mode():
            return self._model.encode_text(tokens.to(self._device)).float().cpu().numpy()
