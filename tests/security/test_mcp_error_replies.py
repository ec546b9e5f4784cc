"""Every MCP tool failure is a one-line error result that names no server folder.

``SlideTools.acall`` is the one place tool calls meet an MCP client: whatever goes wrong below
it becomes a short ``isError`` result, and a traceback goes only to the server's log.

Cases:

* slide paths: a symlink loop (to itself, and two links to each other), a component over 255
  bytes (ASCII and two-byte UTF-8), a missing folder with a long name;
* files: a truncated PNG, a JPEG of random bytes, text named ``.png``, an empty file, a pyramid
  TIFF cut in half (open and region reads);
* values: NaN and infinity in a zoom, an overview box, a measure point; 1e300 in a region;
  10**30 as a zoom corner; arguments that are not an object; a 6 KB tool name;
* a bug: a tool that raises ``RuntimeError`` with a server path and a second line in its text,
  and an image that vanishes between the tool and the reply;
* ``list_slides`` with the loops present still lists everything else, and says what it
  skipped in the server log;
* the same replies over the SDK's stdio client.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from medagent.artifacts import ArtifactStore
from medagent.testing import synthetic_tissue, write_pyramid_tiff
from medagent.tools import Tool, ToolContext, ZoomInput, ZoomOutput

pytest.importorskip("mcp", reason="needs the [mcp] extra")
from medagent.mcp_server import SlideTools

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("error-slides") / "slides"
    root.mkdir()
    write_pyramid_tiff(root / "a.tif", synthetic_tissue(2000, 1500, seed=4), mpp=0.5, levels=3)
    data = (root / "a.tif").read_bytes()
    (root / "cut.tif").write_bytes(data[: len(data) // 2])
    synthetic_tissue(300, 200, seed=1).save(root / "ok.png")
    png = (root / "ok.png").read_bytes()
    (root / "cut.png").write_bytes(png[: len(png) * 6 // 10])
    (root / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    (root / "text.png").write_text("not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "loop.png").symlink_to("loop.png")
    (root / "ping.png").symlink_to("pong.png")
    (root / "pong.png").symlink_to("ping.png")
    return root


@pytest.fixture
def tools(slides: Path, tmp_path: Path) -> SlideTools:
    return SlideTools([slides], ArtifactStore(tmp_path / "store"))


def one_line_error(result: Any, *folders: Path) -> str:
    """The reply's text, checked: an error, one line, short, no server folder, no traceback."""
    assert result.is_error
    (content,) = result.content
    text: str = content.text
    assert "\n" not in text and len(text) <= 500, text
    assert "Traceback" not in text and 'File "' not in text, text
    for folder in folders:
        assert str(folder) not in text and str(folder.resolve()) not in text, text
    return text


BAD_SLIDES = [
    ("loop.png", "symlink loop"),
    ("ping.png", "symlink loop"),
    ("x" * 300 + ".png", "too long"),
    ("é" * 200 + ".png", "too long"),
    ("cases/" + "b" * 256 + ".png", "no file"),
    # Files: named relative to the slide folder (what is wrong is the reader's wording).
    ("cut.png", ": cut.png: "),
    ("junk.jpg", ": junk.jpg: "),
    ("text.png", ": text.png: "),
    ("empty.png", ": empty.png: "),
    ("cut.tif", ": cut.tif: "),
]


@pytest.mark.parametrize(("slide", "expected"), BAD_SLIDES)
async def test_bad_slide_paths_and_files_are_one_line_errors(
    tools: SlideTools, slides: Path, tmp_path: Path, slide: str, expected: str
) -> None:
    for tool, arguments in (
        ("overview", {}),
        ("zoom", {"x": 0, "y": 0, "width": 2000, "height": 1500, "long_side": 2000}),
    ):
        text = one_line_error(await tools.acall(tool, {"slide": slide, **arguments}), slides)
        assert expected in text, text
        assert str(tmp_path) not in text


BAD_VALUES: list[tuple[str, dict[str, Any]]] = [
    ("zoom", {"x": NAN, "y": 0, "width": 10, "height": 10}),
    ("zoom", {"x": 0, "y": 0, "width": INF, "height": 10}),
    ("zoom", {"x": 10**30, "y": 0, "width": 10, "height": 10}),
    ("overview", {"boxes": [{"x": NAN, "y": 0, "width": 1, "height": 1}]}),
    ("tissue", {"region": {"x": 0, "y": 0, "width": 1e300, "height": 1}}),
    ("segment", {"method": "tissue", "region": {"x": -INF, "y": 0, "width": 1, "height": 1}}),
    ("measure", {"kind": "distance", "a": {"x": NAN, "y": 0}, "b": {"x": 1, "y": 1}}),
    ("measure", {"kind": "polygon", "points": [[0, 0], [1, INF], [2, 2]]}),
    ("measure", {"kind": "mask", "mask": "a" * 10_000}),
]


