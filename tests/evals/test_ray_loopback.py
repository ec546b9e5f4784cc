"""``--executor ray`` without ``--ray-address`` starts a local Ray instance on loopback only.

In a network namespace of the test's own, with an "outward" interface added beside loopback (a
veth pair whose both ends stay in the namespace, and a default route through it: what Ray looks
for to pick a node address; nothing can leave), every node still reports 127.0.0.1, Ray never
asks the routing table for the way out, and ``RAY_ADDRESS`` (naming a cluster that is not
there) is not joined."""

from __future__ import annotations

import asyncio
import functools
import json
import shlex
import sys
from pathlib import Path

import pytest

from eval_support import medagent_command, vqa_items, vqa_run_args
from medagent.evals import EvalRunner, RunConfig, load_dataset, load_results, make_method
from medagent.models import ScriptedModel
from ray_support import namespaces_refused, run_in_cluster

TESTS = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _namespaces() -> None:
    refused = namespaces_refused()
    if refused is not None:
        pytest.skip(f"no network/PID namespace for a private Ray cluster: {refused}")


def test_a_local_instance_binds_to_loopback_only(tmp_path: Path) -> None:
    data = vqa_items(tmp_path / "data", 3)
    script = tmp_path / "replies.jsonl"
    script.write_text((json.dumps({"json": {"answer": "yes"}}) + "\n") * 3)
    run_dir = tmp_path / "run"
    flags = ["--backend", "scripted", "--script", str(script), "--executor", "ray"]
    eval_run = medagent_command(*vqa_run_args(data, run_dir, 2, *flags))
    outward = (
        "ip link add mo0 type veth peer name mo1 && ip link set mo1 up && "
        "ip addr add 192.0.2.77/24 dev mo0 && ip link set mo0 up && "
        "ip route add default via 192.0.2.1 dev mo0 || exit 93"
    )
    # run_in_cluster exports RAY_ADDRESS (no cluster is started): a local run must not join it.
    shell = f"{outward}; {shlex.join(eval_run)}"
    code, output = run_in_cluster(["sh", "-c", shell], timeout_s=600, start=False)
    if code == 93:
        pytest.skip(f"no veth pair in a private network namespace: {output[-300:]}")
    assert code == 0, output
    assert "external connectivity" not in output, output  # Ray looked for the way out
    assert "Traceback" not in output, output
    assert "3 items run (3 ok, 0 failed)" in output, output
    nodes = [json.loads(line) for line in (run_dir / "ray_nodes.jsonl").read_text().splitlines()]
    assert sorted(n["id"] for n in nodes) == ["q0", "q1", "q2"]
    assert {n["ip"] for n in nodes} == {"127.0.0.1"}, nodes
    assert all((run_dir / "items" / f"q{i}" / "trajectory.json").is_file() for i in range(3))


def run_with_a_tiny_cap(data: Path, run_dir: Path) -> None:
    """A local-instance run whose item folders are all over a 100-byte cap."""
    items = load_dataset("jsonl", data).items
    config = RunConfig(
        dataset="jsonl",
        data_path=str(data),
        dataset_sha256="0",
        method="vqa",
        backend="scripted",
        model="s",
    )
    factory = functools.partial(ScriptedModel, [{"json": {"answer": "yes"}}])
    runner = EvalRunner(
        factory, make_method("vqa"), config, run_dir, executor="ray", ray_item_max_bytes=100
    )
    asyncio.run(runner.run(items))


def test_an_item_folder_over_the_cap_is_not_shipped_and_its_result_says_so(
    tmp_path: Path,
) -> None:
    data = vqa_items(tmp_path / "data", 2)
    run_dir = tmp_path / "run"
    command = ["env", f"PYTHONPATH={TESTS}", sys.executable, __file__, str(data), str(run_dir)]
    code, output = run_in_cluster(command, timeout_s=600, start=False)
    assert code == 0, output
    results = load_results(run_dir / "results.jsonl")
    assert sorted(results) == ["q0", "q1"], output
    for result in results.values():
        assert result.status == "ok" and result.correct, result  # the answer is kept
        assert result.trajectory is None, result
        assert result.error is not None and result.error.endswith(
            "is over the 100 bytes cap on an item folder shipped from a Ray worker; not kept"
        ), result.error
    assert not (run_dir / "items").exists() or not list((run_dir / "items").iterdir())


if __name__ == "__main__":
    run_with_a_tiny_cap(Path(sys.argv[1]), Path(sys.argv[2]))
