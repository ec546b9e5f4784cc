"""WSI-VQA: the authors' WsiVQA_<split>.json files, each case's diagnostic slide found by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medagent.cli import app
from medagent.errors import ConfigError, InputError
from medagent.evals import load_results
from medagent.evals.datasets import load_dataset
from medagent.evals.datasets._base import file_sha256
from medagent.evals.datasets._wsivqa import load_wsivqa
from medagent.testing import synthetic_tissue, write_pyramid_tiff

UUID = "0b6f2f1f-8d11-4e0a-9a55-3a1d5b2e7c1f"

# As in WsiVQA_test.json: close-ended rows carry Choice, open-ended ones do not.
TEST_ROWS: list[dict[str, Any]] = [
    {
        "Id": "TCGA-LD-A74U",
        "Question": "what is the patient's diagnosis?",
        "Choice": [
            "ductal carcinoma in situ",
            "invasive ductal carcinoma",
            "invasive lobular carcinoma",
            "metastatic carcinoma",
        ],
        "Answer": "invasive lobular carcinoma",
    },
    {
        "Id": "TCGA-LD-A74U",
        "Question": "please predict her2?",
        "Answer": "2+",
    },
    {
        "Id": "TCGA-AR-A1AI",
        "Question": "what is the result of vital_status in the slide?",
        "Answer": "Alive",
    },
    {
        "Id": "TCGA-AR-A1AI",
        "Question": "what is the result of vital_status in the slide?",
        "Answer": "Alive",
    },
]


def write_json(path: Path, rows: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"slide")
    return path


@pytest.fixture
def captions(tmp_path: Path) -> Path:
    """The authors' ``dataset/WSI_captions`` folder with all three splits."""
    folder = tmp_path / "WSI_captions"
    write_json(folder / "WsiVQA_test.json", TEST_ROWS)
    write_json(folder / "WsiVQA_val.json", TEST_ROWS[1:2])
    write_json(folder / "WsiVQA_train.json", TEST_ROWS[2:3])
    return folder


@pytest.fixture
def slides(tmp_path: Path) -> Path:
    """TCGA-BRCA slides as GDC names them: a tissue slide, DX2 and DX1 for one case."""
    root = tmp_path / "slides"
    touch(root / "a" / f"TCGA-LD-A74U-01A-01-TS1.{UUID}.svs")
    touch(root / "a" / f"TCGA-LD-A74U-01Z-00-DX2.{UUID}.svs")
    touch(root / "b" / f"TCGA-LD-A74U-01Z-00-DX1.{UUID}.svs")
    touch(root / "b" / f"TCGA-AR-A1AI-01Z-00-DX1.{UUID}.svs")
    return root


def test_close_and_open_questions_of_the_test_split(captions: Path, slides: Path) -> None:
    dataset = load_wsivqa(captions, slide_roots=[slides])
    assert dataset.kind == "wsi-vqa" and dataset.name == "wsi-vqa-test"
    assert dataset.source_path == captions / "WsiVQA_test.json"
    assert dataset.source_sha256 == file_sha256(captions / "WsiVQA_test.json")
    assert [i.id for i in dataset.items] == [
        "TCGA-LD-A74U:what is the patient's diagnosis?",
        "TCGA-LD-A74U:please predict her2?",
        "TCGA-AR-A1AI:what is the result of vital_status in the slide?",
        "TCGA-AR-A1AI:what is the result of vital_status in the slide?#2",
    ]
    close, her2 = dataset.items[0], dataset.items[1]
    assert (close.task, close.metric, close.answer) == (
        "close",
        "accuracy",
        "invasive lobular carcinoma",
    )
    assert close.options == TEST_ROWS[0]["Choice"]
    assert (her2.task, her2.metric, her2.answer, her2.options) == ("open", "open_bleu", "2+", None)
    assert her2.question == "please predict her2?" and her2.metadata["case_id"] == "TCGA-LD-A74U"
    # The case's DX1 slide, though a tissue slide and DX2 sort before it.
    assert close.slide == str(slides / "b" / f"TCGA-LD-A74U-01Z-00-DX1.{UUID}.svs")
    vital = dataset.items[2]
    assert (vital.answer, vital.metadata["raw_answer"]) == ("alive", "Alive")
    assert dataset.items[2].slide == str(slides / "b" / f"TCGA-AR-A1AI-01Z-00-DX1.{UUID}.svs")


