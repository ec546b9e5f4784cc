"""``eval run --dataset NAME``: every benchmark registered, importable, and its flags checked."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from cli_support import medagent
from eval_support import vqa_items
from medagent.errors import ConfigError
from medagent.evals.datasets import DATASETS, DatasetKind, dataset_loader, loader_options


def test_the_registry_and_the_kind_literal_agree() -> None:
    assert set(DATASETS) == set(get_args(DatasetKind))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_loader_imports_and_takes_the_common_options(name: str) -> None:
    loader = dataset_loader(name)
    assert loader.__doc__, f"{name}: the loader says what it reads"
    assert {"limit", "skip_missing"} <= set(loader_options(name))


def test_an_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown dataset kind 'nope'; use one of multipathqa"):
        dataset_loader("nope")


def test_flags_a_dataset_cannot_use_are_refused(tmp_path: Path) -> None:
    data = vqa_items(tmp_path / "data", 1)
    common = ["eval", "run", "--data", str(data), "--out", str(tmp_path / "run")]
    slides = medagent(*common, "--dataset", "jsonl", "--slides", str(tmp_path))
    assert slides.returncode == 2
    assert "--slides: --dataset jsonl does not use it" in slides.stderr
    split = medagent(*common, "--dataset", "jsonl", "--split", "train")
    assert split.returncode == 2 and "--split: --dataset jsonl does not use it" in split.stderr
    unknown = medagent(*common, "--dataset", "pathvqa2")
    assert unknown.returncode == 2 and "unknown dataset kind 'pathvqa2'" in unknown.stderr
    assert not (tmp_path / "run").exists()


def test_eval_datasets_lists_every_benchmark_and_its_options() -> None:
    listing = medagent("eval", "datasets")
    assert listing.returncode == 0, listing.stderr
    for name in DATASETS:
        assert name in listing.stdout
    assert "--slides" in listing.stdout and "--image-dir" in listing.stdout
