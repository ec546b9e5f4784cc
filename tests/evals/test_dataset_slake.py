"""SLAKE 1.0 from the authors' folder (JSON + imgs/) and from Hugging Face mirrors."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image

from cli_support import medagent
from medagent.errors import ConfigError, InputError
from medagent.evals import load_results
from medagent.evals.datasets import load_dataset
from medagent.evals.datasets._slake import load_slake


def question(qid: int, img: int, text: str, answer: str, **fields: Any) -> dict[str, Any]:
    """One record with every field of SLAKE 1.0's JSON files."""
    record: dict[str, Any] = {
        "img_id": img,
        "img_name": f"xmlab{img}/source.jpg",
        "question": text,
        "answer": answer,
        "q_lang": "en",
        "location": "Abdomen",
        "modality": "CT",
        "answer_type": "OPEN",
        "base_type": "vqa",
        "content_type": "Organ",
        "triple": ["vhead", "_", "_"],
        "qid": qid,
    }
    record.update(fields)
    return record


TEST = [
    question(9, 0, "Which organ is abnormal?", "Liver"),
    question(10, 0, "图中哪个器官不正常?", "肝脏", q_lang="zh"),
    question(11, 1, "Is the lung healthy?", "No", answer_type="CLOSED", modality="X-Ray"),
    question(12, 1, "Which is bigger, the heart or the liver?", "Liver", answer_type="CLOSED"),
]


def slake_folder(root: Path, splits: dict[str, list[dict[str, Any]]]) -> Path:
    """The authors' layout: SPLIT.json files beside imgs/xmlabN/source.jpg."""
    for name, records in splits.items():
        root.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
        for record in records:
            image = root / "imgs" / record["img_name"]
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (record["img_id"] * 50, 0, 0)).save(image)
    return root


def test_english_questions_of_the_test_split(tmp_path: Path) -> None:
    root = slake_folder(tmp_path / "Slake1.0", {"test.json": TEST, "train.json": TEST[:1]})
    loaded = load_slake(root)
    assert (loaded.name, loaded.kind) == ("slake-test", "slake")
    assert [i.id for i in loaded.items] == ["9", "11", "12"]  # the zh question left out
    assert loaded.left_out == {"not in en": 1}
    assert [i.task for i in loaded.items] == ["CT/OPEN", "X-RAY/CLOSED", "CT/CLOSED"]
    assert [i.metric for i in loaded.items] == ["open_recall", "closed", "closed"]
    assert [i.answer for i in loaded.items] == ["liver", "no", "liver"]
    assert loaded.items[0].images == [str(root / "imgs" / "xmlab0" / "source.jpg")]
    metadata = loaded.items[1].metadata
    assert metadata["raw_answer"] == "No" and metadata["img_name"] == "xmlab1/source.jpg"
    assert metadata["location"] == "Abdomen" and metadata["triple"] == ["vhead", "_", "_"]
    assert loaded.source_path == root / "test.json"


def test_languages_choose_the_questions(tmp_path: Path) -> None:
    root = slake_folder(tmp_path / "slake", {"test.json": TEST})
    both = load_slake(root, languages=["en", "zh"])
    assert [i.id for i in both.items] == ["9", "10", "11", "12"]
    assert both.items[1].answer == "肝脏"
    assert [i.id for i in load_slake(root, languages=["zh"]).items] == ["10"]
    assert len(load_slake(root, languages=[])) == 4  # empty keeps every language
    assert both.left_out == {}


def test_validation_file_under_either_name(tmp_path: Path) -> None:
    original = slake_folder(tmp_path / "a", {"validate.json": TEST[:1], "test.json": TEST})
    renamed = slake_folder(tmp_path / "b", {"validation.json": TEST[2:3], "test.json": TEST})
    assert [i.id for i in load_slake(original, split="validation").items] == ["9"]
    assert load_slake(renamed, split="validation").name == "slake-validation"
    assert [i.id for i in load_slake(renamed, split="validation").items] == ["11"]
    with pytest.raises(ConfigError, match=r"no SLAKE split 'train' \(it has: validation, test\)"):
        load_slake(renamed, split="train")


def test_a_split_file_given_directly(tmp_path: Path) -> None:
    root = slake_folder(tmp_path / "slake", {"test.json": TEST})
    loaded = load_slake(root / "test.json")
    assert [i.id for i in loaded.items] == ["9", "11", "12"]
    assert Path(loaded.items[0].images[0]).is_file()


def test_tasks_and_limit(tmp_path: Path) -> None:
    root = slake_folder(tmp_path / "slake", {"test.json": TEST})
    assert [i.id for i in load_slake(root, tasks=["CT/CLOSED"]).items] == ["12"]
    assert [i.id for i in load_slake(root, limit=2).items] == ["9", "11"]
    with pytest.raises(ConfigError, match=r"unknown SLAKE task.*MRI/OPEN.*CT/OPEN, X-RAY/CLOSED"):
        load_slake(root, tasks=["MRI/OPEN"])


