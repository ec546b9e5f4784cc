"""PMC-VQA loads from its published CSVs (v1 and v2), one CSV, Parquet and save_to_disk."""

from __future__ import annotations

import csv
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
from medagent.evals.datasets._pmcvqa import load_pmcvqa

V1_COLUMNS = [
    "Figure_path",
    "Question",
    "Answer",
    "Choice A",
    "Choice B",
    "Choice C",
    "Choice D",
    "Answer_label",
]
V2_COLUMNS = [
    "index",
    "Figure_path",
    "Caption",
    "Question",
    "Choice A",
    "Choice B",
    "Choice C",
    "Choice D",
    "Answer",
    "split",
]


def png(path: Path, shade: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), (shade, 40, 200)).save(path)
    return path


def png_bytes(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def v1_row(figure: str, question: str, choices: list[str], label: str) -> dict[str, str]:
    """A v1 row as the card shows it: choices carry their letter; Answer is the right text."""
    letters = "ABCD"
    row = {"Figure_path": figure, "Question": question, "Answer_label": label}
    for letter, choice in zip(letters, choices, strict=True):
        row[f"Choice {letter}"] = f"{letter}:{choice}"
    row["Answer"] = choices[letters.index(label)]
    return row


V1_ROWS = [
    v1_row(
        "PMC1064097_F1.jpg",
        "What is the uptake pattern in the breast?",
        [
            "Diffuse uptake pattern",
            "Focal uptake pattern",
            "No uptake pattern",
            "Cannot determine from the information given",
        ],
        "B",
    ),
    v1_row(
        "PMC2_F3.jpg", "Which modality, CT or MRI, was used?", ["CT", "MRI", "PET", "X-ray"], "A"
    ),
]


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def v1_folder(tmp_path: Path) -> Path:
    """test.csv, test_clean.csv and images/ as images.zip unpacks."""
    root = tmp_path / "PMC-VQA"
    write_csv(root / "test.csv", V1_COLUMNS, V1_ROWS)
    write_csv(root / "test_clean.csv", V1_COLUMNS, V1_ROWS[:1])
    for row in V1_ROWS:
        png(root / "images" / row["Figure_path"])
    return root


def test_v1_test_split_choices_reference_and_images(v1_folder: Path) -> None:
    dataset = load_pmcvqa(v1_folder)
    assert dataset.name == "pmc-vqa-test" and dataset.kind == "pmc-vqa"
    assert dataset.source_path == v1_folder / "test.csv"
    first, second = dataset.items
    assert [first.id, second.id] == ["1", "2"]
    assert first.task == "test" and first.metric == "accuracy"
    assert first.options == [
        "Diffuse uptake pattern",
        "Focal uptake pattern",
        "No uptake pattern",
        "Cannot determine from the information given",
    ]
    assert first.answer == "Focal uptake pattern"  # the text of choice B
    assert first.question == "What is the uptake pattern in the breast?"
    assert first.images == [str(v1_folder / "images" / "PMC1064097_F1.jpg")]
    assert first.metadata["answer_label"] == "B"
    assert first.metadata["raw_answer"] == "Focal uptake pattern"
    assert second.options == ["CT", "MRI", "PET", "X-ray"] and second.answer == "CT"


def test_test_clean_split_and_a_csv_file_given_directly(v1_folder: Path) -> None:
    by_split = load_pmcvqa(v1_folder, split="test_clean")
    by_file = load_pmcvqa(v1_folder / "test_clean.csv")
    for dataset in (by_split, by_file):
        assert dataset.name == "pmc-vqa-test_clean"
        assert [item.task for item in dataset.items] == ["test_clean"]
        assert dataset.items[0].images == [str(v1_folder / "images" / "PMC1064097_F1.jpg")]


def test_a_space_before_the_letter_and_a_lower_case_label(tmp_path: Path) -> None:
    row = {
        "Figure_path": "f.jpg",
        "Question": "Where is the lesion?",
        "Answer": " C: Left lobe",
        "Choice A": " A: Right lobe ",
        "Choice B": " B: Both lobes",
        "Choice C": " C: Left lobe",
        "Choice D": " D: Neither",
        "Answer_label": "c",
    }
    png(tmp_path / "images" / "f.jpg")
    write_csv(tmp_path / "test.csv", V1_COLUMNS, [row])
    item = load_pmcvqa(tmp_path).items[0]
    assert item.options == ["Right lobe", "Both lobes", "Left lobe", "Neither"]
    assert item.answer == "Left lobe"


def v2_rows() -> list[dict[str, str]]:
    return [
        {
            "index": "17",
            "Figure_path": "PMC9_F2_0.jpg",
            "Caption": "Axial CT of the chest.",
            "Question": "What does the arrow point to?",
            "Choice A": " A:A nodule",
            "Choice B": " B:An effusion",
            "Choice C": " C:A rib",
            "Choice D": " D:The heart",
            "Answer": "D",
            "split": "test",
        },
        {
            "index": "42",
            "Figure_path": "PMC9_F2_1.jpg",
            "Caption": "",
            "Question": "Which plane is shown?",
            "Choice A": " A:Axial",
            "Choice B": " B:Coronal",
            "Choice C": " C:Sagittal",
            "Choice D": " D:Oblique",
            "Answer": "A",
            "split": "test",
        },
    ]


@pytest.mark.parametrize("file_name", ["test_2.csv", "test2.csv"])
def test_v2_ids_label_and_figures_folder(tmp_path: Path, file_name: str) -> None:
    write_csv(tmp_path / file_name, V2_COLUMNS, v2_rows())
    for row in v2_rows():
        png(tmp_path / "figures" / row["Figure_path"])  # images_2.zip unpacks to figures/
    dataset = load_pmcvqa(tmp_path, split="test_2")
    assert dataset.name == "pmc-vqa-test_2"
    assert [item.id for item in dataset.items] == ["17", "42"]
    assert [item.answer for item in dataset.items] == ["The heart", "Axial"]
    assert dataset.items[0].options == ["A nodule", "An effusion", "A rib", "The heart"]
    assert dataset.items[0].images == [str(tmp_path / "figures" / "PMC9_F2_0.jpg")]
    assert "raw_answer" not in dataset.items[0].metadata  # v2's Answer is the letter


def test_a_split_the_folder_lacks_names_the_ones_it_has(v1_folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"no split 'test_2' \(it has: test, test_clean\)"):
        load_pmcvqa(v1_folder, split="test_2")
    with pytest.raises(ConfigError, match="the splits are train, test, test_clean"):
        load_pmcvqa(v1_folder, split="validation")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"drop": "Choice C"}, r"test.csv row 1: not a PMC-VQA row \(Choice C: Field required"),
        ({"drop": "Question"}, r"Question: Field required"),
        ({"drop": "Answer_label", "Answer": "Focal"}, r"answer label 'Focal' is not one of A"),
        ({"Answer_label": "E"}, r"test.csv row 1: the answer label 'E' is not one of A, B, C, D"),
        ({"Choice B": "B:"}, r"row 1: the right choice \(B\) is empty"),
        ({"Figure_path": ""}, r"row 1: Figure_path is empty"),
    ],
)
def test_bad_rows_name_the_row(tmp_path: Path, change: dict[str, str], error: str) -> None:
    row = dict(V1_ROWS[0])
    columns = list(V1_COLUMNS)
    dropped = change.pop("drop", None)
    if dropped:
        columns.remove(dropped)
        del row[dropped]
    row.update(change)
    png(tmp_path / "images" / "PMC1064097_F1.jpg")
    write_csv(tmp_path / "test.csv", columns, [row])
    with pytest.raises(InputError, match=error) as raised:
        load_pmcvqa(tmp_path)
    assert "\n" not in str(raised.value)


