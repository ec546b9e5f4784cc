"""A chat turn that fails with a fault (not a stopped process) never blocks its thread.

Cases: the model's backend raises a non-medagent exception on the first turn and again when the
next message resumes it — the resumed turn is closed with an ``error`` and ``turn_end``, the new
message is kept and answered under the next turn number, and the history holds every turn once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medagent.agents.chat import ChatAgent
from medagent.artifacts import ArtifactStore
from medagent.models import ScriptedModel
from medagent.testing import synthetic_tissue, write_pyramid_tiff


async def test_a_turn_that_fails_again_is_closed_and_the_next_message_is_kept(
    tmp_path: Path,
) -> None:
    write_pyramid_tiff(tmp_path / "a.tif", synthetic_tissue(400, 300, seed=1), mpp=0.5, levels=1)
    calls = 0

    def responder(request: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 2:  # the turn, then its resumption
            raise RuntimeError("a bug in a backend")
        return {"text": "an answer"}

    agent = ChatAgent(
        ScriptedModel(responder=responder), tmp_path / "a.tif", artifacts=ArtifactStore(tmp_path)
    )
    with pytest.raises(RuntimeError):
        async for _ in agent.astream("t", "first"):
            pass
    second = [event async for event in agent.astream("t", "second")]
    kinds = [(e.type, e.turn) for e in second]
    assert ("error", 1) in kinds and ("turn_end", 1) in kinds
    assert kinds[-3:] == [("turn_start", 2), ("answer", 2), ("turn_end", 2)]
    closing = next(e for e in second if e.type == "error")
    assert "could not be finished" in (closing.text or "") and "a bug" in (closing.text or "")
    history = await agent.ahistory("t")
    starts = [(e.turn, e.text) for e in history if e.type == "turn_start"]
    assert starts == [(1, "first"), (2, "second")]
    first_turn = [e.seq for e in history if e.turn == 1]
    assert first_turn == list(range(len(first_turn)))  # numbered on, never reused
