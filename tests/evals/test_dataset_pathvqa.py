"""PathVQA from its Hugging Face release: Parquet shards or save_to_disk; pickles refused."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import datasets
import pytest
from PIL import Image

from cli_support import medagent
from medagent.errors import ConfigError, InputError
from medagent.evals import load_results
from medagent.evals.datasets import load_dataset
from medagent.evals.datasets._pathvqa import load_pathvqa

# The release's features (flaviagiammarino/path-vqa dataset card): image, question, answer.
FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
    }
)
TEST = [
    ("where are liver stem cells (oval cells) located?", "in the canals of hering"),
    ("is this a lesion of the kidney?", "yes"),
    ("does the slide show cirrhosis?", "no"),
]


def jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (120, shade, 140)).save(out, format="JPEG")
    return out.getvalue()


def split_table(
    rows: list[tuple[str, str]], names: list[str | None] | None = None
) -> datasets.Dataset:
    paths = names or [None] * len(rows)
    return datasets.Dataset.from_dict(
        {
            "image": [{"bytes": jpeg(i * 40), "path": p} for i, p in enumerate(paths)],
            "question": [q for q, _ in rows],
            "answer": [a for _, a in rows],
        },
        features=FEATURES,
    )


def hub_release(root: Path) -> Path:
    """``data/{train,validation,test}-00000-of-00001.parquet``, as on the hub."""
    (root / "data").mkdir(parents=True)
    split_table(TEST[1:]).to_parquet(root / "data" / "train-00000-of-00001.parquet")
    split_table(TEST[:1]).to_parquet(root / "data" / "validation-00000-of-00001.parquet")
    split_table(TEST).to_parquet(root / "data" / "test-00000-of-00001.parquet")
    return root


def test_test_split_by_default(tmp_path: Path) -> None:
    loaded = load_pathvqa(hub_release(tmp_path / "path-vqa"), image_dir=tmp_path / "img")
    assert (loaded.name, loaded.kind, len(loaded)) == ("pathvqa-test", "pathvqa", 3)
    assert [i.id for i in loaded.items] == ["test-000001", "test-000002", "test-000003"]
    assert [i.task for i in loaded.items] == ["OPEN", "CLOSED", "CLOSED"]
    assert [i.metric for i in loaded.items] == ["open_recall", "closed", "closed"]
    assert [i.answer for i in loaded.items] == ["in the canals of hering", "yes", "no"]
    assert loaded.items[0].question == TEST[0][0] and loaded.items[0].options is None
    assert [Path(i.images[0]).read_bytes() for i in loaded.items] == [jpeg(s) for s in (0, 40, 80)]
    assert loaded.items[1].metadata["raw_answer"] == "yes"
    assert loaded.task_counts() == {"OPEN": 1, "CLOSED": 2}


def test_other_splits_and_tasks(tmp_path: Path) -> None:
    root = hub_release(tmp_path / "path-vqa")
    validation = load_pathvqa(root, split="validation", image_dir=tmp_path)
    assert [(i.id, i.task) for i in validation.items] == [("validation-000001", "OPEN")]
    closed = load_pathvqa(root, tasks=["CLOSED"], image_dir=tmp_path)
    assert [i.id for i in closed.items] == ["test-000002", "test-000003"]
    first = load_pathvqa(root, split="train", limit=1, image_dir=tmp_path)
    assert [i.id for i in first.items] == ["train-000001"]


def test_image_name_kept_in_metadata(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    split_table(TEST[:2], ["img_0.jpg", None]).to_parquet(
        tmp_path / "data" / "test-00000-of-00001.parquet"
    )
    loaded = load_pathvqa(tmp_path, image_dir=tmp_path / "img")
    assert [i.metadata["image_name"] for i in loaded.items] == ["img_0.jpg", ""]
    # The written file is named by content, never by the cell's own name.
    assert Path(loaded.items[0].images[0]).name != "img_0.jpg"


def test_save_to_disk_release(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    datasets.DatasetDict({"train": split_table(TEST[1:]), "test": split_table(TEST)}).save_to_disk(
        str(disk)
    )
    loaded = load_pathvqa(disk, image_dir=tmp_path / "img")
    assert [(i.id, i.task, i.answer) for i in loaded.items] == [
        ("test-000001", "OPEN", "in the canals of hering"),
        ("test-000002", "CLOSED", "yes"),
        ("test-000003", "CLOSED", "no"),
    ]
    with pytest.raises(ConfigError, match=r"no split 'validation' \(it has: train, test\)"):
        load_pathvqa(disk, split="validation", image_dir=tmp_path)


def test_limit_never_reads_past_the_items_kept(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    split_table(TEST).to_parquet(tmp_path / "data" / "test-00000-of-00002.parquet")
    (tmp_path / "data" / "test-00001-of-00002.parquet").write_bytes(b"damaged")
    assert len(load_pathvqa(tmp_path, limit=2, image_dir=tmp_path)) == 2
    with pytest.raises(InputError, match=r"test-00001-of-00002\.parquet is not a readable Parquet"):
        load_pathvqa(tmp_path, image_dir=tmp_path)


class _Trap:
    """Unpickling this creates a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("given", ["file", "qas folder", "pvqa folder"])
