"""``eval run --executor ray`` against a real two-node Ray cluster (``ray start --head`` and a
second ``ray start --address``), all inside namespaces of the test's own: loopback only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval_support import medagent_command, vqa_items, vqa_run_args
from medagent.evals import load_results
from ray_support import CLUSTER_PORT, namespaces_refused, run_in_cluster

pytestmark = pytest.mark.slow

ITEMS = 8
ADDRESS = f"127.0.0.1:{CLUSTER_PORT}"


@pytest.fixture(scope="module", autouse=True)
def _namespaces() -> None:
    refused = namespaces_refused()
    if refused is not None:
        pytest.skip(f"no network/PID namespace for a private Ray cluster: {refused}")


def _eval_run(data: Path, script: Path, run_dir: Path) -> list[str]:
    flags = ["--backend", "scripted", "--script", str(script)]
    flags += ["--executor", "ray", "--ray-address", ADDRESS]
    return medagent_command(*vqa_run_args(data, run_dir, 4, *flags))


def test_every_item_runs_once_across_both_nodes(tmp_path: Path) -> None:
    data = vqa_items(tmp_path / "data", ITEMS)
    script = tmp_path / "replies.jsonl"
    script.write_text(json.dumps({"json": {"answer": "yes"}}) + "\n")
    run_dir = tmp_path / "run"
    code, output = run_in_cluster(_eval_run(data, script, run_dir), timeout_s=900)
    assert code == 0, output
    assert "Traceback" not in output, output
    assert f"{ITEMS} items run ({ITEMS} ok, 0 failed)" in output, output
    # results.jsonl: one line per item, written by the driver alone.
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(f"q{i}" for i in range(ITEMS))
    results = load_results(run_dir / "results.jsonl")
    assert all(r.status == "ok" and r.correct for r in results.values())
    nodes = [json.loads(line) for line in (run_dir / "ray_nodes.jsonl").read_text().splitlines()]
    assert sorted(n["id"] for n in nodes) == sorted(results)
    assert len({n["node"] for n in nodes}) == 2, nodes  # the head and the second node
    report = subprocess.run(
        [sys.executable, "-m", "medagent", "eval", "report", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    assert "demo" in report.stdout, report.stdout


def test_a_cluster_that_cannot_be_reached_is_one_line(tmp_path: Path) -> None:
    data = vqa_items(tmp_path / "data", 2)
    script = tmp_path / "replies.jsonl"
    script.write_text(json.dumps({"json": {"answer": "yes"}}) + "\n")
    code, output = run_in_cluster(
        _eval_run(data, script, tmp_path / "run"), timeout_s=300, start=False
    )
    assert code == 2, output
    assert f"error: cannot reach the Ray cluster at {ADDRESS}: Connection refused" in output
    assert "Traceback" not in output, output
