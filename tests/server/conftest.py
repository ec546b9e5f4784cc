"""Fixtures for the web app: a slide folder, apps over it with the scripted backend, clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from server_support import LOOPBACK, SCRIPT, sse_events

from medagent.models import ScriptedModel
from medagent.server import ServerConfig, create_app
from medagent.testing import synthetic_tissue, write_pyramid_tiff


@pytest.fixture(scope="session")
def slide_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slide folder with one 3000 x 2000 px pyramid (3 levels) in a subfolder."""
    root = tmp_path_factory.mktemp("slides")
    (root / "cases").mkdir()
    write_pyramid_tiff(
        root / "cases" / "tissue.tif", synthetic_tissue(3000, 2000, seed=5), mpp=0.5, levels=3
    )
    return root


@pytest.fixture
def make_app(slide_root: Path, tmp_path: Path) -> Callable[..., Any]:
    """``make_app(**config)``: an app over ``slide_root``, each session replaying ``SCRIPT``."""

    def build(
        script: list[dict[str, Any]] | None = None, model_cls: type = ScriptedModel, **config: Any
    ) -> Any:
        values: dict[str, Any] = {"slide_roots": (slide_root,), "data_dir": tmp_path / "data"}
        values.update(config)
        return create_app(
            ServerConfig(**values), model_factory=lambda _sid: model_cls(script or SCRIPT)
        )

    return build


@pytest.fixture
def client(make_app: Callable[..., Any]) -> Iterator[TestClient]:
    with TestClient(make_app(), base_url=LOOPBACK) as test_client:
        yield test_client


@pytest.fixture
def ask() -> Callable[..., list[dict[str, Any]]]:
    """``ask(client, session_id, text, region=None)``: the turn's events (data only)."""

    def send(
        client: TestClient, session_id: str, text: str, region: dict[str, int] | None = None
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"text": text}
        if region is not None:
            body["region"] = region
        with client.stream("POST", f"/api/sessions/{session_id}/messages", json=body) as reply:
            assert reply.status_code == 200, reply.read()
            return [data for _, _, data in sse_events(reply)]

    return send
