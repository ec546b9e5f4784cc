"""The web app behind a real nginx with the shipped ``deploy/nginx/medagent.conf``.

Replicas run under uvicorn on loopback ports; nginx (Debian's) is started per test with the
shipped config pointed at them (``medagent.testing.NginxProxy``). Checks: a replica without a
token refuses what comes through the proxy; the token works as header and cookie through it;
events stream through one by one; tiles are kept by nginx but only handed to admitted requests;
body limits refuse the same bodies at the proxy as at the app.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from proxy_support import BEARER, SHIPPED, TOKEN, behind_nginx
from server_support import ANSWER, LATER_TURN, SCRIPT, SlowModel

from medagent.errors import ConfigError
from medagent.models import ScriptedModel
from medagent.server import ServerConfig, create_app
from medagent.testing import NginxProxy, PostgresServer

SLIDE = {"slide": "cases/tissue.tif"}
#: The finest Deep Zoom level of the 3000 x 2000 test slide: ceil(log2(3000)) + 1 levels.
TILE = "slide_files/12/1_1.jpeg"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway local Postgres for the replicas (skips, saying what is missing)."""
    if importlib.util.find_spec("langgraph.checkpoint.postgres") is None:
        pytest.skip("needs pip install 'medagent[postgres]'")
    if PostgresServer.find_binaries() is None:
        pytest.skip("no Postgres server binaries (apt-get install postgresql)")
    with PostgresServer() as server:
        yield server.url


def _events(
    client: httpx.Client, session: str, text: str
) -> list[tuple[float, str, dict[str, Any]]]:
    """``(seconds since sending, event name, data)`` for each event of one turn, as it
    arrived."""
    arrived: list[tuple[float, str, dict[str, Any]]] = []
    sent = time.perf_counter()
    with client.stream("POST", f"/api/sessions/{session}/messages", json={"text": text}) as reply:
        assert reply.status_code == 200, reply.read()
        name = ""
        for line in reply.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                arrived.append((time.perf_counter() - sent, name, json.loads(line[5:])))
    return arrived


def test_a_server_without_a_token_refuses_what_comes_through_a_proxy(
    make_app: Callable[..., Any],
) -> None:
    with behind_nginx([make_app()]) as (proxy, (direct,)):
        assert httpx.get(f"{direct}/api/slides").status_code == 200  # loopback, no proxy
        for path in ("/", "/api/slides", f"/api/sessions/x/{TILE}"):
            refused = httpx.get(f"{proxy}{path}")
            assert refused.status_code == 403, path
            assert "--token" in refused.json()["detail"]
        # The same refusal whoever adds the header: a proxy the app does not know of.
        spoofed = httpx.get(f"{direct}/api/slides", headers={"X-Forwarded-For": "10.0.0.1"})
        assert spoofed.status_code == 403
        assert httpx.get(f"{proxy}/healthz").json() == {"ok": True}  # public, as direct


def test_through_the_proxy_the_token_works_as_header_and_cookie(
    make_app: Callable[..., Any],
) -> None:
    app = make_app(token=TOKEN, trusted_proxies=("127.0.0.1",))
    with behind_nginx([app]) as (proxy, _):
        assert httpx.get(f"{proxy}/api/slides").status_code == 401
        wrong = httpx.get(f"{proxy}/api/slides", headers={"Authorization": "Bearer " + "x" * 20})
        assert wrong.status_code == 401
        assert httpx.get(f"{proxy}/api/slides", headers=BEARER).status_code == 200
        with httpx.Client(base_url=proxy, follow_redirects=True) as browser:
            entered = browser.get(f"/?token={TOKEN}")  # follows the 303 with the cookie
            assert entered.status_code == 200 and entered.history[0].status_code == 303
            assert "token" not in str(entered.url)
            # A write from the page: its Origin matches the Host nginx passes on.
            created = browser.post("/api/sessions", json=SLIDE, headers={"Origin": proxy})
            assert created.status_code == 201, created.text
            elsewhere = browser.post(
                "/api/sessions", json=SLIDE, headers={"Origin": "http://evil.example"}
            )
            assert elsewhere.status_code == 403


