"""``eval run`` stops cleanly on SIGINT however it was started.

A job started in the background of a non-interactive shell (``cmd &``, nohup in a script, many
CI runners) inherits SIGINT as ignored; Python then installs no KeyboardInterrupt handler and
``kill -INT`` did nothing: the run went on to the end and exited 0. Cases: a child started
with SIGINT ignored, and one started with the default disposition; both must stop with exit
130, one line saying how to resume, no traceback, and every finished item kept.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from eval_support import default_sigint, start_and_wait, stub_run_args, vqa_items
from medagent.evals import load_results
from medagent.testing import StubOpenAIServer


def ignored_sigint() -> None:
    """What a background job of a non-interactive shell starts with."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sigint", [ignored_sigint, default_sigint], ids=["ignored", "default"])
def test_sigint_stops_eval_run_cleanly_whatever_it_inherited(
    tmp_path: Path, sigint: Callable[[], None]
) -> None:
    data = vqa_items(tmp_path / "data", 10)
    run_dir = tmp_path / "run"
    args = stub_run_args(data, run_dir, concurrency=1)
    with StubOpenAIServer(default_text='{"answer": "yes"}', latency_s=0.3) as server:
        process = start_and_wait(args, server, run_dir, lines=2, sigint=sigint)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "rerun the same command to resume" in stderr and "Traceback" not in stderr
    assert 2 <= len(load_results(run_dir / "results.jsonl")) < 10
