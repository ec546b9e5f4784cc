"""Chat events never show where the server keeps its files.

Cases: an error raised mid-turn whose message names a file under the slide folder and one under
the server's data folder — the streamed ``error`` event shows
paths relative to their folder, never the absolute ones; nor does ``/history``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from server_attack_support import LOOPBACK, SAME_ORIGIN, SLIDE

from medagent.errors import InputError
from medagent.models import ScriptedModel
from medagent.server import ServerConfig, create_app


def test_error_events_name_paths_relative_to_their_folder(slide_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    slide_file = slide_root / SLIDE
    leaked = f"{slide_file}: unreadable; also {data.resolve()}/crops/x.png"

    def fail(request: Any) -> Any:
        raise InputError(leaked)

    config = ServerConfig(slide_roots=(slide_root,), data_dir=data)
    app = create_app(config, model_factory=lambda _: ScriptedModel(responder=fail))
    with TestClient(app, base_url=LOOPBACK, raise_server_exceptions=False) as client:
        session = client.post("/api/sessions", json={"slide": SLIDE}, headers=SAME_ORIGIN).json()
        url = f"/api/sessions/{session['id']}"
        streamed = client.post(f"{url}/messages", json={"text": "hi"}, headers=SAME_ORIGIN).text
        history = client.get(f"{url}/history").text
    assert f"{SLIDE}: unreadable; also crops/x.png" in streamed
    for text in (streamed, history):
        assert str(slide_root) not in text and str(data.resolve()) not in text
