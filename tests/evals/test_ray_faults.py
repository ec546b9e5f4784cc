"""Faults of ``eval run --executor ray`` on a real two-node cluster: a worker killed mid-item
(Ray reruns the item; it is recorded once) and a driver killed mid-run (a rerun resumes).

Each scenario runs as this file's ``__main__`` inside the cluster's namespaces, where the
model is a stub chat server on loopback that answers slowly (so items are caught mid-way) and
counts who asked; it writes what it saw to a JSON report for the test to check."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from eval_support import medagent_command, vqa_items, vqa_run_args
from medagent.evals import load_results
from medagent.testing import StubOpenAIServer
from ray_support import CLUSTER_PORT, namespaces_refused, run_in_cluster

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]
ADDRESS = f"127.0.0.1:{CLUSTER_PORT}"
YES = '{"answer": "yes"}'


@pytest.fixture(scope="module", autouse=True)
def _namespaces() -> None:
    refused = namespaces_refused()
    if refused is not None:
        pytest.skip(f"no network/PID namespace for a private Ray cluster: {refused}")


def _eval_run(data: Path, run_dir: Path, base_url: str, concurrency: int = 2) -> list[str]:
    flags = ["--backend", "openai", "--model", "stub-model", "--base-url", base_url]
    flags += ["--max-retries", "0", "--executor", "ray", "--ray-address", ADDRESS]
    return medagent_command(*vqa_run_args(data, run_dir, concurrency, *flags))


def _asked(server: StubOpenAIServer) -> list[str]:
    """The item id behind each request the stub received (``vqa_items`` numbers questions)."""
    found = (re.search(r"Question number (\d+)\?", json.dumps(r)) for r in server.requests)
    return [f"q{m.group(1)}" for m in found if m]


def _item_workers() -> list[int]:
    """PIDs of Ray workers running an item now (Ray titles them after the task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.name.isdigit() and title.startswith(b"ray::_run_one"):
            pids.append(int(entry.name))
    return pids


def _wait(condition: Any, timeout_s: float = 180.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}


def kill_a_worker(data: Path, run_dir: Path) -> dict[str, Any]:
    """Start a run; once a request is in flight, SIGKILL the worker running that item.

    One item at a time: with two, the worker killed could be the one still starting its item
    (whose retry then asks once), not the one whose request is in flight."""
    with StubOpenAIServer(default_text=YES, latency_s=3.0) as server:
        process = subprocess.Popen(
            _eval_run(data, run_dir, server.base_url, concurrency=1),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        killed = None
        if _wait(lambda: server.in_flight > 0 or process.poll() is not None):
            workers = _item_workers()
            if workers:
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
        output, _ = process.communicate(timeout=300)
        return {
            "code": process.returncode,
            "output": output,
            "killed": killed,
            "asked": _asked(server),
        }


def kill_the_driver(data: Path, run_dir: Path) -> dict[str, Any]:
    """Start a run, SIGKILL it once two results are in, then rerun the same command."""
    results = run_dir / "results.jsonl"
    with StubOpenAIServer(default_text=YES, latency_s=1.5) as server:
        command = _eval_run(data, run_dir, server.base_url)
        first = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
        )
        _wait(lambda: results.exists() and len(results.read_text().splitlines()) >= 2)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        finished = sorted(load_results(results))
        rerun = subprocess.run(
            command, capture_output=True, text=True, timeout=300, env=_env(), check=False
        )
        return {
            "first_code": first.returncode,
            "finished_before": finished,
            "code": rerun.returncode,
            "output": rerun.stdout + rerun.stderr,
            "asked": _asked(server),
        }


def _scenario(name: str, items: int, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    data = vqa_items(tmp_path / "data", items)
    run_dir = tmp_path / "run"
    report = tmp_path / "report.json"
    command = ["env", f"PYTHONPATH={TESTS}", sys.executable, __file__, name]
    code, output = run_in_cluster([*command, str(data), str(run_dir), str(report)], timeout_s=900)
    assert code == 0 and report.exists(), output
    seen: dict[str, Any] = json.loads(report.read_text())
    return seen, run_dir


def _recorded_once(run_dir: Path, ids: list[str]) -> list[str]:
    """One results line and one whole folder per item; the ids in ray_nodes.jsonl."""
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == ids
    nodes = (run_dir / "ray_nodes.jsonl").read_text().splitlines()
    assert sorted(p.name for p in (run_dir / "items").iterdir()) == ids  # no leftovers
    assert all((run_dir / "items" / i / "trajectory.json").is_file() for i in ids)
    return sorted(json.loads(line)["id"] for line in nodes)


def test_a_worker_killed_mid_item_is_retried_and_recorded_once(tmp_path: Path) -> None:
    seen, run_dir = _scenario("kill_a_worker", 4, tmp_path)
    assert seen["killed"] is not None, seen
    assert seen["code"] == 0, seen["output"]
    assert "4 items run (4 ok, 0 failed)" in seen["output"], seen["output"]
    assert "Traceback" not in seen["output"], seen["output"]
    # The killed item was asked twice (its retry), every other item once.
    assert sorted(Counter(seen["asked"]).values()) == [1, 1, 1, 2], seen["asked"]
    ids = ["q0", "q1", "q2", "q3"]
    assert _recorded_once(run_dir, ids) == ids  # one ray_nodes line each, too


def test_a_driver_killed_mid_run_resumes_on_rerun(tmp_path: Path) -> None:
    seen, run_dir = _scenario("kill_the_driver", 6, tmp_path)
    assert seen["first_code"] == -signal.SIGKILL, seen
    finished = seen["finished_before"]
    assert 2 <= len(finished) < 6, seen
    assert seen["code"] == 0, seen["output"]
    assert f"{6 - len(finished)} items run" in seen["output"], seen["output"]
    assert f"{len(finished)} already done" in seen["output"], seen["output"]
    asked = Counter(seen["asked"])
    assert all(asked[i] == 1 for i in finished), asked  # finished items were not run again
    nodes = Counter(_recorded_once(run_dir, [f"q{i}" for i in range(6)]))
    # Once each; a driver killed between an item's result and its node line leaves none.
    assert max(nodes.values()) == 1 and all(
        nodes[f"q{i}"] for i in range(6) if f"q{i}" not in finished
    ), nodes


if __name__ == "__main__":
    scenario, data_path, run_path, report_path = sys.argv[1:5]
    run = {"kill_a_worker": kill_a_worker, "kill_the_driver": kill_the_driver}[scenario]
    Path(report_path).write_text(json.dumps(run(Path(data_path), Path(run_path))))
