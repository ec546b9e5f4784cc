"""Image (and text) vectors from a transformers model: CLIP, SigLIP, or any vision encoder.

For retrieval that understands content, and for text-to-image search. The model is a local
folder written by ``save_pretrained`` or a hub id (from the local cache when offline);
``medagent.testing.build_tiny_clip`` writes a tiny one for tests.

Dual encoders (CLIP, SigLIP and their kin) give images and texts in one space through
``get_image_features``/``get_text_features``. A vision-only model (ViT, DINOv2) gives images
only: its pooled output, or the mean of its last hidden states when it has no pooler.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medagent.errors import ConfigError, DependencyMissingError, InputError, ModelError
from medagent.retrieval._default_embedder import _as_rgb
from medagent.retrieval.base import Vectors

__all__ = ["HFEmbedder"]

_DTYPES = ("auto", "float32", "bfloat16", "float16")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _require(package: str) -> None:
    """Turn a missing optional package into the error that names the extra to install."""
    try:
        __import__(package)
    except ImportError:
        raise DependencyMissingError(package, "hf", "The 'hf' embedder") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _location(source: str | Path) -> str:
    """A folder that exists or a hub id; anything else is a path that is not there."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise InputError(
                f"{path} is not a model folder (no config.json); pass a folder written by "
                "save_pretrained or a Hugging Face hub id",
                path=str(path),
            )
        return str(path)
    if isinstance(source, Path) or not _HUB_ID.match(text):
        raise InputError(
            f"model folder {path} does not exist; pass a folder written by save_pretrained "
            "(medagent.testing.build_tiny_clip makes a tiny one) or a hub id like org/name",
            path=str(path),
        )
    return text


def _load_error(location: str, exc: OSError) -> ConfigError:
    if Path(location).is_dir():
        return ConfigError(f"cannot load the embedding model in {location}: {_first_line(exc)}")
    if _offline():
        return ConfigError(
            f"model {location!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
            f"set; download it first (hf download {location}) or pass a local model folder"
        )
    return ConfigError(f"cannot load model {location!r} from the hub: {_first_line(exc)}")


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
        self._location = _location(model)
        try:
            self._config: Any = AutoConfig.from_pretrained(self._location)
        except OSError as exc:
            raise _load_error(self._location, exc) from None
        except ValueError as exc:
            raise ConfigError(
                f"{self._location} is not a model transformers can load: {_first_line(exc)}"
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

        device = self._pick_device(torch)
        dtype = (
            (torch.bfloat16 if device.type == "cuda" else torch.float32)  # CPUs: slow in bf16
            if self.dtype_setting == "auto"
            else getattr(torch, self.dtype_setting)
        )
        try:
            processor = AutoProcessor.from_pretrained(self._location)  # type: ignore[no-untyped-call]
            model = AutoModel.from_pretrained(self._location, dtype=dtype)
        except OSError as exc:
            raise _load_error(self._location, exc) from None
        except ValueError as exc:
            raise ConfigError(
                f"{self._location} is not a model transformers can load: {_first_line(exc)}"
            ) from None
        self._device = device
        self._model = model.to(device).eval()
        self._processor = processor

    def _pick_device(self, torch: Any) -> Any:
        if self.device_setting != "auto":
            try:
                return torch.device(self.device_setting)
            except RuntimeError as exc:
                raise ConfigError(
                    f"device {self.device_setting!r} is not valid: {_first_line(exc)}"
                ) from None
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

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
            raise ConfigError(f"{self.name} cannot tokenize text: {_first_line(exc)}") from None
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
            raise ModelError(f"embedding with {self.name} failed: {_first_line(exc)}") from exc
