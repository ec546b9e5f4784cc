"""Limits per client address, across sessions: a new session per message must not get round
the per-session limit.

Cases: 30 sessions opened by one client (429 with Retry-After past the burst, another address
unaffected); one message in each of many sessions (429 past the client's turn burst, another
address unaffected); the limits refill over time and are configurable; a refused request
leaves no session behind.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from server_attack_support import LOOPBACK, SAME_ORIGIN, SLIDE, build_app, one_line
from starlette.types import Receive, Scope, Send

from medagent.server import ClientLimits


class ClientFromHeader:
    """The ASGI client address taken from an ``X-Test-Client`` header: one app, one state,
    requests from several addresses (what a server sees from several machines)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-client":
                    scope = {**scope, "client": (value.decode(), 40000)}
        await self.app(scope, receive, send)


@pytest.fixture
def make_shared(slide_root: Path, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """``make_shared(**config)``: a started client of one app that several addresses share."""
    opened: list[TestClient] = []

    def make(**config: Any) -> TestClient:
        app = ClientFromHeader(build_app(slide_root, tmp_path / "data", **config))
        opened.append(TestClient(app, base_url=LOOPBACK).__enter__())
        return opened[-1]

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def _from(address: str) -> dict[str, str]:
    return {**SAME_ORIGIN, "X-Test-Client": address}


def _new_session(client: TestClient, address: str) -> tuple[int, dict[str, str], str]:
    reply = client.post("/api/sessions", json={"slide": SLIDE}, headers=_from(address))
    return reply.status_code, dict(reply.headers), reply.json().get("id", "")


def _rows(data: Path) -> int:
    with sqlite3.connect(data / "sessions.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM medagent_sessions").fetchone()[0])


def test_one_client_cannot_open_sessions_without_end(
    make_shared: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_shared(client_session_burst=10, client_sessions_per_minute=0.01)
    replies = [_new_session(client, "10.0.0.7") for _ in range(30)]
    statuses = [status for status, _, _ in replies]
    assert statuses == [201] * 10 + [429] * 20
    _, headers, _ = replies[-1]
    assert int(headers["retry-after"]) >= 1
    assert _rows(tmp_path / "data") == 10  # a refused request wrote nothing
    # The limit is per address: another client of the same app is not affected.
    assert _new_session(client, "10.0.0.8")[0] == 201
    assert _new_session(client, "10.0.0.7")[0] == 429


def _ask(client: TestClient, session: str, address: str) -> Any:
    url = f"/api/sessions/{session}/messages"
    return client.post(url, json={"text": "hi"}, headers=_from(address))


def test_one_message_per_new_session_hits_the_clients_turn_limit(
    make_shared: Callable[..., TestClient],
) -> None:
    client = make_shared(
        client_session_burst=100, client_message_burst=5, client_messages_per_minute=0.01
    )
    statuses = []
    for _ in range(12):
        status, _, session = _new_session(client, "10.0.0.7")
        assert status == 201
        reply = _ask(client, session, "10.0.0.7")
        statuses.append(reply.status_code)
        if reply.status_code == 429:
            assert "retry in" in one_line(reply) and int(reply.headers["retry-after"]) >= 1
        else:
            reply.read()
    assert statuses == [200] * 5 + [429] * 7
    _, _, session = _new_session(client, "10.0.0.9")
    assert _ask(client, session, "10.0.0.9").status_code == 200
    assert _ask(client, session, "10.0.0.7").status_code == 429  # any session, same address


def test_client_limits_refill_over_time() -> None:
    now = [0.0]
    limits = ClientLimits(
        sessions_per_minute=6,
        session_burst=2,
        messages_per_minute=60,
        message_burst=1,
        clock=lambda: now[0],
    )
    assert limits.new_session("a") == 0 and limits.new_session("a") == 0
    assert limits.new_session("a") == 10
    assert limits.new_session("b") == 0
    assert limits.new_message("a") == 0 and limits.new_message("a") == 1
    now[0] = 10.0
    assert limits.new_session("a") == 0 and limits.new_message("a") == 0
