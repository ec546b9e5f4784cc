"""``index build --executor ray`` on a real two-node Ray cluster (``ray start --head`` and a
second ``ray start --address``), inside namespaces of the test's own: loopback only."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_support import medagent
from medagent.retrieval import (
    DefaultEmbedder,
    ImageIndex,
    build_index,
    images_from_slides,
)
from medagent.retrieval._search import render_tiles
from medagent.testing import free_port, synthetic_tissue, write_pyramid_tiff
from ray_support import CLUSTER_PORT, namespaces_refused, run_in_cluster

pytestmark = pytest.mark.slow

ADDRESS = f"127.0.0.1:{CLUSTER_PORT}"
TILE_PX = 64


@pytest.fixture(scope="module", autouse=True)
def _namespaces() -> None:
    refused = namespaces_refused()
    if refused is not None:
        pytest.skip(f"no network/PID namespace for a private Ray cluster: {refused}")


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small generated slides (about a hundred 64-px tissue tiles each)."""
    root = tmp_path_factory.mktemp("slides")
    return [
        write_pyramid_tiff(root / f"s{n}.tif", synthetic_tissue(2000, 1500, seed=n), levels=3)
        for n in range(3)
    ]


def _build(slides: list[Path], out: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "medagent", "index", "build", "--out", str(out)]
    for slide in slides:
        command += ["--slide", str(slide)]
    return [*command, "--tile-px", str(TILE_PX), "--executor", "ray", *extra]


def _local(slides: list[Path], out: Path) -> ImageIndex:
    return build_index(out, images_from_slides(slides, tile_px=TILE_PX), DefaultEmbedder())


def test_both_nodes_build_the_same_index_as_a_local_build(
    tmp_path: Path, slides: list[Path]
) -> None:
    out = tmp_path / "ray"
    # Slides named relative to the driver's folder, which is not the workers'.
    relative = [Path(slide.name) for slide in slides]
    build = shlex.join(_build(relative, out, "--ray-address", ADDRESS, "--batch-size", "8"))
    code, output = run_in_cluster(["sh", "-c", f"cd {slides[0].parent} && {build}"], timeout_s=600)
    assert code == 0, output
    assert "Traceback" not in output, output
    local = _local(slides, tmp_path / "local")
    built = ImageIndex.load(out)
    assert built.embedder == local.embedder and built.dim == local.dim
    assert sorted(built.ids()) == sorted(local.ids()) and len(set(built.ids())) == len(built)
    n = len(local)
    assert f"{n} tiles from 3 slides: {n} embedded on 2 Ray nodes, 0 already" in output, output
    # The same vectors: each tile, rendered and embedded here, scores ~1 against its own id
    # (tissue tiles look alike, so the id is looked up among all hits, not taken as the top).
    embedder = DefaultEmbedder()
    for slide in slides:
        ids = [i for i in local.ids() if i.startswith(f"{slide.name}@")]
        regions = [r.region for r in map(local.get, ids) if r is not None and r.region]
        vectors = embedder.embed_images(render_tiles(slide, regions, TILE_PX))
        for own, hits in zip(ids, built.search(vectors, n), strict=True):
            scores = {hit.record.id: hit.score for hit in hits}
            assert np.isclose(scores[own], 1.0, atol=1e-4), own


def test_a_killed_driver_resumes_and_stores_each_tile_once(
    tmp_path: Path, slides: list[Path]
) -> None:
    out = tmp_path / "ray"
    build = shlex.join(
        _build(slides, out, "--batch-size", "4", "--checkpoint-s", "0", "--ray-address", ADDRESS)
    )
    # The first build is SIGKILLed as soon as its first checkpoint is on disk; the same
    # command then runs again.
    script = f"""
{build} >{tmp_path}/first.log 2>&1 &
driver=$!
while [ ! -f {out}/manifest.json ] && kill -0 $driver 2>/dev/null; do sleep 0.02; done
kill -9 $driver
wait $driver
echo "first build: exit $?"
tail -5 {tmp_path}/first.log
cp {out}/manifest.json {tmp_path}/killed.json
{build}
"""
    code, output = run_in_cluster(["sh", "-c", script], timeout_s=600)
    assert code == 0, output
    assert "first build: exit 137" in output, output  # killed, not finished
    assert "Traceback" not in output, output
    killed = json.loads((tmp_path / "killed.json").read_text())["count"]
    local = _local(slides, tmp_path / "local")
    n = len(local)
    assert 0 < killed < n, (killed, n)
    # The rerun embeds only what the killed build had not saved (on whichever nodes are free:
    # the killed driver's workers may still hold one for a moment).
    resumed = rf"{n} tiles from 3 slides: {n - killed} embedded on [12] Ray nodes, {killed} already"
    assert re.search(resumed, output), output
    built = ImageIndex.load(out)
    assert sorted(built.ids()) == sorted(local.ids()) and len(set(built.ids())) == n == len(built)


def test_an_unreachable_cluster_is_one_line(tmp_path: Path, slides: list[Path]) -> None:
    address = f"127.0.0.1:{free_port()}"
    done = medagent(*_build(slides[:1], tmp_path / "idx", "--ray-address", address)[3:])
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: cannot reach the Ray cluster at {address}: Connection refused"]
    assert not (tmp_path / "idx").exists()
