"""Segment Anything (SAM) through transformers: a box or points in, one binary mask out.

torch and transformers are imported only when a model is loaded (the ``[hf]`` extra). Loading
takes seconds and hundreds of MB for real checkpoints, so ``load_sam`` keeps the last few
loaded models per source and device for the life of the process.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medagent.errors import ConfigError, DependencyMissingError

__all__ = ["SamMask", "SamSegmenter", "load_sam"]

#: Prompt coordinates here are pixels of the image given to ``segment`` (x0, y0, x1, y1 for a
#: box); the tool converts from level-0 before calling.
ImageBox = tuple[float, float, float, float]
ImagePoint = tuple[float, float]


class SamMask(BaseModel):
    """SAM's answer for one prompt: the mask (image-sized) and its predicted IoU."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    mask: np.ndarray = Field(exclude=True)
    score: float = Field(description="the model's own estimate of the mask's IoU, 0..1")


def _import_hf() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError:
        raise DependencyMissingError("torch", "hf", "SAM segmentation") from None
    return torch, transformers


class SamSegmenter:
    """A loaded SAM model and its processor; use ``load_sam`` to share one per process."""

    def __init__(self, model: Any, processor: Any, *, source: str, device: str) -> None:
        self.model = model
        self.processor = processor
        self.source = source
        self.device = device

    def __repr__(self) -> str:
        return f"SamSegmenter({self.source!r}, device={self.device!r})"

    @classmethod
    def load(cls, source: str, device: str | None = None) -> SamSegmenter:
        """Load a SAM checkpoint (a local folder or a hub id already in the local cache)."""
        torch, transformers = _import_hf()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        looks_local = source.startswith(("/", ".", "~")) or Path(source).drive != ""
        location = str(Path(source).expanduser()) if looks_local else source
        if looks_local and not Path(location).is_dir():
            raise ConfigError(
                f"SAM model folder {source!r} does not exist; give the SAM model as a folder "
                "written by SamModel.save_pretrained and SamProcessor.save_pretrained"
            )
        try:
            config = transformers.AutoConfig.from_pretrained(location)
            if config.model_type != "sam":
                raise ConfigError(
                    f"{source!r} holds a {config.model_type!r} model, not SAM; give the SAM model "
                    "as a SAM checkpoint (model_type 'sam')"
                )
            model = transformers.SamModel.from_pretrained(location).to(device).eval()
            processor = transformers.SamProcessor.from_pretrained(location)
        except (OSError, ValueError, KeyError) as exc:
            text = str(exc).strip()
            reason = text.splitlines()[0][:200] if text else type(exc).__name__
            raise ConfigError(
                f"cannot load a SAM model from {source!r} ({reason}); give the SAM model as a "
                "folder written by SamModel.save_pretrained and SamProcessor.save_pretrained, "
                "or a hub id already in the local cache"
            ) from None
        return cls(model, processor, source=source, device=device)

    def segment(
        self,
        image: Image.Image,
        *,
        box: ImageBox | None = None,
        points: Sequence[ImagePoint] = (),
    ) -> SamMask:
        """The mask SAM predicts for a box and/or foreground points (pixels of ``image``)."""
        torch, _ = _import_hf()
        if box is None and not points:
            raise ValueError("SAM needs a prompt: a box, points, or both")
        prompts: dict[str, Any] = {}
        if box is not None:
            prompts["input_boxes"] = [[list(box)]]
        if points:
            prompts["input_points"] = [[[list(p) for p in points]]]
            prompts["input_labels"] = [[[1] * len(points)]]
        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt", **prompts)
        original_sizes = inputs.pop("original_sizes")
        reshaped_sizes = inputs.pop("reshaped_input_sizes")
        with torch.inference_mode():
            outputs = self.model(**inputs.to(self.device), multimask_output=False)
        masks = self.processor.post_process_masks(
            outputs.pred_masks.cpu(), original_sizes, reshaped_sizes
        )
        mask = masks[0][0, 0].numpy().astype(bool)
        score = float(outputs.iou_scores[0, 0, 0].cpu())
        return SamMask(mask=mask, score=min(1.0, max(0.0, score)))


@functools.lru_cache(maxsize=4)
def _cached(source: str, device: str | None) -> SamSegmenter:
    return SamSegmenter.load(source, device)


def load_sam(source: str | Path, device: str | None = None) -> SamSegmenter:
    """A ``SamSegmenter`` for ``source``, loaded once per process and reused.

    A local folder is keyed by its resolved path, so different spellings share one model.
    """
    path = Path(source).expanduser()
    key = str(path.resolve()) if path.exists() else str(source)
    return _cached(key, device)
