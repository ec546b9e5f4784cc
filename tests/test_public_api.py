"""The public surface: every package's ``__all__`` is sorted, complete and importable."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "medagent",
    "medagent.agents.chat",
    "medagent.agents.giant",
    "medagent.agents.insight",
    "medagent.agents.rag",
    "medagent.artifacts",
    "medagent.errors",
    "medagent.evals",
    "medagent.evals.datasets",
    "medagent.imaging",
    "medagent.mcp_server",
    "medagent.models",
    "medagent.prompts",
    "medagent.retrieval",
    "medagent.server",
    "medagent.settings",
    "medagent.testing",
    "medagent.tools",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    for symbol in exported:
        assert hasattr(module, symbol), f"{name}.{symbol} is listed but missing"


def test_errors_share_one_root() -> None:
    import medagent.errors as errors

    for symbol in errors.__all__:
        assert issubclass(getattr(errors, symbol), errors.MedagentError)


def test_core_import_does_not_pull_in_torch() -> None:
    import subprocess
    import sys

    code = "import sys, medagent, medagent.testing; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
