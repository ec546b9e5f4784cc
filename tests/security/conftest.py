"""Fixtures for the attacks on the web app: a slide folder and started test clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from server_attack_support import LOOPBACK, SLIDE, build_app

from medagent.testing import synthetic_tissue, write_pyramid_tiff


@pytest.fixture(scope="session")
def slide_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slide folder with one 1200 x 800 px pyramid (2 levels) in a subfolder."""
    root = tmp_path_factory.mktemp("slides")
    (root / "cases").mkdir()
    write_pyramid_tiff(root / SLIDE, synthetic_tissue(1200, 800, seed=5), mpp=0.5, levels=2)
    return root


@pytest.fixture
def make_client(slide_root: Path, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """``make_client(root=None, client=(host, port), **config)``: a started ``TestClient``."""
    opened: list[TestClient] = []

    def make(
        root: Path | None = None, client: tuple[str, int] = ("127.0.0.1", 50000), **config: Any
    ) -> TestClient:
        app = build_app(root or slide_root, tmp_path / "data", **config)
        test_client = TestClient(
            app, base_url=LOOPBACK, client=client, raise_server_exceptions=False
        )
        opened.append(test_client.__enter__())
        return test_client

    yield make
    for test_client in reversed(opened):
        test_client.__exit__(None, None, None)
