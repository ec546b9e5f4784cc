"""``medagent chat`` and ``medagent mcp`` from the command line, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_support import medagent
from medagent.testing import synthetic_tissue, write_pyramid_tiff

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chat-cli") / "slide.tif"
    return write_pyramid_tiff(path, synthetic_tissue(2000, 1500, seed=6), mpp=0.5, levels=3)


def script(path: Path, *replies: dict[str, object]) -> str:
    path.write_text("\n".join(json.dumps(r) for r in replies) + "\n")
    return str(path)


ZOOM = {"name": "zoom", "arguments": {"x": 100, "y": 200, "width": 600, "height": 400}}


def test_chat_prints_tool_calls_crops_and_answers(slide: Path, tmp_path: Path) -> None:
    replies = script(
        tmp_path / "s.jsonl", {"tool_calls": [ZOOM]}, {"text": "Glands."}, {"text": "A gland."}
    )
    out = tmp_path / "chat"
    scripted = ["--backend", "scripted", "--script", replies, "--out", str(out)]
    result = medagent(
        "chat", str(slide), *scripted, "-q", "What is it?", "-q", "/region 50,60,300,200 and this?"
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout
    assert '→ zoom {"x": 100, "y": 200, "width": 600, "height": 400}' in lines
    assert "✓ Zoomed to" in lines
    crops = [line for line in lines.splitlines() if "crop #" in line]
    assert len(crops) == 2 and "(x=50, y=60, w=300, h=200)" in crops[1]
    saved = Path(crops[0].rsplit("saved to ", 1)[1].strip())
    assert saved.exists() and saved.parent == out / "artifacts"
    assert "Glands." in lines and "A gland." in lines
    assert (out / "chat.sqlite").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["agent"] == "chat" and manifest["inputs"] == {"slide_path": str(slide)}

    # The same --out and --thread carry on the conversation, interactively from stdin.
    more = script(tmp_path / "more.jsonl", {"text": "Still glands."})
    again = medagent(
        "chat", str(slide), "--backend", "scripted", "--script", more, "--out", str(out),
        stdin="and now?\n/history\n/quit\n",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "resuming 2 earlier turns" in again.stdout and "Still glands." in again.stdout
    assert "you> What is it?" in again.stdout  # /history replays the thread
    # The folder is still the same run.
    assert json.loads((out / "manifest.json").read_text())["run_id"] == manifest["run_id"]


def test_chat_model_failure_exits_1_with_one_line(slide: Path, tmp_path: Path) -> None:
    replies = script(tmp_path / "s.jsonl", {"error": "server_error"})
    result = medagent(
        "chat", str(slide), "--backend", "scripted", "--script", replies,
        "--out", str(tmp_path / "c"), "-q", "hello",
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: scripted server error (HTTP 500)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["chat", "missing.tif", "--backend", "scripted", "--script", "x"], "no such file"),
        (["chat", "{slide}", "--backend", "scripted"], "pass --script FILE"),
        (["chat", "{slide}", "--tool-mode", "magic", "--backend", "scripted", "--script", "x"],
         "invalid --tool-mode"),
        (["mcp", "--slides", "/no/such/folder"], "not a folder"),
        (["mcp", "--slides", ".", "--transport", "carrier-pigeon"], "choose stdio or http"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_exit_2(
    slide: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    filled = [a.format(slide=slide) for a in args]
    extra = ["--out", str(tmp_path / "o")] if args[0] == "chat" else []
    result = medagent(*filled, *extra)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_bad_region_line_is_reported_and_the_chat_goes_on(slide: Path, tmp_path: Path) -> None:
    replies = script(tmp_path / "s.jsonl", {"text": "Fine."})
    result = medagent(
        "chat", str(slide), "--backend", "scripted", "--script", replies,
        "--out", str(tmp_path / "o"), "-q", "/region 1,2 what?", "-q", "hello",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "X,Y,W,H" in result.stderr and "Fine." in result.stdout


def test_help_teaches_the_commands() -> None:
    chat_help = medagent("chat", "--help").stdout
    assert "/region X,Y,W,H" in chat_help and "--backend" in chat_help
    assert "--thread" in chat_help and "--message" in chat_help
    mcp_help = medagent("mcp", "--help").stdout
    assert "--slides" in mcp_help and "--transport" in mcp_help and "/mcp" in mcp_help