def test_another_diagnostic_slide_but_never_a_tissue_slide(tmp_path: Path) -> None:
    data = write_json(tmp_path / "WsiVQA_test.json", TEST_ROWS[:3])
    root = tmp_path / "slides"
    touch(root / f"TCGA-LD-A74U-01Z-00-DX2.{UUID}.svs")
    touch(root / f"TCGA-AR-A1AI-01A-01-TS1.{UUID}.svs")
    dataset = load_wsivqa(data, slide_roots=[root], skip_missing=True)
    assert [i.slide for i in dataset.items] == [
        str(root / f"TCGA-LD-A74U-01Z-00-DX2.{UUID}.svs")
    ] * 2
    assert [(m.item_id, m.path) for m in dataset.missing] == [
        ("TCGA-AR-A1AI:what is the result of vital_status in the slide?", "TCGA-AR-A1AI")
    ]
    touch(root / "TCGA-AR-A1AI.tiff")  # a slide renamed to its case
    assert load_wsivqa(data, slide_roots=[root]).items[2].slide == str(root / "TCGA-AR-A1AI.tiff")


def test_splits_one_file_and_the_authors_repository(captions: Path, tmp_path: Path) -> None:
    val = load_wsivqa(captions, split="val", skip_missing=True)
    assert val.name == "wsi-vqa-val" and [m.item_id for m in val.missing] == [
        "TCGA-LD-A74U:please predict her2?"
    ]
    with pytest.raises(ConfigError, match=r"has no split 'dev' \(it has: test, train, val\)"):
        load_wsivqa(captions, split="dev", skip_missing=True)
    single = load_wsivqa(captions / "WsiVQA_train.json", split="test", skip_missing=True)
    assert single.name == "wsi-vqa-train" and len(single.missing) == 1
    repository = tmp_path / "WSI-VQA"
    write_json(repository / "dataset" / "WSI_captions" / "WsiVQA_test.json", TEST_ROWS[:1])
    assert len(load_wsivqa(repository, skip_missing=True).missing) == 1
    assert len(load_wsivqa(repository / "dataset", skip_missing=True).missing) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"holds no WsiVQA_<split>\.json files"):
        load_wsivqa(tmp_path / "empty", skip_missing=True)


def test_tasks_limit_and_registration(captions: Path, slides: Path) -> None:
    open_only = load_wsivqa(captions, slide_roots=[slides], tasks=["open"])
    assert [i.task for i in open_only.items] == ["open", "open", "open"]
    assert [i.id for i in load_wsivqa(captions, slide_roots=[slides], limit=1).items] == [
        "TCGA-LD-A74U:what is the patient's diagnosis?"
    ]
    with pytest.raises(ConfigError, match=r"unknown WSI-VQA task\(s\) closed; the tasks are close"):
        load_wsivqa(captions, slide_roots=[slides], tasks=["closed"])
    registered = load_dataset("wsi-vqa", captions, split="val", slide_roots=[slides])
    assert [i.id for i in registered.items] == ["TCGA-LD-A74U:please predict her2?"]


def test_missing_slides_stop_the_load_or_are_listed(captions: Path, tmp_path: Path) -> None:
    root = tmp_path / "only-one"
    touch(root / f"TCGA-LD-A74U-01Z-00-DX1.{UUID}.svs")
    with pytest.raises(InputError) as error:
        load_wsivqa(captions, slide_roots=[root])
    message = str(error.value)
    assert "\n" not in message and "2 of 4 WSI-VQA items" in message and "TCGA-AR-A1AI" in message
    dataset = load_wsivqa(captions, slide_roots=[root], skip_missing=True)
    assert len(dataset.items) == 2 and len(dataset.missing) == 2
    with pytest.raises(ConfigError, match="pass --slides DIR"):
        load_wsivqa(captions)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"Id": "TCGA-LD-A74U", "Answer": "Alive"}, r"row 1: Question is missing"),
        ({"Id": "TCGA-LD-A74U", "Question": "q?", "Answer": ""}, r"Answer is not text \(''\)"),
        ({"Id": 7, "Question": "q?", "Answer": "x"}, r"row 1: Id is"),
        (
            {"Id": "TCGA-LD-A74U", "Question": "q?", "Choice": "a, b", "Answer": "a"},
            r"Choice must be a list of at least two texts",
        ),
        (
            {"Id": "TCGA-LD-A74U", "Question": "q?", "Choice": ["a", "b"], "Answer": "c"},
            r"answer 'c' is not one of the choices",
        ),
    ],
)
def test_rows_not_in_the_published_layout_are_refused(
    tmp_path: Path, row: dict[str, Any], message: str
) -> None:
    data = write_json(tmp_path / "WsiVQA_test.json", [row])
    with pytest.raises(InputError, match=message):
        load_wsivqa(data, skip_missing=True)


