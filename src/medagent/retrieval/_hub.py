"""Where a preset's weights are: a local folder, else the local hub cache, else the hub.

Offline first: a hub id is looked up in the local cache before any network call, and with
``HF_HUB_OFFLINE`` set it never leaves the machine. Every failure is one line that says how to get
the model (gated ones need their licence accepted first).
"""

from __future__ import annotations

import os
from pathlib import Path

from medagent.errors import ConfigError, InputError
from medagent.models.hf_loading import first_line
from medagent.retrieval._presets import gated_help

__all__ = ["model_folder"]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def model_folder(source: str | Path, config_file: str, *, gated: bool) -> Path:
    """A local folder holding ``config_file`` and weights for ``source`` (a folder or hub id)."""
    path = Path(str(source)).expanduser()
    if path.is_dir():
        if not (path / config_file).is_file():
            raise InputError(
                f"{path} is not a model folder (no {config_file}); pass the folder that "
                "`hf download ORG/NAME --local-dir DIR` wrote",
                path=str(path),
            )
        return path
    if isinstance(source, Path) or path.exists() or str(source).count("/") != 1:
        raise InputError(f"model folder {path} does not exist", path=str(path))
    hub_id = str(source)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    how = gated_help(hub_id) if gated else f"download it with `hf download {hub_id}`"
    if _offline():
        raise ConfigError(
            f"{hub_id} is not in the local hub cache and HF_HUB_OFFLINE is set; {how}"
        )
    try:
        return Path(snapshot_download(hub_id))
    except GatedRepoError:
        raise ConfigError(f"{hub_id} is gated: {gated_help(hub_id)}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot download {hub_id}: {first_line(exc)}; {how}") from None
