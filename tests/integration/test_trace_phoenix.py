"""``medagent ask --trace`` against a real OTLP receiver: Arize Phoenix on loopback.

The CLI runs as a user would (its own process, the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``),
a scripted GIANT run on a generated slide; Phoenix's REST API then shows what arrived: the
run, its steps, the model and tool calls nested under them, with token counts and the run id.
Phoenix runs from a virtualenv of its own (``medagent.testing._phoenix``), built on first use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_support import medagent
from medagent.testing import synthetic_tissue, write_pyramid_tiff
from medagent.testing._phoenix import PhoenixServer

pytestmark = pytest.mark.slow

PROJECT = "medagent-trace-test"


@pytest.fixture(scope="module")
def phoenix() -> Iterator[PhoenixServer]:
    with PhoenixServer() as server:
        yield server


def wait_for_spans(
    server: PhoenixServer, count: int, timeout_s: float = 60
) -> list[dict[str, Any]]:
    """Phoenix writes what it receives in batches: poll until ``count`` spans are stored."""
    deadline = time.monotonic() + timeout_s
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        spans = server.spans(PROJECT)
        if len(spans) >= count:
            return spans
        time.sleep(0.5)
    raise AssertionError(f"{len(spans)} of {count} spans arrived: {[s['name'] for s in spans]}")


def test_ask_sends_nested_spans_with_tokens_and_run_id(
    phoenix: PhoenixServer, tmp_path: Path
) -> None:
    slide = write_pyramid_tiff(
        tmp_path / "slide.tif", synthetic_tissue(4000, 3000, seed=6), mpp=0.25, levels=3
    )
    zoom = {
        "reasoning": "closer",
        "action": "zoom",
        "x": 1000,
        "y": 800,
        "width": 2000,
        "height": 1500,
    }
    answer = {"reasoning": "seen", "action": "answer", "answer": "yes"}
    script = tmp_path / "script.jsonl"
    script.write_text(json.dumps({"json": zoom}) + "\n" + json.dumps({"json": answer}) + "\n")
    done = medagent(
        "ask",
        str(slide),
        "Is there tumour?",
        "--options",
        "no;yes",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--out",
        str(tmp_path / "run"),
        "--json",
        "--trace",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.otlp_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            # Phoenix files spans under the project the resource names.
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={PROJECT}",
        },
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = json.loads((tmp_path / "run" / "manifest.json").read_text())["run_id"]
    # run + 4 steps (start, decide, look, decide) + 2 model calls + overview + zoom
    spans = wait_for_spans(phoenix, 9)
    by_id = {s["context"]["span_id"]: s for s in spans}

    def parent(span: dict[str, Any]) -> dict[str, Any]:
        return by_id[span["parent_id"]]

    (run,) = [s for s in spans if s["name"] == "invoke_agent giant"]
    assert run["parent_id"] is None
    assert len({s["context"]["trace_id"] for s in spans}) == 1
    assert all(s["attributes"]["medagent.run.id"] == run_id for s in spans)
    steps = [s for s in spans if s["name"].startswith("step giant.")]
    assert sorted(s["name"] for s in steps) == [
        "step giant.decide",
        "step giant.decide",
        "step giant.look",
        "step giant.start",
    ]
    assert all(parent(s) is run for s in steps)
    chats = [s for s in spans if s["name"] == "chat scripted"]
    assert len(chats) == 2
    for chat in chats:
        assert parent(chat)["name"] == "step giant.decide"
        attrs = chat["attributes"]
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.provider.name"] == "scripted"
        assert attrs["gen_ai.usage.input_tokens"] > 0
        assert attrs["gen_ai.usage.output_tokens"] > 0
        assert "gen_ai.input.messages" not in attrs  # no content without --trace-content
    tools = {s["name"]: parent(s)["name"] for s in spans if s["name"].startswith("execute_tool")}
    assert tools == {
        "execute_tool overview": "step giant.start",
        "execute_tool zoom": "step giant.look",
    }
