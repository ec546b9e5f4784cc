"""The admin routes behind ``--admin-token``: every session listed with the numbers
``medagent sessions list`` gives, any session deleted (409 while it answers); only the admin
token as a bearer on a direct connection opens them; off (404) without one; and the shipped
nginx config never passes them on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from expiry_support import HOUR, SLIDE, Clock, build, session_rows
from fastapi.testclient import TestClient
from proxy_support import behind_nginx
from server_support import LOOPBACK

from cli_support import medagent
from medagent.errors import ConfigError
from medagent.server import ServerConfig, list_sessions

TOKEN = "user-token-0123456789abcdef"
ADMIN = "admin-token-9876543210fedcba"
USER = {"Authorization": f"Bearer {TOKEN}"}
BOSS = {"Authorization": f"Bearer {ADMIN}"}
LISTING = "/api/admin/sessions"


def _new(client: TestClient, who: str) -> str:
    reply = client.post(
        "/api/sessions", json={"slide": SLIDE}, headers={**USER, "X-Test-Client": who}
    )
    assert reply.status_code == 201, reply.text
    session: str = reply.json()["id"]
    return session


def _one_line(reply: Any) -> str:
    detail: str = reply.json()["detail"]
    assert "\n" not in detail and ADMIN not in detail and TOKEN not in detail
    return detail


def test_the_listing_gives_each_sessions_numbers_and_the_totals(
    slide_root: Path, tmp_path: Path, ask: Callable[..., Any]
) -> None:
    data, clock = tmp_path / "data", Clock()
    app = build(
        slide_root, data, None, clock, token=TOKEN, admin_token=ADMIN, session_idle_hours=24
    )
    with TestClient(app, base_url=LOOPBACK, headers=USER) as client:
        old = _new(client, "10.0.0.3")
        ask(client, old, "What tissue is this?")
        clock.advance(3 * HOUR)
        new = _new(client, "10.0.0.4")
        clock.advance(1 * HOUR)
        reply = client.get(LISTING, headers=BOSS)
        assert reply.status_code == 200, reply.text
        assert reply.headers["cache-control"] == "no-store"
        listing = reply.json()
    rows = {row["id"]: row for row in listing["sessions"]}
    assert list(rows) == [old, new]  # longest idle first
    assert listing["count"] == 2 and listing["idle_after_s"] == 24 * HOUR
    assert abs(rows[old]["idle_s"] - 4 * HOUR) < 1 and abs(rows[new]["idle_s"] - HOUR) < 1
    assert (rows[old]["client"], rows[old]["slide"]) == ("10.0.0.3", SLIDE)
    assert (rows[new]["client"], rows[new]["slide"]) == ("10.0.0.4", SLIDE)
    # The crops the turn saved, counted on disk.
    files = [p for p in (data / "sessions" / old).rglob("*") if p.is_file()]
    assert any(p.suffix == ".jpg" for p in files)
    assert rows[old]["files"] == len(files) > 1
    assert rows[old]["disk_bytes"] == sum(p.stat().st_size for p in files) > 0
    assert listing["disk_bytes"] == rows[old]["disk_bytes"] + rows[new]["disk_bytes"]
    # What `medagent sessions list --json` reads, but for the idle times (its clock is real).
    cli = asyncio.run(list_sessions(data, idle_hours=24)).model_dump(mode="json")
    for row in [*cli["sessions"], *listing["sessions"]]:
        row.pop("idle_s")
    assert cli == listing


def test_only_the_admin_token_as_a_bearer_on_a_direct_connection_opens_them(
    slide_root: Path, tmp_path: Path
) -> None:
    app = build(slide_root, tmp_path / "data", None, Clock(), token=TOKEN, admin_token=ADMIN)
    refused: list[tuple[dict[str, str], int]] = [
        ({}, 401),  # nothing
        (USER, 401),  # the user token
        ({"Cookie": f"medagent_token={TOKEN}"}, 401),  # the page's cookie
        ({"Cookie": f"medagent_token={ADMIN}"}, 401),  # not even with the admin token in it
        ({"Authorization": f"Bearer {ADMIN[:-1]}x"}, 401),  # a near miss
        ({"Authorization": f"Basic {ADMIN}"}, 401),
        ({**BOSS, "X-Forwarded-For": "10.0.0.9"}, 403),  # through a proxy
        ({**BOSS, "X-Real-IP": "10.0.0.9"}, 403),
        ({**BOSS, "Forwarded": "for=10.0.0.9"}, 403),
    ]
    with TestClient(app, base_url=LOOPBACK) as client:
        session = _new(client, "10.0.0.1")
        for headers, status in refused:
            for method, url in (("GET", LISTING), ("DELETE", f"{LISTING}/{session}")):
                reply = client.request(method, url, headers=headers)
                assert reply.status_code == status, (method, headers, reply.text)
                detail = _one_line(reply)
                assert ("proxy" if status == 403 else "admin") in detail
        assert session_rows(tmp_path / "data", None, session) == 1
        # The admin token opens nothing else, and never becomes a cookie.
        assert client.get("/api/slides", headers=BOSS).status_code == 401
        entered = client.get(f"/?token={ADMIN}", follow_redirects=False)
        assert entered.status_code == 401 and "set-cookie" not in entered.headers
        assert client.get(LISTING, headers=BOSS).json()["count"] == 1


def test_loopback_without_a_user_token_still_needs_the_admin_token(
    slide_root: Path, tmp_path: Path
) -> None:
    app = build(slide_root, tmp_path / "data", None, Clock(), admin_token=ADMIN)
    with TestClient(app, base_url=LOOPBACK) as client:
        assert client.get("/api/slides").status_code == 200  # the user routes need none here
        assert client.get(LISTING).status_code == 401
        assert client.get(LISTING, headers=BOSS).status_code == 200


@pytest.mark.parametrize("token", [None, TOKEN])
def test_without_an_admin_token_the_routes_answer_404(
    slide_root: Path, tmp_path: Path, token: str | None
) -> None:
    app = build(slide_root, tmp_path / "data", None, Clock(), token=token)
    with TestClient(app, base_url=LOOPBACK) as client:
        for headers in ({}, USER, BOSS):
            for method, url in (
                ("GET", LISTING),
                ("DELETE", f"{LISTING}/abc"),
                ("GET", "/api/admin"),
            ):
                reply = client.request(method, url, headers=headers)
                assert reply.status_code == 404, (method, url, headers, reply.text)
                assert "\n" not in reply.json()["detail"]


def test_an_admin_deletes_any_session_but_not_one_answering(
    slide_root: Path, tmp_path: Path, ask: Callable[..., Any]
) -> None:
    data, release = tmp_path / "data", threading.Event()
    app = build(slide_root, data, None, Clock(), release=release, token=TOKEN, admin_token=ADMIN)
    with TestClient(app, base_url=LOOPBACK, headers=USER) as client:
        busy, idle = _new(client, "10.0.0.5"), _new(client, "10.0.0.6")
        url = f"/api/sessions/{busy}/messages"
        with client.stream("POST", url, json={"text": "Look closely."}) as reply:
            lines = reply.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: turn_start"
            refused = client.delete(f"{LISTING}/{busy}", headers=BOSS)
            assert refused.status_code == 409 and "answering" in _one_line(refused)
            assert session_rows(data, None, busy) == 1
            # Another session goes while this one answers.
            assert client.delete(f"{LISTING}/{idle}", headers=BOSS).status_code == 204
            release.set()
            assert [line for line in lines if line.startswith("event:")][-1] == "event: turn_end"
        assert any((data / "sessions" / busy).rglob("*.jpg"))
        deleted = client.delete(f"{LISTING}/{busy}", headers=BOSS)
        assert deleted.status_code == 204
        for session in (busy, idle):
            assert session_rows(data, None, session) == 0
            assert not (data / "sessions" / session).exists()
            assert client.get(f"/api/sessions/{session}").status_code == 404
            again = client.delete(f"{LISTING}/{session}", headers=BOSS)
            assert (again.status_code, again.json()) == (404, {"detail": "no such session"})
        assert client.delete(f"{LISTING}/..%2F..%2Fetc", headers=BOSS).status_code == 404
        assert client.get(LISTING, headers=BOSS).json()["count"] == 0
        # A page elsewhere cannot make an admin's browser delete either.
        keep = _new(client, "10.0.0.7")
        cross = {**BOSS, "Sec-Fetch-Site": "cross-site"}
        assert client.delete(f"{LISTING}/{keep}", headers=cross).status_code == 403
        assert session_rows(data, None, keep) == 1


def test_an_admin_token_equal_to_the_user_token_is_refused_at_startup(
    slide_root: Path,
) -> None:
    with pytest.raises(ConfigError, match="admin_token: it is the token every user holds"):
        ServerConfig.build(slide_roots=(slide_root,), token=TOKEN, admin_token=TOKEN)
    with pytest.raises(ConfigError, match="admin_token"):
        ServerConfig.build(slide_roots=(slide_root,), admin_token="short")
    command = ["serve", "--slides", str(slide_root), "--backend", "scripted"]
    command += ["--script", "/dev/null", "--token", TOKEN]
    done = medagent(*command, env={"MEDAGENT_ADMIN_TOKEN": TOKEN}, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "admin_token" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_shipped_nginx_config_never_passes_admin_routes_on(
    slide_root: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    app = build(
        slide_root,
        data,
        None,
        Clock(),
        token=TOKEN,
        admin_token=ADMIN,
        trusted_proxies=("127.0.0.1",),
    )
    with behind_nginx([app]) as (proxy, (direct,)):
        session = httpx.post(f"{direct}/api/sessions", json={"slide": SLIDE}, headers=USER)
        session_id = session.json()["id"]
        assert httpx.get(f"{direct}{LISTING}", headers=BOSS).json()["count"] == 1
        for method, path in [
            ("GET", LISTING),
            ("GET", "/api/admin"),
            ("GET", "/api//admin/sessions"),  # nginx merges the slashes
            ("GET", "/api/%61dmin/sessions"),  # and decodes before it matches
            ("DELETE", f"{LISTING}/{session_id}"),
        ]:
            reply = httpx.request(method, f"{proxy}{path}", headers=BOSS)
            assert reply.status_code == 403, (method, path, reply.text)
            assert "not served through the proxy" in _one_line(reply)  # nginx's, not the app's
            assert "x-cache-status" not in reply.headers
        assert session_rows(data, None, session_id) == 1
        # Direct on the replica's port, the admin gets through (and the user routes still
        # work through the proxy).
        assert httpx.get(f"{proxy}/api/sessions/{session_id}", headers=USER).status_code == 200
        gone = httpx.delete(f"{direct}{LISTING}/{session_id}", headers=BOSS)
        assert gone.status_code == 204
        assert session_rows(data, None, session_id) == 0
