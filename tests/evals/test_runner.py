"""The evaluation runner: results on disk, resume, rerun-failed, config guard, cache, Ray."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from medagent.errors import ConfigError
from medagent.evals import EvalItem, EvalRunner, RunConfig, load_results, make_method
from medagent.models import CachedModel, ChatModel, ScriptedModel


def items_with_images(folder: Path, count: int) -> list[EvalItem]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.new("RGB", (64, 64), (i * 20 % 255, 100, 150)).save(path)
        items.append(
            EvalItem(
                id=f"q{i}",
                task="t",
                images=[str(path)],
                question=f"Q{i}?",
                options=["no", "yes"],
                answer="yes",
            )
        )
    return items


def config(**changes: Any) -> RunConfig:
    values: dict[str, Any] = {
        "dataset": "test",
        "data_path": "x",
        "dataset_sha256": "0",
        "method": "vqa",
        "backend": "scripted",
        "model": "s",
    }
    values.update(changes)
    return RunConfig(**values)


def exact(item: EvalItem, prediction: str | None) -> tuple[bool | None, float | None]:
    return prediction == item.answer, None


YES = {"json": {"answer": "2"}}
NO = {"json": {"answer": "1"}}


def runner(model: ChatModel | Any, run_dir: Path, **kwargs: Any) -> EvalRunner:
    return EvalRunner(
        model, make_method("vqa"), kwargs.pop("cfg", config()), run_dir, score=exact, **kwargs
    )


async def test_every_item_gets_one_durable_line(tmp_path: Path) -> None:
    items = items_with_images(tmp_path / "img", 5)
    model = ScriptedModel([YES, NO, YES, YES, NO])
    outcome = await runner(model, tmp_path / "run", concurrency=1).run(items)
    assert (outcome.ran, outcome.ok, outcome.failed) == (5, 5, 0)
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 5
    results = load_results(tmp_path / "run" / "results.jsonl")
    assert [results[f"q{i}"].correct for i in range(5)] == [True, False, True, True, False]
    assert results["q0"].prediction == "yes" and results["q0"].trajectory
    assert (tmp_path / "run" / results["q0"].trajectory).exists()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config_hash"] == config().hash() and "medagent" in manifest["versions"]


async def test_rerunning_skips_finished_items(tmp_path: Path) -> None:
    items = items_with_images(tmp_path / "img", 3)
    await runner(ScriptedModel([YES] * 3), tmp_path / "run").run(items)
    again = ScriptedModel([])
    outcome = await runner(again, tmp_path / "run").run(items)
    assert outcome.ran == 0 and outcome.skipped == 3 and again.requests == []


async def test_rerun_failed_touches_only_failures(tmp_path: Path) -> None:
    items = items_with_images(tmp_path / "img", 3)
    bad = {"text": "no idea"}
    first = ScriptedModel([YES, bad, bad, bad, bad, YES])  # q1 fails after 3 corrections
    outcome = await runner(first, tmp_path / "run", concurrency=1).run(items)
    assert outcome.failed == 1
    assert load_results(tmp_path / "run" / "results.jsonl")["q1"].status == "failed"
    second = ScriptedModel([YES])
    outcome = await runner(second, tmp_path / "run", rerun_failed=True).run(items)
    assert outcome.ran == 1 and len(second.requests) == 1
    assert "Q1?" in second.requests[0].messages[0].text
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3  # compacted: one line per item
    assert load_results(tmp_path / "run" / "results.jsonl")["q1"].status == "ok"


async def test_a_changed_configuration_is_refused_unless_new_run(tmp_path: Path) -> None:
    items = items_with_images(tmp_path / "img", 1)
    await runner(ScriptedModel([YES]), tmp_path / "run").run(items)
    with pytest.raises(ConfigError, match="another configuration"):
        await runner(ScriptedModel([YES]), tmp_path / "run", cfg=config(seed=7)).run(items)
    outcome = await runner(
        ScriptedModel([YES]), tmp_path / "run", cfg=config(seed=7), new_run=True
    ).run(items)
    assert outcome.ran == 1
    assert list((tmp_path / "run").glob("results.*.jsonl"))  # the old results kept aside


async def test_method_errors_become_failed_results(tmp_path: Path) -> None:
    item = EvalItem(id="x", task="t", images=[str(tmp_path / "missing.png")], question="?")
    outcome = await runner(ScriptedModel([]), tmp_path / "run").run([item])
    result = load_results(tmp_path / "run" / "results.jsonl")["x"]
    assert (
        outcome.failed == 1
        and result.status == "failed"
        and "cannot read image" in (result.error or "")
    )


async def test_the_cache_answers_repeated_requests(tmp_path: Path) -> None:
    items = items_with_images(tmp_path / "img", 2)
    first = ScriptedModel([YES, NO])
    cached = CachedModel(first, tmp_path / "cache.sqlite")
    await runner(cached, tmp_path / "run1", concurrency=1).run(items)
    empty = ScriptedModel([])
    second = CachedModel(empty, tmp_path / "cache.sqlite")
    await runner(second, tmp_path / "run2", concurrency=1).run(items)
    assert empty.requests == [] and second.hits == 2
    one = load_results(tmp_path / "run1" / "results.jsonl")
    two = load_results(tmp_path / "run2" / "results.jsonl")
    assert {k: v.prediction for k, v in one.items()} == {k: v.prediction for k, v in two.items()}
    assert two["q0"].cached_calls == 1


@pytest.mark.slow
async def test_ray_and_local_executors_agree(tmp_path: Path) -> None:
    items = items_with_images(tmp_path / "img", 4)
    # Ray workers import what they run: the factory and the scorer come from medagent itself.
    factory = functools.partial(ScriptedModel, [YES] * 4)
    method, cfg = make_method("vqa"), config()
    local = await EvalRunner(factory, method, cfg, tmp_path / "local", concurrency=2).run(items)
    remote = await EvalRunner(
        factory, method, cfg, tmp_path / "ray", concurrency=2, executor="ray"
    ).run(items)
    assert local.ok == remote.ok == 4
    strip = {"latency_s", "finished_at", "trajectory"}
    one = {
        k: v.model_dump(exclude=strip)
        for k, v in load_results(tmp_path / "local" / "results.jsonl").items()
    }
    two = {
        k: v.model_dump(exclude=strip)
        for k, v in load_results(tmp_path / "ray" / "results.jsonl").items()
    }
    assert one == two


@pytest.mark.parametrize(
    ("ids", "plain"),
    [
        (["q0", "a.b-c_d"], True),  # plain file names are kept as they are
        (["a/b", "a b", "a:b"], False),  # ids that clean to the same name
        (["x" * 130, "x" * 130 + "y"], False),  # long ids that differ past the cut
        (["..", ".", "", "../../etc"], False),  # ids that would leave items/
    ],
)
def test_item_folders_are_distinct_and_inside_items(
    tmp_path: Path, ids: list[str], plain: bool
) -> None:
    from medagent.evals._runner import _safe_name

    names = [_safe_name(item_id) for item_id in ids]
    assert len(set(names)) == len(names)
    for item_id, name in zip(ids, names, strict=True):
        assert (name == item_id) is plain
        assert name and "/" not in name and not name.startswith(".") and len(name) <= 113
        assert (tmp_path / "items" / name).resolve().parent == (tmp_path / "items").resolve()