def test_missing_image_errors_or_is_skipped(tmp_path: Path) -> None:
    root = slake_folder(tmp_path / "slake", {"test.json": TEST})
    (root / "imgs" / "xmlab1" / "source.jpg").unlink()
    with pytest.raises(InputError, match=r"2 of 3 SLAKE items have no image file.*xmlab1/source"):
        load_slake(root)
    kept = load_slake(root, skip_missing=True)
    assert [i.id for i in kept.items] == ["9"]
    assert [m.item_id for m in kept.missing] == ["11", "12"]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([TEST[0], TEST[0]], "test.json row 2: qid 9 repeats test.json row 1"),
        ([{k: v for k, v in TEST[0].items() if k != "modality"}], r"missing column\(s\) modality"),
        ([question(1, 0, "Q?", "yes", answer_type="BOTH")], "answer_type must be OPEN or CLOSED"),
        ([question(1, 0, "Q?", ["yes"])], "answer should be text, it is a list"),
    ],
)
def test_bad_records_are_one_line_errors(tmp_path: Path, records: list[Any], message: str) -> None:
    root = slake_folder(tmp_path / "slake", {"test.json": records})
    with pytest.raises(InputError, match=message) as error:
        load_slake(root)
    assert "\n" not in str(error.value)


def test_empty_answer_is_left_out_and_counted(tmp_path: Path) -> None:
    root = slake_folder(tmp_path / "slake", {"test.json": [question(1, 0, "Q?", ""), TEST[0]]})
    loaded = load_slake(root)
    assert [i.id for i in loaded.items] == ["9"] and loaded.dropped_invalid == 1


def jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (0, shade, 0)).save(out, format="JPEG")
    return out.getvalue()


# mdwiratathya/SLAKE-vqa-english: English questions only, image / question / answer.
MIRROR = datasets.Features(
    {
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
    }
)


def test_english_mirror_parquet(tmp_path: Path) -> None:
    rows = [("Which organ is abnormal?", "Liver"), ("Is the lung healthy?", "No")]
    table = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": jpeg(i * 60), "path": None} for i in range(2)],
            "question": [q for q, _ in rows],
            "answer": [a for _, a in rows],
        },
        features=MIRROR,
    )
    (tmp_path / "data").mkdir()
    table.to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    table.to_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet")
    loaded = load_slake(tmp_path, image_dir=tmp_path / "images")
    assert [(i.id, i.task, i.metric, i.answer) for i in loaded.items] == [
        ("test-000001", "OPEN", "open_recall", "liver"),
        ("test-000002", "CLOSED", "closed", "no"),
    ]
    assert [Path(i.images[0]).read_bytes() for i in loaded.items] == [jpeg(0), jpeg(60)]
    with pytest.raises(ConfigError, match=r"no split 'train' \(it has: test, validation\)"):
        load_slake(tmp_path, split="train", image_dir=tmp_path)


def test_a_mirror_with_every_field_uses_them(tmp_path: Path) -> None:
    records = [
        {**r, "image": {"bytes": jpeg(n * 20), "path": r["img_name"]}} for n, r in enumerate(TEST)
    ]
    columns = {key: [r[key] for r in records] for key in records[0]}
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(columns)}).save_to_disk(
        str(tmp_path / "disk")
    )
    loaded = load_slake(tmp_path / "disk", image_dir=tmp_path / "images")
    assert [(i.id, i.task) for i in loaded.items] == [
        ("9", "CT/OPEN"),
        ("11", "X-RAY/CLOSED"),
        ("12", "CT/CLOSED"),  # closed by its answer_type, though not yes/no
    ]
    assert loaded.items[0].metadata["image_name"] == "xmlab0/source.jpg"
    assert Path(loaded.items[0].images[0]).parent == tmp_path / "images"


def test_a_mirror_image_cell_that_is_not_an_image(tmp_path: Path) -> None:
    table = datasets.Dataset.from_dict(
        {"image": [b"\x00" * 32], "question": ["Q?"], "answer": ["yes"]}
    )
    (tmp_path / "data").mkdir()
    table.to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    with pytest.raises(InputError, match="row 1: the image cell does not hold PNG"):
        load_slake(tmp_path, image_dir=tmp_path / "images")


def test_registered_under_its_name(tmp_path: Path) -> None:
    root = slake_folder(tmp_path / "slake", {"test.json": TEST})
    assert len(load_dataset("slake", root, tasks=["CT/OPEN", "CT/CLOSED"])) == 2


def test_eval_run_and_report_end_to_end(tmp_path: Path) -> None:
    root = slake_folder(tmp_path / "slake", {"test.json": TEST})
    replies = [{"answer": "the liver"}, {"answer": "yes"}, {"answer": "The liver is bigger."}]
    script = tmp_path / "replies.jsonl"
    script.write_text("".join(json.dumps({"json": r}) + "\n" for r in replies))
    run_dir = tmp_path / "run"
    result = medagent(
        "eval", "run", "--dataset", "slake", "--data", str(root), "--method", "vqa",
        "--backend", "scripted", "--script", str(script), "--concurrency", "1",
        "--out", str(run_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 questions left out: not in en" in result.stderr
    results = load_results(run_dir / "results.jsonl")
    assert results["9"].score == pytest.approx(1.0)  # "liver" recalled
    assert results["11"].correct is False  # "no" answered yes
    assert results["12"].correct is True  # the alternative named: liver, not heart
    report = medagent("eval", "report", str(run_dir))
    assert report.returncode == 0, report.stderr
    assert "| CT/OPEN | token_recall | 100.0 ± 0.0 |" in report.stdout
    assert "| X-RAY/CLOSED | accuracy | 0.0" in report.stdout
    assert "| CT/CLOSED | accuracy | 100.0" in report.stdout
