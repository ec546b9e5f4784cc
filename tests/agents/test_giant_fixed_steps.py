"""``GiantConfig.fixed_steps``: the benchmark setting that makes every question take exactly
``max_steps`` requests, whatever a random-weight model would rather do."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_giant_graph import QUESTION, answer, final, run, zoom

from medagent.agents.giant import GiantConfig, GiantNavigator
from medagent.errors import ConfigError
from medagent.models import ScriptedModel


def test_every_turn_before_the_last_must_zoom(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel(
        [zoom(2000, 1500, 4000, 3000), answer(), zoom(3000, 2000, 1000, 800), final()]
    )
    result, trajectory = run(model, nav_slide, tmp_path, max_steps=3, fixed_steps=True)
    # The early answer is refused by the zoom-only schema and corrected into a zoom; the
    # answer comes on the last turn, so there are exactly max_steps answered requests.
    assert result.status == "answered_at_limit"
    assert [s.kind for s in trajectory.steps] == ["zoom", "zoom", "final"]
    names = [r.schema_name for r in model.requests]
    assert names == ["ZoomAction", "ZoomAction", "ZoomAction", "FinalAnswer"]


def test_off_by_default_answers_early(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([zoom(2000, 1500, 4000, 3000), answer()])
    result, _ = run(model, nav_slide, tmp_path, max_steps=3)
    assert result.status == "answered"
    assert [r.schema_name for r in model.requests] == ["GiantAction", "GiantAction"]


def test_random_region_baseline_looks_until_the_last_turn(nav_slide: Path, tmp_path: Path) -> None:
    look = {"json": {"reasoning": "another", "action": "look"}}
    model = ScriptedModel([look, look, final()])
    navigator = GiantNavigator(
        model, GiantConfig(max_steps=3, fixed_steps=True), method="random-region", runs_dir=tmp_path
    )
    result = navigator.run(nav_slide, QUESTION, run_dir=tmp_path / "run")
    assert result.status == "answered_at_limit"
    assert [r.schema_name for r in model.requests] == ["LookAction", "LookAction", "FinalAnswer"]


def test_a_volume_refuses_it_in_one_line(tmp_path: Path) -> None:
    from medagent.testing import write_ct_phantom

    series = write_ct_phantom(tmp_path / "ct")
    navigator = GiantNavigator(
        ScriptedModel([]), GiantConfig(fixed_steps=True), runs_dir=tmp_path / "runs"
    )
    with pytest.raises(ConfigError, match="fixed_steps benchmarks slide navigation"):
        navigator.run(series, QUESTION, run_dir=tmp_path / "run")


def test_views_render_off_the_event_loop(
    nav_slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading and encoding a view is most of the agent's CPU per step: in a worker thread,
    questions in flight render on several cores instead of taking turns on the loop's."""
    import threading

    from medagent.imaging import Renderer

    threads: list[bool] = []
    render = Renderer.render

    def recording(self: Renderer, *args: object, **kwargs: object) -> object:
        threads.append(threading.current_thread() is threading.main_thread())
        return render(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Renderer, "render", recording)
    model = ScriptedModel([zoom(2000, 1500, 4000, 3000), final()])
    result, _ = run(model, nav_slide, tmp_path, max_steps=2, fixed_steps=True)
    assert result.status == "answered_at_limit"
    assert threads and not any(threads), threads  # overview and zoom, both off the main thread
