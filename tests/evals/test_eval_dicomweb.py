"""``eval run`` over items that name a series in a DICOMweb archive, against a real Orthanc
(no mocks): the generic JSONL format takes a ``dicomweb+`` reference as an image or a slide,
vqa and GIANT read the archive frame by frame, and an archive that refuses (401), lacks the
series or is down fails that item alone, with one line in its result; the run goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from cli_support import medagent
from dicomweb_support import PASSWORD, USER
from medagent.errors import InputError
from medagent.evals import load_jsonl, load_results
from medagent.testing import free_port

pytestmark = pytest.mark.slow

YES: dict[str, object] = {"json": {"answer": "yes"}}
CREDENTIALS = {"MEDAGENT_DICOMWEB_BASIC": f"{USER}:{PASSWORD}"}


def write_items(folder: Path, rows: list[dict[str, object]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), "white").save(folder / "local.png")
    path = folder / "items.jsonl"
    base = {"task": "t", "question": "Is there tissue?", "answer": "yes", "metric": "yes_no"}
    path.write_text("".join(json.dumps({**base, **row}) + "\n" for row in rows))
    return path


def run(data: Path, out: Path, replies: list[dict[str, object]], *extra: str, **env: str) -> str:
    script = out.parent / f"{out.name}-replies.jsonl"
    script.write_text("".join(json.dumps(reply) + "\n" for reply in replies))
    done = medagent(
        "eval", "run", "--dataset", "jsonl", "--data", str(data), "--out", str(out),
        "--backend", "scripted", "--script", str(script), "--concurrency", "1", *extra,
        env=env,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout + done.stderr


def test_a_reference_in_a_row_is_kept_and_a_malformed_one_stops_the_load(tmp_path: Path) -> None:
    dicomweb_ref = "dicomweb+https://pacs.example/dicom-web/studies/1.2/series/3.4/"
    data = write_items(
        tmp_path, [{"id": "a", "images": [dicomweb_ref]}, {"id": "b", "slide": dicomweb_ref}]
    )
    dataset = load_jsonl(data)
    assert dataset.items[0].images == [dicomweb_ref.rstrip("/")]
    assert dataset.items[1].slide == dicomweb_ref.rstrip("/") and not dataset.missing
    bad = write_items(tmp_path / "bad", [{"id": "a", "images": ["dicomweb+https://p/x/studies/1"]}])
    with pytest.raises(InputError, match=r"items\.jsonl line 1: cannot read the DICOMweb"):
        load_jsonl(bad)


def test_vqa_reads_the_archive_and_each_archive_fault_fails_only_its_item(
    dicomweb_ref: str, tmp_path: Path
) -> None:
    missing = dicomweb_ref.rsplit("/series/", 1)[0] + "/series/1.2.3.4.5"
    down = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web/studies/1.2/series/3.4"
    data = write_items(
        tmp_path / "data",
        [
            {"id": "local", "images": ["local.png"]},
            {"id": "remote", "images": [dicomweb_ref]},
            {"id": "missing", "images": [missing]},
            {"id": "down", "images": [down]},
        ],
    )
    out = tmp_path / "run"
    output = run(data, out, [YES, YES], "--method", "vqa", **CREDENTIALS)
    results = load_results(out / "results.jsonl")
    assert {k: v.status for k, v in results.items()} == {
        "local": "ok", "remote": "ok", "missing": "failed", "down": "failed"
    }, output  # fmt: skip
    assert results["remote"].correct is True
    assert missing in (results["missing"].error or "")
    assert "cannot reach the archive" in (results["down"].error or "")
    for result in results.values():
        assert "\n" not in (result.error or "")
    written = "".join(p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())
    assert PASSWORD not in written and PASSWORD not in output


def test_a_refused_login_fails_the_archive_items_and_not_the_run(
    dicomweb_ref: str, tmp_path: Path
) -> None:
    data = write_items(
        tmp_path / "data",
        [{"id": "remote", "images": [dicomweb_ref]}, {"id": "local", "images": ["local.png"]}],
    )
    out = tmp_path / "run"
    output = run(
        data, out, [YES], "--method", "vqa", MEDAGENT_DICOMWEB_BASIC=f"{USER}:wrong-password"
    )
    results = load_results(out / "results.jsonl")
    assert results["local"].status == "ok", output
    error = results["remote"].error or ""
    assert results["remote"].status == "failed" and "refused the credentials" in error
    assert "wrong-password" not in error and "\n" not in error


def test_giant_navigates_a_slide_row_in_the_archive(dicomweb_ref: str, tmp_path: Path) -> None:
    data = write_items(
        tmp_path / "data", [{"id": "remote", "slide": dicomweb_ref, "options": ["yes", "no"]}]
    )
    zoom = {"reasoning": "look", "action": "zoom", "x": 500, "y": 500, "width": 1000, "height": 800}
    answer = {"reasoning": "seen", "action": "answer", "answer": "1"}
    out = tmp_path / "run"
    output = run(data, out, [{"json": zoom}, {"json": answer}], "--method", "giant", **CREDENTIALS)
    result = load_results(out / "results.jsonl")["remote"]
    assert result.status == "ok" and result.correct is True, output
    assert result.steps == 2
    manifest = json.loads((out / "items" / "remote" / "manifest.json").read_text())
    assert manifest["inputs"]["slide_path"] == dicomweb_ref
