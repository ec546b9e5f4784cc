"""The chat offers zero_shot only with an image-text model, and a call comes back as a view."""

from __future__ import annotations

from pathlib import Path

import pytest

from medagent.agents.chat import ChatAgent, ChatConfig
from medagent.artifacts import ArtifactStore
from medagent.models import ScriptedModel
from medagent.testing import synthetic_tissue, write_pyramid_tiff
from scorer_support import RednessScorer

CALL = {"name": "zero_shot", "arguments": {"prompts": ["tumour", "normal"], "k": 2}}


@pytest.fixture(scope="module")
def chat_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chat") / "chat.tif"
    return write_pyramid_tiff(path, synthetic_tissue(3000, 2000, seed=5), mpp=0.5, levels=3)


def agent(model: ScriptedModel, slide: Path, tmp_path: Path) -> ChatAgent:
    return ChatAgent(model, slide, artifacts=ArtifactStore(tmp_path), config=ChatConfig())


async def test_zero_shot_is_offered_only_with_a_scorer(chat_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([{"text": "ok"}])
    async for _ in agent(model, chat_slide, tmp_path).astream("t", "hi"):
        pass
    assert "zero_shot" not in (model.requests[0].tools or [])


async def test_a_zero_shot_call_returns_the_heat_map(chat_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([{"tool_calls": [CALL]}, {"text": "Look at region 1."}])
    chat = ChatAgent(
        model,
        chat_slide,
        artifacts=ArtifactStore(tmp_path),
        config=ChatConfig(),
        scorer=RednessScorer(),
    )

    events = [event async for event in chat.astream("t", "Where is the tumour?")]

    assert "zero_shot" in (model.requests[0].tools or [])
    result = next(e for e in events if e.type == "tool_result")
    assert result.ok is True and "Zero-shot scores of 2 prompts" in (result.text or "")
    crops = [e for e in events if e.type == "crop"]
    assert len(crops) == 2  # the overview with the question, then the heat map
    assert (tmp_path / f"{crops[1].artifact_id}.jpg").exists()
