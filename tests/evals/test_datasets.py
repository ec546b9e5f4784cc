"""Dataset loaders: real MultiPathQA / VQA-RAD files from ../shared/data, small generated ones."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from medagent.agents.base import normalize_answer
from medagent.errors import ConfigError, InputError
from medagent.evals.datasets import (
    MULTIPATHQA_TASKS,
    Dataset,
    InsightCase,
    load_dataset,
    load_insight,
    load_jsonl,
    load_multipathqa,
    load_vqarad,
)

# --- MultiPathQA, real CSV -----------------------------------------------------------------

TASK_COUNTS = {
    "gtex": 191,
    "tcga": 221,
    "panda": 197,
    "tcga_slidebench": 197,
    "tcga_expert_vqa": 128,
}
OPTION_COUNTS = {"gtex": 20, "tcga": 30, "panda": None, "tcga_slidebench": 4, "tcga_expert_vqa": 4}


@pytest.fixture(scope="module")
def mpqa_csv(shared_data: Path) -> Path:
    return shared_data / "multipathqa" / "MultiPathQA.csv"


@pytest.fixture(scope="module")
def mpqa_rows(mpqa_csv: Path) -> list[dict[str, str]]:
    with mpqa_csv.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def fake_slides(tmp_path_factory: pytest.TempPathFactory, mpqa_rows: list[dict[str, str]]) -> Path:
    """Zero-byte files named as the CSV's image_path: enough for path resolution."""
    root = tmp_path_factory.mktemp("slides")
    for row in mpqa_rows:
        (root / row["image_path"]).touch()
    return root


@pytest.fixture(scope="module")
def mpqa(mpqa_csv: Path, fake_slides: Path) -> Dataset:
    return load_multipathqa(mpqa_csv, slide_roots=[fake_slides])


def by_id(dataset: Dataset) -> dict[str, Any]:
    return {item.id: item for item in dataset.items}


@pytest.mark.realdata
def test_multipathqa_has_934_items_in_five_tasks(mpqa: Dataset, mpqa_csv: Path) -> None:
    assert len(mpqa) == 934
    assert mpqa.task_counts() == TASK_COUNTS
    assert mpqa.missing == [] and mpqa.dropped_invalid == 0
    assert len({item.id for item in mpqa.items}) == 934
    assert mpqa.source_sha256 == hashlib.sha256(mpqa_csv.read_bytes()).hexdigest()
    assert mpqa.kind == "multipathqa" and mpqa.source_path.is_absolute()
    assert all(item.slide and Path(item.slide).is_file() for item in mpqa.items)


@pytest.mark.realdata
@pytest.mark.parametrize("task", MULTIPATHQA_TASKS)
def test_multipathqa_options_and_metric_per_task(mpqa: Dataset, task: str) -> None:
    items = [item for item in mpqa.items if item.task == task]
    expected = OPTION_COUNTS[task]
    for item in items:
        if expected is None:
            assert item.options is None
        else:
            assert isinstance(item.options, list) and len(item.options) == expected
            assert item.answer in item.options
    metric = "accuracy" if task in ("tcga_slidebench", "tcga_expert_vqa") else "balanced_accuracy"
    assert {item.metric for item in items} == {metric}


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("item_id", "raw", "reference"),
    [
        ("gtex:GTEX-OIZH-0626", "Esophagus", "Esophagus"),
        ("tcga:TCGA-02-0266-01Z-00-DX1", "1", "Glioblastoma multiforme"),
        ("panda:9108", "1", "1"),
        ("tcga_slidebench:2270", "3", "4"),  # options ['2', '3', '4', '5']: option 3 is "4"
        ("tcga_expert_vqa:0", "1", "Low"),
    ],
)
def test_multipathqa_reference_is_the_option_text(
    mpqa: Dataset, item_id: str, raw: str, reference: str
) -> None:
    item = by_id(mpqa)[item_id]
    assert item.answer == reference
    assert item.metadata["raw_answer"] == raw


@pytest.mark.realdata
def test_multipathqa_references_match_normalized_predictions(mpqa: Dataset) -> None:
    # A model giving the right answer in the requested format must score as correct.
    for item in mpqa.items:
        raw = item.metadata["raw_answer"]
        if item.task == "panda":
            assert normalize_answer(f'{{"isup_grade": {raw}}}') == item.answer
        else:
            assert normalize_answer(raw, item.options) == item.answer
            if item.task != "gtex":
                assert normalize_answer(f'{{"answer": {raw}}}', item.options) == item.answer