def test_a_repeated_index_is_refused(tmp_path: Path) -> None:
    rows = v2_rows()
    rows[1]["index"] = rows[0]["index"]
    write_csv(tmp_path / "test_2.csv", V2_COLUMNS, rows)
    with pytest.raises(InputError, match=r"test_2.csv row 2: id 17 repeats test_2.csv row 1"):
        load_pmcvqa(tmp_path, split="test_2")


def test_missing_images_stop_the_load_or_are_skipped(v1_folder: Path) -> None:
    (v1_folder / "images" / "PMC2_F3.jpg").unlink()
    with pytest.raises(InputError, match=r"1 of 2 PMC-VQA items have no image file .*PMC2_F3"):
        load_pmcvqa(v1_folder)
    dataset = load_pmcvqa(v1_folder, skip_missing=True)
    assert [item.id for item in dataset.items] == ["1"]
    assert [(m.item_id, m.path) for m in dataset.missing] == [("2", "PMC2_F3.jpg")]
    assert str(v1_folder / "images") in dataset.missing[0].searched


def test_limit_and_tasks(v1_folder: Path) -> None:
    assert [i.id for i in load_pmcvqa(v1_folder, limit=1).items] == ["1"]
    assert len(load_pmcvqa(v1_folder, tasks=["test"])) == 2
    with pytest.raises(ConfigError, match="unknown PMC-VQA task"):
        load_pmcvqa(v1_folder, tasks=["test_clean"])


