"""The table reader every published benchmark layout goes through (`open_table`, `image_file`).

Fixtures are written with the ``datasets`` library and pyarrow, as the benchmarks' authors write
their releases, so a change in how either lays files out shows up here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from medagent.errors import ConfigError, InputError
from medagent.evals.datasets._tables import (
    MAX_IMAGE_BYTES,
    image_file,
    open_table,
    table_splits,
)


def _png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


def _release(rows: int) -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string")})
    data = {
        "image": [{"bytes": _png(i), "path": f"img{i}.png"} for i in range(rows)],
        "question": [f"question {i}?" for i in range(rows)],
    }
    return datasets.Dataset.from_dict(data, features=features)


def _questions(table_path: Path, split: str | None) -> list[str]:
    return [row["question"] for _, row in open_table(table_path, split=split).rows()]


def test_every_layout_of_one_release_gives_the_same_rows(tmp_path: Path) -> None:
    splits = datasets.DatasetDict({"train": _release(2), "test": _release(3)})
    splits.save_to_disk(str(tmp_path / "dict"))
    splits["test"].save_to_disk(str(tmp_path / "one"))
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    splits["test"].to_parquet(str(hub / "test-00000-of-00001.parquet"))
    splits["train"].to_parquet(str(hub / "train-00000-of-00001.parquet"))
    expected = ["question 0?", "question 1?", "question 2?"]
    assert _questions(tmp_path / "dict", "test") == expected
    assert _questions(tmp_path / "one", None) == expected
    assert _questions(tmp_path / "hub", "test") == expected
    assert _questions(hub / "test-00000-of-00001.parquet", None) == expected
    assert table_splits(tmp_path / "dict") == ["train", "test"]
    assert table_splits(tmp_path / "hub") == ["test", "train"]
    layouts = {
        open_table(tmp_path / "dict", split="test").layout,
        open_table(tmp_path / "hub", split="test").layout,
    }
    assert layouts == {"hf-disk", "parquet"}


def test_sharded_parquet_is_read_in_shard_order(tmp_path: Path) -> None:
    release = _release(4)
    release.select(range(2)).to_parquet(str(tmp_path / "test-00000-of-00002.parquet"))
    release.select(range(2, 4)).to_parquet(str(tmp_path / "test-00001-of-00002.parquet"))
    table = open_table(tmp_path, split="test")
    assert [row["question"] for _, row in table.rows()] == [f"question {i}?" for i in range(4)]
    assert table.source_path == tmp_path
    assert len(table.sha256()) == 64


def test_rows_say_where_they_came_from(tmp_path: Path) -> None:
    _release(600).to_parquet(str(tmp_path / "test.parquet"))
    rows = open_table(tmp_path / "test.parquet").rows()
    where, first = next(rows)
    assert where == "test.parquet row 1" and first["question"] == "question 0?"


def test_a_missing_split_names_the_splits_there(tmp_path: Path) -> None:
    datasets.DatasetDict({"train": _release(1), "test": _release(1)}).save_to_disk(
        str(tmp_path / "dict")
    )
    with pytest.raises(ConfigError, match=r"no split 'validation' \(it has: train, test\)"):
        open_table(tmp_path / "dict", split="validation")
    (tmp_path / "hub").mkdir()
    _release(1).to_parquet(str(tmp_path / "hub" / "train-00000-of-00001.parquet"))
    _release(1).to_parquet(str(tmp_path / "hub" / "test-00000-of-00001.parquet"))
    with pytest.raises(ConfigError, match="it has: test, train"):
        open_table(tmp_path / "hub", split="dev")
    with pytest.raises(ConfigError, match="none given"):
        open_table(tmp_path / "hub")


def test_json_jsonl_and_csv_rows(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"q": "one"}, {"q": "two"}]))
    (tmp_path / "a.jsonl").write_text('{"q": "one"}\n\n{"q": "two"}\n')
    (tmp_path / "a.csv").write_text("\ufeffq,answer\none,yes\ntwo,no\n", encoding="utf-8")
    for name in ("a.json", "a.jsonl", "a.csv"):
        rows = [row["q"] for _, row in open_table(tmp_path / name).rows()]
        assert rows == ["one", "two"], name


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("bad.json", "{not json", "is not valid JSON"),
        ("bad.json", '{"a": 1}', "should hold a JSON list"),
        ("bad.jsonl", '{"q": 1}\n[1, 2\n', "bad.jsonl line 2: not JSON"),
        ("bad.jsonl", '{"q": 1}\n[1, 2]\n', "row 2: expected an object, got list"),
        ("bad.parquet", "PAR1 but not really", "is not a readable Parquet file"),
        ("bad.arrow", "not arrow", "is not a readable Arrow file"),
        ("bad.xlsx", "x", r"not a table medagent reads \(.parquet"),
    ],
)
def test_damaged_files_are_one_line_errors(
    tmp_path: Path, name: str, content: str, error: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=error):
        list(open_table(path).rows())


def test_a_folder_in_no_known_layout_and_a_missing_path(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="holds no table medagent reads"):
        open_table(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        open_table(tmp_path / "absent")


def test_a_state_file_cannot_point_outside_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    _release(1).save_to_disk(str(folder))
    state = json.loads((folder / "state.json").read_text())
    state["_data_files"] = [{"filename": "../../etc/passwd.arrow"}]
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(InputError, match="names a data file outside it"):
        open_table(folder)
    (folder / "state.json").write_text("{}")
    with pytest.raises(InputError, match="is not a Hugging Face dataset state"):
        open_table(folder)


def test_image_cells_become_files_named_by_content(tmp_path: Path) -> None:
    images = tmp_path / "images"
    data = _png(7)
    # A hostile cell path is kept as the table's name for the image, never used as a file name.
    cell = {"bytes": data, "path": "../../../../tmp/evil.png"}
    path, name = image_file(cell, base=tmp_path, image_dir=images, where="t row 1")
    assert path is not None and path.parent == images and path.suffix == ".png"
    assert path.read_bytes() == data and name == "../../../../tmp/evil.png"
    again, _ = image_file(data, base=tmp_path, image_dir=images, where="t row 2")
    assert again == path
    assert [p.name for p in images.iterdir()] == [path.name]  # written once, no .part left
    jpeg = io.BytesIO()
    Image.new("RGB", (4, 4)).save(jpeg, "JPEG")
    jpg, _ = image_file(jpeg.getvalue(), base=tmp_path, image_dir=images, where="w")
    assert jpg is not None and jpg.suffix == ".jpg"


def test_image_cells_that_are_paths_or_empty(tmp_path: Path) -> None:
    images = tmp_path / "images"
    path, name = image_file(
        {"bytes": None, "path": "imgs/a.png"}, base=tmp_path, image_dir=images, where="w"
    )
    assert path == tmp_path / "imgs" / "a.png" and name == "imgs/a.png"
    assert image_file(None, base=tmp_path, image_dir=images, where="w") == (None, "")
    assert image_file("  ", base=tmp_path, image_dir=images, where="w") == (None, "")
    assert not images.exists()


@pytest.mark.parametrize(
    ("cell", "error"),
    [
        (b"%PDF-1.4 not an image", "does not hold PNG, JPEG"),
        ({"bytes": "text", "path": None}, "the image bytes are a str"),
        (12, "the image cell is a int, not a path"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * (MAX_IMAGE_BYTES + 1), "more than the 64 MiB"),
    ],
)
def test_bad_image_cells_are_refused_before_anything_is_written(
    tmp_path: Path, cell: object, error: str
) -> None:
    with pytest.raises(InputError, match=f"t row 3: .*{error}"):
        image_file(cell, base=tmp_path, image_dir=tmp_path / "images", where="t row 3")
    assert not (tmp_path / "images").exists()
