"""Loading transformers models the same way everywhere: where from, on what device, in what dtype.

Shared by the transformers chat backend and the ``hf`` image embedder, so both give the same
one-line errors for a missing folder, an offline hub id, or a bad device. Torch is passed in
(imported lazily by the callers), so importing this module costs nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from medagent.errors import ConfigError, InputError

__all__ = ["first_line", "load_error", "pick_device", "pick_dtype", "resolve_location"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (transformers' messages run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_location(source: str | Path, tiny_hint: str) -> str:
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
            f"({tiny_hint} makes a tiny one) or a hub id like org/name",
            path=str(path),
        )
    return text


def load_error(location: str, exc: OSError, what: str = "the model") -> ConfigError:
    """One line for a model that would not load: a broken folder, offline, or a hub failure."""
    if Path(location).is_dir():
        return ConfigError(f"cannot load {what} in {location}: {first_line(exc)}")
    if _offline():
        return ConfigError(
            f"model {location!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
            f"is set; download it first (hf download {location}) or pass a local model folder"
        )
    return ConfigError(f"cannot load model {location!r} from the hub: {first_line(exc)}")


def pick_device(torch: Any, setting: str) -> Any:
    """``auto``: CUDA, else Apple MPS, else CPU; anything else is parsed by torch."""
    if setting != "auto":
        try:
            return torch.device(setting)
        except RuntimeError as exc:
            raise ConfigError(f"device {setting!r} is not valid: {first_line(exc)}") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(torch: Any, setting: str, device: Any) -> Any:
    """``auto``: bf16 on CUDA (half the memory), float32 elsewhere (CPUs are slow in bf16)."""
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, setting)
