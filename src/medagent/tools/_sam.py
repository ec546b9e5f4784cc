"""Segment Anything (SAM) through transformers: a box or points in, one binary mask out.

torch and transformers are imported only when a model is loaded (the ``[hf]`` extra). Loading
takes seconds and hundreds of MB for real checkpoints, so a ``SamSegmenter`` loads on first
use and keeps its model: whoever runs the agents builds one and passes it in
(``ToolContext.segmenter``), as a searcher is passed — no hidden process-wide cache.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from medagent.errors import ConfigError, DependencyMissingError

__all__ = ["SamMask", "SamSegmenter", "Segmenter"]

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


@runtime_checkable
class Segmenter(Protocol):
    """Prompted segmentation for ``segment(method="sam")``: a box and/or points in (pixels of
    ``image``), one mask out."""

    def segment(
        self,
        image: Image.Image,
        *,
        box: ImageBox | None = None,
        points: Sequence[ImagePoint] = (),
    ) -> SamMask: ...


class SamSegmenter:
    """SAM from a checkpoint (a local folder, or a hub id already in the local cache).

    Nothing is loaded until the first ``segment`` (or ``load``): building one is free, so a
    CLI can make one from ``--sam-model`` whether or not a model ever asks for SAM.
    """

    def __init__(self, source: str | Path, *, device: str | None = None) -> None:
        self.source = str(source)
        self.device = device
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()  # tools run in worker threads: load once

    def __repr__(self) -> str:
        return f"SamSegmenter({self.source!r}, device={self.device!r})"

    @classmethod
    def optional(cls, source: str | Path | None) -> SamSegmenter | None:
        """A segmenter for ``source`` (e.g. ``--sam-model``), or ``None`` when none is set."""
        return cls(source) if source else None

    def load(self) -> SamSegmenter:
        """Load the model now (it loads on first use otherwise); raises ``ConfigError`` when
        the source is not a SAM checkpoint."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
        return self

    @property
    def model(self) -> Any:
        return self.load()._loaded[0]  # type: ignore[index]

    @property
    def processor(self) -> Any:
        return self.load()._loaded[1]  # type: ignore[index]

    def _load(self) -> tuple[Any, Any]:
        torch, transformers = _import_hf()
        source = self.source
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = device
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
        return model, processor

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