def test_answers_match_choices_loosely_and_numbers_are_text(tmp_path: Path) -> None:
    rows = [
        {"Id": "TCGA-LD-A74U", "Question": "grade?", "Choice": ["Low", "High"], "Answer": "high"},
        {"Id": "TCGA-LD-A74U", "Question": "survival time?", "Answer": 1881},
    ]
    data = write_json(tmp_path / "WsiVQA_test.json", rows)
    root = touch(tmp_path / "s" / "TCGA-LD-A74U-01Z-00-DX1.svs").parent
    dataset = load_wsivqa(data, slide_roots=[root])
    assert [i.answer for i in dataset.items] == ["High", "1881"]


def test_files_that_are_not_wsivqa(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="should hold a JSON list of objects"):
        load_wsivqa(write_json(tmp_path / "WsiVQA_test.json", {"Id": "x"}), skip_missing=True)
    broken = tmp_path / "broken" / "WsiVQA_test.json"
    broken.parent.mkdir()
    broken.write_text("[{", encoding="utf-8")
    with pytest.raises(InputError, match="is not valid JSON"):
        load_wsivqa(broken, skip_missing=True)
    with pytest.raises(InputError, match="does not exist"):
        load_wsivqa(tmp_path / "nowhere", skip_missing=True)


def test_eval_run_and_report_end_to_end(tmp_path: Path) -> None:
    # The close question is answered with option 3 (right), the open one with the reference:
    # corpus BLEU-4 100 (an answer shorter than four words has no 4-grams: BLEU-4 0 always).
    histology = "infiltrating ductal carcinoma, lobular features"
    rows = [TEST_ROWS[0], {"Id": "TCGA-LD-A74U", "Question": "histology?", "Answer": histology}]
    write_json(tmp_path / "captions" / "WsiVQA_test.json", rows)
    slides = tmp_path / "slides"
    slides.mkdir()
    name = f"TCGA-LD-A74U-01Z-00-DX1.{UUID}.svs"
    write_pyramid_tiff(slides / name, synthetic_tissue(1200, 800), mpp=0.5, levels=2)
    script = tmp_path / "replies.jsonl"
    replies = [
        {"json": {"reasoning": "discohesive cells", "action": "answer", "answer": "3"}},
        {"json": {"reasoning": "cords of cells", "action": "answer", "answer": histology}},
    ]
    script.write_text("\n".join(json.dumps(r) for r in replies) + "\n")
    run_dir = tmp_path / "run"
    runner = CliRunner()
    arguments = ["eval", "run", "--dataset", "wsi-vqa", "--data", str(tmp_path / "captions")]
    arguments += ["--slides", str(slides), "--method", "thumbnail", "--backend", "scripted"]
    arguments += ["--script", str(script), "--concurrency", "1", "--out", str(run_dir)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    results = load_results(run_dir / "results.jsonl")
    assert {k: (v.prediction, v.correct) for k, v in results.items()} == {
        "TCGA-LD-A74U:what is the patient's diagnosis?": ("invasive lobular carcinoma", True),
        "TCGA-LD-A74U:histology?": (histology, True),
    }
    report = runner.invoke(app, ["eval", "report", str(run_dir)], env={"COLUMNS": "200"})
    assert report.exit_code == 0, report.output
    assert "| close | accuracy | 100.0" in report.output
    assert "| open | bleu | 100.0" in report.output


def test_a_hugging_face_copy_reads_like_the_json(tmp_path: Path, slides: Path) -> None:
    import datasets

    # Rows without Choice get Choice = None in an Arrow table, as the open-ended ones have none.
    release = datasets.DatasetDict(
        {
            "test": datasets.Dataset.from_list(TEST_ROWS),
            "val": datasets.Dataset.from_list(TEST_ROWS[1:2]),
        }
    )
    release.save_to_disk(str(tmp_path / "hf"))
    (tmp_path / "hub" / "data").mkdir(parents=True)
    release["test"].to_parquet(str(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet"))
    want = load_wsivqa(write_json(tmp_path / "WsiVQA_test.json", TEST_ROWS), slide_roots=[slides])
    for copy in (tmp_path / "hf", tmp_path / "hub"):
        got = load_wsivqa(copy, slide_roots=[slides])
        assert [i.model_dump() for i in got.items] == [i.model_dump() for i in want.items]
    val = load_wsivqa(tmp_path / "hf", split="val", slide_roots=[slides])
    assert [i.task for i in val.items] == ["open"]
    with pytest.raises(ConfigError, match="no split 'train'"):
        load_wsivqa(tmp_path / "hf", split="train", slide_roots=[slides])
