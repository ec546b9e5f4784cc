"""The server's token: compared in constant time, and never written to a log.

Cases: every presented token (header, cookie, page entry) goes through ``hmac.compare_digest``;
``medagent serve`` started for real, asked with the token in ``/?token=``, in another query
string, as a wrong token, in a Bearer header and in the cookie: its captured log (uvicorn's
access and error logs, medagent's own) never shows the token; the filter itself rewrites query
strings, cookies, Bearer headers, the bare token, dict arguments and tracebacks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from server_attack_support import free_socket

from medagent.server._redact import RedactSecrets

TOKEN = "Zq9-very-secret-token-4711"


def test_every_token_comparison_is_constant_time(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medagent.server import _security

    compared: list[bytes] = []
    real = _security.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(_security.hmac, "compare_digest", spy)
    client = make_client(token=TOKEN)
    assert client.get("/api/slides", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(f"/?token={TOKEN}", follow_redirects=False).status_code == 303
    assert client.get("/api/slides").status_code == 200  # the cookie
    assert compared == [TOKEN.encode()] * 3


def _wait_up(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "medagent serve exited while starting"
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("medagent serve did not answer within 120 s")


@pytest.mark.slow
def test_the_token_never_reaches_the_servers_log(slide_root: Path, tmp_path: Path) -> None:
    script = tmp_path / "script.jsonl"
    script.write_text(json.dumps({"text": "An answer."}) + "\n")
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "medagent", "serve", "--slides", str(slide_root)]
    command += ["--port", str(port), "--data", str(tmp_path / "data"), "--token", TOKEN]
    command += ["--backend", "scripted", "--script", str(script)]
    env = {k: v for k, v in os.environ.items() if k != "MEDAGENT_SERVER_TOKEN"}
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_up(base, process)
            with httpx.Client(base_url=base, timeout=30) as client:
                entry = client.get(f"/?token={TOKEN}&session=abc", follow_redirects=False)
                assert entry.status_code == 303
                assert client.get("/api/slides").status_code == 200  # with the cookie now
                client.cookies.clear()
                assert client.get(f"/api/slides?token={TOKEN}").status_code == 401
                assert client.get(f"/?token={TOKEN}x").status_code == 401
                bearer = {"Authorization": f"Bearer {TOKEN}"}
                assert client.get("/api/slides", headers=bearer).status_code == 200
                assert client.get(f"/static/x?a=1&token={TOKEN}").status_code == 404
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    text = log.read_text(errors="replace")
    assert "GET /?token=REDACTED&session=abc" in text, text[-2000:]
    assert "/api/slides?token=REDACTED" in text
    assert TOKEN not in text and TOKEN[:12] not in text


def _record(msg: str, args: object = None, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"bad header Authorization: Bearer {TOKEN}")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("msg", "args"),
    [
        ('%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5", "GET", f"/?token={TOKEN}&a=1", "1.1", 303)),
        ("cookie: %s", (f"medagent_token={TOKEN}; other=1",)),
        ("auth: %(auth)s", ({"auth": f"bearer {TOKEN}"},)),
        (f"presented {TOKEN}", None),
    ],
    ids=["access-line", "cookie", "dict-args", "bare-token"],
)
def test_the_log_filter_rewrites_every_form_of_the_token(msg: str, args: object) -> None:
    record = _record(msg, args)
    assert RedactSecrets([TOKEN]).filter(record)
    assert TOKEN not in record.getMessage() and "REDACTED" in record.getMessage()
    if isinstance(args, tuple):
        assert len(record.args or ()) == len(args)  # uvicorn unpacks the tuple


def test_the_log_filter_rewrites_tracebacks() -> None:
    record = _record("request failed", exc=True)
    RedactSecrets([TOKEN]).filter(record)
    formatted = logging.Formatter().format(record)
    assert "Bearer REDACTED" in formatted and TOKEN not in formatted