@pytest.mark.parametrize(("tool", "arguments"), BAD_VALUES)
async def test_bad_values_are_one_line_errors(
    tools: SlideTools, slides: Path, tool: str, arguments: dict[str, Any]
) -> None:
    text = one_line_error(await tools.acall(tool, {"slide": "a.tif", **arguments}), slides)
    assert "invalid_arguments" in text or "bad_region" in text or "bad_input" in text, text


async def test_malformed_calls_are_one_line_errors(tools: SlideTools, slides: Path) -> None:
    text = one_line_error(await tools.acall("zoom", [1, 2]), slides)  # type: ignore[arg-type]
    assert "JSON object" in text
    text = one_line_error(await tools.acall("nosuch" * 1000, {}), slides)
    assert "no tool named" in text and "list_slides, overview" in text


def _raising(ctx: ToolContext, args: ZoomInput) -> ZoomOutput:
    path = ctx.require_slide().path
    raise RuntimeError(f"cannot read {path}\nsecond line of a library's message")


async def test_an_unexpected_exception_is_a_short_error_and_a_logged_traceback(
    tools: SlideTools, slides: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tools.tools["zoom"] = Tool("zoom", "broken", ZoomInput, ZoomOutput, _raising)
    arguments = {"slide": "a.tif", "x": 0, "y": 0, "width": 10, "height": 10}
    with caplog.at_level(logging.ERROR, logger="medagent.mcp"):
        result = await tools.acall("zoom", arguments)
    text = one_line_error(result, slides)
    assert text.startswith("Tool zoom failed (failed): the tool failed on the server")
    assert "cannot read" not in text and "RuntimeError" not in text
    (record,) = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


async def test_an_image_gone_before_the_reply_is_a_one_line_error(
    tools: SlideTools, slides: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def gone(ref: Any) -> bytes:
        raise FileNotFoundError(2, "No such file", str(tmp_path / "store" / f"{ref.id}.jpg"))

    monkeypatch.setattr(tools.artifacts, "read_bytes", gone)
    result = await tools.acall("overview", {"slide": "a.tif"})
    one_line_error(result, slides, tmp_path)


async def test_list_slides_skips_loops_and_lists_the_rest(
    tools: SlideTools, slides: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        result = await tools.acall("list_slides", {})
    assert not result.is_error
    text = result.content[0].text
    listed = text.splitlines()[1:]
    assert listed == ["a.tif", "cut.png", "cut.tif", "empty.png", "junk.jpg", "ok.png", "text.png"]
    assert str(slides) not in text and "roots" not in result.structured_content
    skipped = " ".join(record.getMessage() for record in caplog.records)
    assert "loop.png" in skipped and "ping.png" in skipped


async def test_an_empty_listing_names_no_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    tools = SlideTools([empty], ArtifactStore(tmp_path / "store"))
    text = (await tools.acall("list_slides", {})).content[0].text
    assert text == "No slides or images under the slide folders."


@pytest.mark.slow
async def test_over_stdio_failures_are_one_line_errors(slides: Path) -> None:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    args = ["-m", "medagent", "mcp", "--slides", str(slides)]
    server = StdioServerParameters(command=sys.executable, args=args, env=env)
    calls: list[tuple[str, dict[str, Any]]] = [
        *(("overview", {"slide": slide}) for slide, _ in BAD_SLIDES),
        ("zoom", {"slide": "a.tif", "x": 10**30, "y": 0, "width": 10, "height": 10}),
        ("tissue", {"slide": "a.tif", "region": {"x": 0, "y": 0, "width": 1e300, "height": 1}}),
    ]
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        listing = await session.call_tool("list_slides", {})
        results = [await session.call_tool(name, arguments) for name, arguments in calls]
    assert not listing.is_error and "a.tif" in listing.content[0].text
    for result, (_, expected) in zip(results, [*BAD_SLIDES, ("", ""), ("", "")], strict=True):
        assert expected in one_line_error(result, slides)
