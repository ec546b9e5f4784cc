"""``medagent mcp --transport http``: the same token policy as ``medagent serve``.

Cases:

* refusal to start: a non-loopback host without a token (0.0.0.0, ::, a TEST-NET address, a
  documentation IPv6 address) from the command line and from Python; a token that is too short
  or has characters outside the URL-safe set — one line, exit 2, the token not echoed;
* a real server on loopback with a token (from ``MEDAGENT_MCP_TOKEN``): requests without a
  token, with a wrong one, with the token plus or minus a character, as Basic auth, in the query
  string or in a cookie, on ``/mcp`` and on any other path, are refused with 401; the SDK's
  client with ``Authorization: Bearer TOKEN`` initializes, lists and calls tools;
* the comparison is constant-time (``hmac.compare_digest``), and the token never appears in
  the server's output.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli_support import medagent
from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError
from medagent.testing import free_port, synthetic_tissue, write_pyramid_tiff

pytest.importorskip("mcp", reason="needs the [mcp] extra")
from medagent.mcp_server import SlideTools, check_binding, serve
from medagent.mcp_server._http import BearerGuard

TOKEN = "s3cret-Token_0123456789abcdef"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "0"},
    },
}
MCP_HEADERS = {"accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("token-slides")
    write_pyramid_tiff(root / "a.tif", synthetic_tissue(800, 400, seed=4), mpp=0.5, levels=2)
    return root


# -- refusing to start ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["192.0.2.1", "2001:db8::1"])
def test_cli_refuses_a_network_host_without_a_token(slides: Path, host: str) -> None:
    done = medagent(
        "mcp", "--slides", str(slides), "--transport", "http", "--host", host, timeout=120
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"binding {host} exposes the slides" in line and "--token" in line


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_cli_refuses_every_interface_without_a_token_before_binding(
    slides: Path, host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    from medagent.cli import main

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the server was started")

    monkeypatch.setattr(uvicorn, "run", never)
    monkeypatch.delenv("MEDAGENT_MCP_TOKEN", raising=False)
    argv = ["medagent", "mcp", "--slides", str(slides), "--transport", "http", "--host", host]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert "exposes the slides to the network" in capsys.readouterr().err


@pytest.mark.parametrize("token", ["short-token", "has spaces in it here", "semi;colon;0123456789"])
def test_cli_refuses_a_malformed_token_without_echoing_it(slides: Path, token: str) -> None:
    done = medagent(
        "mcp", "--slides", str(slides), "--transport", "http", "--token", token, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "16 or more URL-safe characters" in done.stderr and token not in done.stderr


def test_python_serve_refuses_too(tmp_path: Path) -> None:
    tools = SlideTools([tmp_path], ArtifactStore(tmp_path / "store"))
    with pytest.raises(ConfigError, match="exposes the slides"):
        serve(tools, transport="http", host="0.0.0.0")
    check_binding("127.0.0.1", None)  # loopback alone needs none
    check_binding("localhost", None)
    check_binding("0.0.0.0", TOKEN)


# -- the guard in front of the app ------------------------------------------------------------


async def test_the_guard_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    transport = httpx.ASGITransport(app=BearerGuard(app, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        right = await client.get("/mcp", headers={"authorization": f"Bearer {TOKEN}"})
        wrong = await client.get("/mcp", headers={"authorization": "Bearer " + "x" * len(TOKEN)})
    assert (right.status_code, wrong.status_code) == (200, 401)
    assert compared == [(TOKEN.encode(), TOKEN.encode()), (b"x" * len(TOKEN), TOKEN.encode())]


# -- a real server ----------------------------------------------------------------------------


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port}")


REFUSED: list[tuple[str, str, dict[str, str]]] = [
    ("POST", "/mcp", {}),
    ("POST", "/mcp", {"authorization": "Bearer wrong-token-0123456789"}),
    ("POST", "/mcp", {"authorization": f"Bearer {TOKEN}x"}),
    ("POST", "/mcp", {"authorization": f"Bearer {TOKEN[:-1]}"}),
    ("POST", "/mcp", {"authorization": f"Token {TOKEN}"}),
    ("POST", "/mcp", {"authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()}),
    ("POST", f"/mcp?token={TOKEN}", {}),
    ("POST", "/mcp", {"cookie": f"medagent_token={TOKEN}"}),
    ("GET", "/mcp", {}),
    ("DELETE", "/mcp", {}),
    ("GET", "/", {}),
    ("GET", "/.well-known/oauth-protected-resource", {}),
]


@pytest.mark.slow
async def test_a_token_server_refuses_every_request_without_it(slides: Path) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    env["MEDAGENT_MCP_TOKEN"] = TOKEN
    command = [sys.executable, "-m", "medagent", "mcp", "--slides", str(slides)]
    server = await asyncio.create_subprocess_exec(
        *command, "--transport", "http", "--port", str(port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(_wait_for, port)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            refused = [
                await client.request(
                    method,
                    path,
                    headers={**MCP_HEADERS, **headers},
                    json=INITIALIZE if method == "POST" else None,
                )
                for method, path, headers in REFUSED
            ]
            lower_case = await client.post(
                "/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "authorization": f"bearer {TOKEN}"}
            )
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
        async with (
            http,
            streamable_http_client(f"{base}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            names = {tool.name for tool in (await session.list_tools()).tools}
            result = await session.call_tool("overview", {"slide": "a.tif"})
    finally:
        server.terminate()
        out, err = await asyncio.wait_for(server.communicate(), timeout=30)
    for response, (method, path, _) in zip(refused, REFUSED, strict=True):
        assert response.status_code == 401, (method, path, response.status_code)
        assert TOKEN not in response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert lower_case.status_code == 200, lower_case.text
    assert "zoom" in names and not result.is_error
    output = out.decode() + err.decode()
    assert f"{base}/mcp" in output and TOKEN not in output
