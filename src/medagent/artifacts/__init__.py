"""Content-addressed image store: the only place images live; everything else holds ids."""

from medagent.artifacts._encoding import data_url, fit_long_side, to_jpeg
from medagent.artifacts._store import ArtifactRef, ArtifactStore

__all__ = ["ArtifactRef", "ArtifactStore", "data_url", "fit_long_side", "to_jpeg"]
