"""An embedder from a name: ``default`` (no weights), ``hf``, ``timm``, ``open_clip``, a preset
(``uni2-h``, ``virchow2``, ``quiltnet``... see ``PRESETS``) or one added with
``register_embedder``.

A model from a package that is not on PyPI (CONCH's own code, an in-house encoder) is one call::

    register_embedder("conch", lambda model, **options: MyConchEmbedder(model, **options))
    make_embedder("conch", "/models/conch")

The factory gets the model (folder or hub id, or None) and the options, and returns any object
with ``name``, ``dim``, ``embed_images`` and ``embed_texts`` (the ``Embedder`` protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from medagent.errors import ConfigError
from medagent.retrieval._default_embedder import DefaultEmbedder
from medagent.retrieval._presets import PRESETS, EmbedderPreset
from medagent.retrieval.base import Embedder

__all__ = [
    "EmbedderFactory",
    "EmbedderName",
    "embedder_names",
    "make_embedder",
    "register_embedder",
]

EmbedderName = Literal["default", "hf", "timm", "open_clip"]
EmbedderFactory = Callable[..., Embedder]
"""``factory(model, **options) -> Embedder``; ``model`` is a folder, a hub id or None."""

_OPTIONS = frozenset({"device", "dtype", "batch_size"})
_REGISTERED: dict[str, EmbedderFactory] = {}


def register_embedder(name: str, factory: EmbedderFactory) -> None:
    """Make ``make_embedder(name, model, **options)`` (and ``--embedder name``) call ``factory``."""
    if not name.strip() or name in ("default", "hf", "timm", "open_clip") or name in PRESETS:
        raise ConfigError(f"embedder name {name!r} is empty or already built in")
    _REGISTERED[name] = factory


def embedder_names() -> list[str]:
    """Every name ``make_embedder`` accepts: backends, presets, registered ones."""
    return ["default", "hf", "timm", "open_clip", *PRESETS, *_REGISTERED]


def _check_options(name: str, kwargs: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(
            f"embedder {name!r} takes the options {', '.join(sorted(allowed))}, "
            f"not {', '.join(unknown)}"
        )


def _from_preset(preset: EmbedderPreset, model: str | Path | None, kwargs: Any) -> Embedder:
    if preset.backend == "hf":
        _check_options(preset.name, kwargs, _OPTIONS)
        from medagent.retrieval._hf_embedder import HFEmbedder

        return HFEmbedder(model or preset.hub_id, **kwargs)
    if preset.backend == "timm":
        _check_options(preset.name, kwargs, _OPTIONS)
        from medagent.retrieval._timm_embedder import TimmEmbedder

        return TimmEmbedder(preset, model, **kwargs)
    _check_options(preset.name, kwargs, _OPTIONS - {"dtype"})
    from medagent.retrieval._open_clip_embedder import OpenCLIPEmbedder

    return OpenCLIPEmbedder(preset, model, **kwargs)


def _generic(backend: Literal["timm", "open_clip"], model: str | Path) -> EmbedderPreset:
    """A preset for any timm / open_clip folder: class-token pooling, ImageNet input."""
    return EmbedderPreset(
        name=backend,
        backend=backend,
        hub_id=str(model),
        architecture="",
        pooling="cls" if backend == "timm" else "model",
        dim=0,
        licence="see the model's own card",
        gated=False,
        text=backend == "open_clip",
    )


def make_embedder(name: str, model: str | Path | None = None, **kwargs: Any) -> Embedder:
    """The embedder called ``name``; ``model`` is a folder or hub id, ``kwargs`` its options.

    Model-backed embedders take ``device``, ``dtype`` and ``batch_size`` (open_clip: no dtype);
    ``default`` takes nothing, so a stray option is an error rather than silently ignored.
    """
    if name == "default":
        if model is not None or kwargs:
            given = ", ".join(["model", *kwargs] if model is not None else list(kwargs))
            raise ConfigError(
                f"the default embedder needs no model or options (got {given}); "
                "use embedder 'hf' or a preset to embed with a model"
            )
        return DefaultEmbedder()
    if name in _REGISTERED:
        return _REGISTERED[name](model, **kwargs)
    if name in PRESETS:
        return _from_preset(PRESETS[name], model, kwargs)
    if name in ("hf", "timm", "open_clip"):
        if model is None or not str(model).strip():
            raise ConfigError(
                f"embedder {name!r} needs a model: a local folder or a hub id "
                "(for hf: a save_pretrained folder such as openai/clip-vit-base-patch32)"
            )
        if name == "hf":
            _check_options(name, kwargs, _OPTIONS)
            from medagent.retrieval._hf_embedder import HFEmbedder

            return HFEmbedder(model, **kwargs)
        backend: Literal["timm", "open_clip"] = "timm" if name == "timm" else "open_clip"
        return _from_preset(_generic(backend, model), model, kwargs)
    choices = ", ".join(repr(choice) for choice in embedder_names())
    raise ConfigError(f"unknown embedder {name!r}; choose one of {choices}")