@pytest.mark.realdata
def test_multipathqa_prompts_are_filled(mpqa: Dataset) -> None:
    for item in mpqa.items:
        assert "{options}" not in item.question and "{{" not in item.question
        assert item.question == item.question.strip()
    gtex = by_id(mpqa)["gtex:GTEX-OIZH-0626"]
    assert "options:\n1. Esophagus\n2. Artery\n" in gtex.question
    assert '{"answer": YOUR_ANSWER}' in gtex.question
    panda = by_id(mpqa)["panda:9108"]
    assert '"isup_grade": ISUP_GRADE_NUMBER' in panda.question and "Options:" not in panda.question
    bench = by_id(mpqa)["tcga_slidebench:2270"]
    assert bench.question.endswith("prostate adenocarcinoma?\n\nOptions:\n1. 2\n2. 3\n3. 4\n4. 5")


@pytest.mark.realdata
def test_multipathqa_tasks_and_limit_filter(mpqa_csv: Path, fake_slides: Path) -> None:
    panda = load_multipathqa(mpqa_csv, slide_roots=[fake_slides], tasks=["panda"])
    assert panda.task_counts() == {"panda": 197}
    first = load_multipathqa(mpqa_csv, slide_roots=[fake_slides], tasks=["tcga", "gtex"], limit=5)
    assert [item.id for item in first.items] == [
        f"{row['benchmark_name']}:{row['benchmark_id']}"
        for row in csv.DictReader(mpqa_csv.open(newline="", encoding="utf-8"))
        if row["benchmark_name"] in ("tcga", "gtex")
    ][:5]
    assert len(load_multipathqa(mpqa_csv, slide_roots=[fake_slides], limit=0)) == 0
    with pytest.raises(ConfigError, match=r"unknown MultiPathQA task.*tcgaa.*the tasks are gtex"):
        load_multipathqa(mpqa_csv, slide_roots=[fake_slides], tasks=["tcgaa"])


