"""An embedder from a setting: ``default`` (no weights) or ``hf`` (a transformers model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from medagent.errors import ConfigError
from medagent.retrieval._default_embedder import DefaultEmbedder
from medagent.retrieval.base import Embedder

__all__ = ["EmbedderName", "make_embedder"]

EmbedderName = Literal["default", "hf"]
_HF_OPTIONS = frozenset({"device", "dtype", "batch_size"})


def make_embedder(name: EmbedderName, model: str | Path | None = None, **kwargs: Any) -> Embedder:
    """The embedder called ``name``; ``model`` (a folder or hub id) and ``kwargs`` are for ``hf``.

    ``hf`` takes ``device``, ``dtype`` and ``batch_size`` (see ``HFEmbedder``); ``default`` takes
    nothing, so a stray option is an error rather than silently ignored.
    """
    if name == "default":
        if model is not None or kwargs:
            given = ", ".join(["model", *kwargs] if model is not None else list(kwargs))
            raise ConfigError(
                f"the default embedder needs no model or options (got {given}); "
                "use embedder 'hf' to embed with a model"
            )
        return DefaultEmbedder()
    if name == "hf":
        if model is None or not str(model).strip():
            raise ConfigError(
                "embedder 'hf' needs a model: a folder written by save_pretrained or a hub id "
                "such as openai/clip-vit-base-patch32"
            )
        unknown = sorted(set(kwargs) - _HF_OPTIONS)
        if unknown:
            raise ConfigError(
                f"embedder 'hf' takes the options {', '.join(sorted(_HF_OPTIONS))}, "
                f"not {', '.join(unknown)}"
            )
        from medagent.retrieval._hf_embedder import HFEmbedder

        return HFEmbedder(model, **kwargs)
    choices = ", ".join(repr(choice) for choice in get_args(EmbedderName))
    raise ConfigError(f"unknown embedder {name!r}; choose one of {choices}")
