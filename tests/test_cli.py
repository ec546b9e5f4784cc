"""The command line: version, help, model check, and errors as one line with exit code 2."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from cli_support import medagent
from medagent import __version__
from medagent.testing import StubOpenAIServer


def write_script(path: Path, *replies: dict[str, object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in replies) + "\n")
    return path


GOOD = (
    {"text": "ready"},
    {"text": "red"},
    {"json": {"colour": "red", "shapes": 1}},
    {"text": "ready"},  # with a system turn
    {"text": "yes"},  # two images
)


def test_version() -> None:
    result = medagent("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"medagent {__version__}"


def test_help_teaches_where_to_start() -> None:
    result = medagent("--help")
    assert result.returncode == 0
    assert "medagent model check" in result.stdout
    assert "MEDAGENT_BASE_URL" in result.stdout
    check_help = medagent("model", "check", "--help")
    assert "--base-url" in check_help.stdout and "--backend" in check_help.stdout


def test_model_check_passes_against_scripted_backend(tmp_path: Path) -> None:
    script = write_script(tmp_path / "ok.jsonl", *GOOD)
    result = medagent("model", "check", "--backend", "scripted", "--script", str(script))
    assert result.returncode == 0, result.stderr
    for capability in ("text", "image", "structured output"):
        assert capability in result.stdout
    assert "fail" not in result.stdout


def test_model_check_fails_when_structured_output_is_invalid(tmp_path: Path) -> None:
    script = write_script(tmp_path / "bad.jsonl", *GOOD[:2], {"text": "it is red"}, *GOOD[3:])
    result = medagent("model", "check", "--backend", "scripted", "--script", str(script))
    assert result.returncode == 1
    assert "failed: structured output" in result.stderr


def test_model_check_against_an_http_server_sends_every_request() -> None:
    with StubOpenAIServer(GOOD) as server:
        result = medagent("model", "check", "--base-url", server.base_url, "--model", "stub-model")
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(server.requests) == 5
        image_parts = server.requests[1]["messages"][0]["content"]
        assert any(p["type"] == "image_url" for p in image_parts)
        assert "response_format" in server.requests[2]
        assert server.requests[3]["messages"][0]["role"] == "system"
        assert (
            sum(p["type"] == "image_url" for p in server.requests[4]["messages"][0]["content"]) == 2
        )
        assert "quirk" not in result.stdout


def test_settings_come_from_environment(tmp_path: Path) -> None:
    script = write_script(tmp_path / "ok.jsonl", *GOOD)
    result = medagent(
        "model", "check", env={"MEDAGENT_BACKEND": "scripted", "MEDAGENT_SCRIPT": str(script)}
    )
    assert result.returncode == 0, result.stderr


def test_unreachable_server_is_one_line_exit_1_per_check() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = medagent(
        "model",
        "check",
        "--base-url",
        f"http://127.0.0.1:{port}/v1",
        "--model",
        "m",
        "--max-retries",
        "0",
    )
    assert result.returncode == 1
    assert "cannot reach the model server" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model", "check", "--backend", "openai"], "the openai backend needs --model"),
        (["model", "check", "--backend", "scripted"], "pass --script FILE"),
        (
            ["model", "check", "--model", "m", "--base-url", "localhost:8000"],
            "must start with http:// or https://",
        ),
        (
            ["model", "check", "--backend", "scripted", "--script", "missing.jsonl"],
            "script file missing.jsonl does not exist",
        ),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(args: list[str], message: str) -> None:
    result = medagent(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback() -> None:
    result = medagent("--debug", "model", "check", "--backend", "scripted")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr


@pytest.mark.slow
@pytest.mark.hf
def test_demo_path_builds_tiny_vlm_and_checks_it_in_process(tmp_path: Path) -> None:
    """What `make demo` runs: build the tiny model offline, then check it with transformers."""
    folder = tmp_path / "tiny-vlm"
    offline = {"HF_HUB_OFFLINE": "1"}
    built = medagent("model", "build-tiny-vlm", str(folder), env=offline)
    assert built.returncode == 0, built.stderr
    result = medagent(
        "model", "check", "--backend", "transformers", "--model", str(folder), env=offline
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "structured output" in result.stdout and "fail" not in result.stdout


def test_slide_info_and_render(pyramid_tiff: Path, tmp_path: Path) -> None:
    info = medagent("slide", "info", str(pyramid_tiff), "--json")
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["dimensions"] == {"width": 4000, "height": 3000}
    assert facts["mpp_x"] == pytest.approx(0.25)
    out = tmp_path / "view.png"
    rendered = medagent(
        "slide",
        "render",
        str(pyramid_tiff),
        "--region",
        "0,0,2000,1000",
        "--size",
        "400",
        "--out",
        str(out),
    )
    assert rendered.returncode == 0, rendered.stderr
    from PIL import Image

    assert Image.open(out).size == (400, 200)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["slide", "info", "missing.svs"], "no such file"),
        (["slide", "render", "{slide}", "--region", "1,2,3", "--out", "x.png"], "X,Y,W,H"),
        (
            ["slide", "render", "{slide}", "--region", "9000,0,5,5", "--out", "x.png"],
            "entirely outside",
        ),
        (["slide", "render", "{slide}", "--out", "x.gif"], "use a .jpg or .png"),
    ],
)
def test_slide_errors_are_one_line(pyramid_tiff: Path, args: list[str], message: str) -> None:
    result = medagent(*[a.replace("{slide}", str(pyramid_tiff)) for a in args])
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.realdata
def test_slide_info_lists_label_by_name_only(cmu_slide: Path) -> None:
    result = medagent("slide", "info", str(cmu_slide))
    assert result.returncode == 0
    assert "label, macro, thumbnail" in result.stdout


def test_ask_runs_the_navigator_and_reports(pyramid_tiff: Path, tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "nav.jsonl",
        {
            "json": {
                "reasoning": "blob",
                "action": "zoom",
                "x": 1000,
                "y": 800,
                "width": 2000,
                "height": 1500,
            }
        },
        {"json": {"reasoning": "tumour cells", "action": "answer", "answer": "2"}},
    )
    out = tmp_path / "run"
    result = medagent(
        "ask",
        str(pyramid_tiff),
        "Is there tumour?",
        "--options",
        "no; yes",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "step  1  zoom" in result.stdout and "answered" in result.stdout
    assert (out / "trajectory.html").exists() and (out / "trajectory.json").exists()
    as_json = medagent(
        "ask",
        str(pyramid_tiff),
        "Is there tumour?",
        "--options",
        "no;yes",
        "--method",
        "thumbnail",
        "--backend",
        "scripted",
        "--script",
        str(write_script(tmp_path / "t.jsonl", {"json": {"reasoning": "r", "answer": "1"}})),
        "--out",
        str(tmp_path / "thumb"),
        "--json",
    )
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["prediction"] == "no"


def test_ask_with_an_unreachable_server_records_a_model_error(
    pyramid_tiff: Path, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = medagent(
        "ask",
        str(pyramid_tiff),
        "Is there tumour?",
        "--base-url",
        f"http://127.0.0.1:{port}/v1",
        "--model",
        "m",
        "--max-retries",
        "0",
        "--out",
        str(tmp_path / "run"),
    )
    assert result.returncode == 1
    assert "model_error" in result.stdout and "cannot reach the model server" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert (tmp_path / "run" / "trajectory.json").exists()


def test_ask_refuses_an_unknown_method(pyramid_tiff: Path) -> None:
    result = medagent("ask", str(pyramid_tiff), "q", "--method", "guess", "--model", "m")
    assert result.returncode == 2 and "choose giant, thumbnail" in result.stderr


@pytest.mark.slow
@pytest.mark.hf
def test_demo_runs_offline_on_a_fresh_machine(tmp_path: Path) -> None:
    """The README's main job: no backend configured, empty cache, no network."""
    out = tmp_path / "run"
    result = medagent(
        "demo",
        "--out",
        str(out),
        env={"MEDAGENT_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "its answers are random" in result.stderr
    assert "zoom" in result.stdout and "answered" in result.stdout
    trajectory = json.loads((out / "trajectory.json").read_text())
    assert trajectory["slide"]["width"] >= 50_000 and trajectory["slide"]["mpp_x"] == 0.5
    assert (out / "trajectory.html").exists()


_ASK = ["ask", "{slide}", "q?", "--backend", "scripted", "--script", "{script}"]
_EVAL_RUN = ["eval", "run", "--dataset", "jsonl", "--data", "{items}", "--out", "{out}"]
_EVAL_RUN += ["--method", "vqa", "--backend", "scripted", "--script", "{script}"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["slide", "render", "{slide}", "--region", "10,10,-5,5"], "--region: width and height"),
        (["slide", "render", "{slide}", "--region", "nan,0,5,5"], "--region: expected X,Y,W,H"),
        (["slide", "render", "{slide}", "--region", "inf,0,1,1"], "--region: expected X,Y,W,H"),
        (["slide", "render", "{slide}", "--region", "0,0,1e30,5"], "--region: X,Y,W,H must"),
        (["slide", "render", "{slide}", "--size", "-3"], "--size must be at least 16"),
        ([*_ASK, "--steps", "0"], "invalid --steps: Input should be greater than or equal"),
        ([*_ASK, "--item-timeout", "nan"], "invalid --item-timeout: Input should be greater"),
        ([*_ASK, "--max-images", "-1"], "invalid --max-images: "),
        ([*_ASK, "--long-side", "1e9"], "Invalid value for '--long-side'"),
        ([*_ASK, "--timeout", "-1"], "invalid --timeout: Input should be greater than 0"),
        (["demo", "--steps", "0"], "invalid --steps: Input should be greater than or equal"),
        (["model", "check", "--max-tokens", "0", "--backend", "scripted"], "'--max-tokens'"),
        ([*_EVAL_RUN, "--item-timeout", "-1"], "'--item-timeout'"),
        ([*_EVAL_RUN, "--steps", "0"], "'--steps'"),
        ([*_EVAL_RUN, "--price-in", "-1"], "'--price-in'"),
        (["eval", "report", "{out}", "--replicates", "-1"], "'--replicates'"),
        (["mcp", "--slides", "{out}", "--transport", "http", "--port", "-1"], "'--port'"),
        (["mcp", "--slides", "{out}", "--max-image-mpx", "0"], "'--max-image-mpx'"),
    ],
    ids=[
        "region-negative-size",
        "region-nan",
        "region-inf",
        "region-huge",
        "render-size",
        "ask-steps",
        "ask-item-timeout-nan",
        "ask-max-images",
        "ask-long-side-float",
        "ask-timeout",
        "demo-steps",
        "model-check-max-tokens",
        "eval-run-item-timeout",
        "eval-run-steps",
        "eval-run-price-in",
        "eval-report-replicates",
        "mcp-port",
        "mcp-max-image-mpx",
    ],
)
def test_numbers_from_the_command_line_are_checked_in_one_line(
    pyramid_tiff: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    """No value typed on the command line ends in a pydantic dump or a traceback."""
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": "a", "task": "t", "question": "q", "answer": "a"}) + "\n")
    where = {"{slide}": str(pyramid_tiff), "{script}": str(write_script(tmp_path / "s.jsonl"))}
    where |= {"{items}": str(items), "{out}": str(tmp_path / "run")}
    if args[:2] == ["slide", "render"]:
        args = [*args, "--out", str(tmp_path / "view.png")]
    result = medagent(
        *[where.get(a, a) for a in args], env={"MEDAGENT_CACHE_DIR": str(tmp_path / "cache")}
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    for noise in ("Traceback", "pydantic", "validation error for", "For further information"):
        assert noise not in result.stderr
    if message.startswith(("--", "invalid")):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_bad_setting_from_the_environment_names_the_variable() -> None:
    result = medagent("model", "check", "--backend", "scripted", env={"MEDAGENT_TIMEOUT_S": "-1"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: invalid setting timeout_s (from MEDAGENT_TIMEOUT_S): Input should be greater than 0"
    )