@pytest.mark.realdata
def test_multipathqa_missing_slides_stop_the_load(mpqa_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_multipathqa(mpqa_csv, slide_roots=[tmp_path])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("934 of 934 MultiPathQA items have no image file under ")
    assert "GTEX-OIZH-0626.tiff, " in message and ", ..." in message
    assert "--slides DIR" in message and "--skip-missing" in message
    with pytest.raises(InputError, match=r"^3 of 3 MultiPathQA"):
        load_multipathqa(mpqa_csv, slide_roots=[tmp_path], limit=3)


@pytest.mark.realdata
def test_multipathqa_skip_missing_lists_what_was_left_out(
    mpqa_csv: Path, mpqa_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    for row in mpqa_rows:
        if row["benchmark_name"] == "gtex":
            (tmp_path / row["image_path"]).touch()
    dataset = load_multipathqa(mpqa_csv, slide_roots=[tmp_path], skip_missing=True)
    assert dataset.task_counts() == {"gtex": 191}
    assert len(dataset.missing) == 934 - 191
    first = dataset.missing[0]
    assert first.item_id == "tcga:TCGA-02-0266-01Z-00-DX1"
    assert first.path == "TCGA-02-0266-01Z-00-DX1.svs" and first.searched == [str(tmp_path)]
    limited = load_multipathqa(mpqa_csv, slide_roots=[tmp_path], skip_missing=True, limit=3)
    assert [item.task for item in limited.items] == ["gtex"] * 3


@pytest.mark.realdata
def test_multipathqa_without_slide_folders(mpqa_csv: Path) -> None:
    with pytest.raises(ConfigError, match=r"--slides DIR.*--skip-missing"):
        load_multipathqa(mpqa_csv)
    dataset = load_multipathqa(mpqa_csv, skip_missing=True)
    assert len(dataset) == 0 and len(dataset.missing) == 934


# --- MultiPathQA, generated CSVs ---------------------------------------------------------------


def write_mpqa(path: Path, rows: list[dict[str, str]]) -> Path:
    defaults = {
        "benchmark_name": "tcga_expert_vqa",
        "benchmark_id": "0",
        "image_path": "a.svs",
        "answer": "1",
        "options": "['Low', 'High', 'Medium', 'Cannot determine']",
        "image_exists": "True",
        "patch_exists": "True",
        "is_valid": "True",
        "metric_type": "accuracy",
        "file_id": "id-a",
        "prompt": "How active?",
    }
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(defaults))
        writer.writeheader()
        for row in rows:
            writer.writerow({**defaults, **row})
    return path


def test_slides_are_found_by_path_name_or_file_id(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    (slides / "sub").mkdir(parents=True)
    (slides / "sub" / "a.svs").touch()
    (slides / "0d5c-uuid").mkdir()
    (slides / "0d5c-uuid" / "b.svs").touch()  # the GDC download layout: <file_id>/<name>
    (slides / "nested").mkdir()
    (slides / "nested" / "id-c.ndpi").touch()
    table = write_mpqa(
        tmp_path / "q.csv",
        [
            {"benchmark_id": "1", "image_path": "sub/a.svs"},
            {"benchmark_id": "2", "image_path": "b.svs", "file_id": "0d5c-uuid"},
            {"benchmark_id": "3", "image_path": "c.svs", "file_id": "id-c.svs"},
        ],
    )
    slide = {item.id: item.slide for item in load_multipathqa(table, slide_roots=[slides]).items}
    assert slide == {
        "tcga_expert_vqa:1": str(slides / "sub" / "a.svs"),
        "tcga_expert_vqa:2": str(slides / "0d5c-uuid" / "b.svs"),
        "tcga_expert_vqa:3": str(slides / "nested" / "id-c.ndpi"),
    }
    with pytest.raises(InputError, match=r"slide folder .*nowhere does not exist"):
        load_multipathqa(table, slide_roots=[tmp_path / "nowhere"])


def test_invalid_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "a.svs").touch()
    table = write_mpqa(
        tmp_path / "q.csv", [{"benchmark_id": "1"}, {"benchmark_id": "2", "is_valid": "False"}]
    )
    dataset = load_multipathqa(table, slide_roots=[tmp_path])
    assert [item.id for item in dataset.items] == ["tcga_expert_vqa:1"]
    assert dataset.dropped_invalid == 1


def test_duplicate_ids_get_a_suffix(tmp_path: Path) -> None:
    (tmp_path / "a.svs").touch()
    table = write_mpqa(tmp_path / "q.csv", [{"answer": "1"}, {"answer": "2"}])
    items = load_multipathqa(table, slide_roots=[tmp_path]).items
    assert [item.id for item in items] == ["tcga_expert_vqa:0", "tcga_expert_vqa:0#2"]
    assert items[1].metadata["id_renamed_from"] == "tcga_expert_vqa:0"
    assert [item.answer for item in items] == ["Low", "High"]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"options": "__import__('os').getcwd()"}, "row 1 .*options are not a Python list"),
        ({"options": "[1, 2]"}, "row 1 .*options must be a list of strings"),
        ({"answer": "5"}, "row 1 .*answer '5' is not an option number 1-4"),
        ({"benchmark_name": "gtex", "answer": "Lung"}, "answer 'Lung' is not one of the options"),
        ({"benchmark_name": "panda", "options": "", "answer": "7"}, "ISUP grade 0-5"),
        ({"metric_type": "f1"}, "unknown metric_type 'f1'"),
        ({"is_valid": "maybe"}, "is_valid must be True or False"),
    ],
)
def test_malformed_rows_name_the_row(tmp_path: Path, row: dict[str, str], error: str) -> None:
    (tmp_path / "a.svs").touch()
    table = write_mpqa(tmp_path / "q.csv", [row])
    with pytest.raises(InputError, match=error):
        load_multipathqa(table, slide_roots=[tmp_path])


def test_gtex_label_matches_an_option_ignoring_case(tmp_path: Path) -> None:
    (tmp_path / "a.svs").touch()
    row = {
        "benchmark_name": "gtex",
        "answer": "small intestine",
        "options": "['Lung', 'Small Intestine']",
        "prompt": 'Which organ?\n{options}\n{{"answer": X}}',
    }
    table = write_mpqa(tmp_path / "q.csv", [row])
    (item,) = load_multipathqa(table, slide_roots=[tmp_path]).items
    assert item.answer == "Small Intestine"
    assert item.question == 'Which organ?\n1. Lung\n2. Small Intestine\n{"answer": X}'


# --- VQA-RAD ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vqarad_dir(shared_data: Path) -> Path:
    return shared_data / "vqa-rad"


