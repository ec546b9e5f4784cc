"""Traces of runs, steps, model calls and tool calls, caught by the SDK's in-memory exporter.

A scripted GIANT run on a generated slide: the spans nest run > step > model call / tool call,
carry the GenAI attributes and the run id, and hold prompts only when the user opted in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from medagent._trace import Tracing, span, trace_labels, traced, tracing_active
from medagent.agents.giant import GiantConfig, GiantNavigator
from medagent.artifacts import ArtifactStore
from medagent.errors import DependencyMissingError
from medagent.imaging import open_image
from medagent.models import (
    Message,
    Reply,
    ScriptedModel,
    TracedModel,
    Usage,
    UsageTotals,
    build_model,
)
from medagent.settings import Settings
from medagent.testing import synthetic_tissue, write_pyramid_tiff
from medagent.tools import ToolContext, ToolFailure, zoom

QUESTION = "Is there tumour on this slide?"


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "slide.tif"
    return write_pyramid_tiff(path, synthetic_tissue(4000, 3000, seed=5), mpp=0.25, levels=3)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


def zoom_reply(x: int, y: int, w: int, h: int) -> dict[str, Any]:
    action = {"reasoning": "closer", "action": "zoom", "x": x, "y": y, "width": w, "height": h}
    return {"json": action}


ANSWER = {"json": {"reasoning": "seen", "action": "answer", "answer": "yes"}}


def giant_run(slide: Path, tmp_path: Path, tracing: Tracing | None) -> str:
    model = TracedModel(ScriptedModel([zoom_reply(1000, 800, 2000, 1500), ANSWER]))
    navigator = GiantNavigator(model, GiantConfig(max_steps=4), runs_dir=tmp_path)
    if tracing is None:
        return navigator.run(slide, QUESTION, options=["no", "yes"]).run_id
    with tracing.active():
        result = navigator.run(slide, QUESTION, options=["no", "yes"])
    tracing.shutdown()
    return result.run_id


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for one in spans:
        found.setdefault(one.name, []).append(one)
    return found


def parent_of(child: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan | None:
    assert child.parent is not None, f"{child.name} has no parent"
    return next((s for s in spans if s.context.span_id == child.parent.span_id), None)


def test_a_giant_run_nests_run_step_model_and_tool_spans(
    slide: Path, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    run_id = giant_run(slide, tmp_path, Tracing.to(exporter, batch=False))
    spans = list(exporter.get_finished_spans())
    names = by_name(spans)
    (run,) = names["invoke_agent giant"]
    assert run.parent is None
    assert run.attributes["gen_ai.agent.name"] == "giant"
    assert run.attributes["medagent.run.status"] == "answered"
    # Every span of the run carries its id.
    assert {s.attributes.get("medagent.run.id") for s in spans} == {run_id}
    # Steps hang off the run: start, decide 1 (zoom), look 1, decide 2 (answer).
    steps = [s for s in spans if s.name.startswith("step giant.")]
    assert sorted(
        (s.attributes["medagent.step.node"], s.attributes["medagent.step.index"]) for s in steps
    ) == [
        ("decide", 1),
        ("decide", 2),
        ("look", 1),
        ("start", 0),
    ]
    assert all(parent_of(s, spans) is run for s in steps)
    # Model calls inside decide steps, with the GenAI attributes and the token counts.
    chats = names["chat scripted"]
    assert len(chats) == 2
    for chat in chats:
        parent = parent_of(chat, spans)
        assert parent is not None and parent.attributes["medagent.step.node"] == "decide"
        assert chat.kind is SpanKind.CLIENT
        attrs = chat.attributes
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.provider.name"] == "scripted"
        assert attrs["gen_ai.request.model"] == "scripted"
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
        assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
        assert attrs["gen_ai.output.type"] == "json"
        assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs
    # Tools: the overview inside start, the zoom inside look.
    (overview,) = names["execute_tool overview"]
    (zoomed,) = names["execute_tool zoom"]
    assert parent_of(overview, spans).attributes["medagent.step.node"] == "start"  # type: ignore[union-attr]
    assert parent_of(zoomed, spans).attributes["medagent.step.node"] == "look"  # type: ignore[union-attr]
    assert zoomed.attributes["gen_ai.operation.name"] == "execute_tool"
    assert "gen_ai.tool.call.arguments" not in zoomed.attributes


def test_content_is_recorded_only_when_opted_in_and_images_by_artifact_id(
    slide: Path, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    giant_run(slide, tmp_path, Tracing.to(exporter, content=True, batch=False))
    spans = list(exporter.get_finished_spans())
    first = min(by_name(spans)["chat scripted"], key=lambda s: s.start_time or 0)
    messages = json.loads(str(first.attributes["gen_ai.input.messages"]))
    assert [m["role"] for m in messages] == ["system", "user"]
    images = [p for p in messages[1]["parts"] if p["type"] == "file"]
    assert len(images) == 1 and images[0]["modality"] == "image"
    # The id of the overview the run stored, not its pixels.
    stored = {p.stem for p in (tmp_path).rglob("artifacts/*.jpg")}
    assert images[0]["file_id"] in stored
    assert QUESTION in messages[1]["parts"][0]["content"]
    output = json.loads(str(first.attributes["gen_ai.output.messages"]))
    assert output[0]["role"] == "assistant" and '"zoom"' in output[0]["parts"][0]["content"]
    zoomed = by_name(spans)["execute_tool zoom"][0]
    assert json.loads(str(zoomed.attributes["gen_ai.tool.call.arguments"]))["width"] == 2000
    # No inline image anywhere: every attribute is small and holds no base64 JPEG.
    for one in spans:
        for value in one.attributes.values():
            assert "/9j/" not in str(value) and "base64" not in str(value)


def test_labels_reach_every_span_inside_and_only_while_tracing(
    exporter: InMemorySpanExporter,
) -> None:
    tracing = Tracing.to(exporter, batch=False)
    with trace_labels(item_id="outside"):  # off: nothing recorded, nothing kept
        assert not tracing_active()
    with tracing.active(), trace_labels(item_id="case 7"), span("outer"), span("inner"):
        pass
    assert {s.name: s.attributes["medagent.item.id"] for s in exporter.get_finished_spans()} == {
        "outer": "case 7",
        "inner": "case 7",
    }


def test_a_failing_tool_marks_its_span_failed(
    slide: Path, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    ctx = ToolContext(artifacts=ArtifactStore(tmp_path / "a"), slide=open_image(slide))
    with Tracing.to(exporter, batch=False).active():
        failure = zoom.run(ctx, {"x": 90_000, "y": 0, "width": 100, "height": 100})
    assert isinstance(failure, ToolFailure)
    (one,) = exporter.get_finished_spans()
    assert one.name == "execute_tool zoom"
    assert one.status.status_code is StatusCode.ERROR
    assert one.attributes["error.type"] == "RegionError"


async def test_a_model_error_marks_the_model_span_failed(exporter: InMemorySpanExporter) -> None:
    model = TracedModel(ScriptedModel([{"error": "server_error"}]))
    with Tracing.to(exporter, batch=False).active(), pytest.raises(Exception) as raised:
        await model.generate([Message.user("hello")])
    (one,) = exporter.get_finished_spans()
    assert one.status.status_code is StatusCode.ERROR
    assert one.attributes["error.type"] == type(raised.value).__qualname__


class Streamer:
    """A backend that streams: two pieces, then the reply."""

    name = "streamer"

    def __init__(self) -> None:
        self.usage_totals = UsageTotals()

    async def generate(self, messages: Any, **kwargs: Any) -> Reply:
        raise AssertionError("a streaming caller streams")

    async def generate_stream(self, messages: Any, **kwargs: Any) -> AsyncIterator[str | Reply]:
        yield "a streamed "
        yield "answer"
        usage = Usage(prompt_tokens=4, completion_tokens=3)
        yield Reply(text="a streamed answer", usage=usage, finish_reason="stop", model="streamer")

    async def aclose(self) -> None:
        pass


async def test_streamed_calls_are_one_span_that_is_not_the_consumers_parent(
    exporter: InMemorySpanExporter,
) -> None:
    model = TracedModel(Streamer())
    with Tracing.to(exporter, batch=False).active():
        async for _piece in model.generate_stream([Message.user("hi")]):
            with span("consumer"):
                pass
    names = by_name(list(exporter.get_finished_spans()))
    (chat,) = names["chat streamer"]
    assert chat.attributes["medagent.request.streamed"] is True
    assert chat.attributes["gen_ai.usage.output_tokens"] == 3
    assert chat.attributes["gen_ai.provider.name"] == "Streamer"
    assert len(names["consumer"]) == 3 and all(s.parent is None for s in names["consumer"])


def test_off_by_default_and_build_model_wraps_only_when_on(tmp_path: Path) -> None:
    script = tmp_path / "script.jsonl"
    script.write_text('{"text": "hi"}\n')
    assert Settings().trace is False and Settings().trace_content is False
    plain = build_model(Settings(backend="scripted", script=str(script)))
    assert isinstance(plain, ScriptedModel)
    wrapped = build_model(Settings(backend="scripted", script=str(script), trace=True))
    assert isinstance(wrapped, TracedModel) and wrapped.provider == "scripted"
    with traced(Settings()) as tracing:
        assert tracing is None and not tracing_active()
    with span("nothing") as nothing:
        assert not nothing.is_recording()


def test_trace_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDAGENT_TRACE", "1")
    monkeypatch.setenv("MEDAGENT_TRACE_CONTENT", "true")
    settings = Settings()
    assert settings.trace and settings.trace_content


def test_without_the_extra_tracing_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(DependencyMissingError) as raised, traced(Settings(trace=True)):
        pass
    message = str(raised.value)
    assert "\n" not in message and "medagent[trace]" in message


def test_tracing_off_runs_without_opentelemetry_installed(slide: Path, tmp_path: Path) -> None:
    """Off, nothing of OpenTelemetry is needed: a GIANT run works with it made unimportable."""
    code = f"""
import sys
sys.modules["opentelemetry"] = None
from medagent.agents.giant import GiantConfig, GiantNavigator
from medagent.models import ScriptedModel
model = ScriptedModel([{ANSWER!r}])
result = GiantNavigator(model, GiantConfig(max_steps=3), runs_dir={str(tmp_path)!r}).run(
    {str(slide)!r}, "Tumour?", options=["no", "yes"]
)
assert result.status == "answered", result
assert not [m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m]]
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_ask_with_trace_but_without_the_extra_is_one_line_and_exit_2(
    slide: Path, tmp_path: Path
) -> None:
    from cli_support import medagent

    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    script = tmp_path / "script.jsonl"
    script.write_text(json.dumps(ANSWER) + "\n")
    done = medagent(
        "ask",
        str(slide),
        "Tumour?",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--out",
        str(tmp_path / "run"),
        "--trace",
        env={"PYTHONPATH": str(shadow.parent)},
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "medagent[trace]" in lines[0] and "Traceback" not in done.stderr
