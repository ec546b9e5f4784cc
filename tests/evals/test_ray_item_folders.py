"""Item folders come back to the driver: on a real two-node cluster whose nodes cannot see the
driver's ``--out`` (a tmpfs over it in their own mount namespace) and scratch in a folder of
their own, every item's folder still ends up under ``--out``, as a local run writes it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from eval_support import medagent_command, vqa_items, vqa_run_args
from medagent.evals import load_results
from ray_support import CLUSTER_PORT, namespaces_refused, run_in_cluster

pytestmark = pytest.mark.slow

ITEMS = 6


@pytest.fixture(scope="module", autouse=True)
def _namespaces() -> None:
    refused = namespaces_refused()
    if refused is not None:
        pytest.skip(f"no network/PID namespace for a private Ray cluster: {refused}")


def _eval_run(data: Path, script: Path, run_dir: Path, *executor: str) -> list[str]:
    flags = ["--backend", "scripted", "--script", str(script), *executor]
    return medagent_command(*vqa_run_args(data, run_dir, 4, *flags))


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_item_folders_are_shipped_back_to_the_driver(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = vqa_items(tmp_path / "data", ITEMS)
    script = tmp_path / "replies.jsonl"
    script.write_text((json.dumps({"json": {"answer": "yes"}}) + "\n") * ITEMS)
    run_dir = tmp_path / "run"
    local_dir = tmp_path_factory.mktemp("local") / "run"
    nodes_tmp = tmp_path_factory.mktemp("nodes")
    local = subprocess.run(
        _eval_run(data, script, local_dir),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert local.returncode == 0, local.stdout + local.stderr

    ray_run = _eval_run(
        data, script, run_dir, "--executor", "ray", "--ray-address", f"127.0.0.1:{CLUSTER_PORT}"
    )
    code, output = run_in_cluster(ray_run, timeout_s=900, node_tmp=nodes_tmp, hidden=[run_dir])
    assert code == 0, output
    assert "Traceback" not in output, output
    assert f"{ITEMS} items run ({ITEMS} ok, 0 failed)" in output, output

    # Every item's folder is under --out, with the files a local run writes.
    local_items, ray_items = local_dir / "items", run_dir / "items"
    assert sorted(p.name for p in ray_items.iterdir()) == [f"q{i}" for i in range(ITEMS)]
    for i in range(ITEMS):
        assert _files(ray_items / f"q{i}") == _files(local_items / f"q{i}") != []
    for result in load_results(run_dir / "results.jsonl").values():
        assert result.trajectory is not None and (run_dir / result.trajectory).is_file()
    # Both nodes ran items, and neither left its scratch behind.
    nodes = [json.loads(line) for line in (run_dir / "ray_nodes.jsonl").read_text().splitlines()]
    assert len({n["node"] for n in nodes}) == 2, nodes
    assert {n["ip"] for n in nodes} == {"127.0.0.1"}, nodes
    assert sorted(p.name for p in nodes_tmp.iterdir()) == ["node_a", "node_b"]
    assert not list(nodes_tmp.glob("*/medagent-item-*")), list(nodes_tmp.rglob("*"))
    # Nothing on the driver outside --out (and the inputs); no half-unpacked leftovers in it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "replies.jsonl", "run"]
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "items",
        "manifest.json",
        "ray_nodes.jsonl",
        "results.jsonl",
    ]
