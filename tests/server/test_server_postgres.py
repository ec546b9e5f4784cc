"""``--checkpoint postgresql://...``: sessions shared by replicas through one Postgres database.

Runs against the server named by ``MEDAGENT_TEST_POSTGRES`` (e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``) with the ``postgres`` extra installed;
skips, saying which, when either is missing.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from server_support import LATER_TURN, LOOPBACK, SCRIPT, TURN

from medagent.errors import DependencyMissingError
from medagent.models import ScriptedModel
from medagent.server import ServerConfig, create_app

POSTGRES_URL = os.environ.get("MEDAGENT_TEST_POSTGRES")
HAS_EXTRA = importlib.util.find_spec("langgraph.checkpoint.postgres") is not None


@pytest.mark.skipif(HAS_EXTRA, reason="the postgres extra is installed here")
async def test_postgres_without_the_extra_names_it(tmp_path: Path) -> None:
    from medagent.server._state import open_checkpointer

    with pytest.raises(DependencyMissingError, match=r"medagent\[postgres\]"):
        async with open_checkpointer(tmp_path, "postgresql://127.0.0.1/none"):
            pass


def _replica(slide_root: Path, shared: Path) -> Any:
    config = ServerConfig(slide_roots=(slide_root,), data_dir=shared, checkpoint=POSTGRES_URL)
    return create_app(config, model_factory=lambda _: ScriptedModel(SCRIPT))


@pytest.mark.skipif(
    not (POSTGRES_URL and HAS_EXTRA),
    reason="set MEDAGENT_TEST_POSTGRES=postgresql://... to test against a Postgres server"
    if not POSTGRES_URL
    else "needs pip install 'medagent[postgres]'",
)
@pytest.mark.slow
def test_two_replicas_serve_one_session_through_postgres(
    slide_root: Path, tmp_path: Path, ask: Callable[..., Any]
) -> None:
    shared = tmp_path / "shared"  # crops: shared storage in a real deployment
    one = TestClient(_replica(slide_root, shared), base_url=LOOPBACK)
    two = TestClient(_replica(slide_root, shared), base_url=LOOPBACK)
    with one, two:
        info = one.post("/api/sessions", json={"slide": "cases/tissue.tif"}).json()
        first = ask(one, info["id"], "What tissue is this?")
        assert [e["type"] for e in first] == TURN
        assert two.get(f"/api/sessions/{info['id']}").json() == info
        assert two.get(f"/api/sessions/{info['id']}/history").json()["events"] == first
        second = ask(two, info["id"], "And here?")
        assert [e["type"] for e in second] == LATER_TURN and second[0]["turn"] == 2
    with TestClient(_replica(slide_root, shared), base_url=LOOPBACK) as restarted:
        events = restarted.get(f"/api/sessions/{info['id']}/history").json()["events"]
        assert events == first + second