@pytest.mark.realdata
@pytest.mark.parametrize(("split", "count"), [("all", 2248), ("train", 1798), ("test", 450)])
def test_vqarad_split_sizes(vqarad_dir: Path, split: str, count: int) -> None:
    dataset = load_vqarad(vqarad_dir, split=split)  # type: ignore[arg-type]
    assert len(dataset) == count and dataset.missing == []
    assert dataset.name == f"vqa-rad-{split}"
    assert len({item.id for item in dataset.items}) == count
    assert all(Path(item.images[0]).is_file() for item in dataset.items)


@pytest.mark.realdata
def test_vqarad_splits_partition_all_by_qid(vqarad_dir: Path) -> None:
    every = by_id(load_vqarad(vqarad_dir, split="all"))
    train = by_id(load_vqarad(vqarad_dir, split="train"))
    test = by_id(load_vqarad(vqarad_dir, split="test"))
    assert not set(train) & set(test)
    assert set(train) | set(test) == set(every)
    assert all(every[key] == item for key, item in {**train, **test}.items())


@pytest.mark.realdata
def test_vqarad_metrics_and_tasks(vqarad_dir: Path) -> None:
    dataset = load_vqarad(vqarad_dir, split="all")
    assert set(dataset.task_counts()) == {
        f"{organ}/{kind}" for organ in ("HEAD", "CHEST", "ABD") for kind in ("CLOSED", "OPEN")
    }
    for item in dataset.items:
        closed = item.task.endswith("/CLOSED")
        assert item.metric == ("closed" if closed else "open")  # one metric per task
        assert item.answer == normalize_answer(item.metadata["raw_answer"])
    assert Counter(item.metric for item in dataset.items) == {"closed": 1299, "open": 949}
    first = by_id(dataset)["0"]
    assert (first.task, first.answer, first.metric) == ("HEAD/CLOSED", "yes", "closed")
    assert first.metadata["raw_answer"] == "Yes"
    chest = load_vqarad(vqarad_dir, split="all", tasks=["CHEST/OPEN"], limit=4)
    assert chest.task_counts() == {"CHEST/OPEN": 4}


def test_vqarad_missing_image(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "here.jpg").touch()
    record = {"image_organ": "CHEST", "question": "Is it?", "answer": "No", "answer_type": "OPEN"}
    records = [
        {**record, "qid": 1, "image_name": "here.jpg"},
        {**record, "qid": "2", "image_name": "gone.jpg"},
    ]
    (tmp_path / "testset.json").write_text(json.dumps(records))
    with pytest.raises(InputError, match=r"^1 of 2 VQA-RAD items .*\(gone\.jpg\).*--skip-missing"):
        load_vqarad(tmp_path)
    dataset = load_vqarad(tmp_path, skip_missing=True)
    assert [item.id for item in dataset.items] == ["1"]
    assert [(m.item_id, m.path) for m in dataset.missing] == [("2", "gone.jpg")]
    with pytest.raises(ConfigError, match="split 'dev'"):
        load_vqarad(tmp_path, split="dev")  # type: ignore[arg-type]


# --- generic JSONL ---------------------------------------------------------------------------


def write_lines(path: Path, *objects: object) -> Path:
    lines = [o if isinstance(o, str) else json.dumps(o) for o in objects]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = {"id": "a", "task": "t", "question": "Which?", "images": ["img/x.png"]}


