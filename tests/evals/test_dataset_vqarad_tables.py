"""VQA-RAD's Hugging Face release (Parquet shards, save_to_disk) read by `load_vqarad_table`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cli_support import medagent
from medagent.errors import ConfigError, InputError
from medagent.evals import load_results
from medagent.evals.datasets._vqarad_tables import load_vqarad_table

# The release's features (flaviagiammarino/vqa-rad dataset card).
FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
    }
)
ROWS = [
    ("is there evidence of an aortic aneurysm?", "yes"),
    ("where is the mass?", "left lung"),
    ("is the heart enlarged?", "no"),
]


def jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (shade, 40, 90)).save(out, format="JPEG")
    return out.getvalue()


def release(rows: list[tuple[str, str]], images: list[Any] | None = None) -> datasets.Dataset:
    cells = (
        images
        if images is not None
        else [{"bytes": jpeg(i * 30), "path": None} for i in range(len(rows))]
    )
    return datasets.Dataset.from_dict(
        {"image": cells, "question": [q for q, _ in rows], "answer": [a for _, a in rows]},
        features=FEATURES,
    )


def hub_folder(root: Path, splits: dict[str, list[tuple[str, str]]]) -> Path:
    """The hub layout: ``data/SPLIT-00000-of-00001.parquet``."""
    (root / "data").mkdir(parents=True)
    for split, rows in splits.items():
        release(rows).to_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def test_parquet_release_gives_closed_and_open_items(tmp_path: Path) -> None:
    root = hub_folder(tmp_path / "vqa-rad", {"train": ROWS[:1], "test": ROWS})
    loaded = load_vqarad_table(root, image_dir=tmp_path / "images")
    assert loaded.name == "vqa-rad-test" and loaded.kind == "vqa-rad"
    assert [i.id for i in loaded.items] == ["test-000001", "test-000002", "test-000003"]
    assert [i.task for i in loaded.items] == ["CLOSED", "OPEN", "CLOSED"]
    assert [i.metric for i in loaded.items] == ["closed", "open_recall", "closed"]
    assert [i.answer for i in loaded.items] == ["yes", "left lung", "no"]
    assert loaded.items[1].question == "where is the mass?"
    for number, item in enumerate(loaded.items):
        (image,) = item.images
        assert Path(image).parent == tmp_path / "images"
        assert Path(image).read_bytes() == jpeg(number * 30)  # each row its own image
    assert loaded.source_path == root / "data" / "test-00000-of-00001.parquet"
    assert len(loaded.source_sha256) == 64


def test_train_split_tasks_and_limit(tmp_path: Path) -> None:
    root = hub_folder(tmp_path / "vqa-rad", {"train": ROWS, "test": ROWS[:1]})
    loaded = load_vqarad_table(root, split="train", tasks=["CLOSED"], limit=1, image_dir=tmp_path)
    assert [(i.id, i.task) for i in loaded.items] == [("train-000001", "CLOSED")]
    opened = load_vqarad_table(root, split="train", tasks="OPEN", image_dir=tmp_path)
    assert [i.id for i in opened.items] == ["train-000002"]


def test_save_to_disk_folder_reads_like_the_parquet(tmp_path: Path) -> None:
    datasets.DatasetDict({"train": release(ROWS[:2]), "test": release(ROWS)}).save_to_disk(
        str(tmp_path / "disk")
    )
    loaded = load_vqarad_table(tmp_path / "disk", image_dir=tmp_path / "images")
    parquet = load_vqarad_table(
        hub_folder(tmp_path / "hub", {"test": ROWS}), image_dir=tmp_path / "images"
    )
    assert [(i.id, i.task, i.answer, i.images) for i in loaded.items] == [
        (i.id, i.task, i.answer, i.images) for i in parquet.items
    ]


def test_a_lone_shard_file_names_its_own_split(tmp_path: Path) -> None:
    root = hub_folder(tmp_path / "vqa-rad", {"train": ROWS})
    loaded = load_vqarad_table(root / "data" / "train-00000-of-00001.parquet", image_dir=tmp_path)
    assert loaded.name == "vqa-rad-train" and loaded.items[0].id == "train-000001"


def test_unknown_split_names_the_splits(tmp_path: Path) -> None:
    root = hub_folder(tmp_path / "vqa-rad", {"train": ROWS, "test": ROWS})
    with pytest.raises(ConfigError, match=r"no split 'validation' \(it has: test, train\)"):
        load_vqarad_table(root, split="validation", image_dir=tmp_path)


def test_unknown_task_is_refused(tmp_path: Path) -> None:
    root = hub_folder(tmp_path / "vqa-rad", {"test": ROWS})
    with pytest.raises(ConfigError, match=r"unknown VQA-RAD task.*CHEST/CLOSED.*CLOSED, OPEN"):
        load_vqarad_table(root, tasks=["CHEST/CLOSED"], image_dir=tmp_path)


def test_missing_column_is_one_line(tmp_path: Path) -> None:
    table = datasets.Dataset.from_dict({"question": ["q?"], "answer": ["yes"]})
    (tmp_path / "data").mkdir()
    table.to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    with pytest.raises(InputError, match=r"row 1: missing column\(s\) image;") as error:
        load_vqarad_table(tmp_path, image_dir=tmp_path)
    assert "\n" not in str(error.value)


def test_an_image_cell_that_is_not_an_image(tmp_path: Path) -> None:
    bad = [{"bytes": b"not an image at all", "path": None}] * 2
    (tmp_path / "data").mkdir()
    release(ROWS[:2], bad).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    with pytest.raises(InputError, match="row 1: the image cell does not hold PNG, JPEG"):
        load_vqarad_table(tmp_path, image_dir=tmp_path / "images")


def test_missing_image_files_error_or_skip(tmp_path: Path) -> None:
    # A table whose cells name files beside it (no bytes), one of them absent.
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    # The Image feature's storage (struct of bytes, path), written with pyarrow: datasets
    # itself would look the relative paths up from the working folder.
    cells = [{"bytes": None, "path": "a.png"}, {"bytes": None, "path": "gone.png"}]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array(cells, type=image_type),
            "question": ["q1?", "q2?"],
            "answer": ["yes", "no"],
        }
    )
    pq.write_table(table, tmp_path / "test-00000-of-00001.parquet")
    with pytest.raises(InputError, match=r"1 of 2 VQA-RAD items have no image file.*gone\.png"):
        load_vqarad_table(tmp_path)
    kept = load_vqarad_table(tmp_path, skip_missing=True)
    assert [i.id for i in kept.items] == ["test-000001"]
    assert [m.path for m in kept.missing] == ["gone.png"]


def test_empty_answer_is_left_out_and_counted(tmp_path: Path) -> None:
    root = hub_folder(tmp_path / "vqa-rad", {"test": [("q?", ""), ROWS[0]]})
    loaded = load_vqarad_table(root, image_dir=tmp_path)
    assert [i.id for i in loaded.items] == ["test-000002"] and loaded.dropped_invalid == 1


def test_no_image_dir_needed_without_image_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Path cells never touch the default image folder (which would create the cache).
    import medagent.evals.datasets._vqa_tables as shared

    def refuse() -> Path:
        raise AssertionError("the default image folder was asked for")

    monkeypatch.setattr(shared, "default_image_dir", refuse)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rows = [{"image": "a.png", "question": "is it?", "answer": "yes"}]
    (tmp_path / "test.json").write_text(json.dumps(rows))
    loaded = load_vqarad_table(tmp_path / "test.json")
    assert loaded.items[0].images == [str(tmp_path / "a.png")]


def test_eval_run_and_report_end_to_end(tmp_path: Path) -> None:
    root = hub_folder(tmp_path / "vqa-rad", {"test": ROWS})
    script = tmp_path / "replies.jsonl"
    replies = [{"answer": "no"}, {"answer": "lung"}, {"answer": "no"}]  # wrong, recall 0.5, right
    script.write_text("".join(json.dumps({"json": r}) + "\n" for r in replies))
    run_dir = tmp_path / "run"
    result = medagent(
        "eval", "run", "--dataset", "vqa-rad", "--data", str(root), "--image-dir",
        str(tmp_path / "images"), "--method", "vqa", "--backend", "scripted", "--script",
        str(script), "--concurrency", "1", "--out", str(run_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    results = load_results(run_dir / "results.jsonl")
    assert results["test-000001"].correct is False
    assert results["test-000003"].correct is True
    assert results["test-000002"].score == pytest.approx(0.5)  # "left lung": 1 of 2 tokens
    report = medagent("eval", "report", str(run_dir))
    assert report.returncode == 0, report.stderr
    assert "| CLOSED | accuracy | 5" in report.stdout  # one of two right
    assert "| OPEN | token_recall | 50.0 ± 0.0 |" in report.stdout
