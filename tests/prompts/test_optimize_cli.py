"""``medagent optimize`` end to end, and ``--prompts`` on ``eval run``; the tiny VLM on VQA-RAD."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from prompt_support import make_items, write_jsonl

from cli_support import medagent
from medagent.agents.giant import GiantNavigator
from medagent.evals import EvalItem
from medagent.prompts import load_compiled


def yes_no_items(folder: Path, count: int) -> Path:
    items = [
        EvalItem.model_validate({**i.model_dump(), "answer": "yes", "metric": "yes_no"})
        for i in make_items(folder, list(range(count)))
    ]
    return write_jsonl(folder / "items.jsonl", items)


def test_help_teaches_the_command() -> None:
    result = medagent("optimize", "--help")
    assert result.returncode == 0, result.stderr
    for text in ("--optimizer", "random-search", "instruction-search", "--budget", "--train"):
        assert text in result.stdout
    assert "medagent eval run --method vqa --prompts prompts/vqa-rad.json" in result.stdout
    assert "--prompts" in medagent("eval", "run", "--help").stdout
    assert "--prompts" in medagent("ask", "--help").stdout


def test_optimize_then_evaluate_with_the_compiled_prompts(tmp_path: Path) -> None:
    data = yes_no_items(tmp_path / "data", 8)
    script = tmp_path / "replies.jsonl"
    script.write_text('{"json": {"answer": "yes"}}\n' * 40)
    out = tmp_path / "prompts" / "compiled.json"
    result = medagent(
        "optimize",
        "--task", "jsonl",
        "--data", str(data),
        "--train", "4",
        "--val", "4",
        "--optimizer", "random-search",
        "--budget", "12",
        "--concurrency", "1",
        "--backend", "scripted",
        "--script", str(script),
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "stopped early: the budget of 12 model calls ran out" in result.stderr
    assert "zero-shot 1.000 → optimized 1.000" in result.stdout
    compiled = load_compiled(out)
    assert compiled.program == "vqa" and compiled.optimizer is not None
    assert compiled.optimizer["name"] == "random-search"
    assert compiled.scores["calls"] == 12 and compiled.scores["stopped"] == "budget"
    labels = [c["label"] for c in compiled.candidates]
    assert labels == ["zero-shot", "labeled", "bootstrap"]
    assert compiled.candidates[-1]["score"] is None

    run_dir = tmp_path / "run"
    evaluated = medagent(
        "eval", "run",
        "--dataset", "jsonl",
        "--data", str(data),
        "--method", "vqa",
        "--prompts", str(out),
        "--backend", "scripted",
        "--script", str(script),
        "--out", str(run_dir),
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["method_params"]["prompt_program"] == compiled.sha256


def test_ask_sends_a_compiled_giant_program(pyramid_tiff: Path, tmp_path: Path) -> None:
    program = GiantNavigator.prompt_program()
    program.predictor("navigate").instructions = "TUNED navigation in $steps turns."
    compiled = program.save(tmp_path / "giant.json")
    script = tmp_path / "replies.jsonl"
    script.write_text('{"json": {"reasoning": "r", "action": "answer", "answer": "1"}}\n')
    run_dir = tmp_path / "run"
    result = medagent(
        "ask", str(pyramid_tiff), "Is there tumour?", "--options", "no;yes",
        "--prompts", str(tmp_path / "giant.json"),
        "--backend", "scripted", "--script", str(script), "--out", str(run_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["prompt_program"] == {"name": "giant", "sha256": compiled.sha256}
    trajectory = json.loads((run_dir / "trajectory.json").read_text())
    system = trajectory["messages"][0]
    assert system["role"] == "system"
    assert system["content"][0]["text"].strip() == "TUNED navigation in 20 turns."


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    data = yes_no_items(tmp_path / "data", 3)
    common = ["optimize", "--task", "jsonl", "--data", str(data), "--out", str(tmp_path / "o")]
    wrong = medagent(*common, "--optimizer", "grid", "--backend", "scripted")
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [
        "error: --optimizer 'grid': choose bootstrap, random-search, instruction-search"
    ]
    small = medagent(*common, "--train", "2", "--val", "2", "--backend", "scripted")
    assert small.returncode == 2 and "needs 4" in small.stderr
    missing = medagent("eval", "run", "--dataset", "jsonl", "--data", str(data), "--method",
                       "vqa", "--prompts", str(tmp_path / "none.json"), "--out",
                       str(tmp_path / "r"), "--backend", "scripted")  # fmt: skip
    assert missing.returncode == 2 and "do not exist" in missing.stderr


@pytest.mark.slow
@pytest.mark.hf
@pytest.mark.realdata
def test_tiny_vlm_optimizes_on_eight_vqa_rad_items(shared_data: Path, tmp_path: Path) -> None:
    from medagent.testing import build_tiny_vlm

    folder = build_tiny_vlm(tmp_path / "tiny-vlm")
    out = tmp_path / "vqa-rad.json"
    started = time.perf_counter()
    result = medagent(
        "optimize",
        "--task", "vqa-rad",
        "--data", str(shared_data / "vqa-rad"),
        "--split", "test",
        "--train", "4",
        "--val", "4",
        "--optimizer", "bootstrap",
        "--demos", "2",
        "--labeled", "2",
        "--budget", "40",
        "--concurrency", "1",
        "--backend", "transformers",
        "--model", str(folder),
        "--device", "cpu",
        "--out", str(out),
        timeout=900,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    compiled = load_compiled(out)
    answer = compiled.predictors["answer"]
    assert 1 <= len(answer.demos) <= 2
    # Every demo's image went next to the JSON, referenced by its hash.
    for demo in answer.demos:
        for ref in demo.inputs["images"]:
            assert (tmp_path / "vqa-rad.images" / f"{ref['image']}.png").is_file()
    labels = [c["label"] for c in compiled.candidates]
    assert labels == ["zero-shot", "bootstrap"]
    assert all(c["score"] is not None for c in compiled.candidates)
    assert compiled.scores["calls"] <= 40
    print(f"tiny VLM: 8 VQA-RAD items optimized in {elapsed:.1f} s, {compiled.scores}")