def test_jsonl_items_with_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x.png").touch()
    (tmp_path / "s.svs").touch()
    path = write_lines(
        tmp_path / "items.jsonl",
        {**GOOD, "options": ["Lung", "Liver"], "answer": "2", "metadata": {"k": 1}},
        "",
        {"id": "b", "task": "u", "question": "Free?", "slide": "s.svs", "answer": " Yes. ",
         "metric": "yes_no"},
        {"id": "c", "task": "u", "question": "No answer", "images": [str(tmp_path / "img/x.png")]},
        {"id": "d", "task": "u", "question": "Size?", "options": ["5 cm", "2 cm"],
         "answer": "2 cm"},
    )  # fmt: skip
    dataset = load_jsonl(path)
    a, b, c, d = dataset.items
    assert d.answer == "2 cm"  # the option's text, not option number 2
    assert a.images == [str(tmp_path / "img" / "x.png")]
    assert (a.answer, a.metadata) == ("Liver", {"k": 1, "raw_answer": "2"})
    assert (b.slide, b.answer, b.metric) == (str(tmp_path / "s.svs"), "yes", "yes_no")
    assert c.answer is None and c.images == a.images
    assert dataset.name == "items" and dataset.kind == "jsonl"
    assert load_jsonl(path, tasks=["u"], limit=1).task_counts() == {"u": 1}
    with pytest.raises(ConfigError, match=r"unknown items\.jsonl task\(s\) v; the tasks are t, u"):
        load_jsonl(path, tasks=["v"])


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ('{"id": "b", "task": ', r"^items\.jsonl line 2: not JSON \(.*column"),
        ('["a list"]', "line 2: expected a JSON object, got list"),
        ({"id": "b", "task": "t"}, "line 2: question: Field required"),
        ({**GOOD, "id": "b", "anwser": "x"}, "line 2: unknown field.* anwser .*metadata"),
        ({**GOOD, "id": "b", "metric": "f1"}, "line 2: metric: Input should be"),
        ({**GOOD, "id": "b", "answer": 2}, "line 2: answer: Input should be a valid string"),
        ({**GOOD, "id": "b", "options": ["x", "y"], "answer": "z"}, "line 2: .*not one of the"),
        (GOOD, "line 2: id 'a' repeats line 1"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, bad: object, error: str) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x.png").touch()
    path = write_lines(tmp_path / "items.jsonl", GOOD, bad)
    with pytest.raises(InputError, match=error) as caught:
        load_jsonl(path)
    assert "\n" not in str(caught.value)


def test_jsonl_missing_image(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "items.jsonl", GOOD)
    with pytest.raises(InputError, match=r"1 of 1 items.jsonl items have no image file"):
        load_jsonl(path)
    dataset = load_jsonl(path, skip_missing=True)
    assert dataset.items == [] and dataset.missing[0].path == str(tmp_path / "img" / "x.png")


# --- insight cases ---------------------------------------------------------------------------

CASE = {
    "id": "case-1",
    "goal": "Characterize the tumour",
    "images": ["wsi.png"],
    "insights": [
        {"text": "Dense lymphocytes at the front", "question": "Immune cells?", "difficulty": 2},
        {"text": "High mitotic rate", "evidence": "Many mitoses per field"},
    ],
}


@pytest.mark.parametrize("layout", ["list", "cases", "jsonl"])
def test_insight_cases_become_items(tmp_path: Path, layout: str) -> None:
    (tmp_path / "wsi.png").touch()
    if layout == "jsonl":
        path = write_lines(tmp_path / "cases.jsonl", CASE)
    else:
        path = tmp_path / "cases.json"
        path.write_text(json.dumps([CASE] if layout == "list" else {"cases": [CASE]}))
    (item,) = load_insight(path).items
    assert (item.id, item.task, item.metric) == ("case-1", "insight", "insight")
    assert item.question == "Characterize the tumour"
    assert item.images == [str(tmp_path / "wsi.png")]
    insights = item.metadata["insights"]
    assert insights[0] == {
        "text": "Dense lymphocytes at the front",
        "question": "Immune cells?",
        "evidence": None,
        "difficulty": "2",
    }
    assert InsightCase.model_validate({**CASE, "insights": insights}).insights[1].evidence


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ({**CASE, "insights": []}, "cases.json case 1: insights: List should have at least 1"),
        ({**CASE, "notes": "x"}, "case 1: notes: Extra inputs are not permitted"),
        ({**CASE, "insights": [{"question": "?"}]}, r"case 1: insights\.0\.text: Field required"),
    ],
)
def test_insight_errors_name_the_case(tmp_path: Path, case: object, error: str) -> None:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps([case]))
    with pytest.raises(InputError, match=error):
        load_insight(path)


# --- dispatcher ------------------------------------------------------------------------------


def test_load_dataset_dispatches_and_checks_options(tmp_path: Path) -> None:
    (tmp_path / "wsi.png").touch()
    path = tmp_path / "cases.json"
    path.write_text(json.dumps([CASE]))
    assert load_dataset("insight", path, limit=1).kind == "insight"
    with pytest.raises(ConfigError, match="unknown dataset kind 'csv'; use one of multipathqa"):
        load_dataset("csv", path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'insight' takes no option.* split; it takes limit"):
        load_dataset("insight", path, split="test")


@pytest.mark.realdata
def test_load_dataset_vqarad(vqarad_dir: Path) -> None:
    assert len(load_dataset("vqa-rad", vqarad_dir, split="train")) == 1798
