"""``medagent model check`` against servers with the quirks of open models behind vLLM: each
quirk medagent works around is reported as such (exit 0), with what the user can change."""

from __future__ import annotations

from typing import Any

from cli_support import medagent
from medagent.testing import StubOpenAIServer

# One reply per request of the check: text, image, structured output, system turn, two images.
REPLIES: tuple[dict[str, Any], ...] = (
    {"text": "ready"},
    {"text": "red"},
    {"json": {"colour": "red", "shapes": 1}},
    {"text": "ready"},
    {"text": "yes"},
)


def check(server: StubOpenAIServer, *args: str) -> Any:
    return medagent(
        "model",
        "check",
        "--base-url",
        server.base_url,
        "--model",
        server.model,
        *args,
        env={"COLUMNS": "250"},
    )


def row(stdout: str, name: str) -> str:
    return next(line for line in stdout.splitlines() if line.strip("│ ").startswith(name))


def test_a_template_without_a_system_turn_is_a_quirk_not_a_failure() -> None:
    with StubOpenAIServer(REPLIES, system_role=False) as server:
        result = check(server)
    assert result.returncode == 0, result.stdout + result.stderr
    line = row(result.stdout, "system turn")
    assert "quirk" in line and "first user turn" in result.stdout


def test_a_server_limited_to_one_image_is_a_quirk_that_says_how_to_lift_it() -> None:
    with StubOpenAIServer(REPLIES, max_images=1) as server:
        result = check(server)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "quirk" in row(result.stdout, "two images")
    assert "--limit-mm-per-prompt" in result.stdout


def test_thinking_is_reported() -> None:
    thinking = [{**reply, "reasoning": "let me look"} for reply in REPLIES]
    with StubOpenAIServer(thinking) as server:
        result = check(server)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "quirk" in row(result.stdout, "thinking")
    assert "kept apart from answers" in result.stdout


def test_the_family_is_detected_from_the_served_name_and_its_cap_is_shown() -> None:
    with StubOpenAIServer(REPLIES, model="google/medgemma-4b-it", max_model_len=4096) as server:
        result = check(server)
    assert result.returncode == 0, result.stdout + result.stderr
    preset = row(result.stdout, "preset")
    assert "gemma3" in preset and "896 px" in result.stdout
    # 4096 tokens cannot hold a 20-step GIANT run with six 256-token images.
    assert "quirk" in row(result.stdout, "context") and "--max-model-len" in result.stdout


def test_no_family_detected_says_how_to_name_one() -> None:
    with StubOpenAIServer(REPLIES, model="my-model", max_model_len=131072) as server:
        result = check(server)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--preset NAME" in result.stdout
    assert "quirk" not in row(result.stdout, "context")


def test_a_named_preset_wins_and_an_unknown_one_is_one_line() -> None:
    with StubOpenAIServer(REPLIES, model="my-model") as server:
        named = check(server, "--preset", "qwen2.5-vl")
        unknown = check(server, "--preset", "gpt-9-vision")
    assert named.returncode == 0 and "qwen2.5-vl" in row(named.stdout, "preset")
    assert unknown.returncode == 2
    assert "unknown preset 'gpt-9-vision'" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