def hf_dataset(rows: list[dict[str, Any]]) -> Any:
    """The v2 columns with the figure itself in Figure_path (a datasets Image feature)."""
    import datasets

    features = datasets.Features(
        {
            "index": datasets.Value("int64"),
            "Figure_path": datasets.Image(),
            "Question": datasets.Value("string"),
            **{f"Choice {letter}": datasets.Value("string") for letter in "ABCD"},
            "Answer": datasets.Value("string"),
        }
    )
    columns = {name: [row[name] for row in rows] for name in features}
    return datasets.Dataset.from_dict(columns, features=features)


def image_rows(data: list[bytes]) -> list[dict[str, Any]]:
    return [
        {
            "index": n,
            "Figure_path": {"bytes": blob, "path": f"PMC{n}_F1.jpg"},
            "Question": f"Question {n}?",
            "Choice A": "A:yes",
            "Choice B": "B:no",
            "Choice C": "C:maybe",
            "Choice D": "D:unknown",
            "Answer": "B",
        }
        for n, blob in enumerate(data)
    ]


def test_parquet_with_images_inside(tmp_path: Path) -> None:
    folder = tmp_path / "hub" / "data"
    folder.mkdir(parents=True)
    hf_dataset(image_rows([png_bytes(10), png_bytes(20)])).to_parquet(
        folder / "test-00000-of-00001.parquet"
    )
    written = tmp_path / "written"
    dataset = load_pmcvqa(tmp_path / "hub", image_dir=written)
    assert [item.id for item in dataset.items] == ["0", "1"]
    assert [item.answer for item in dataset.items] == ["no", "no"]
    images = [Path(item.images[0]) for item in dataset.items]
    assert all(image.parent == written for image in images)
    assert [Image.open(image).getpixel((0, 0)) for image in images] == [(10, 0, 0), (20, 0, 0)]
    assert dataset.items[0].metadata["figure_path"] == "PMC0_F1.jpg"


def test_save_to_disk_split_and_a_cell_that_is_not_an_image(tmp_path: Path) -> None:
    import datasets

    good = hf_dataset(image_rows([png_bytes(30)]))
    bad = hf_dataset(image_rows([b"this is not an image at all"]))
    datasets.DatasetDict({"test": good, "train": bad}).save_to_disk(str(tmp_path / "disk"))
    dataset = load_pmcvqa(tmp_path / "disk", image_dir=tmp_path / "written")
    assert dataset.name == "pmc-vqa-test" and len(dataset) == 1
    assert Path(dataset.items[0].images[0]).is_file()
    with pytest.raises(InputError, match="row 1: the image cell does not hold PNG"):
        load_pmcvqa(tmp_path / "disk", split="train", image_dir=tmp_path / "written")
    with pytest.raises(ConfigError, match=r"no split 'dev' \(it has: test, train\)"):
        load_pmcvqa(tmp_path / "disk", split="dev")


def test_load_dataset_finds_the_loader(v1_folder: Path) -> None:
    assert len(load_dataset("pmc-vqa", v1_folder, split="test_clean")) == 1


def test_eval_run_and_report_end_to_end(v1_folder: Path, tmp_path: Path) -> None:
    # Item 1's answer is choice 2 (Focal uptake pattern): right; item 2's is choice 1: wrong.
    script = tmp_path / "replies.jsonl"
    replies = [{"json": {"answer": "2"}}, {"json": {"answer": "MRI"}}]
    script.write_text("".join(json.dumps(reply) + "\n" for reply in replies))
    run_dir = tmp_path / "run"
    runner = CliRunner()
    arguments = ["eval", "run", "--dataset", "pmc-vqa", "--data", str(v1_folder)]
    flags = ["--method", "vqa", "--backend", "scripted", "--script", str(script)]
    result = runner.invoke(app, [*arguments, *flags, "--concurrency", "1", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    results = load_results(run_dir / "results.jsonl")
    assert {k: (v.prediction, v.correct) for k, v in results.items()} == {
        "1": ("Focal uptake pattern", True),
        "2": ("MRI", False),
    }
    report = runner.invoke(app, ["eval", "report", str(run_dir)], env={"COLUMNS": "200"})
    assert report.exit_code == 0, report.output
    assert "| test | accuracy |" in report.output
    assert "| run | test |" in report.output and "| 1/2 |" in report.output  # correct / scored
