"""medagent's version, and the versions a run records in its manifest."""

from __future__ import annotations

import functools
import platform
from importlib import metadata

__version__ = "0.1.0"

#: Packages whose versions change what a run does: recorded in every manifest, when installed.
RECORDED_PACKAGES = (
    "langgraph",
    "pydantic",
    "httpx",
    "openslide-python",
    "faiss-cpu",
    "torch",
    "transformers",
    "vllm",
    "ray",
    "optuna",
)


def package_versions(names: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str]:
    """medagent's, Python's and each installed package's version, so a run can be reproduced
    (or a difference explained) later; packages that are not installed are left out."""
    return dict(_versions(names))


@functools.cache
def _versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # Read once per process: every run's manifest asks, and reading package metadata costs
    # milliseconds that a batch of thousands of questions would pay on its event loop.
    found = {"medagent": __version__, "python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return tuple(found.items())
