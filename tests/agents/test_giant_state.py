"""GIANT's typed graph state survives LangGraph's checkpoints: a resumed run gets back its
visits and pending action as objects (the scripted backend is a test double)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from medagent.agents.base import run_sync
from medagent.agents.giant import (
    GiantConfig,
    GiantNavigator,
    GiantResult,
    Trajectory,
    Visit,
    Visits,
    ZoomAction,
)
from medagent.agents.giant._graph import Pending, checkpoint_serde
from medagent.imaging import Region
from medagent.models import ScriptedModel
from model_support import KillAt, Killed

QUESTION = "Is there tumour on this slide?"


def zoom(x: int, y: int, w: int, h: int) -> dict[str, Any]:
    action = {"reasoning": "closer", "action": "zoom", "x": x, "y": y, "width": w, "height": h}
    return {"json": action}


ANSWER = {"json": {"reasoning": "clear", "action": "answer", "answer": "2"}}


def navigate(model: Any, slide: Path, run_dir: Path) -> GiantResult:
    navigator = GiantNavigator(model, GiantConfig(), runs_dir=run_dir.parent)
    return navigator.run(slide, QUESTION, options=["no", "yes"], run_dir=run_dir)


async def checkpointed_states(run_dir: Path, run_id: str) -> list[dict[str, Any]]:
    async with aiosqlite.connect(str(run_dir / "checkpoints.sqlite")) as connection:
        saver = AsyncSqliteSaver(connection, serde=checkpoint_serde())
        settings: Any = {"configurable": {"thread_id": run_id}}
        return [dict(c.checkpoint["channel_values"]) async for c in saver.alist(settings)]


def test_a_resumed_run_remembers_where_it_looked(nav_slide: Path, tmp_path: Path) -> None:
    first = ScriptedModel([zoom(1000, 1000, 2000, 2000)])
    with pytest.raises(Killed):
        navigate(KillAt(first, 2), nav_slide, tmp_path / "run")
    # After the resume, looking at almost the same region again is noticed: the visit of step
    # 1 came back from the checkpoint as a Visit, region and step included.
    resumed = ScriptedModel([zoom(1050, 1000, 2000, 2000), ANSWER])
    result = navigate(resumed, nav_slide, tmp_path / "run")
    assert result.status == "answered"
    nudge = resumed.requests[1].messages[-1].text
    assert "almost the same region" in nudge and "at step 1" in nudge


def test_checkpoints_hold_typed_visits_and_actions(
    nav_slide: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = ScriptedModel([zoom(0, 0, 4000, 3000), zoom(1000, 1000, 2000, 2000), ANSWER])
    with caplog.at_level(logging.WARNING):
        result = navigate(model, nav_slide, tmp_path / "run")
        states = run_sync(checkpointed_states(result.run_dir, result.run_id))
    assert "unregistered type" not in caplog.text
    final = states[0]  # newest first
    assert final["status"] == "answered" and final["answer"] == "2"
    assert isinstance(final["visited"], Visits)
    assert final["visited"].visits() == [
        Visit(region=Region(x=0, y=0, width=4000, height=3000), step=1),
        Visit(region=Region(x=1000, y=1000, width=2000, height=2000), step=2),
    ]
    pending = [s["pending"] for s in states if s.get("pending") is not None]
    assert pending and all(isinstance(p, Pending) for p in pending)
    assert {p.step for p in pending} == {1, 2}
    assert all(isinstance(p.action, ZoomAction) for p in pending)


def test_a_run_killed_while_showing_a_region_resumes_with_how_it_was_asked(
    nav_slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look's asking (replies, tokens) lives in the run log, not the checkpoint: a kill
    between decide and look must still give the look's step record its outputs."""
    import medagent.agents.giant._graph as graph

    real_zoom = graph.zoom
    calls = {"n": 0}

    def dying_zoom(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Killed
        return real_zoom(*args, **kwargs)

    monkeypatch.setattr(graph, "zoom", dying_zoom)
    first = ScriptedModel([zoom(1000, 1000, 2000, 2000)])
    with pytest.raises(Killed):
        navigate(first, nav_slide, tmp_path / "run")
    resumed = ScriptedModel([ANSWER])
    result = navigate(resumed, nav_slide, tmp_path / "run")
    assert result.status == "answered" and len(resumed.requests) == 1  # the zoom was not re-asked
    steps = Trajectory.model_validate_json(result.trajectory_path.read_text()).steps
    assert steps[0].kind == "zoom" and steps[0].outputs and '"zoom"' in steps[0].outputs[0]
