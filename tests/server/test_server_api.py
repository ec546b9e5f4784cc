"""The web app's API with the scripted backend: sessions, streamed turns, history, restarts."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from server_support import ANSWER, LATER_TURN, LOOPBACK, TURN, ZOOM, SlowModel, sse_events

from medagent.models import ScriptedModel

SLIDE = "cases/tissue.tif"


def new_session(client: TestClient, slide: str = SLIDE) -> dict[str, Any]:
    reply = client.post("/api/sessions", json={"slide": slide})
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def test_session_lifecycle_create_ask_history(client: TestClient, ask: Callable[..., Any]) -> None:
    assert client.get("/api/slides").json()["slides"] == [SLIDE]
    info = new_session(client)
    assert (info["width"], info["height"], info["mpp_x"]) == (3000, 2000, 0.5)
    assert client.get(f"/api/sessions/{info['id']}").json() == info
    assert client.get(f"/api/sessions/{info['id']}/history").json() == {"events": []}

    first = ask(client, info["id"], "What tissue is this?")
    second = ask(client, info["id"], "And the stroma?")

    assert [e["type"] for e in first] == TURN and [e["type"] for e in second] == LATER_TURN
    assert {e["turn"] for e in first} == {1} and {e["turn"] for e in second} == {2}
    assert first[0]["text"] == "What tissue is this?"
    assert first[4]["box"] == 1 and first[4]["region"] == {**ZOOM["arguments"]}
    assert second[3]["box"] == 2  # boxes are numbered across the whole session
    assert first[5]["text"] == ANSWER
    history = client.get(f"/api/sessions/{info['id']}/history").json()["events"]
    assert history == first + second


def test_events_stream_in_order_with_names_and_ids(make_app: Callable[..., Any]) -> None:
    with TestClient(make_app(model_cls=SlowModel), base_url=LOOPBACK) as client:
        session = new_session(client)["id"]
        arrivals: list[float] = []
        started = time.perf_counter()
        with client.stream(
            "POST", f"/api/sessions/{session}/messages", json={"text": "What is it?"}
        ) as reply:
            assert reply.headers["content-type"].startswith("text/event-stream")
            events = []
            for event in sse_events(_Timed(reply, arrivals, started)):
                events.append(event)
    names = [name for name, _, _ in events]
    assert names == TURN
    assert [ident for _, ident, _ in events] == [f"1.{seq}" for seq in range(len(TURN))]
    assert [data["seq"] for _, _, data in events] == list(range(len(TURN)))
    # Streamed, not buffered: turn_start arrives before the two model calls (0.5 s each) end.
    assert arrivals[-1] - arrivals[0] > 0.8


class _Timed:
    """Records when each line of a streamed response arrives."""

    def __init__(self, reply: Any, arrivals: list[float], started: float) -> None:
        self._reply, self._arrivals, self._started = reply, arrivals, started

    def iter_lines(self) -> Any:
        for line in self._reply.iter_lines():
            if line.startswith("data:"):
                self._arrivals.append(time.perf_counter() - self._started)
            yield line


def test_a_session_resumes_after_a_restart(
    make_app: Callable[..., Any], ask: Callable[..., Any]
) -> None:
    with TestClient(make_app(), base_url=LOOPBACK) as client:
        info = new_session(client)
        first = ask(client, info["id"], "What tissue is this?")
    # A new process: new app, new models, same data folder.
    with TestClient(make_app(), base_url=LOOPBACK) as client:
        assert client.get(f"/api/sessions/{info['id']}").json() == info
        assert client.get(f"/api/sessions/{info['id']}/history").json()["events"] == first
        crop = first[4]["artifact_id"]
        assert client.get(f"/api/sessions/{info['id']}/crops/{crop}").status_code == 200
        second = ask(client, info["id"], "And now?")
    assert {e["turn"] for e in second} == {2} and second[3]["box"] == 2


def test_a_region_question_reaches_the_agent(client: TestClient, ask: Callable[..., Any]) -> None:
    session = new_session(client)["id"]
    region = {"x": 100, "y": 200, "width": 300, "height": 400}

    events = ask(client, session, "", region=region)  # a region alone is a question

    assert events[0]["type"] == "turn_start" and events[0]["region"] == region


def test_regions_are_clamped_to_the_slide_and_empty_messages_refused(
    client: TestClient, ask: Callable[..., Any]
) -> None:
    session = new_session(client)["id"]
    url = f"/api/sessions/{session}/messages"
    outside = {"x": 5000, "y": 0, "width": 10, "height": 10}
    assert client.post(url, json={"text": "?", "region": outside}).status_code == 422
    assert client.post(url, json={"text": "   "}).status_code == 422
    assert client.post(url, json={"text": "x" * 5000}).status_code == 413
    partly = {"x": 2900, "y": 1900, "width": 500, "height": 500}
    events = ask(client, session, "here?", region=partly)
    assert events[0]["region"] == {"x": 2900, "y": 1900, "width": 100, "height": 100}


def test_one_turn_at_a_time_per_session(make_app: Callable[..., Any]) -> None:
    with TestClient(make_app(model_cls=SlowModel), base_url=LOOPBACK) as client:
        session = new_session(client)["id"]
        url = f"/api/sessions/{session}/messages"
        with client.stream("POST", url, json={"text": "first"}) as running:
            lines = running.iter_lines()
            next(lines)  # the turn has started
            busy = client.post(url, json={"text": "second"})
            assert busy.status_code == 409
            assert "still answering" in busy.json()["detail"]
            list(lines)
        assert client.post(url, json={"text": "third"}).status_code == 200


def test_messages_beyond_the_rate_limit_get_429_with_retry_after(
    make_app: Callable[..., Any], ask: Callable[..., Any]
) -> None:
    app = make_app(messages_per_minute=2, message_burst=1)
    with TestClient(app, base_url=LOOPBACK) as client:
        one, other = new_session(client)["id"], new_session(client)["id"]
        ask(client, one, "first")
        refused = client.post(f"/api/sessions/{one}/messages", json={"text": "again"})
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 30
        ask(client, other, "first")  # the limit is per session


def test_unknown_sessions_are_404(client: TestClient) -> None:
    for session in ("A" * 22, "not a session", "../../etc"):
        assert client.get(f"/api/sessions/{session}").status_code == 404
        reply = client.post(f"/api/sessions/{session}/messages", json={"text": "hi"})
        assert reply.status_code == 404


def test_deep_zoom_descriptor_and_tiles_are_served_and_cached(client: TestClient) -> None:
    info = new_session(client)
    dzi = client.get(info["dzi"])
    assert dzi.status_code == 200 and 'Width="3000" Height="2000"' in dzi.text
    # 3000 px wide: 13 Deep Zoom levels (0..12); level 12 is full resolution.
    url = f"/api/sessions/{info['id']}/slide_files/12/0_0.jpeg"
    tile = client.get(url)
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(tile.content)).size == (255, 255)  # 254 + 1 px overlap
    assert "max-age" in tile.headers["cache-control"]
    tiles = client.app.state.tiles  # type: ignore[attr-defined]
    hits = tiles.hits
    assert client.get(url).content == tile.content and tiles.hits == hits + 1
    whole = client.get(f"/api/sessions/{info['id']}/slide_files/0/0_0.jpeg")
    assert Image.open(io.BytesIO(whole.content)).size == (1, 1)
    for missing in ("12/99_0.jpeg", "13/0_0.jpeg", "-1/0_0.jpeg", "12/0_0.png"):
        assert client.get(f"/api/sessions/{info['id']}/slide_files/{missing}").status_code == 404


def test_an_agent_failure_ends_the_stream_with_an_error_event(
    make_app: Callable[..., Any], ask: Callable[..., Any]
) -> None:
    app = make_app(script=[{"error": "server_error"}] * 10)
    with TestClient(app, base_url=LOOPBACK) as client:
        session = new_session(client)["id"]
        events = ask(client, session, "What is it?")
        assert events[0]["type"] == "turn_start" and events[-1]["type"] == "turn_end"
        assert any(e["type"] == "error" for e in events)
        assert client.get("/healthz").json() == {"ok": True}


def test_a_crashing_agent_is_reported_not_hung(
    make_app: Callable[..., Any], tmp_path: Path, ask: Callable[..., Any]
) -> None:
    from medagent.server import ServerConfig, create_app

    class Broken:
        async def astream(self, thread_id: str, message: str, **_: Any) -> Any:
            raise RuntimeError("bug")
            yield  # pragma: no cover

        async def ahistory(self, thread_id: str) -> list[Any]:
            return []

    config = ServerConfig(
        slide_roots=make_app().state.config.slide_roots, data_dir=tmp_path / "broken"
    )
    app = create_app(
        config, model_factory=lambda _: ScriptedModel([]), agent_factory=lambda _: Broken()
    )
    with TestClient(app, base_url=LOOPBACK) as client:
        session = new_session(client)["id"]
        events = ask(client, session, "hi")
    internal = {"type": "error", "thread_id": session, "text": "internal error; see the log"}
    assert events == [internal]


def test_crops_are_jpegs_from_the_session_store(
    client: TestClient, ask: Callable[..., Any]
) -> None:
    session = new_session(client)["id"]
    crop = ask(client, session, "What is it?")[4]
    image = client.get(f"/api/sessions/{session}/crops/{crop['artifact_id']}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).size == (800, 600)


@pytest.mark.parametrize("body", [{}, {"slide": 3}, {"slide": "x", "extra": 1}])
def test_malformed_session_requests_are_422(client: TestClient, body: dict[str, Any]) -> None:
    assert client.post("/api/sessions", json=body).status_code == 422
