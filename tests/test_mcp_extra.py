"""Without the ``mcp`` SDK, ``medagent mcp`` says which extra to install, in one line."""

from __future__ import annotations

import sys

import pytest

from medagent.errors import DependencyMissingError
from medagent.mcp_server import require_mcp


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mcp.server.lowlevel", None)
    with pytest.raises(DependencyMissingError, match=r"pip install 'medagent\[mcp\]'") as caught:
        require_mcp()
    assert "\n" not in str(caught.value)
