"""Decompression bombs through the MCP server: refused from the header, in one line.

Every image an MCP client can make the server decode — the slide it names, a mask or a query
image it names by id — is checked against the server's pixel bound before a pixel is decoded.

Cases:

* a real 9400 x 9400 px PNG of ~100 KB (88 million pixels: under PIL's own hard limit, so the
  old server decoded it) in the slides folder, through every tool;
* a PNG whose header declares 100,000 x 100,000 px (PIL's ``DecompressionBombError`` range);
* the bound is a setting: ``SlideTools(max_pixels=…)`` and ``medagent mcp --max-image-mpx``
  refuse an image over it and open one under it;
* the store's own bound: a mask id whose image is over the store's ``max_pixels``;
* over the SDK's stdio client, the same replies: ``isError``, one line, no exception name.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from medagent.artifacts import ArtifactStore
from medagent.imaging import Region
from medagent.testing import synthetic_tissue, write_pyramid_tiff

pytest.importorskip("mcp", reason="needs the [mcp] extra")
from medagent.mcp_server import MAX_PIXELS, SlideTools

TOOL_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("overview", {}),
    ("zoom", {"x": 0, "y": 0, "width": 100, "height": 100}),
    ("tissue", {}),
    ("segment", {"method": "tissue"}),
    ("measure", {"kind": "distance", "a": {"x": 0, "y": 0}, "b": {"x": 5, "y": 5}}),
]


def declared_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` px (the data is one row)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bomb-slides")
    Image.new("L", (9400, 9400)).save(root / "bomb.png", optimize=True)
    declared_png(root / "declared.png", 100_000, 100_000)
    synthetic_tissue(2000, 1000, seed=2).save(root / "two-megapixels.png")
    synthetic_tissue(500, 500, seed=3).save(root / "small.png")
    write_pyramid_tiff(root / "a.tif", synthetic_tissue(800, 400, seed=4), mpp=0.5, levels=2)
    return root


def test_the_bomb_is_small_on_disk_and_large_decoded(slides: Path) -> None:
    assert (slides / "bomb.png").stat().st_size < 300_000
    with Image.open(slides / "bomb.png") as image:
        assert image.size == (9400, 9400) and 2 * Image.MAX_IMAGE_PIXELS > 9400 * 9400


def assert_one_line_refusal(result: Any, roots: list[Path]) -> str:
    assert result.is_error
    (content,) = result.content
    text: str = content.text
    assert "\n" not in text and len(text) <= 500, text
    assert "Error" not in text.replace("error", ""), text  # no exception class names
    for root in roots:
        assert str(root) not in text and str(root.resolve()) not in text, text
    return text


@pytest.mark.parametrize(("tool", "arguments"), TOOL_CALLS)
async def test_a_bomb_is_refused_by_every_tool_before_decoding(
    slides: Path, tmp_path: Path, tool: str, arguments: dict[str, Any]
) -> None:
    tools = SlideTools([slides], ArtifactStore(tmp_path / "store"))
    texts = {}
    for name in ("bomb.png", "declared.png"):
        result = await tools.acall(tool, {"slide": name, **arguments})
        texts[name] = assert_one_line_refusal(result, [slides, tmp_path])
        assert texts[name].startswith(f"Tool {tool} failed (bad_input): {name}:"), texts[name]
    # Under PIL's own limit, so refused by the header's numbers against the server's bound.
    assert f"9400 x 9400 px is more than the {MAX_PIXELS:,} pixels" in texts["bomb.png"]
    assert "too many pixels" in texts["declared.png"]  # PIL's range: refused by PIL, worded
    assert tools._open == {}  # nothing decoded stays in the cache either


async def test_the_bound_is_a_server_setting(slides: Path, tmp_path: Path) -> None:
    tools = SlideTools([slides], ArtifactStore(tmp_path / "store"), max_pixels=1_000_000)
    refused = await tools.acall("overview", {"slide": "two-megapixels.png"})
    assert "2000 x 1000 px is more than the 1,000,000 pixels" in assert_one_line_refusal(
        refused, [slides]
    )
    opened = await tools.acall("overview", {"slide": "small.png"})
    assert not opened.is_error, opened.content[0].text
    pyramid = await tools.acall("overview", {"slide": "a.tif"})  # read by region: not bounded
    assert not pyramid.is_error, pyramid.content[0].text


async def test_a_mask_over_the_stores_bound_is_refused(slides: Path, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store", max_pixels=10_000)
    region = Region(x=0, y=0, width=800, height=400)
    mask = store.put(Image.new("L", (200, 100), 255), media_type="image/png", region=region)
    tools = SlideTools([slides], store)
    result = await tools.acall("measure", {"slide": "a.tif", "kind": "mask", "mask": mask.id})
    text = assert_one_line_refusal(result, [slides, tmp_path])
    assert "200 x 100 px is more than the 10,000 pixels" in text


def test_the_open_slide_cache_is_bounded_by_bytes(slides: Path, tmp_path: Path) -> None:
    tools = SlideTools([slides], ArtifactStore(tmp_path / "store"), cache_mb=1)
    tools.context("small.png")  # 0.75 MB decoded: fits
    assert len(tools._open) == 1
    tools.context("two-megapixels.png")  # 6 MB: the older one goes, the newest always stays
    assert list(tools._open) == [(slides / "two-megapixels.png").resolve()]


@pytest.mark.slow
async def test_over_stdio_a_bomb_is_a_one_line_tool_error(slides: Path) -> None:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    args = ["-m", "medagent", "mcp", "--slides", str(slides), "--max-image-mpx", "1"]
    server = StdioServerParameters(command=sys.executable, args=args, env=env)
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        results = [
            await session.call_tool("overview", {"slide": name})
            for name in ("bomb.png", "declared.png", "two-megapixels.png", "small.png")
        ]
    *refused, small = results
    texts = [assert_one_line_refusal(result, [slides]) for result in refused]
    assert "more than the 1,000,000 pixels" in texts[0] and "too many pixels" in texts[1]
    assert "2000 x 1000 px is more than the 1,000,000 pixels" in texts[2]
    assert "DecompressionBomb" not in " ".join(texts)
    assert not small.is_error, small.content[0].text
