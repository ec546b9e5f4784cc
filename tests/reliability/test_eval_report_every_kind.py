"""``eval report`` never fails on a run that ``eval run`` made, whatever the dataset kind.

VQA-RAD puts yes/no and "A or B?" closed questions in one task; the report died with
``ValueError: task 'ABD/CLOSED' mixes metric types``. Cases: a run of every dataset kind the
harness loads (MultiPathQA, VQA-RAD, JSONL with a DICOM image and a task of mixed metrics,
insight cases, and the published benchmarks: PathVQA Parquet, SLAKE, PMC-VQA, MedXpertQA,
SlideBench, WSI-VQA), each made by ``eval run`` with the scripted backend and then reported
(markdown and HTML); a run made before closed questions had one metric (its results say
``yes_no`` and ``open`` in one task); a results file that cannot be read; and, with the real
VQA-RAD test split, a run over every task and one over ``--tasks ABD/CLOSED --limit 10``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from cli_support import medagent
from medagent.evals import load_results
from medagent.evals.datasets import DatasetKind
from medagent.testing import synthetic_tissue, write_pyramid_tiff

VQA_YES = {"json": {"answer": "yes"}}
VQA_LEFT = {"json": {"answer": "The left side."}}
SLIDE_ANSWER = {"json": {"reasoning": "what I see", "answer": "1"}}


def png(path: Path, seed: int) -> Path:
    pixels = (np.random.default_rng(seed).random((64, 80)) * 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return path


def multipathqa(folder: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """A two-row MultiPathQA CSV (tcga, panda) over plain images standing in for slides."""
    png(folder / "s1.png", 1)
    png(folder / "s2.png", 2)
    columns = "benchmark_name benchmark_id image_path answer options image_exists patch_exists"
    columns += " is_valid metric_type file_id prompt"
    rows = [
        ["tcga", "a", "s1.png", "1", "['LUAD', 'BRCA']", "True", "True", "True",
         "balanced_accuracy", "s1.png", "Which cancer?\n{options}"],
        ["panda", "b", "s2.png", "3", "", "True", "True", "True", "balanced_accuracy",
         "s2.png", "Give the ISUP grade."],
    ]  # fmt: skip
    with (folder / "mpqa.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns.split())
        writer.writerows(rows)
    args = ["--data", str(folder / "mpqa.csv"), "--slides", str(folder), "--method", "thumbnail"]
    return args, [SLIDE_ANSWER] * 2, ["tcga", "panda"]


def vqarad(folder: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """VQA-RAD's layout; ABD/CLOSED holds a yes/no and an "A or B?" question, as the real one."""
    (folder / "images").mkdir()
    png(folder / "images" / "a.jpg", 3)
    base = {"image_name": "a.jpg", "image_organ": "ABD", "answer_type": "CLOSED"}
    records = [
        {**base, "qid": 1, "question": "Is there free air?", "answer": "Yes"},
        {**base, "qid": 2, "question": "Is the cyst on the left or right?", "answer": "Left"},
        {**base, "qid": 3, "question": "Which organ?", "answer": "Liver", "answer_type": "OPEN"},
        {**base, "qid": 4, "question": "Is it left or right?", "answer": "Right",
         "image_organ": "HEAD"},
    ]  # fmt: skip
    (folder / "testset.json").write_text(json.dumps(records))
    args = ["--data", str(folder), "--method", "vqa"]
    return args, [VQA_YES, VQA_LEFT, VQA_YES, VQA_LEFT], ["ABD/CLOSED", "ABD/OPEN", "HEAD/CLOSED"]


