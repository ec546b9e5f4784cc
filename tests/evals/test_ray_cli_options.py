"""``eval run``'s Ray options reach the runner (the runner's own behaviour is tested on a real
instance in ``test_ray_loopback.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import medagent.evals as evals
from eval_support import vqa_items, vqa_run_args
from medagent.cli import app


def test_ray_item_max_mib_sets_the_cap_on_a_shipped_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    real = evals.EvalRunner

    def capturing(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        kwargs["executor"] = "local"  # what reached the runner is the point, not Ray itself
        return real(*args, **kwargs)

    monkeypatch.setattr(evals, "EvalRunner", capturing)
    data = vqa_items(tmp_path / "data", 2)
    script = tmp_path / "replies.jsonl"
    script.write_text(2 * (json.dumps({"json": {"answer": "yes"}}) + "\n"))
    flags = ["--backend", "scripted", "--script", str(script), "--executor", "ray"]
    arguments = vqa_run_args(data, tmp_path / "run", 2, *flags, "--ray-item-max-mib", "3")
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert seen["ray_item_max_bytes"] == 3 * 2**20
    assert seen["executor"] == "ray"
    help_text = CliRunner().invoke(app, ["eval", "run", "--help"], env={"COLUMNS": "200"}).output
    assert "--ray-item-max-mib" in help_text
