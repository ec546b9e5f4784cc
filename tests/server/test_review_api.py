"""The review page's API over a real GIANT eval run: runs, items, grades, exports, guards."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from review_support import FIRST, ITEM_IDS, SECOND, make_giant_run
from server_support import LOOPBACK

from medagent.evals import load_run, read_review_file, render_markdown


@pytest.fixture(scope="module")
def runs_template(slide_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs root holding one finished GIANT run, ``tcga/giant``, made once."""
    root = tmp_path_factory.mktemp("runs-template")
    make_giant_run(root / "tcga" / "giant", slide_root / "cases" / "tissue.tif")
    return root


@pytest.fixture
def runs_root(runs_template: Path, tmp_path: Path) -> Path:
    """A fresh copy per test: tests write grades and break files."""
    root = tmp_path / "runs"
    shutil.copytree(runs_template, root)
    return root


@pytest.fixture
def review(make_app: Callable[..., Any], runs_root: Path) -> Iterator[TestClient]:
    with TestClient(make_app(runs_root=runs_root), base_url=LOOPBACK) as client:
        yield client


RUN = "tcga/giant"


def _grade(client: TestClient, **body: Any) -> Any:
    return client.post("/api/review/grades", json={"run": RUN, **body})


def test_runs_items_and_an_item_with_its_steps_boxes_and_slide(review: TestClient) -> None:
    runs = review.get("/api/review/runs").json()["runs"]
    assert [(r["name"], r["method"], r["items"], r["graded"]) for r in runs] == [
        (RUN, "giant", 3, 0)
    ]
    items = review.get("/api/review/items", params={"run": RUN}).json()["items"]
    assert [(i["item"], i["correct"], i["grade"]) for i in items] == [
        ("q0", True, None),
        ("tcga:case/7", False, None),
        ("q2", True, None),
    ]
    item = review.get("/api/review/item", params={"run": RUN, "item": "tcga:case/7"}).json()
    assert item["question"].startswith("Which tissue is this?")
    assert [s["kind"] for s in item["steps"]] == ["zoom", "zoom", "answer"]
    assert [s["region"] for s in item["steps"][:2]] == [FIRST, SECOND]
    assert item["steps"][0]["reasoning"] == "a gland at the top left"
    assert (item["prediction"], item["reference"], item["correct"]) == ("colon", "lung", False)
    slide = item["slide"]
    assert slide["available"] and (slide["width"], slide["height"]) == (3000, 2000)
    # The slide's Deep Zoom pyramid and a tile, reached through the run and item only.
    dzi = review.get(slide["dzi"])
    assert dzi.status_code == 200 and "<Image" in dzi.text
    tile = review.get(
        "/api/review/slide_files/0/0_0.jpeg", params={"run": RUN, "item": "tcga:case/7"}
    )
    assert tile.status_code == 200 and tile.content[:3] == b"\xff\xd8\xff"
    assert "tissue.tif" not in json.dumps(item) or item["slide"]["name"] == "tissue.tif"
    assert str(Path.cwd()) not in json.dumps(item)