def test_the_users_address_comes_from_the_trusted_proxy(make_app: Callable[..., Any]) -> None:
    # One new session per client address, then none for a long while.
    app = make_app(
        token=TOKEN,
        trusted_proxies=("127.0.0.1",),
        client_session_burst=1,
        client_sessions_per_minute=0.01,
    )
    with behind_nginx([app]) as (proxy, (direct,)):
        assert httpx.post(f"{proxy}/api/sessions", json=SLIDE, headers=BEARER).status_code == 201
        again = httpx.post(f"{proxy}/api/sessions", json=SLIDE, headers=BEARER)
        assert again.status_code == 429  # the same user (127.0.0.1, as nginx saw it)
        # A user cannot name another address to get round it: nginx replaces the header.
        spoofed = {**BEARER, "X-Forwarded-For": "192.0.2.7"}
        assert httpx.post(f"{proxy}/api/sessions", json=SLIDE, headers=spoofed).status_code == 429
        # The address the trusted proxy names is the user's: another one has its own limit.
        other = httpx.post(f"{direct}/api/sessions", json=SLIDE, headers=spoofed)
        assert other.status_code == 201


def test_events_arrive_through_the_proxy_one_by_one(make_app: Callable[..., Any]) -> None:
    # Each model reply takes half a second: a buffered stream would arrive all at turn_end.
    app = make_app(model_cls=SlowModel, token=TOKEN)
    with behind_nginx([app]) as (proxy, (direct,)):
        firsts = {}
        for name, base in (("direct", direct), ("proxy", proxy)):
            with httpx.Client(base_url=base, headers=BEARER, timeout=60) as client:
                session = client.post("/api/sessions", json=SLIDE).json()["id"]
                _events(client, session, "What tissue is this?")  # builds the agent
                arrived = _events(client, session, "And here?")
            assert [kind for _, kind, _ in arrived] == LATER_TURN
            assert arrived[-2][2]["text"] == ANSWER
            # Two model calls of 0.5 s lie between the first event and the last.
            assert arrived[-1][0] - arrived[0][0] > 0.5, (name, arrived)
            firsts[name] = arrived[0][0]
        print(
            f"first event: direct {1000 * firsts['direct']:.1f} ms, "
            f"through nginx {1000 * firsts['proxy']:.1f} ms"
        )


def test_tiles_are_kept_by_the_proxy_and_given_only_to_admitted_requests(
    make_app: Callable[..., Any],
) -> None:
    app = make_app(token=TOKEN)
    with behind_nginx([app]) as (proxy, _), httpx.Client(base_url=proxy, headers=BEARER) as user:
        session = user.post("/api/sessions", json=SLIDE).json()["id"]
        url = f"/api/sessions/{session}/{TILE}"
        cold = user.get(url)
        assert cold.status_code == 200 and cold.headers["x-cache-status"] == "MISS"
        served = app.state.tiles.hits + app.state.tiles.misses
        warm = user.get(url)
        assert warm.status_code == 200 and warm.headers["x-cache-status"] == "HIT"
        assert warm.content == cold.content and warm.content[:2] == b"\xff\xd8"
        assert app.state.tiles.hits + app.state.tiles.misses == served  # nginx's copy
        # The kept tile is no help without the token: the app answers, with its own reason.
        for headers in (
            {},
            {"Authorization": "Bearer " + "x" * 20},
            {"Cookie": "medagent_token=no"},
        ):
            refused = httpx.get(f"{proxy}{url}", headers=headers)
            assert refused.status_code == 401, headers
            assert "token" in refused.json()["detail"]
            assert refused.content != cold.content
        unknown = user.get(f"/api/sessions/{'A' * 22}/{TILE}")
        assert unknown.status_code == 404 and unknown.json()["detail"] == "no such session"
        # Only tiles are kept: the pages and the stream are not.
        assert "x-cache-status" not in user.get(f"/api/sessions/{session}").headers


