"""``medagent eval run --trace`` end to end, its OTLP tracer pointed at the SDK's in-memory
exporter: one ``eval_item`` span per item, labelled with the item's id, and the item's GIANT
run (its steps, model and tool calls) nested under it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from typer.testing import CliRunner

from medagent._trace import ITEM_ID, RUN_ID, Tracing
from medagent.agents.base import RunManifest
from medagent.cli import app
from medagent.evals import load_results
from medagent.testing import synthetic_tissue, write_pyramid_tiff

ZOOM = {"reasoning": "closer", "action": "zoom", "x": 500, "y": 400, "width": 1000, "height": 800}
ANSWER = {"reasoning": "seen", "action": "answer", "answer": "2"}


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """What ``--trace`` sends, kept in memory: the tracer the flag builds writes here."""
    memory = InMemorySpanExporter()

    def to_memory(content: bool = False) -> Tracing:
        return Tracing.to(memory, content=content, batch=False)

    monkeypatch.setattr(Tracing, "otlp", staticmethod(to_memory))
    yield memory


def two_slide_items(folder: Path) -> Path:
    folder.mkdir()
    lines = []
    for name in ("s1", "s2"):
        write_pyramid_tiff(
            folder / f"{name}.tif", synthetic_tissue(2000, 1600, seed=3), mpp=0.5, levels=2
        )
        lines.append({"id": name, "task": "t", "slide": f"{name}.tif", "question": "Tumour?",
                      "options": ["no", "yes"], "answer": "2"})  # fmt: skip
    (folder / "items.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return folder / "items.jsonl"


def parent(one: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan:
    assert one.parent is not None, f"{one.name} has no parent"
    return next(s for s in spans if s.context.span_id == one.parent.span_id)


def test_eval_run_trace_nests_each_items_run_under_its_eval_item_span(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    data = two_slide_items(tmp_path / "data")
    script = tmp_path / "replies.jsonl"
    script.write_text("\n".join(json.dumps({"json": r}) for r in [ZOOM, ANSWER] * 2) + "\n")
    run_dir = tmp_path / "run"
    arguments = ["eval", "run", "--dataset", "jsonl", "--data", str(data), "--method", "giant"]
    arguments += ["--backend", "scripted", "--script", str(script), "--concurrency", "1"]
    arguments += ["--steps", "4", "--out", str(run_dir), "--trace"]

    done = CliRunner().invoke(app, arguments)

    assert done.exit_code == 0, done.output
    results = load_results(run_dir / "results.jsonl")
    assert {k: r.correct for k, r in results.items()} == {"s1": True, "s2": True}
    spans = list(exporter.get_finished_spans())
    items = {str(s.attributes[ITEM_ID]): s for s in spans if s.name == "eval_item"}
    assert sorted(items) == ["s1", "s2"]
    for item_id, item in items.items():
        assert item.parent is None
        assert item.attributes["medagent.task"] == "t"
        assert item.attributes["medagent.item.status"] == "ok"
        assert item.attributes["medagent.item.correct"] is True
        inside = [s for s in spans if s.context.trace_id == item.context.trace_id and s is not item]
        # The item's id is on every span of its trace; nothing of the other item is there.
        assert {s.attributes[ITEM_ID] for s in inside} == {item_id}
        (run,) = [s for s in inside if s.name == "invoke_agent giant"]
        assert parent(run, spans) is item
        assert run.attributes["medagent.run.status"] == "answered"
        # The run id the item's folder records labels the run's spans.
        manifest = RunManifest.read(run_dir / "items" / item_id)
        assert {s.attributes[RUN_ID] for s in inside} == {manifest.run_id}
        steps = [s for s in inside if s.name.startswith("step giant.")]
        assert sorted(s.attributes["medagent.step.node"] for s in steps) == [
            "decide", "decide", "look", "start"
        ]  # fmt: skip
        assert all(parent(s, spans) is run for s in steps)
        chats = [s for s in inside if s.name == "chat scripted"]
        assert len(chats) == 2
        assert all(parent(c, spans).attributes["medagent.step.node"] == "decide" for c in chats)
        assert all(c.attributes["gen_ai.usage.output_tokens"] > 0 for c in chats)
        tools = [s for s in inside if s.name.startswith("execute_tool")]
        assert {s.name: parent(s, spans).attributes["medagent.step.node"] for s in tools} == {
            "execute_tool overview": "start",
            "execute_tool zoom": "look",
        }


def test_eval_run_without_trace_builds_no_tracer(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    data = two_slide_items(tmp_path / "data")
    script = tmp_path / "replies.jsonl"
    script.write_text("\n".join(json.dumps({"json": ANSWER}) for _ in range(2)) + "\n")
    arguments = ["eval", "run", "--dataset", "jsonl", "--data", str(data), "--method", "giant"]
    arguments += ["--backend", "scripted", "--script", str(script), "--concurrency", "1"]
    done = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "run")])
    assert done.exit_code == 0, done.output
    assert not exporter.get_finished_spans()
