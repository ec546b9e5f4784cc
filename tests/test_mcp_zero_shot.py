"""Over MCP, zero_shot is listed when the server has an image-text model, and only then."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cli_support import medagent
from medagent.artifacts import ArtifactStore
from medagent.mcp_server import SlideTools
from medagent.testing import synthetic_tissue, write_pyramid_tiff
from medagent.tools import ToolFailure, ZeroShotOutput
from scorer_support import RednessScorer

ARGUMENTS = {"slide": "a.tif", "prompts": ["tumour", "normal"], "k": 3}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mcp-zero-shot")
    write_pyramid_tiff(folder / "a.tif", synthetic_tissue(2400, 1600, seed=4), mpp=0.5)
    return folder


def test_listed_and_called_with_a_scorer(root: Path, tmp_path: Path) -> None:
    tools = SlideTools([root], ArtifactStore(tmp_path), scorer=RednessScorer())
    entry = next(e for e in tools.schemas() if e["name"] == "zero_shot")
    assert entry["inputSchema"]["required"][:2] == ["slide", "prompts"]

    result, images = tools.call("zero_shot", dict(ARGUMENTS))

    assert isinstance(result, ZeroShotOutput) and images == [result.artifact]
    assert result.scorer == "redness-stub" and 1 <= len(result.top) <= 3


def test_absent_without_a_scorer(root: Path, tmp_path: Path) -> None:
    tools = SlideTools([root], ArtifactStore(tmp_path))
    assert "zero_shot" not in {entry["name"] for entry in tools.schemas()}
    result, _ = tools.call("zero_shot", dict(ARGUMENTS))
    assert isinstance(result, ToolFailure) and "no tool named" in result.message


async def test_the_sdk_result_carries_the_heat_map(root: Path, tmp_path: Path) -> None:
    pytest.importorskip("mcp", reason="needs the [mcp] extra")
    tools = SlideTools([root], ArtifactStore(tmp_path), scorer=RednessScorer())
    result = await tools.acall("zero_shot", dict(ARGUMENTS))
    assert not result.is_error
    assert [c.type for c in result.content] == ["text", "image"]
    assert result.structured_content["grid"] and result.structured_content["top"]


# -- `medagent mcp --zero-shot`, as a client starts it ------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--zero-shot-model", "somewhere"], "needs --zero-shot EMBEDDER"),
        (["--zero-shot", "default"], "cannot embed text"),
    ],
)
def test_a_scorer_without_text_is_refused_in_one_line(
    root: Path, options: list[str], words: str
) -> None:
    pytest.importorskip("mcp", reason="needs the [mcp] extra")
    done = medagent("mcp", "--slides", str(root), *options, timeout=120)
    assert done.returncode != 0 and words in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.hf
async def test_the_command_serves_zero_shot_with_a_tiny_clip(root: Path, tmp_path: Path) -> None:
    pytest.importorskip("mcp", reason="needs the [mcp] extra")
    from mcp import ClientSession, StdioServerParameters, stdio_client

    from medagent.testing import build_tiny_clip

    folder = build_tiny_clip(tmp_path / "clip")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    env["HF_HUB_OFFLINE"] = "1"
    args = ["-m", "medagent", "mcp", "--slides", str(root), "--zero-shot", "hf"]
    server = StdioServerParameters(
        command=sys.executable, args=[*args, "--zero-shot-model", str(folder)], env=env
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        names = {tool.name for tool in (await session.list_tools()).tools}
        result = await session.call_tool("zero_shot", dict(ARGUMENTS))
    assert "zero_shot" in names
    assert not result.is_error
    assert [c.type for c in result.content] == ["text", "image"]