def test_the_pickle_release_is_refused_unread(tmp_path: Path, given: str) -> None:
    pvqa = tmp_path / "pvqa"
    qas = pvqa / "qas" / "test"
    qas.mkdir(parents=True)
    marker = tmp_path / "unpickled"
    (qas / "test_qa.pkl").write_bytes(pickle.dumps([_Trap(marker)]))
    path = {"file": qas / "test_qa.pkl", "qas folder": qas, "pvqa folder": pvqa}[given]
    with pytest.raises(InputError, match=r"pickle release.*use the Parquet release") as error:
        load_pathvqa(path)
    assert "\n" not in str(error.value)
    assert not marker.exists()


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict({"image": [jpeg(0)], "question": ["q?"]}).to_parquet(
        tmp_path / "data" / "test-00000-of-00001.parquet"
    )
    with pytest.raises(InputError, match=r"missing column\(s\) answer; PathVQA's Parquet"):
        load_pathvqa(tmp_path, image_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown PathVQA task"):
        load_pathvqa(tmp_path, tasks=["yes/no"], image_dir=tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_pathvqa(tmp_path / "absent")


def test_registered_under_its_name(tmp_path: Path) -> None:
    loaded = load_dataset("pathvqa", hub_release(tmp_path / "p"), split="train", image_dir=tmp_path)
    assert loaded.name == "pathvqa-train" and len(loaded) == 2


def test_eval_run_and_report_end_to_end(tmp_path: Path) -> None:
    root = hub_release(tmp_path / "path-vqa")
    replies = [{"answer": "canals of hering"}, {"answer": "no"}, {"answer": "no"}]
    script = tmp_path / "replies.jsonl"
    script.write_text("".join(json.dumps({"json": r}) + "\n" for r in replies))
    run_dir = tmp_path / "run"
    result = medagent(
        "eval", "run", "--dataset", "pathvqa", "--data", str(root), "--image-dir",
        str(tmp_path / "images"), "--method", "vqa", "--backend", "scripted", "--script",
        str(script), "--concurrency", "1", "--out", str(run_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    results = load_results(run_dir / "results.jsonl")
    assert results["test-000002"].correct is False  # yes answered no
    assert results["test-000003"].correct is True
    # "in the canals of hering": 4 tokens once the article is dropped, 3 of them answered.
    assert results["test-000001"].score == pytest.approx(0.75)
    report = medagent("eval", "report", str(run_dir))
    assert report.returncode == 0, report.stderr
    assert "| CLOSED | accuracy | 5" in report.stdout  # one of two right
    assert "| OPEN | token_recall | 75.0 ± 0.0 |" in report.stdout
