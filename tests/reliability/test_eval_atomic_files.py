"""Files a resume depends on are whole or absent, and a damaged one never stops a rerun.

Cases: ``write_atomic`` when the write fails part-way (the old file stays, no temporary file is
left) and the permissions it gives; an eval run's ``manifest.json`` cut at many points (empty,
one byte, halfway, one byte short) or holding a JSON list — the rerun notes it, rewrites it
and resumes, in process and through ``eval run``; a damaged manifest beside results of another
configuration is still refused; ``eval report`` on a damaged manifest; a GIANT run folder whose
manifest was cut short is started afresh, and resuming it says so in one line.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from cli_support import medagent
from eval_support import one_image_item
from medagent._files import write_atomic, write_json_atomic
from medagent.agents.giant import GiantConfig, GiantNavigator
from medagent.errors import ConfigError, InputError
from medagent.evals import EvalItem, EvalRunner, RunConfig, load_results, make_method
from medagent.models import ScriptedModel

YES = {"json": {"answer": "yes"}}


def test_a_failed_write_leaves_the_old_file_and_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "manifest.json"
    write_json_atomic(target, {"version": 1})

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_json_atomic(target, {"version": 2, "padding": "x" * 10_000})
    assert json.loads(target.read_text()) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_an_atomic_write_has_the_permissions_a_plain_write_would(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = tmp_path / "atomic.txt"
    write_atomic(atomic, "x")
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def items(folder: Path, count: int) -> list[EvalItem]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(count):
        Image.new("RGB", (24, 24), (i * 40, 0, 0)).save(folder / f"{i}.png")
        made.append(
            EvalItem(
                id=f"q{i}",
                task="t",
                images=[str(folder / f"{i}.png")],
                question="Is it?",
                answer="yes",
                metric="yes_no",
            )
        )
    return made


def config(**changes: object) -> RunConfig:
    values: dict[str, object] = {
        "dataset": "test", "data_path": "x", "dataset_sha256": "0", "method": "vqa",
        "backend": "scripted", "model": "s",
    }  # fmt: skip
    values.update(changes)
    return RunConfig.model_validate(values)


def runner(run_dir: Path, **changes: object) -> EvalRunner:
    model = ScriptedModel(responder=lambda request: YES)
    return EvalRunner(model, make_method("vqa"), config(**changes), run_dir)


def cut(path: Path, where: str) -> None:
    """Damage ``path`` as a crash mid-write (or a stray editor) would."""
    whole = path.read_bytes()
    damaged = {
        "empty": b"",
        "one byte": whole[:1],
        "halfway": whole[: len(whole) // 2],
        "one byte short": whole[:-1],
        "a list": b"[1, 2]",
    }[where]
    path.write_bytes(damaged)


@pytest.mark.parametrize("where", ["empty", "one byte", "halfway", "one byte short", "a list"])
async def test_a_damaged_manifest_is_noted_rewritten_and_the_run_resumes(
    tmp_path: Path, where: str
) -> None:
    todo = items(tmp_path / "img", 4)
    run_dir = tmp_path / "run"
    await runner(run_dir).run(todo[:2])
    cut(run_dir / "manifest.json", where)
    outcome = await runner(run_dir).run(todo)
    assert (outcome.ran, outcome.skipped, outcome.ok) == (2, 2, 2)
    assert len(outcome.notes) == 1 and "damaged" in outcome.notes[0]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config_hash"] == config().hash()
    assert set(load_results(run_dir / "results.jsonl")) == {"q0", "q1", "q2", "q3"}
    again = await runner(run_dir).run(todo)
    assert again.notes == [] and again.ran == 0


async def test_a_damaged_manifest_beside_other_results_is_still_refused(tmp_path: Path) -> None:
    todo = items(tmp_path / "img", 2)
    run_dir = tmp_path / "run"
    await runner(run_dir).run(todo)
    cut(run_dir / "manifest.json", "halfway")
    with pytest.raises(ConfigError, match="another configuration"):
        await runner(run_dir, seed=9).run(todo)
    outcome = await EvalRunner(
        ScriptedModel(responder=lambda request: YES),
        make_method("vqa"),
        config(seed=9),
        run_dir,
        new_run=True,
    ).run(todo)
    assert outcome.ran == 2  # the old results and the damaged manifest were set aside
    assert list(run_dir.glob("manifest.*.json")) and list(run_dir.glob("results.*.jsonl"))


def test_eval_run_and_report_after_a_manifest_cut_short(tmp_path: Path) -> None:
    items, script = one_image_item(tmp_path, YES)
    out = tmp_path / "run"
    args = ["eval", "run", "--dataset", "jsonl", "--data", str(items)]
    args += ["--method", "vqa", "--backend", "scripted", "--script", str(script)]
    assert medagent(*args, "--out", str(out)).returncode == 0
    cut(out / "manifest.json", "halfway")
    report = medagent("eval", "report", str(out))
    assert report.returncode == 0, report.stderr
    assert "Traceback" not in report.stderr and "manifest.json is damaged" in report.stderr
    assert "| t | accuracy |" in report.stdout
    rerun = medagent(*args, "--out", str(out))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "JSONDecodeError" not in rerun.stderr and "1 already done" in rerun.stdout
    assert rerun.stderr.count("\n") == 1 and "damaged" in rerun.stderr
    json.loads((out / "manifest.json").read_text())


async def test_a_giant_run_folder_with_a_manifest_cut_short(tmp_path: Path) -> None:
    image = tmp_path / "slide.png"
    Image.new("RGB", (300, 200), (240, 240, 240)).save(image)
    answer = {"json": {"reasoning": "what I see", "answer": "2"}}
    navigator = GiantNavigator(
        ScriptedModel([answer, answer]), GiantConfig(), method="thumbnail", runs_dir=tmp_path
    )
    run_dir = tmp_path / "run"
    first = await navigator.arun(image, "Tumour?", options=["normal", "tumor"], run_dir=run_dir)
    assert first.prediction == "tumor"
    cut(run_dir / "manifest.json", "halfway")
    with pytest.raises(InputError, match=r"manifest\.json is damaged"):
        await navigator.aresume(run_dir)
    again = await navigator.arun(image, "Tumour?", options=["normal", "tumor"], run_dir=run_dir)
    assert again.prediction == "tumor"
    assert json.loads((run_dir / "manifest.json").read_text())["inputs"]["question"] == "Tumour?"
