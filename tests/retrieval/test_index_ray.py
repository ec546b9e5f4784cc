"""Building one index from many slides: the CLI's repeated ``--slide``, the one writer that
stores each id once, and a Ray build on a local instance that survives a worker's death."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_support import medagent
from medagent.errors import ConfigError, InputError
from medagent.retrieval import (
    DefaultEmbedder,
    EmbedderSpec,
    ImageIndex,
    Vectors,
    build_index,
    build_index_on_ray,
    images_from_slides,
)
from medagent.retrieval._search import IndexWriter, slide_tiles
from medagent.retrieval.base import Embedder
from medagent.testing import synthetic_tissue, write_pyramid_tiff

TILE_PX = 128


@pytest.fixture(scope="module")
def two_slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("slides")
    return [
        write_pyramid_tiff(root / f"s{n}.tif", synthetic_tissue(1200, 900, seed=n), levels=2)
        for n in range(2)
    ]


def _local(slides: Sequence[Path], out: Path) -> ImageIndex:
    return build_index(out, images_from_slides(slides, tile_px=TILE_PX), DefaultEmbedder())


def test_a_batch_that_arrives_twice_is_stored_once(tmp_path: Path, two_slides: list[Path]) -> None:
    records = slide_tiles(two_slides[0], tile_px=TILE_PX)[:4]
    vectors = np.eye(4, 8, dtype=np.float32)
    writer = IndexWriter(tmp_path / "idx", ImageIndex(8, embedder="test"), save_interval_s=0)
    assert writer.add(vectors, records) == 4
    assert writer.add(vectors[1:3], records[1:3]) == 0  # a retried task's result
    assert writer.add(vectors, records) == 0
    writer.save()
    assert sorted(ImageIndex.load(tmp_path / "idx").ids()) == sorted(r.id for r in records)


def test_the_cli_indexes_several_slides(tmp_path: Path, two_slides: list[Path]) -> None:
    out = tmp_path / "idx"
    args = ["--slide", str(two_slides[0]), "--slide", str(two_slides[1])]
    built = medagent("index", "build", *args, "--tile-px", str(TILE_PX), "--out", str(out))
    assert built.returncode == 0, built.stderr
    index = ImageIndex.load(out)
    assert sorted(index.ids()) == sorted(_local(two_slides, tmp_path / "local").ids())
    assert {i.split("@")[0] for i in index.ids()} == {"s0.tif", "s1.tif"}
    assert f"{len(index)} images in {out}" in built.stdout


def test_slides_sharing_a_file_name_are_refused(tmp_path: Path, two_slides: list[Path]) -> None:
    twin = tmp_path / "other" / two_slides[0].name
    twin.parent.mkdir()
    twin.write_bytes(two_slides[0].read_bytes())
    for executor in ("local", "ray"):
        done = medagent(
            "index", "build", "--slide", str(two_slides[0]), "--slide", str(twin),
            "--out", str(tmp_path / "idx"), "--executor", executor,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "share the file name 's0.tif'" in done.stderr and "Traceback" not in done.stderr


def test_ray_flags_that_do_not_fit_are_one_line(tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "a.png")
    out = ["--out", str(tmp_path / "idx")]
    done = medagent("index", "build", "--images", str(images), *out, "--executor", "ray")
    assert done.returncode == 2 and "--executor ray builds from --slide" in done.stderr
    done = medagent("index", "build", "--images", str(images), *out, "--ray-address", "h:1")
    assert done.returncode == 2 and "--ray-address goes with --executor ray" in done.stderr
    done = medagent("index", "build", "--images", str(images), *out, "--executor", "spark")
    assert done.returncode == 2 and "choose local or ray" in done.stderr
    with pytest.raises(ConfigError, match="cannot be built on Ray workers"):
        build_index_on_ray(tmp_path / "idx", [images / "a.png"], EmbedderSpec(name="mine"))


def test_help_teaches_the_ray_build() -> None:
    done = medagent("index", "build", "--help")
    assert done.returncode == 0
    for flag in ("--executor", "--ray-address", "--batch-size", "--checkpoint-s", "repeat"):
        assert flag in done.stdout, flag


class _DiesOnce(DefaultEmbedder):
    """The default embedder, whose worker process dies on its first batch (a marker file
    tells the retry, in a new process, that it already happened)."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = marker

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        try:
            self.marker.touch(exist_ok=False)
        except FileExistsError:
            return super().embed_images(images)
        os._exit(1)  # the worker process dies mid-task, as when a node loses it


class _DiesOnceSpec(EmbedderSpec):
    marker: str

    def build(self) -> Embedder:
        return _DiesOnce(Path(self.marker))


@pytest.mark.slow
def test_a_task_whose_worker_died_is_retried_and_stored_once(
    tmp_path: Path, two_slides: list[Path]
) -> None:
    import ray

    # Workers do not import this test module: ship its classes by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "died"
    try:
        built = build_index_on_ray(
            tmp_path / "ray",
            two_slides,
            _DiesOnceSpec(marker=str(marker)),
            tile_px=TILE_PX,
            batch_size=4,
        )
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert marker.exists()  # a worker did die
    local = _local(two_slides, tmp_path / "local")
    ids = ImageIndex.load(tmp_path / "ray").ids()
    assert sorted(ids) == sorted(local.ids()) and len(set(ids)) == len(ids) == built.tiles
    assert built.embedded == built.tiles and built.already == 0


@pytest.mark.slow
def test_a_slide_a_worker_cannot_read_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.svs"
    with pytest.raises(InputError) as raised:
        build_index_on_ray(tmp_path / "idx", [missing], EmbedderSpec())
    assert str(raised.value).count("missing.svs") == 1 and "\n" not in str(raised.value)
    assert not (tmp_path / "idx").exists()
