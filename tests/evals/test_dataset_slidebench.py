"""SlideBench-VQA: the TCGA and BCNB CSVs as SlideChat publishes them, slides found by name."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medagent.cli import app
from medagent.errors import ConfigError, InputError
from medagent.evals import load_results
from medagent.evals.datasets import load_dataset
from medagent.evals.datasets._base import file_sha256
from medagent.evals.datasets._slidebench import load_slidebench
from medagent.testing import synthetic_tissue, write_pyramid_tiff

TCGA_COLUMNS = [
    "ID",
    "Slide",
    "Tumor",
    "Broad Category",
    "Narrow Category",
    "Question",
    "A",
    "B",
    "C",
    "D",
    "Answer",
]
BCNB_COLUMNS = ["ID", "Slide", "Task", "Question", "A", "B", "C", "D", "Answer"]
UUID = "3a1d5b2e-7c1f-4e0a-9a55-0b6f2f1f8d11"

TCGA_ROWS = [
    {
        "ID": "0",
        "Slide": "TCGA-A1-A0SK-01Z-00-DX1",
        "Tumor": "BRCA",
        "Broad Category": "Microscopy",
        "Narrow Category": "Tissue Architecture",
        "Question": "What growth pattern do the tumour cells show?",
        "A": "Solid sheets",
        "B": "Papillary fronds",
        "C": "Glandular",
        "D": "Single-file",
        "Answer": "C",
    },
    {
        "ID": "1",
        "Slide": "TCGA-A1-A0SK-01Z-00-DX1",
        "Tumor": "BRCA",
        "Broad Category": "Diagnosis",
        "Narrow Category": "Disease Classification",
        "Question": "What is the most likely diagnosis?",
        "A": "Invasive ductal carcinoma",
        "B": "Invasive lobular carcinoma",
        "C": "Mucinous carcinoma",
        "D": "Phyllodes tumour",
        "Answer": "A",
    },
    {
        "ID": "2",
        "Slide": "TCGA-05-4244-01Z-00-DX1",
        "Tumor": "LUAD",
        "Broad Category": "Clinical",
        "Narrow Category": "Prognostic Assessment",
        "Question": "Which feature suggests a worse prognosis?",
        "A": "Lepidic growth",
        "B": "Micropapillary pattern",
        "C": "Low mitotic rate",
        "D": "Small size",
        "Answer": "B",
    },
]

BCNB_ROWS = [
    {
        "ID": "0",
        "Slide": "1",
        "Task": "ER",
        "Question": "What is the estrogen receptor status of this tumour?",
        "A": "Positive",
        "B": "Negative",
        "C": "",
        "D": "",
        "Answer": "A",
    },
    {
        "ID": "1",
        "Slide": "2",
        "Task": "HER2 Expression",
        "Question": "What is the HER2 expression level?",
        "A": "0",
        "B": "1+",
        "C": "2+",
        "D": "3+",
        "Answer": "D",
    },
]


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"slide")
    return path


@pytest.fixture
def tcga(tmp_path: Path) -> tuple[Path, Path]:
    """The TCGA CSV and a slide folder holding both slides as GDC names them, in subfolders."""
    data = write_csv(tmp_path / "SlideBench-VQA (TCGA).csv", TCGA_COLUMNS, TCGA_ROWS)
    slides = tmp_path / "gdc"
    touch(slides / "brca" / f"TCGA-A1-A0SK-01Z-00-DX1.{UUID}.svs")
    touch(slides / "luad" / f"TCGA-05-4244-01Z-00-DX1.{UUID}.svs")
    return data, slides


def test_tcga_items_are_multiple_choice_by_broad_category(tcga: tuple[Path, Path]) -> None:
    data, slides = tcga
    dataset = load_slidebench(data, slide_roots=[slides])
    assert dataset.kind == "slidebench" and dataset.name == "slidebench-tcga"
    assert dataset.source_sha256 == file_sha256(data)
    assert [i.id for i in dataset.items] == ["tcga:0", "tcga:1", "tcga:2"]
    assert dataset.task_counts() == {"Microscopy": 1, "Diagnosis": 1, "Clinical": 1}
    first = dataset.items[0]
    assert first.options == ["Solid sheets", "Papillary fronds", "Glandular", "Single-file"]
    assert first.answer == "Glandular" and first.metric == "accuracy"
    assert first.question == "What growth pattern do the tumour cells show?"
    assert first.slide == str(slides / "brca" / f"TCGA-A1-A0SK-01Z-00-DX1.{UUID}.svs")
    assert first.metadata["narrow_category"] == "Tissue Architecture"
    assert first.metadata["tumor"] == "BRCA" and first.metadata["raw_answer"] == "C"
    assert dataset.items[2].answer == "Micropapillary pattern"
    assert dataset.items[2].slide == str(slides / "luad" / f"TCGA-05-4244-01Z-00-DX1.{UUID}.svs")


def test_bcnb_two_option_questions_and_jpeg_slides(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "SlideBench-VQA(BCNB).csv", BCNB_COLUMNS, BCNB_ROWS)
    wsis = tmp_path / "BCNB" / "WSIs"
    for patient in ("1", "2"):
        touch(wsis / f"{patient}.json")  # BCNB's annotation beside the slide: never the slide
        touch(wsis / f"{patient}.jpg")
    dataset = load_slidebench(data, slide_roots=[tmp_path / "BCNB"])
    assert dataset.name == "slidebench-bcnb"
    assert [(i.id, i.task) for i in dataset.items] == [
        ("bcnb:0", "ER"),
        ("bcnb:1", "HER2 Expression"),
    ]
    assert dataset.items[0].options == ["Positive", "Negative"]
    assert dataset.items[0].answer == "Positive"
    assert dataset.items[1].answer == "3+"
    assert [i.slide for i in dataset.items] == [str(wsis / "1.jpg"), str(wsis / "2.jpg")]


def test_a_barcode_matches_its_own_slide_only(tmp_path: Path) -> None:
    row = {**TCGA_ROWS[0], "Slide": "TCGA-A1-A0SK-01Z-00-DX1"}
    data = write_csv(tmp_path / "tcga.csv", TCGA_COLUMNS, [row])
    slides = tmp_path / "slides"
    touch(slides / f"TCGA-A1-A0SK-01Z-00-DX10.{UUID}.svs")  # a longer barcode: not this slide
    touch(slides / "TCGA-A1-A0SK-01Z-00-DX1.txt")  # not a slide file
    with pytest.raises(InputError, match=r"1 of 1 SlideBench TCGA items have no image file"):
        load_slidebench(data, slide_roots=[slides])
    touch(slides / "renamed" / "TCGA-A1-A0SK-01Z-00-DX1.svs")
    dataset = load_slidebench(data, slide_roots=[slides])
    assert dataset.items[0].slide == str(slides / "renamed" / "TCGA-A1-A0SK-01Z-00-DX1.svs")


def test_tasks_and_limit(tcga: tuple[Path, Path]) -> None:
    data, slides = tcga
    chosen = load_slidebench(data, slide_roots=[slides], tasks=["Clinical", "Microscopy"])
    assert [i.id for i in chosen.items] == ["tcga:0", "tcga:2"]
    assert [i.id for i in load_slidebench(data, slide_roots=[slides], limit=2).items] == [
        "tcga:0",
        "tcga:1",
    ]
    with pytest.raises(ConfigError, match=r"unknown SlideBench TCGA task\(s\) Staging; the tasks"):
        load_slidebench(data, slide_roots=[slides], tasks=["Staging"])


def test_registered_under_its_name(tcga: tuple[Path, Path]) -> None:
    data, slides = tcga
    dataset = load_dataset("slidebench", data, slide_roots=[slides], limit=1)
    assert [i.id for i in dataset.items] == ["tcga:0"]


def test_missing_slides_stop_the_load_or_are_listed(tcga: tuple[Path, Path]) -> None:
    data, slides = tcga
    (slides / "luad" / f"TCGA-05-4244-01Z-00-DX1.{UUID}.svs").unlink()
    with pytest.raises(InputError) as error:
        load_slidebench(data, slide_roots=[slides])
    message = str(error.value)
    assert (
        "\n" not in message and "TCGA-05-4244-01Z-00-DX1" in message and "--skip-missing" in message
    )
    dataset = load_slidebench(data, slide_roots=[slides], skip_missing=True)
    assert [i.id for i in dataset.items] == ["tcga:0", "tcga:1"]
    assert [(m.item_id, m.path) for m in dataset.missing] == [("tcga:2", "TCGA-05-4244-01Z-00-DX1")]


def test_slide_folders_are_required_unless_skipping(
    tcga: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = tcga
    with pytest.raises(ConfigError, match="pass --slides DIR"):
        load_slidebench(data)
    skipped = load_slidebench(data, skip_missing=True)
    assert skipped.items == [] and len(skipped.missing) == 3
    with pytest.raises(InputError, match=r"slide folder .* does not exist"):
        load_slidebench(data, slide_roots=[tmp_path / "nowhere"])


def test_a_repeated_id_is_made_unique(tmp_path: Path) -> None:
    rows = [TCGA_ROWS[0], {**TCGA_ROWS[1], "ID": "0"}]
    data = write_csv(tmp_path / "tcga.csv", TCGA_COLUMNS, rows)
    dataset = load_slidebench(data, skip_missing=True)
    assert [m.item_id for m in dataset.missing] == ["tcga:0", "tcga:0#2"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Answer": "E"}, r"row 1 \(tcga:0\): answer 'E' is neither a letter A-D nor one of"),
        ({"D": "", "Answer": "D"}, r"row 1 \(tcga:0\): the answer is D but option D is empty"),
        ({"A": "", "B": "", "C": ""}, r"a question needs at least two options"),
        ({"Slide": ""}, r"the Slide cell is empty"),
    ],
)
def test_rows_that_cannot_be_scored_are_refused(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    data = write_csv(tmp_path / "tcga.csv", TCGA_COLUMNS, [{**TCGA_ROWS[0], **change}])
    with pytest.raises(InputError, match=message):
        load_slidebench(data, skip_missing=True)


def test_an_answer_given_as_option_text_is_accepted(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "tcga.csv", TCGA_COLUMNS, [{**TCGA_ROWS[0], "Answer": "glandular"}])
    assert load_slidebench(data, skip_missing=True).missing[0].item_id == "tcga:0"
    slides = tmp_path / "s"
    touch(slides / "TCGA-A1-A0SK-01Z-00-DX1.svs")
    assert load_slidebench(data, slide_roots=[slides]).items[0].answer == "Glandular"


def test_files_that_are_not_slidebench(tmp_path: Path) -> None:
    columns = [c for c in TCGA_COLUMNS if c != "Answer"]
    rows = [{k: v for k, v in TCGA_ROWS[0].items() if k != "Answer"}]
    data = write_csv(tmp_path / "tcga.csv", columns, rows)
    with pytest.raises(InputError, match=r"not a SlideBench-VQA CSV: missing column\(s\) Answer"):
        load_slidebench(data, skip_missing=True)
    header_only = write_csv(tmp_path / "empty.csv", TCGA_COLUMNS, [])
    with pytest.raises(InputError, match="holds no questions"):
        load_slidebench(header_only, skip_missing=True)
    with pytest.raises(InputError, match="does not exist"):
        load_slidebench(tmp_path / "absent.csv", skip_missing=True)


def test_eval_run_and_report_end_to_end(tmp_path: Path) -> None:
    # Item tcga:0's answer is option 3 (Glandular): right; tcga:1's is option 1: answered 2, wrong.
    data = write_csv(tmp_path / "SlideBench-VQA-TCGA.csv", TCGA_COLUMNS, TCGA_ROWS[:2])
    slides = tmp_path / "slides"
    slides.mkdir()
    name = f"TCGA-A1-A0SK-01Z-00-DX1.{UUID}.svs"
    write_pyramid_tiff(slides / name, synthetic_tissue(1200, 800), mpp=0.5, levels=2)
    script = tmp_path / "replies.jsonl"
    replies = [
        {"json": {"reasoning": "glands", "action": "answer", "answer": "3"}},
        {"json": {"reasoning": "single cells", "action": "answer", "answer": "2"}},
    ]
    script.write_text("\n".join(json.dumps(r) for r in replies) + "\n")
    run_dir = tmp_path / "run"
    runner = CliRunner()
    arguments = ["eval", "run", "--dataset", "slidebench", "--data", str(data)]
    arguments += ["--slides", str(slides), "--method", "thumbnail", "--backend", "scripted"]
    arguments += ["--script", str(script), "--concurrency", "1", "--out", str(run_dir)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    results = load_results(run_dir / "results.jsonl")
    assert {k: (v.prediction, v.correct) for k, v in results.items()} == {
        "tcga:0": ("Glandular", True),
        "tcga:1": ("Invasive lobular carcinoma", False),
    }
    report = runner.invoke(app, ["eval", "report", str(run_dir)], env={"COLUMNS": "200"})
    assert report.exit_code == 0, report.output
    assert "| Microscopy | accuracy | 100.0" in report.output
    assert "| Diagnosis | accuracy | 0.0" in report.output


def test_a_hugging_face_copy_reads_like_the_csv(tcga: tuple[Path, Path], tmp_path: Path) -> None:
    import datasets

    data, slides = tcga
    # As `datasets` reads the CSV: the ID column becomes integers.
    release = datasets.load_dataset("csv", data_files={"test": str(data)})
    release.save_to_disk(str(tmp_path / "hf" / "dict"))
    release["test"].save_to_disk(str(tmp_path / "hf" / "one"))
    release["test"].to_parquet(str(tmp_path / "hf" / "test.parquet"))
    want = load_slidebench(data, slide_roots=[slides])
    for copy in ("one", "test.parquet"):
        got = load_slidebench(tmp_path / "hf" / copy, slide_roots=[slides])
        assert [i.model_dump() for i in got.items] == [i.model_dump() for i in want.items]


def test_a_hugging_face_dict_without_split_says_how_to_choose(
    tcga: tuple[Path, Path], tmp_path: Path
) -> None:
    import datasets

    data, slides = tcga
    datasets.load_dataset("csv", data_files={"test": str(data)}).save_to_disk(str(tmp_path / "d"))
    # SlideBench takes no --split: the message also names the split's own folder.
    with pytest.raises(ConfigError, match="give the split's own folder or file as --data"):
        load_slidebench(tmp_path / "d", slide_roots=[slides])
    assert len(load_slidebench(tmp_path / "d" / "test", slide_roots=[slides]).items) == len(
        load_slidebench(data, slide_roots=[slides]).items
    )