def test_grades_are_saved_read_back_and_written_beside_the_results(
    review: TestClient, runs_root: Path
) -> None:
    saved = _grade(
        review,
        item="q0",
        answer="partly",
        steps={"1": "useful", "2": "wasteful"},
        comment="=HYPERLINK(1) the second view was not needed",
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["review_file"] == "review.jsonl"
    again = _grade(review, item="q0", answer="correct", steps={"1": "useful"}, comment="")
    assert again.status_code == 200
    item = review.get("/api/review/item", params={"run": RUN, "item": "q0"}).json()
    assert item["grade"]["answer"] == "correct" and item["grade"]["steps"] == {"1": "useful"}
    assert review.get("/api/review/runs").json()["runs"][0]["graded"] == 1
    on_disk = read_review_file(runs_root / "tcga" / "giant")
    assert list(on_disk) == ["q0"] and on_disk["q0"].answer == "correct"


def test_grades_are_validated(review: TestClient) -> None:
    bad: list[dict[str, Any]] = [
        {"item": "q0", "answer": "maybe"},
        {"item": "q0", "steps": {"1": "great"}},
        {"item": "q0", "steps": {"0": "useful"}},
        {"item": "q0", "steps": {"one": "useful"}},
        {"item": "q0", "comment": "x" * 4001},
        {"item": "q0", "answer": "correct", "reviewer": "me"},
        {"item": "q0", "steps": {"9": "useful"}},  # the item has 3 steps
    ]
    for body in bad:
        reply = _grade(review, **body)
        assert reply.status_code == 422, (body, reply.text)
        assert "\n" not in reply.json()["detail"]
    assert _grade(review, item="nope", answer="wrong").status_code == 404
    assert review.get("/api/review/items", params={"run": RUN}).json()["items"][0]["grade"] is None


@pytest.mark.parametrize(
    ("run", "status"),
    [
        ("../runs", 403),
        ("tcga/../../etc", 403),
        ("/etc", 403),
        ("%2e%2e/x", 403),
        ("tcga/.hidden", 403),
        ("tcga\\giant", 403),
        ("tcga/giant/items/q0", 404),  # inside the root, but not a run
        ("tcga", 404),
        ("a/b/c/d/e", 403),
        ("x" * 600, 403),
        ("tcga/gi\x00ant", 403),
    ],
)
def test_hostile_run_names_are_refused(review: TestClient, run: str, status: int) -> None:
    for path in ("/api/review/items", "/api/review/export"):
        reply = review.get(path, params={"run": run})
        assert reply.status_code == status, (run, reply.text)
        assert str(Path.cwd().anchor + "tmp") not in reply.text
    assert _grade(review, run=run, item="q0", answer="wrong").status_code in (status, 422)


def test_a_run_linked_from_outside_is_refused(
    review: TestClient, runs_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(runs_root / "tcga" / "giant", outside)
    (runs_root / "linked").symlink_to(outside, target_is_directory=True)
    assert review.get("/api/review/items", params={"run": "linked"}).status_code == 403
    assert [r["name"] for r in review.get("/api/review/runs").json()["runs"]] == [RUN]


@pytest.mark.parametrize("item", ["../q0", "q0\n", "", "x" * 600, "items/q0", "Q0"])
def test_hostile_item_ids_are_not_found(review: TestClient, item: str) -> None:
    reply = review.get("/api/review/item", params={"run": RUN, "item": item})
    assert reply.status_code == 404, reply.text
    dzi = review.get("/api/review/slide.dzi", params={"run": RUN, "item": item})
    assert dzi.status_code == 404


def _rewrite_results(run_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = run_dir / "results.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        change(line)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_files_of_the_run_cannot_lead_out(
    review: TestClient, runs_root: Path, tmp_path: Path
) -> None:
    run_dir = runs_root / "tcga" / "giant"
    # A trajectory elsewhere, named by results.jsonl: not read.
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"question": "SECRET", "steps": []}))

    def point_out(line: dict[str, Any]) -> None:
        if line["id"] == "q0":
            line["trajectory"] = str(secret)
        if line["id"] == "q2":
            line["trajectory"] = "../../../secret.json"

    _rewrite_results(run_dir, point_out)
    for item in ("q0", "q2"):
        reply = review.get("/api/review/item", params={"run": RUN, "item": item}).json()
        assert reply["question"] == "" and reply["steps"] == []
        assert not reply["slide"]["available"]
    # A trajectory naming a slide outside the slide folders: no viewer, no tiles.
    trajectory = (
        run_dir
        / "items"
        / next(p.name for p in (run_dir / "items").iterdir() if p.name.startswith("tcga_case_7"))
        / "trajectory.json"
    )
    data = json.loads(trajectory.read_text())
    elsewhere = tmp_path / "other.tif"
    shutil.copy(data["slide_path"], elsewhere)
    data["slide_path"] = str(elsewhere)
    trajectory.write_text(json.dumps(data))
    item = review.get("/api/review/item", params={"run": RUN, "item": "tcga:case/7"}).json()
    assert not item["slide"]["available"]
    assert "outside this server's slide folders" in item["slide"]["reason"]
    assert len(item["steps"]) == 3  # the rest of the item is still shown
    tile = review.get(
        "/api/review/slide_files/0/0_0.jpeg", params={"run": RUN, "item": "tcga:case/7"}
    )
    assert tile.status_code == 404


def test_exports_as_csv_and_jsonl(review: TestClient) -> None:
    _grade(review, item="q0", answer="correct", steps={"1": "useful", "2": "wasteful"})
    _grade(review, item="tcga:case/7", answer="wrong", comment="=cmd|' /C calc'!A0")
    reply = review.get("/api/review/export", params={"run": RUN, "format": "csv"})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
    assert 'filename="tcga_giant-review.csv"' in reply.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert [(r["item"], r["answer_grade"], r["automatic"]) for r in rows] == [
        ("q0", "correct", "correct"),
        ("tcga:case/7", "wrong", "wrong"),
    ]
    assert rows[0]["step_grades"] == "1:useful;2:wasteful"
    assert (rows[0]["steps_useful"], rows[0]["steps_wasteful"]) == ("1", "1")
    assert rows[1]["comment"].startswith("'=")  # never a formula in a spreadsheet
    lines = review.get("/api/review/export", params={"run": RUN, "format": "jsonl"})
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    grades = [json.loads(line) for line in lines.text.splitlines()]
    assert [(g["item"], g["answer"]) for g in grades] == [
        ("q0", "correct"),
        ("tcga:case/7", "wrong"),
    ]
    bad = review.get("/api/review/export", params={"run": RUN, "format": "xlsx"})
    assert bad.status_code == 422


def test_eval_report_shows_the_reviewers_agreement(review: TestClient, runs_root: Path) -> None:
    # Automatic: q0 right, tcga:case/7 wrong, q2 right. The reviewer agrees on the first two
    # and calls q2 only partly right (not correct): 2 of 3 agree.
    for item, answer in zip(ITEM_IDS, ("correct", "wrong", "partly"), strict=True):
        assert _grade(review, item=item, answer=answer).status_code == 200
    report = load_run(runs_root / "tcga" / "giant", replicates=10)
    assert report.review is not None and report.review.overall.agree == 2
    text = render_markdown([report])
    assert "Reviewer against automatic scoring" in text
    assert "| giant | **all** | 3 | 1 / 1 / 0 | 0 / 0 / 1 | 66.7% (2/3) | 0.40 |" in text


def test_review_is_off_without_a_runs_root(client: TestClient) -> None:
    for path in ("/api/review/runs", "/api/review/items?run=x"):
        reply = client.get(path)
        assert reply.status_code == 404 and "--runs" in reply.json()["detail"]


def test_review_needs_the_token_off_loopback(make_app: Callable[..., Any], runs_root: Path) -> None:
    token = "t" * 24
    app = make_app(runs_root=runs_root, host="0.0.0.0", token=token)
    with TestClient(app, base_url="http://review.example") as client:
        assert client.get("/api/review/runs").status_code == 401
        assert client.get("/review").status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/review/runs", headers=headers).status_code == 200
        cross = client.post(
            "/api/review/grades",
            json={"run": RUN, "item": "q0", "answer": "wrong"},
            headers={**headers, "Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
