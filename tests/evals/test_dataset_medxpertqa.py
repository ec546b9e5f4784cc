"""MedXpertQA MM loads from its published folder (MM/*.jsonl + images/), a file, or a table."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from medagent.cli import app
from medagent.errors import ConfigError, InputError
from medagent.evals import load_results
from medagent.evals.datasets import load_dataset
from medagent.evals.datasets._medxpertqa import load_medxpertqa, question_without_choices


def mm_record(
    number: int,
    options: list[str],
    label: str,
    question_type: str = "Reasoning",
    images: int = 1,
) -> dict[str, Any]:
    """One MM line as the card shows it: the choices are written into the question too."""
    letters = "ABCDE"
    listed = " ".join(f"({letter}) {text}" for letter, text in zip(letters, options, strict=True))
    return {
        "id": f"MM-{number}",
        "question": f"A patient, case {number}, presents as shown. What is the most probable "
        f"diagnosis?\nAnswer Choices: {listed}",
        "options": dict(zip(letters, options, strict=True)),
        "label": label,
        "images": [f"MM-{number}-{'abc'[n]}.jpeg" for n in range(images)],
        "medical_task": "Diagnosis",
        "body_system": "Cardiovascular",
        "question_type": question_type,
    }


TEST_RECORDS = [
    mm_record(
        26,
        [
            "Erythema infectiosum",
            "Cutaneous larva migrans",
            "Cold agglutinin disease",
            "Cutis marmorata",
            "Erythema ab igne",
        ],
        "C",
    ),
    mm_record(2002, ["C", "D", "A", "B", "None of the above"], "C", "Understanding", images=2),
]
DEV_RECORDS = [mm_record(1, ["one", "two", "three", "four", "five"], "E")]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def jpeg(path: Path, shade: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 14), (shade, 60, 30)).save(path, format="JPEG")
    return path


def jpeg_bytes(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def mm_folder(tmp_path: Path) -> Path:
    """The dataset as published: MM/test.jsonl, MM/dev.jsonl, and images.zip unzipped."""
    root = tmp_path / "MedXpertQA"
    write_jsonl(root / "MM" / "test.jsonl", TEST_RECORDS)
    write_jsonl(root / "MM" / "dev.jsonl", DEV_RECORDS)
    write_jsonl(root / "Text" / "test.jsonl", [{"id": "Text-1", "question": "?"}])
    for record in TEST_RECORDS + DEV_RECORDS:
        for name in record["images"]:
            jpeg(root / "images" / name)
    return root


def test_mm_test_split_items(mm_folder: Path) -> None:
    dataset = load_medxpertqa(mm_folder)
    assert dataset.name == "medxpertqa-test" and dataset.kind == "medxpertqa"
    assert dataset.source_path == mm_folder / "MM" / "test.jsonl"
    first, second = dataset.items
    assert [first.id, second.id] == ["MM-26", "MM-2002"]
    assert [first.task, second.task] == ["Reasoning", "Understanding"]
    assert first.metric == "accuracy"
    assert first.options == [
        "Erythema infectiosum",
        "Cutaneous larva migrans",
        "Cold agglutinin disease",
        "Cutis marmorata",
        "Erythema ab igne",
    ]
    assert first.answer == "Cold agglutinin disease"
    assert second.options == ["C", "D", "A", "B", "None of the above"]
    assert second.answer == "A"  # label C: the text of option C, which is "A"
    assert first.images == [str(mm_folder / "images" / "MM-26-a.jpeg")]
    assert second.images == [
        str(mm_folder / "images" / "MM-2002-a.jpeg"),
        str(mm_folder / "images" / "MM-2002-b.jpeg"),
    ]
    assert first.metadata["medical_task"] == "Diagnosis"
    assert first.metadata["body_system"] == "Cardiovascular"
    assert first.metadata["label"] == "C"


def test_the_question_sent_leaves_out_the_lettered_choices(mm_folder: Path) -> None:
    item = load_medxpertqa(mm_folder).items[0]
    assert item.question == (
        "A patient, case 26, presents as shown. What is the most probable diagnosis?"
    )
    assert item.metadata["question"] == TEST_RECORDS[0]["question"]


def test_question_without_choices() -> None:
    assert question_without_choices("Which?\nAnswer Choices: (A) x (B) y") == "Which?"
    assert question_without_choices("  No listed choices here. ") == "No listed choices here."
    # Only a block that lists (A)... is the choices; the last one wins.
    text = "Answer Choices: are discussed.\nWhich?\nAnswer Choices: (A) x (B) y"
    assert question_without_choices(text) == "Answer Choices: are discussed.\nWhich?"


def test_dev_split_and_a_file_given_directly(mm_folder: Path) -> None:
    dev = load_medxpertqa(mm_folder, split="dev")
    assert dev.name == "medxpertqa-dev" and [i.id for i in dev.items] == ["MM-1"]
    assert dev.items[0].answer == "five"
    by_file = load_medxpertqa(mm_folder / "MM" / "test.jsonl")
    assert by_file.items == load_medxpertqa(mm_folder).items  # images found beside MM/


def test_unknown_split_and_tasks(mm_folder: Path) -> None:
    with pytest.raises(ConfigError, match="no split 'train'; use one of test, dev"):
        load_medxpertqa(mm_folder, split="train")
    (mm_folder / "MM" / "dev.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"no MM/dev.jsonl \(it has: test\)"):
        load_medxpertqa(mm_folder, split="dev")
    reasoning = load_medxpertqa(mm_folder, tasks=["Reasoning"])
    assert [i.id for i in reasoning.items] == ["MM-26"]
    with pytest.raises(ConfigError, match=r"unknown MedXpertQA task.*Reasoning, Understanding"):
        load_medxpertqa(mm_folder, tasks=["Diagnosis"])


def test_limit(mm_folder: Path) -> None:
    assert [i.id for i in load_medxpertqa(mm_folder, limit=1).items] == ["MM-26"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"label": None}, r"test.jsonl row 1: not a MedXpertQA question \(label: Field required"),
        ({"options": None}, r"row 1: not a MedXpertQA question \(options: Field required"),
        ({"label": "F"}, r"row 1: label 'F' is not one of the options \(A, B, C, D, E\)"),
        ({"images": []}, r"row 1: question MM-26 has no images \(a MedXpertQA Text question"),
        ({"images": [7]}, r"row 1: the image cell is a int, not an image or a file name"),
        ({"images": [""]}, r"row 1: an entry of images is empty"),
    ],
)
def test_bad_lines_name_the_row(mm_folder: Path, change: dict[str, Any], error: str) -> None:
    record = {**TEST_RECORDS[0], **change}
    record = {key: value for key, value in record.items() if value is not None}
    write_jsonl(mm_folder / "MM" / "test.jsonl", [record])
    with pytest.raises(InputError, match=error) as raised:
        load_medxpertqa(mm_folder)
    assert "\n" not in str(raised.value)


def test_a_repeated_id_is_refused(mm_folder: Path) -> None:
    write_jsonl(mm_folder / "MM" / "test.jsonl", [TEST_RECORDS[0], TEST_RECORDS[0]])
    with pytest.raises(InputError, match=r"test.jsonl row 2: id MM-26 repeats test.jsonl row 1"):
        load_medxpertqa(mm_folder)


def test_the_text_subset_is_refused(mm_folder: Path) -> None:
    text = {**TEST_RECORDS[0], "id": "Text-5", "images": None}
    del text["images"]
    path = write_jsonl(mm_folder / "Text" / "test.jsonl", [text])
    with pytest.raises(InputError, match=r"Text-5 has no images.*reads the MM subset"):
        load_medxpertqa(path)


def test_missing_images_stop_the_load_or_are_skipped(mm_folder: Path) -> None:
    (mm_folder / "images" / "MM-2002-b.jpeg").unlink()
    with pytest.raises(InputError, match=r"1 of 2 MedXpertQA items have no image file.*MM-2002-b"):
        load_medxpertqa(mm_folder)
    dataset = load_medxpertqa(mm_folder, skip_missing=True)
    assert [item.id for item in dataset.items] == ["MM-26"]
    assert [(m.item_id, m.path) for m in dataset.missing] == [("MM-2002", "MM-2002-b.jpeg")]


def hf_table(blobs: list[list[bytes]]) -> Any:
    """The MM fields with the images inside, as a hub conversion holds them."""
    import datasets

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "question": datasets.Value("string"),
            "options": {letter: datasets.Value("string") for letter in "ABCDE"},
            "label": datasets.Value("string"),
            "images": datasets.Sequence(datasets.Image()),
            "medical_task": datasets.Value("string"),
            "body_system": datasets.Value("string"),
            "question_type": datasets.Value("string"),
        }
    )
    records = []
    for number, images in enumerate(blobs):
        record = mm_record(number, ["a", "b", "c", "d", "e"], "B", images=len(images))
        record["images"] = [{"bytes": blob, "path": None} for blob in images]
        records.append(record)
    columns = {name: [record[name] for record in records] for name in features}
    return datasets.Dataset.from_dict(columns, features=features)


def test_parquet_with_images_inside(tmp_path: Path) -> None:
    folder = tmp_path / "hub"
    folder.mkdir()
    hf_table([[jpeg_bytes(40)], [jpeg_bytes(80), jpeg_bytes(160)]]).to_parquet(
        folder / "test-00000-of-00001.parquet"
    )
    dataset = load_medxpertqa(folder, image_dir=tmp_path / "written")
    assert [item.id for item in dataset.items] == ["MM-0", "MM-1"]
    assert [len(item.images) for item in dataset.items] == [1, 2]
    assert all(Path(p).parent == tmp_path / "written" for p in dataset.items[1].images)
    assert dataset.items[1].answer == "b"


def test_save_to_disk_and_a_cell_that_is_not_an_image(tmp_path: Path) -> None:
    import datasets

    table = datasets.DatasetDict(
        {"test": hf_table([[jpeg_bytes(10)]]), "dev": hf_table([[b"<html>not an image"]])}
    )
    table.save_to_disk(str(tmp_path / "disk"))
    dataset = load_medxpertqa(tmp_path / "disk", image_dir=tmp_path / "written")
    assert len(dataset) == 1 and Path(dataset.items[0].images[0]).is_file()
    with pytest.raises(InputError, match="row 1: the image cell does not hold PNG, JPEG"):
        load_medxpertqa(tmp_path / "disk", split="dev", image_dir=tmp_path / "written")


def test_load_dataset_finds_the_loader(mm_folder: Path) -> None:
    assert len(load_dataset("medxpertqa", mm_folder, split="dev")) == 1


def test_eval_run_and_report_end_to_end(mm_folder: Path, tmp_path: Path) -> None:
    # MM-26's answer is option 3 (label C): right. MM-2002's is option 3 too, whose text is
    # "A"; answering option 1 (whose text is "C", the letter of the label) is wrong.
    script = tmp_path / "replies.jsonl"
    replies = [{"json": {"answer": "3"}}, {"json": {"answer": "1"}}]
    script.write_text("".join(json.dumps(reply) + "\n" for reply in replies))
    run_dir = tmp_path / "run"
    runner = CliRunner()
    arguments = ["eval", "run", "--dataset", "medxpertqa", "--data", str(mm_folder)]
    flags = ["--method", "vqa", "--backend", "scripted", "--script", str(script)]
    result = runner.invoke(app, [*arguments, *flags, "--concurrency", "1", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    results = load_results(run_dir / "results.jsonl")
    assert {k: (v.prediction, v.correct) for k, v in results.items()} == {
        "MM-26": ("Cold agglutinin disease", True),
        "MM-2002": ("C", False),
    }
    report = runner.invoke(app, ["eval", "report", str(run_dir)], env={"COLUMNS": "200"})
    assert report.exit_code == 0, report.output
    assert "| Reasoning | accuracy |" in report.output
    assert "| Understanding | accuracy |" in report.output
    assert "| run | Reasoning | 100.0 ± 0.0 | 1/1 |" in report.output
    assert "| run | Understanding | 0.0 ± 0.0 | 0/1 |" in report.output


def test_options_are_in_letter_order_whatever_the_line_order(mm_folder: Path) -> None:
    record = dict(TEST_RECORDS[0])
    record["options"] = dict(reversed(list(record["options"].items())))
    write_jsonl(mm_folder / "MM" / "test.jsonl", [record])
    item = load_medxpertqa(mm_folder).items[0]
    assert item.options is not None
    assert item.options[0] == "Erythema infectiosum" and item.options[4] == "Erythema ab igne"
    assert item.answer == "Cold agglutinin disease"
