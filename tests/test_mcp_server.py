"""``medagent mcp`` driven by the official SDK's own client over stdio."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from medagent.testing import free_port, synthetic_tissue, write_pyramid_tiff

mcp = pytest.importorskip("mcp", reason="needs the [mcp] extra")
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slide_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slide folder with a pyramid in a subfolder, a secret outside and a link to it."""
    base = tmp_path_factory.mktemp("mcp")
    root = base / "slides"
    (root / "cases").mkdir(parents=True)
    write_pyramid_tiff(
        root / "cases" / "a.tif", synthetic_tissue(2400, 1600, seed=4), mpp=0.5, levels=3
    )
    synthetic_tissue(200, 100, seed=1).save(base / "secret.png")
    (root / "escape.png").symlink_to(base / "secret.png")
    return root


async def session_calls(root: Path, *calls: tuple[str, dict[str, Any]]) -> tuple[Any, list[Any]]:
    """Start `medagent mcp` as a client would, list the tools, make ``calls``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "medagent", "mcp", "--slides", str(root)], env=env
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        listed = await session.list_tools()
        results = [await session.call_tool(name, arguments) for name, arguments in calls]
    return listed, results


def jpeg_of(result: Any) -> Image.Image:
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/jpeg"
    return Image.open(io.BytesIO(base64.b64decode(images[0].data)))


async def test_sdk_client_lists_tools_and_gets_a_zoomed_image(slide_root: Path) -> None:
    zoom = {"slide": "cases/a.tif", "x": 200, "y": 100, "width": 800, "height": 600}
    listed, (slides, result) = await session_calls(slide_root, ("list_slides", {}), ("zoom", zoom))

    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == {"list_slides", "overview", "zoom", "tissue", "segment", "measure"}
    schema = tools["zoom"].input_schema
    assert schema["required"][0] == "slide" and {"x", "width"} <= set(schema["properties"])
    assert "cases/a.tif" in slides.content[0].text  # the symlink target is not a slide
    assert not result.is_error
    assert "Zoomed to (x=200, y=100, w=800, h=600)" in result.content[0].text
    assert jpeg_of(result).size == (800, 600)
    assert result.structured_content["region"] == {"x": 200, "y": 100, "width": 800, "height": 600}


@pytest.mark.realdata
async def test_zoom_on_the_real_cmu_slide(cmu_slide: Path) -> None:
    zoom = {"slide": cmu_slide.name, "x": 500, "y": 800, "width": 1000, "height": 1000}
    _, (result,) = await session_calls(cmu_slide.parent, ("zoom", zoom))

    assert not result.is_error, result.content[0].text
    assert jpeg_of(result).size == (1000, 1000)
    assert result.structured_content["mpp"] == pytest.approx(0.499, abs=0.01)


async def test_refused_paths_and_bad_arguments_are_tool_errors(slide_root: Path) -> None:
    outside = str(slide_root.parent / "secret.png")
    _, results = await session_calls(
        slide_root,
        ("overview", {"slide": "../secret.png"}),
        ("overview", {"slide": outside}),
        ("overview", {"slide": "escape.png"}),
        ("overview", {"slide": "%2e%2e/secret.png"}),
        ("overview", {"slide": "cases/missing.tif"}),
        ("zoom", {"slide": "cases/a.tif", "x": 0}),
        ("overview", {}),
    )

    texts = [r.content[0].text for r in results]
    assert all(r.is_error for r in results), texts
    assert "'..'" in texts[0] and "'..'" in texts[3]
    assert "outside the slide folders" in texts[1] and "outside the slide folders" in texts[2]
    assert "no file" in texts[4]
    assert "invalid_arguments" in texts[5] and "width" in texts[5]
    assert "give the slide" in texts[6]
    assert all("\n" not in text for text in texts)


async def test_streamable_http_transport(slide_root: Path) -> None:
    from mcp.client.streamable_http import streamable_http_client

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    command = [sys.executable, "-m", "medagent", "mcp", "--slides", str(slide_root)]
    server = await asyncio.create_subprocess_exec(
        *command, "--transport", "http", "--port", str(port),
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.2)
        url = f"http://127.0.0.1:{port}/mcp"
        async with (
            streamable_http_client(url) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            names = {tool.name for tool in (await session.list_tools()).tools}
            result = await session.call_tool("overview", {"slide": "cases/a.tif"})
    finally:
        server.terminate()
        _, raw = await asyncio.wait_for(server.communicate(), timeout=30)
        stderr = raw.decode()
    assert "zoom" in names
    assert not result.is_error and max(jpeg_of(result).size) == 1000
    assert f"http://127.0.0.1:{port}/mcp" in stderr