def _declared(base: str, path: str, length: int, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a POST declaring ``length`` bytes (``body`` sent of them)."""
    host = base.removeprefix("http://")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    address, port = host.split(":")
    with socket.create_connection((address, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    payload = reply.split(b"\r\n\r\n", 1)[1]
    if b"transfer-encoding: chunked" in reply.split(b"\r\n\r\n", 1)[0].lower():
        payload = payload.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return status, json.loads(payload)


def test_bodies_over_the_limits_are_refused_alike_by_proxy_and_app(
    make_app: Callable[..., Any], tmp_path: Any
) -> None:
    app = make_app(token=TOKEN, upload_dir=tmp_path / "uploads")
    limit = 1024 * 1024  # the shipped client_max_body_size, the app's default max_body_kb
    upload_limit = 4096 * 1024 * 1024
    with behind_nginx([app]) as (proxy, (direct,)):
        for base in (proxy, direct):
            at_limit = b'{"slide": "' + b"a" * (limit - 13) + b'"}'
            assert len(at_limit) == limit
            status, body = _declared(base, "/api/sessions", limit, at_limit)
            assert status == 422, (base, body)  # read and judged by the app
            # Refused on the declared length, before a byte of the body is read.
            status, body = _declared(base, "/api/sessions", limit + 1)
            assert status == 413 and "too large" in body["detail"], (base, body)
            status, body = _declared(base, "/api/uploads", upload_limit + 1)
            assert status == 413 and "too large" in body["detail"], (base, body)


def test_trusting_a_proxy_needs_a_token_and_an_address(slide_root: Any) -> None:
    with pytest.raises(ConfigError, match=r"trusted_proxies: behind a proxy .* set a token"):
        ServerConfig.build(slide_roots=(slide_root,), trusted_proxies=("127.0.0.1",))
    with pytest.raises(ConfigError, match="not an IP address or network"):
        ServerConfig.build(slide_roots=(slide_root,), token=TOKEN, trusted_proxies=("*",))
    config = ServerConfig.build(
        slide_roots=(slide_root,), token=TOKEN, trusted_proxies=(" 10.0.0.0/8 ",)
    )
    assert config.trusted_proxies == ("10.0.0.0/8",)


def test_the_shipped_config_must_keep_the_parts_tests_point_elsewhere(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="one listen line, an upstream block"):
        NginxProxy.derive("server { }", port=1, replicas=["127.0.0.1:2"], cache_dir=tmp_path)
    derived = NginxProxy.derive(
        SHIPPED.read_text(), port=1, replicas=["127.0.0.1:2", "127.0.0.1:3"], cache_dir=tmp_path
    )
    assert "listen 127.0.0.1:1;" in derived and "127.0.0.1:8001" not in derived
    assert "server 127.0.0.1:2;\n    server 127.0.0.1:3;" in derived
    assert f"proxy_cache_path {tmp_path} " in derived


@pytest.mark.slow
def test_two_replicas_on_postgres_keep_each_session_on_one(
    slide_root: Any, tmp_path: Any, postgres_url: str
) -> None:
    served: list[tuple[int, str]] = []  # (replica, path) of every request a replica answered

    def replica_app(number: int) -> Any:
        config = ServerConfig(
            slide_roots=(slide_root,),
            data_dir=tmp_path / "shared",
            checkpoint=postgres_url,
            token=TOKEN,
            trusted_proxies=("127.0.0.1",),
        )
        app = create_app(config, model_factory=lambda _: ScriptedModel(SCRIPT))

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                served.append((number, scope["path"]))
            await app(scope, receive, send)

        return counted

    with (
        behind_nginx([replica_app(1), replica_app(2)]) as (proxy, _),
        httpx.Client(base_url=proxy, headers=BEARER, timeout=60) as client,
    ):
        sessions = [client.post("/api/sessions", json=SLIDE).json()["id"] for _ in range(16)]
        for session in sessions:
            for text in ("What tissue is this?", "And here?"):
                assert _events(client, session, text)[-1][1] == "turn_end"
            assert client.get(f"/api/sessions/{session}/{TILE}").status_code == 200
    by_session = {
        session: {number for number, path in served if path.startswith(f"/api/sessions/{session}")}
        for session in sessions
    }
    assert all(len(replicas) == 1 for replicas in by_session.values()), by_session
    assert set.union(*by_session.values()) == {1, 2}  # 16 sessions: both replicas used
