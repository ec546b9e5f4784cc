"""Each web session's folder says what ran (a chat run manifest); a bad app setup is a
one-line ``ConfigError``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medagent.agents.base import RunManifest
from medagent.errors import ConfigError
from medagent.models import ScriptedModel
from medagent.server import ServerConfig, create_app


def test_a_session_folder_holds_the_chat_manifest(client: TestClient, tmp_path: Path) -> None:
    reply = client.post("/api/sessions", json={"slide": "cases/tissue.tif"})
    assert reply.status_code == 201, reply.text

    manifest = RunManifest.read(tmp_path / "data" / "sessions" / reply.json()["id"])

    assert manifest.agent == "chat" and manifest.backend == "ScriptedModel"
    assert manifest.inputs["slide_path"].endswith("cases/tissue.tif")
    assert manifest.config["view_cache"] == 0 and manifest.image_long_side == 1000
    assert "chat/system" in manifest.prompts and "system" in manifest.rendered_prompts


@pytest.mark.parametrize("both", [True, False])
def test_create_app_needs_exactly_one_model(tmp_path: Path, both: bool) -> None:
    config = ServerConfig(slide_roots=(tmp_path,), data_dir=tmp_path / "data")
    models: dict[str, Any] = {
        "model": ScriptedModel([]),
        "model_factory": lambda _: ScriptedModel([]),
    }

    with pytest.raises(ConfigError, match="exactly one of model= or model_factory="):
        create_app(config, **(models if both else {}))
