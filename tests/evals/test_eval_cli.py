"""``medagent eval run`` / ``eval report`` end to end, and a run killed with SIGKILL."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest

from cli_support import medagent
from eval_support import start_and_wait, stub_run_args, vqa_items
from medagent.evals import load_results
from medagent.testing import StubOpenAIServer, synthetic_tissue, write_pyramid_tiff


def test_a_killed_run_loses_nothing_and_resumes(tmp_path: Path) -> None:
    data = vqa_items(tmp_path / "data", 12)
    run_dir = tmp_path / "run"
    args = stub_run_args(data, run_dir, concurrency=2)
    with StubOpenAIServer(default_text='{"answer": "yes"}', latency_s=0.4) as server:
        process = start_and_wait(args, server, run_dir, lines=3)
        results = run_dir / "results.jsonl"
        process.send_signal(signal.SIGKILL)
        process.wait()
        before = load_results(results)
        assert 3 <= len(before) < 12, len(before)
        asked_before = len(server.requests)
        finished = medagent(*args, "--base-url", server.base_url)
        assert finished.returncode == 0, finished.stdout + finished.stderr
        assert f"{len(before)} already done" in finished.stdout
        rerun_questions = [
            r["messages"][0]["content"][-1]["text"] for r in server.requests[asked_before:]
        ]
    lines = results.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert sorted(ids) == sorted(f"q{i}" for i in range(12))  # each exactly once
    for item_id in before:  # finished items were never asked again
        number = item_id[1:]
        assert not any(f"Question number {number}?" in q for q in rerun_questions)
    assert all(r.correct for r in load_results(results).values())


def test_rerun_failed_and_report(tmp_path: Path) -> None:
    data = vqa_items(tmp_path / "data", 4)
    script = tmp_path / "replies.jsonl"
    bad = json.dumps({"text": "not sure"})
    good = json.dumps({"json": {"answer": "yes"}})
    script.write_text("\n".join([good, bad, bad, bad, bad, good, good]) + "\n")
    run_dir = tmp_path / "run"
    base = [
        "eval",
        "run",
        "--dataset",
        "jsonl",
        "--data",
        str(data),
        "--method",
        "vqa",
        "--backend",
        "scripted",
        "--concurrency",
        "1",
        "--out",
        str(run_dir),
    ]
    first = medagent(*base, "--script", str(script))
    assert first.returncode == 1 and "1 failed" in first.stdout
    script.write_text(good + "\n")
    second = medagent(*base, "--script", str(script), "--rerun-failed")
    assert second.returncode == 0 and "1 items run (1 ok" in second.stdout
    report = medagent("eval", "report", str(run_dir), "--out", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    assert "| demo | accuracy | 100.0 ± 0.0 |" in report.stdout
    page = (tmp_path / "report.html").read_text()
    assert "<svg" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_changed_configuration_is_refused(tmp_path: Path) -> None:
    data = vqa_items(tmp_path / "data", 1)
    script = tmp_path / "replies.jsonl"
    script.write_text(json.dumps({"json": {"answer": "yes"}}) + "\n")
    base = [
        "eval",
        "run",
        "--dataset",
        "jsonl",
        "--data",
        str(data),
        "--method",
        "vqa",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--out",
        str(tmp_path / "run"),
    ]
    assert medagent(*base).returncode == 0
    changed = medagent(*base, "--seed", "3")
    assert changed.returncode == 2 and "another configuration" in changed.stderr


@pytest.mark.realdata
def test_multipathqa_end_to_end_with_generated_slides(shared_data: Path, tmp_path: Path) -> None:
    csv_path = shared_data / "multipathqa" / "MultiPathQA.csv"
    rows = [r for r in csv.DictReader(csv_path.open()) if r["benchmark_name"] == "tcga"][:3]
    slides = tmp_path / "slides"
    slides.mkdir()
    for i, row in enumerate(rows):  # test slides named as in the CSV
        write_pyramid_tiff(
            slides / row["image_path"], synthetic_tissue(3000, 2000, seed=i), mpp=0.5, levels=3
        )
    script = tmp_path / "replies.jsonl"
    answer = {"json": {"reasoning": "looks like it", "action": "answer", "answer": "1"}}
    script.write_text("\n".join(json.dumps(answer) for _ in rows) + "\n")
    run_dir = tmp_path / "run"
    result = medagent(
        "eval",
        "run",
        "--dataset",
        "multipathqa",
        "--data",
        str(csv_path),
        "--slides",
        str(slides),
        "--tasks",
        "tcga",
        "--limit",
        "3",
        "--method",
        "giant",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--concurrency",
        "1",
        "--out",
        str(run_dir),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = load_results(run_dir / "results.jsonl")
    assert len(results) == 3
    expected = {f"tcga:{r['benchmark_id']}": r["answer"] == "1" for r in rows}
    assert {k: v.correct for k, v in results.items()} == expected
    assert all((run_dir / (v.trajectory or "")).exists() for v in results.values())
    report = medagent("eval", "report", str(run_dir))
    assert report.returncode == 0 and "| tcga | balanced_accuracy |" in report.stdout


def test_ctrl_c_leaves_a_resumable_run_and_exits_non_zero(tmp_path: Path) -> None:
    data = vqa_items(tmp_path / "data", 8)
    run_dir = tmp_path / "run"
    args = stub_run_args(data, run_dir, concurrency=1)
    with StubOpenAIServer(default_text='{"answer": "yes"}', latency_s=0.3) as server:
        process = start_and_wait(args, server, run_dir, lines=2)
        results = run_dir / "results.jsonl"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert "rerun the same command to resume" in stderr and "Traceback" not in stderr
        done = load_results(results)
        assert 2 <= len(done) < 8
        again = medagent(*args, "--base-url", server.base_url)
        assert again.returncode == 0 and f"{len(done)} already done" in again.stdout
    assert len(load_results(results)) == 8
