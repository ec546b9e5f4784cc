"""``langgraph.json``: every graph it names loads the way LangGraph's CLI loads it, and builds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from PIL import Image

from medagent.errors import ConfigError
from medagent.retrieval import DefaultEmbedder, build_index, images_from_folder
from medagent.testing import free_port, synthetic_tissue, write_pyramid_tiff

REPO = Path(__file__).resolve().parents[3]


def load_factory(spec: str) -> Any:
    """``./path/file.py:name`` imported from the file, as ``langgraph dev`` does."""
    path, name = spec.rsplit(":", 1)
    module_spec = importlib.util.spec_from_file_location("studio_graphs", REPO / path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """Per graph, the configurable values a run gives; the scripted backend from settings."""
    script = tmp_path / "script.jsonl"
    script.write_text('{"text": "An answer."}\n')
    monkeypatch.setenv("MEDAGENT_BACKEND", "scripted")
    monkeypatch.setenv("MEDAGENT_SCRIPT", str(script))
    monkeypatch.setenv("MEDAGENT_CACHE_DIR", str(tmp_path / "cache"))
    slide = write_pyramid_tiff(tmp_path / "s.tif", synthetic_tissue(1200, 900, seed=2), mpp=0.5)
    cases = tmp_path / "cases"
    cases.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(cases / f"case{i}.png")
    build_index(tmp_path / "index", images_from_folder(cases), DefaultEmbedder())
    return {
        "giant": {"slide": str(slide), "question": "Which organ?", "options": "lung;colon"},
        "insight": {"images": [str(slide)], "goal": "Describe the tissue"},
        "rag": {"image": str(cases / "case0.png"), "question": "What is it?",
                "index": str(tmp_path / "index")},
        "chat": {},
    }  # fmt: skip


def test_every_graph_in_langgraph_json_builds(inputs: dict[str, dict[str, Any]]) -> None:
    config = json.loads((REPO / "langgraph.json").read_text())
    assert config["dependencies"] == ["."]
    assert set(config["graphs"]) == {"giant", "insight", "rag", "chat"}
    for name, spec in config["graphs"].items():
        factory = load_factory(spec)
        graph = factory({"configurable": inputs[name]})
        assert graph.get_graph().nodes, name  # a compiled graph LangGraph can draw


def test_factories_say_what_they_need(inputs: dict[str, dict[str, Any]]) -> None:
    config = json.loads((REPO / "langgraph.json").read_text())
    factory = load_factory(config["graphs"]["giant"])
    with pytest.raises(ConfigError, match="'slide', 'question'"):
        factory({"configurable": {}})


async def test_studio_chat_graph_runs_with_the_interrupt(
    inputs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    config = json.loads((REPO / "langgraph.json").read_text())
    graph = load_factory(config["graphs"]["chat"])({"configurable": {}})
    graph.checkpointer = InMemorySaver()  # the LangGraph server brings its own
    settings = {"configurable": {"thread_id": "studio"}}
    first = {"slide": inputs["giant"]["slide"], "inbox": {"message": "What is it?"}}
    events = [e async for e in graph.astream(first, settings, stream_mode="custom")]
    assert [e["type"] for e in events][-2:] == ["answer", "turn_end"]
    state = await graph.aget_state(settings)
    assert state.interrupts and state.interrupts[0].value["waiting_for"] == "message"
    resumed = Command(resume={"message": "And here?", "region": [0, 0, 10, 10]})
    events = [e async for e in graph.astream(resumed, settings, stream_mode="custom")]
    assert [e["type"] for e in events] == ["turn_start", "error", "turn_end"]
    assert "region" in events[1]["text"] and events[1]["turn"] == 2


@pytest.mark.slow
@pytest.mark.realdata
def test_langgraph_dev_serves_every_graph_and_runs_a_chat_turn(
    tmp_path: Path, cmu_slide: Path
) -> None:
    """LangGraph's own CLI (``langgraph dev``, in-memory runtime) loads ``langgraph.json``: the
    four graphs are listed as assistants, and a chat turn runs end to end on the real slide
    with the scripted backend. ``--allow-blocking``: nodes read slides with ordinary file I/O."""
    import os
    import shutil
    import subprocess
    import sys
    import time

    import httpx

    langgraph = shutil.which("langgraph", path=str(Path(sys.executable).parent))
    if langgraph is None:
        pytest.skip("langgraph-cli[inmem] is not installed (pip install 'medagent[dev]')")
    script = tmp_path / "script.jsonl"
    script.write_text('{"text": "Haematoxylin and eosin."}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    env |= {
        "MEDAGENT_BACKEND": "scripted",
        "MEDAGENT_SCRIPT": str(script),
        "MEDAGENT_CACHE_DIR": str(tmp_path / "cache"),
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    }
    port = free_port()
    server = subprocess.Popen(
        [langgraph, "dev", "--no-browser", "--no-reload", "--allow-blocking", "--port", f"{port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "langgraph.log").open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    found = client.post("/assistants/search", json={"limit": 20})
                    if found.status_code == 200 and len(found.json()) >= 4:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, (tmp_path / "langgraph.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "langgraph dev did not start in 120 s"
                time.sleep(0.5)
            assert {a["graph_id"] for a in found.json()} == {"giant", "insight", "rag", "chat"}
            thread = client.post("/threads", json={}).json()["thread_id"]
            state = client.post(
                f"/threads/{thread}/runs/wait",
                json={
                    "assistant_id": "chat",
                    "input": {"slide": str(cmu_slide), "inbox": {"message": "Which stain?"}},
                },
            ).json()
        kinds = [event["type"] for event in state["events"]]
        assert kinds == ["turn_start", "crop", "answer", "turn_end"], state
        assert state["events"][2]["text"] == "Haematoxylin and eosin."
    finally:
        server.terminate()
        server.wait(timeout=30)
