"""Image (and text) vectors from a transformers model: CLIP, SigLIP, or any vision encoder.

For retrieval that understands content, and for text-to-image search. The model is a local
folder written by ``save_pretrained`` or a hub id (from the local cache when offline);
``medagent.testing.build_tiny_clip`` writes a tiny one for tests.

Dual encoders (CLIP, SigLIP and their kin) give images and texts in one space through
``get_image_features``/``get_text_features``. A vision-only model (ViT, DINOv2) gives images
only: its pooled output, or the mean of its last hidden states when it has no pooler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medagent.errors import ConfigError, DependencyMissingError, ModelError
from medagent.models.hf_loading import (
    first_line,
    load_error,
    pick_device,
    pick_dtype,
    resolve_location,
)
from medagent.retrieval._default_embedder import _as_rgb
from medagent.retrieval.base import Vectors

__all__ = ["HFEmbedder"]

_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _require(package: str) -> None:
    """Turn a missing optional package into the error that names the extra to install."""
    try:
        __import__(package)
    except ImportError:
        raise DependencyMissingError(package, "hf", "The 'hf' embedder") from None


def _pooled(output: Any) -> Any:
    """One (n, d) tensor from whatever a features call returned (transformers 4 and 5 differ)."""
    import torch

    if isinstance(output, torch.Tensor):
        tensor = output
    elif getattr(output, "pooler_output", None) is not None:
        tensor = output.pooler_output
    else:
        tensor = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
    return tensor.mean(dim=1) if tensor.dim() == 3 else tensor  # tokens → one vector


class HFEmbedder:
    """An ``Embedder`` backed by ``AutoProcessor``/``AutoModel`` in this process.

    The config is read at construction (it fixes ``dim`` and catches a wrong path early); the
    weights load on the first call (or an explicit ``load()``). Inputs go through the model in
    batches of ``batch_size`` under ``torch.inference_mode``; vectors come back float32 and
    L2-normalized whatever the model's dtype.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
    ) -> None:
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, not {batch_size}")
        _require("torch")
        _require("transformers")
        from transformers import AutoConfig

        self.name = str(model)
        self.batch_size = batch_size
        self.device_setting = device
        self.dtype_setting = dtype
        self._location = resolve_location(model, "medagent.testing.build_tiny_clip")
        try:
            self._config: Any = AutoConfig.from_pretrained(self._location)
        except OSError as exc:
            raise load_error(self._location, exc, "the embedding model") from None
        except ValueError as exc:
            raise ConfigError(
                f"{self._location} is not a model transformers can load: {first_line(exc)}"
            ) from None
        self._model: Any = None
        self._processor: Any = None
        self._device: Any = None
        dim = self._configured_dim()
        if dim is None:  # an architecture we have no rule for: ask the model itself
            dim = int(self._image_batch([Image.new("RGB", (64, 64))]).shape[1])
        self.dim: int = dim

    # -- loading ---------------------------------------------------------------------------

    def _configured_dim(self) -> int | None:
        """The image vector length the config promises, where the architecture is known."""
        config = self._config
        if isinstance(getattr(config, "projection_dim", None), int):  # CLIP and its kin
            return int(config.projection_dim)
        vision = getattr(config, "vision_config", None)
        if "siglip" in config.model_type and vision is not None:  # pooled, no projection
            return int(vision.hidden_size)
        return None

    def load(self) -> None:
        """Load processor and weights now (blocking); later calls do nothing."""
        if self._model is not None:
            return
        import torch
        from transformers import AutoModel, AutoProcessor

        device = pick_device(torch, self.device_setting)
        dtype = pick_dtype(torch, self.dtype_setting, device)
        try:
            processor = AutoProcessor.from_pretrained(self._location)  # type: ignore[no-untyped-call]
            model = AutoModel.from_pretrained(self._location, dtype=dtype)
        except OSError as exc:
            raise load_error(self._location, exc, "the embedding model") from None
        except ValueError as exc:
            raise ConfigError(
                f"{self._location} is not a model transformers can load: {first_line(exc)}"
            ) from None
        self._device = device
        self._model = model.to(device).eval()
        self._processor = processor

    @property
    def logit_scale(self) -> float | None:
        """The temperature a dual encoder learned for image-text logits (CLIP's exp of
        ``logit_scale``), so zero-shot shares are as sharp as in training; ``None`` without."""
        self.load()
        value = getattr(self._model, "logit_scale", None)
        return None if value is None else float(value.detach().float().exp().item())

    # -- embedding -------------------------------------------------------------------------

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        """(len(images), dim) float32, L2-normalized rows."""
        return self._batched(list(images), self._image_batch)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Texts in the images' space; ``ConfigError`` for a model without a text tower."""
        self.load()
        if not hasattr(self._model, "get_text_features"):
            raise ConfigError(
                f"{self.name} ({type(self._model).__name__}) has no text side; use an "
                "image-text model such as CLIP or SigLIP for text queries"
            )
        return self._batched(list(texts), self._text_batch)

    def _batched(self, items: list[Any], run: Callable[[list[Any]], Any]) -> Vectors:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [run(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        vectors = np.concatenate(parts).astype(np.float32)
        if vectors.shape[1] != self.dim:
            raise ModelError(
                f"{self.name} gave vectors of length {vectors.shape[1]}, not the {self.dim} "
                "its config promises; this architecture is not supported as an embedder"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit: Vectors = vectors / np.maximum(norms, np.float32(1e-12))
        return unit

    def _image_batch(self, images: list[Image.Image]) -> Any:
        self.load()
        inputs = self._processor(images=[_as_rgb(image) for image in images], return_tensors="pt")
        if hasattr(self._model, "get_image_features"):
            return self._forward(self._model.get_image_features, inputs)
        return self._forward(self._model, inputs)

    def _text_batch(self, texts: list[str]) -> Any:
        # SigLIP was trained on texts padded to a fixed length; its vectors depend on it.
        padding = "max_length" if "siglip" in self._config.model_type else True
        try:
            inputs = self._processor(
                text=texts, padding=padding, truncation=True, return_tensors="pt"
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.name} cannot tokenize text: {first_line(exc)}") from None
        return self._forward(self._model.get_text_features, inputs)

    def _forward(self, call: Callable[..., Any], inputs: Any) -> Any:
        import torch

        floats = (torch.float32, torch.float16, torch.bfloat16)
        tensors = {
            # Pixels go in the model's dtype; token ids and masks stay integers.
            key: value.to(self._device, self._model.dtype)
            if value.dtype in floats
            else value.to(self._device)
            for key, value in inputs.items()
            if isinstance(value, torch.Tensor)
        }
        try:
            with torch.inference_mode():
                return _pooled(call(**tensors)).float().cpu().numpy()
        except (RuntimeError, MemoryError) as exc:  # how torch reports OOM and device errors
            raise ModelError(f"embedding with {self.name} failed: {first_line(exc)}") from exc
