"""``medagent mcp --transport http``: request bodies are bounded while they stream in.

Cases: a 2 MiB JSON-RPC body with its length declared, the same body chunked (no
Content-Length), each refused with a one-line 413 before the MCP SDK parses it; a normal
``initialize`` afterwards still works (the server is unharmed).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from test_mcp_http_token import INITIALIZE, MCP_HEADERS, _wait_for

from medagent.testing import free_port, synthetic_tissue, write_pyramid_tiff

pytest.importorskip("mcp", reason="needs the [mcp] extra")

BIG = json.dumps({**INITIALIZE, "params": {**INITIALIZE["params"], "pad": "x" * (2 << 20)}})


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 64 * 1024):
        yield data[start : start + 64 * 1024]


@pytest.mark.slow
async def test_an_oversize_mcp_body_is_413_declared_or_chunked(tmp_path: Path) -> None:
    write_pyramid_tiff(tmp_path / "a.tif", synthetic_tissue(400, 300, seed=1), mpp=0.5, levels=1)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    command = [sys.executable, "-m", "medagent", "mcp", "--slides", str(tmp_path)]
    server = await asyncio.create_subprocess_exec(
        *command, "--transport", "http", "--port", str(port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    headers = {**MCP_HEADERS, "content-type": "application/json"}
    try:
        await asyncio.to_thread(_wait_for, port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            declared = await client.post("/mcp", content=BIG.encode(), headers=headers)
            chunked = await client.post("/mcp", content=_chunks(BIG.encode()), headers=headers)
            normal = await client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    finally:
        server.terminate()
        await asyncio.wait_for(server.communicate(), timeout=30)
    for reply in (declared, chunked):
        assert reply.status_code == 413, reply.text[:200]
        assert reply.json() == {"detail": "request body too large (limit 1,048,576 bytes)"}
    assert normal.status_code == 200, normal.text[:200]