def jsonl(folder: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Generic items: a real DICOM CT, a task of two metric types, a closed question."""
    png(folder / "a.png", 4)
    dicom = get_testdata_file("CT_small.dcm")
    assert dicom is not None
    items = [
        {"id": "ct", "task": "ct", "images": [str(dicom)], "question": "Is it a CT?",
         "answer": "yes", "metric": "yes_no"},
        {"id": "m1", "task": "mixed", "images": ["a.png"], "question": "Is it?",
         "answer": "yes", "metric": "yes_no"},
        {"id": "m2", "task": "mixed", "images": ["a.png"], "question": "What?",
         "answer": "a bright spot", "metric": "open"},
        {"id": "c1", "task": "side", "images": ["a.png"], "question": "Left or right?",
         "answer": "left", "metric": "closed"},
    ]  # fmt: skip
    (folder / "items.jsonl").write_text("\n".join(json.dumps(i) for i in items) + "\n")
    args = ["--data", str(folder / "items.jsonl"), "--method", "vqa"]
    replies = [VQA_YES, VQA_YES, VQA_YES, VQA_LEFT]
    return args, replies, ["ct", "mixed (open)", "mixed (yes_no)", "side"]


def insight(folder: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """One insight case; one root question, depth 1, matched by ROUGE (no judge calls)."""
    png(folder / "xray.png", 5)
    case = {
        "id": "case-1",
        "goal": "Describe the image.",
        "images": ["xray.png"],
        "insights": [{"text": "A bright spot in the middle."}],
    }
    (folder / "cases.jsonl").write_text(json.dumps(case) + "\n")
    roots = {
        "json": {
            "findings": [{"description": "a bright spot", "image": 1, "region": None}],
            "questions": ["What is the bright spot?"],
        }
    }
    answer = {
        "json": {
            "reasoning": "seen",
            "action": "answer",
            "answer": "answer: a bright spot",
            "insight": "A bright spot in the middle.",
            "confidence": 70,
        }
    }
    summary = {"json": {"summary": "One spot.", "ranking": [1], "duplicates": []}}
    args = ["--data", str(folder / "cases.jsonl"), "--method", "insight"]
    args += ["--roots", "1", "--depth", "1", "--matcher", "rouge"]
    return args, [roots, answer, summary], ["insight"]


VQA_LIVER = {"json": {"answer": "the liver"}}


def pathvqa(folder: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """The Hugging Face Parquet release: images inside the table, a closed and an open row."""
    import datasets

    png(folder / "a.png", 6)
    features = datasets.Features(
        {"image": datasets.Image(), "question": datasets.Value("string"),
         "answer": datasets.Value("string")}
    )  # fmt: skip
    rows = {
        "image": [{"bytes": (folder / "a.png").read_bytes(), "path": "a.png"}] * 2,
        "question": ["Is this malignant?", "What organ is shown?"],
        "answer": ["yes", "liver"],
    }
    (folder / "data").mkdir()
    table = datasets.Dataset.from_dict(rows, features=features)
    table.to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    args = ["--data", str(folder), "--method", "vqa", "--image-dir", str(folder / "images")]
    return args, [VQA_YES, VQA_LIVER], ["CLOSED", "OPEN"]


def slake(folder: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """SLAKE's folder: test.json beside imgs/; the Chinese question is left out."""
    (folder / "imgs" / "xmlab0").mkdir(parents=True)
    png(folder / "imgs" / "xmlab0" / "source.jpg", 7)
    base = {
        "img_id": 0,
        "img_name": "xmlab0/source.jpg",
        "location": "Abdomen",
        "modality": "CT",
        "content_type": "Organ",
        "base_type": "vqa",
        "triple": [],
    }
    records = [
        {**base, "qid": 1, "question": "Is the liver healthy?", "answer": "Yes",
         "answer_type": "CLOSED", "q_lang": "en"},
        {**base, "qid": 2, "question": "Which organ is largest?", "answer": "Liver",
         "answer_type": "OPEN", "q_lang": "en"},
        {**base, "qid": 3, "question": "哪个器官最大?", "answer": "肝脏",
         "answer_type": "OPEN", "q_lang": "zh"},
    ]  # fmt: skip
    (folder / "test.json").write_text(json.dumps(records, ensure_ascii=False))
    args = ["--data", str(folder), "--method", "vqa"]
    return args, [VQA_YES, VQA_LIVER], ["CT/CLOSED", "CT/OPEN"]


def pmcvqa(folder: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """PMC-VQA v1: test.csv (choices written "A:text") beside images/."""
    (folder / "images").mkdir()
    png(folder / "images" / "PMC1_F1.jpg", 8)
    columns = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C",
               "Choice D", "Answer_label"]  # fmt: skip
    row = ["PMC1_F1.jpg", "Which modality?", "CT", "A:CT", "B:MRI", "C:PET", "D:X-ray", "A"]
    with (folder / "test.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerow(row)
    return ["--data", str(folder), "--method", "vqa"], [{"json": {"answer": "1"}}], ["test"]


def medxpertqa(folder: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """MedXpertQA's MM/test.jsonl beside images/."""
    (folder / "MM").mkdir()
    (folder / "images").mkdir()
    png(folder / "images" / "MM-1-a.jpeg", 9)
    options = {"A": "Gout", "B": "Psoriasis", "C": "Eczema", "D": "Lupus", "E": "Scabies"}
    record = {
        "id": "MM-1", "question": "What is the diagnosis?\nAnswer Choices: (A) Gout (B) "
        "Psoriasis (C) Eczema (D) Lupus (E) Scabies", "options": options, "label": "B",
        "images": ["MM-1-a.jpeg"], "medical_task": "Diagnosis", "body_system": "Skin",
        "question_type": "Reasoning",
    }  # fmt: skip
    (folder / "MM" / "test.jsonl").write_text(json.dumps(record) + "\n")
    return ["--data", str(folder), "--method", "vqa"], [{"json": {"answer": "2"}}], ["Reasoning"]


def tcga_slide(folder: Path, case: str, seed: int) -> None:
    tissue = synthetic_tissue(1200, 900, seed=seed)
    write_pyramid_tiff(folder / f"{case}-01Z-00-DX1.tiff", tissue, mpp=0.5, levels=2)


def slidebench(folder: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """SlideBench-VQA (TCGA): one question over a slide named by its barcode."""
    tcga_slide(folder, "TCGA-A1-A0SK", 10)
    columns = ["ID", "Slide", "Tumor", "Broad Category", "Narrow Category", "Question", "A",
               "B", "C", "D", "Answer"]  # fmt: skip
    row = ["0", "TCGA-A1-A0SK-01Z-00-DX1", "BRCA", "Microscopy", "Tissue Architecture",
           "Which growth pattern?", "Solid", "Papillary", "Glandular", "Single", "A"]  # fmt: skip
    with (folder / "SlideBench-VQA (TCGA).csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerow(row)
    args = ["--data", str(folder / "SlideBench-VQA (TCGA).csv"), "--slides", str(folder)]
    return [*args, "--method", "thumbnail"], [SLIDE_ANSWER], ["Microscopy"]


def wsivqa(folder: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """WSI-VQA's WsiVQA_test.json: a close-ended and an open-ended question on one case."""
    tcga_slide(folder, "TCGA-LD-A74U", 11)
    rows = [
        {"Id": "TCGA-LD-A74U", "Question": "what is the diagnosis?",
         "Choice": ["lobular carcinoma", "ductal carcinoma"], "Answer": "lobular carcinoma"},
        {"Id": "TCGA-LD-A74U", "Question": "please predict her2?", "Answer": "2+"},
    ]  # fmt: skip
    (folder / "WsiVQA_test.json").write_text(json.dumps(rows))
    open_answer = {"json": {"reasoning": "membrane staining", "answer": "2+"}}
    args = ["--data", str(folder), "--slides", str(folder), "--method", "thumbnail"]
    return args, [SLIDE_ANSWER, open_answer], ["close", "open"]


Case = Callable[[Path], tuple[list[str], list[dict[str, Any]], list[str]]]
CASES: dict[str, Case] = {
    "multipathqa": multipathqa,
    "vqa-rad": vqarad,
    "jsonl": jsonl,
    "insight": insight,
    "pathvqa": pathvqa,
    "slake": slake,
    "pmc-vqa": pmcvqa,
    "medxpertqa": medxpertqa,
    "slidebench": slidebench,
    "wsi-vqa": wsivqa,
}


def test_every_dataset_kind_has_a_case() -> None:
    assert set(CASES) == set(get_args(DatasetKind))


def run_and_report(tmp_path: Path, kind: str, args: list[str], replies: list[Any]) -> str:
    script = tmp_path / "replies.jsonl"
    script.write_text("\n".join(json.dumps(r) for r in replies) + "\n")
    out = tmp_path / "run"
    done = medagent(
        "eval", "run", "--dataset", kind, *args, "--backend", "scripted",
        "--script", str(script), "--concurrency", "1", "--out", str(out),
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: some items failed
    assert "Traceback" not in done.stderr, done.stderr
    report = medagent("eval", "report", str(out), "--out", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stdout + report.stderr
    assert "Traceback" not in report.stderr
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")
    return report.stdout


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_run_of_every_dataset_kind_can_be_reported(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    args, replies, tasks = CASES[kind](data)
    report = run_and_report(tmp_path, kind, args, replies)
    for task in tasks:
        assert f"| {task} |" in report, report
    results = load_results(tmp_path / "run" / "results.jsonl")
    failed = {k: v.error for k, v in results.items() if v.status != "ok"}
    assert not failed, failed  # every item answered, the DICOM one included


def test_vqarad_closed_tasks_are_scored_as_one_accuracy(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    args, replies, _ = vqarad(data)
    report = run_and_report(tmp_path, "vqa-rad", args, replies)
    # "yes" to a yes question and "The left side." to "left or right?" (answer left): both right
    assert "| ABD/CLOSED | accuracy | 100.0 ± 0.0 |" in report
    assert "| HEAD/CLOSED | accuracy | 0.0 ± 0.0 |" in report  # "left" to an answer of "right"


def test_a_run_made_before_closed_questions_had_one_metric_is_reported(tmp_path: Path) -> None:
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"config": {"method": "vqa", "model": "m"}}))
    lines = [
        {"id": "1", "task": "ABD/CLOSED", "status": "ok", "config_hash": "h",
         "prediction": "yes", "reference": "yes", "metadata": {"metric": "yes_no"}},
        {"id": "2", "task": "ABD/CLOSED", "status": "ok", "config_hash": "h",
         "prediction": "left", "reference": "left", "metadata": {"metric": "open"}},
        {"id": "3", "task": "ABD/CLOSED", "status": "ok", "config_hash": "h",
         "prediction": "x", "reference": "x", "metadata": {"metric": "no-such-metric"}},
    ]  # fmt: skip
    (run / "results.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    report = medagent("eval", "report", str(run))
    assert report.returncode == 0, report.stderr
    for row in ("ABD/CLOSED (yes_no)", "ABD/CLOSED (open)", "ABD/CLOSED (accuracy)"):
        assert f"| {row} |" in report.stdout


def test_a_results_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "results.jsonl").mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    report = medagent("eval", "report", str(run))
    assert report.returncode == 2
    assert report.stderr.strip().splitlines() == [
        f"error: cannot read {run / 'results.jsonl'}: is a directory"
    ]


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("extra", "tasks"),
    [
        (["--limit", "40"], None),
        (["--tasks", "ABD/CLOSED", "--limit", "10"], {"ABD/CLOSED"}),  # tasks before the limit
    ],
    ids=["first-40", "abd-closed"],
)
def test_real_vqarad_runs_are_reported(
    shared_data: Path, tmp_path: Path, extra: list[str], tasks: set[str] | None
) -> None:
    folder = shared_data / "vqa-rad"
    if not (folder / "testset.json").is_file():
        pytest.skip(f"real-data test: {folder / 'testset.json'} is not present")
    count = int(extra[-1])
    args = ["--data", str(folder), "--method", "vqa", *extra]
    report = run_and_report(tmp_path, "vqa-rad", args, [VQA_YES] * count)
    results = load_results(tmp_path / "run" / "results.jsonl")
    assert len(results) == count
    if tasks is not None:
        assert {r.task for r in results.values()} == tasks
    assert "CLOSED | accuracy |" in report and "mixes" not in report
