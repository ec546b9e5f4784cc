"""Faults inside one eval item, and faults of the run itself.

An item's fault is that item's failed result (one line), the batch goes on, and a resumed run
holds it exactly once. Cases, item faults: the method raising ``ValueError``, ``OSError``,
``KeyError``, ``RuntimeError``, ``AttributeError`` or a ``MedagentError`` among good items; a
scorer that raises; images that are truncated, not an image, empty, a folder, or missing —
end to end through ``eval run``. Run faults, each one line and exit 2 before or while items
run: an output folder under a regular file, ``results.jsonl`` that is a folder, the disk
filling up mid-run; and a torn last results line that must not swallow the next result.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cli_support import medagent
from eval_support import one_image_item
from medagent.errors import InputError, ModelError
from medagent.evals import EvalItem, EvalRunner, RunConfig, load_results, make_method
from medagent.evals._methods import MethodOutput
from medagent.evals._runner import ResultsFile
from medagent.models import ChatModel, ScriptedModel

YES = {"json": {"answer": "yes"}}


def always_yes() -> ScriptedModel:
    return ScriptedModel(responder=lambda request: YES)


def images(folder: Path, count: int) -> list[EvalItem]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.new("RGB", (32, 32), (i * 30 % 255, 90, 120)).save(path)
        items.append(
            EvalItem(
                id=f"q{i}",
                task="t",
                images=[str(path)],
                question=f"Q{i}?",
                answer="yes",
                metric="yes_no",
            )
        )
    return items


def config() -> RunConfig:
    return RunConfig(
        dataset="test", data_path="x", dataset_sha256="0", method="vqa", backend="scripted",
        model="s",
    )  # fmt: skip


class Raising:
    """The vqa method, except that item ``bad`` raises ``error``."""

    name = "vqa"

    def __init__(self, error: BaseException) -> None:
        self.inner = make_method("vqa")
        self.error = error

    def params(self) -> dict[str, Any]:
        return self.inner.params()

    async def __call__(self, item: EvalItem, model: ChatModel, item_dir: Path) -> MethodOutput:
        if item.id == "bad":
            raise self.error
        return await self.inner(item, model, item_dir)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("cannot identify the colour space"),
        OSError(errno.EACCES, "Permission denied"),
        KeyError("slide_path"),
        RuntimeError("first line\nsecond line"),
        AttributeError("'FileDataset' object has no attribute 'SOPClassUID'"),
        ModelError("the model answered 500"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_any_exception_in_one_item_is_its_failed_result_and_the_batch_goes_on(
    tmp_path: Path, error: Exception
) -> None:
    good = images(tmp_path / "img", 4)
    items = [*good[:2], good[0].model_copy(update={"id": "bad"}), *good[2:]]
    run_dir = tmp_path / "run"
    runner = EvalRunner(always_yes(), Raising(error), config(), run_dir, concurrency=2)
    outcome = await runner.run(items)
    assert (outcome.ran, outcome.ok, outcome.failed) == (5, 4, 1)
    results = load_results(run_dir / "results.jsonl")
    bad = results["bad"]
    assert bad.status == "failed" and bad.error and "\n" not in bad.error
    assert all(results[i.id].status == "ok" for i in good)
    if isinstance(error, ModelError):
        assert bad.error == "the model answered 500"
    else:  # a surprise: named, and its traceback kept for whoever debugs it
        assert bad.error.startswith(type(error).__name__)
        assert "error.txt" in bad.error
        assert "Traceback" in (run_dir / "items" / "bad" / "error.txt").read_text()

    # Resumed: nothing runs again; the failure is there exactly once, and --rerun-failed
    # retries only it.
    again = await EvalRunner(always_yes(), Raising(error), config(), run_dir).run(items)
    assert (again.ran, again.skipped) == (0, 5)
    retried = await EvalRunner(
        always_yes(), make_method("vqa"), config(), run_dir, rerun_failed=True
    ).run(items)
    assert (retried.ran, retried.ok) == (1, 1)
    lines = [
        json.loads(line)["id"] for line in (run_dir / "results.jsonl").read_text().splitlines()
    ]
    assert sorted(lines) == sorted(i.id for i in items)


async def test_a_scorer_that_raises_fails_only_its_item(tmp_path: Path) -> None:
    items = images(tmp_path / "img", 3)

    def score(item: EvalItem, prediction: str | None) -> tuple[bool | None, float | None]:
        if item.id == "q1":
            raise ZeroDivisionError("division by zero")
        return True, None

    outcome = await EvalRunner(
        always_yes(), make_method("vqa"), config(), tmp_path / "run", score=score
    ).run(items)
    assert (outcome.ok, outcome.failed) == (2, 1)
    failed = load_results(tmp_path / "run" / "results.jsonl")["q1"]
    assert (failed.error or "").startswith("ZeroDivisionError: division by zero")


def bad_image_dataset(folder: Path) -> Path:
    """Two good images around five bad ones, as a JSONL dataset."""
    folder.mkdir(parents=True)
    Image.new("RGB", (40, 40), "white").save(folder / "good0.png")
    Image.new("RGB", (40, 40), "black").save(folder / "good1.png")
    whole = (folder / "good0.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "text.png").write_text("this is not an image\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "folder.png").mkdir()
    names = ["good0", "truncated", "text", "empty", "folder", "gone", "good1"]
    lines = [
        json.dumps(
            {
                "id": name,
                "task": "t",
                "images": [f"{name}.png"],
                "question": "Is it?",
                "answer": "yes",
                "metric": "yes_no",
            }
        )
        for name in names
    ]
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "items.jsonl"


def test_bad_images_among_good_ones_end_to_end(tmp_path: Path) -> None:
    data = bad_image_dataset(tmp_path / "data")
    script = tmp_path / "replies.jsonl"
    script.write_text(json.dumps(YES) + "\n" + json.dumps(YES) + "\n")
    run_dir = tmp_path / "run"
    args = ["eval", "run", "--dataset", "jsonl", "--data", str(data), "--method", "vqa"]
    args += ["--backend", "scripted", "--script", str(script), "--concurrency", "1"]
    args += ["--skip-missing", "--out", str(run_dir)]
    done = medagent(*args)
    assert done.returncode == 1, done.stdout + done.stderr  # some items failed
    assert "Traceback" not in done.stderr
    assert "1 items left out" in done.stderr  # gone.png, with --skip-missing
    assert "5 failed" not in done.stdout and "(2 ok, 4 failed)" in done.stdout
    results = load_results(run_dir / "results.jsonl")
    assert {k for k, v in results.items() if v.status == "ok"} == {"good0", "good1"}
    for name in ("truncated", "text", "empty", "folder"):
        error = results[name].error or ""
        assert "cannot read image" in error and "\n" not in error, error
    again = medagent(*args)
    assert again.returncode == 0 and "6 already done" in again.stdout
    ids = [json.loads(line)["id"] for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 6  # each exactly once


def run_args(data: Path, script: Path, out: Path) -> list[str]:
    return [
        "eval", "run", "--dataset", "jsonl", "--data", str(data), "--method", "vqa",
        "--backend", "scripted", "--script", str(script), "--out", str(out),
    ]  # fmt: skip


@pytest.fixture
def one_item(tmp_path: Path) -> tuple[Path, Path]:
    return one_image_item(tmp_path, YES)


def test_an_output_folder_under_a_regular_file_is_one_line(
    tmp_path: Path, one_item: tuple[Path, Path]
) -> None:
    # Permissions do not stop root; a regular file in the path stops everyone.
    (tmp_path / "plain-file").write_text("not a folder")
    out = tmp_path / "plain-file" / "run"
    done = medagent(*run_args(*one_item, out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot write results to {out}: not a directory; check the folder's "
        "permissions and free space, or choose another --out"
    ]


def test_a_results_file_that_cannot_be_written_stops_before_any_item(
    tmp_path: Path, one_item: tuple[Path, Path]
) -> None:
    out = tmp_path / "run"
    (out / "results.jsonl").mkdir(parents=True)
    done = medagent(*run_args(*one_item, out))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(
        f"error: cannot write results to {out}: results.jsonl: is a directory"
    )
    assert not (out / "items").exists()  # no model call was spent


async def test_a_disk_that_fills_up_mid_run_stops_it_with_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = images(tmp_path / "img", 5)
    written: list[str] = []
    original = ResultsFile._write

    def filling(self: ResultsFile, line: str) -> None:
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        written.append(line)
        original(self, line)

    monkeypatch.setattr(ResultsFile, "_write", filling)
    runner = EvalRunner(always_yes(), make_method("vqa"), config(), tmp_path / "run")
    with pytest.raises(InputError) as caught:
        await runner.run(items)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"cannot write results to {tmp_path / 'run'}: results.jsonl: no space left on device"
    )
    assert len(load_results(tmp_path / "run" / "results.jsonl")) == 2  # what was written stays


async def test_a_torn_last_line_does_not_swallow_the_next_result(tmp_path: Path) -> None:
    items = images(tmp_path / "img", 3)
    run_dir = tmp_path / "run"
    await EvalRunner(always_yes(), make_method("vqa"), config(), run_dir).run(items[:1])
    results = run_dir / "results.jsonl"
    with results.open("a") as handle:  # killed in the middle of writing q1's line
        handle.write('{"id": "q1", "task": "t", "sta')
    outcome = await EvalRunner(always_yes(), make_method("vqa"), config(), run_dir).run(items)
    assert outcome.ran == 2
    assert set(load_results(results)) == {"q0", "q1", "q2"}
    assert results.read_text().endswith("\n")
