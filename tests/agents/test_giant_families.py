"""GIANT through the transformers backend, once per tiny VLM family: every request accepted,
every turn valid under constrained decoding, every image sent turned into its image tokens."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from medagent.agents.giant import GiantConfig, GiantNavigator, Trajectory
from medagent.artifacts import ArtifactStore
from medagent.models import ImagePart, Message, ToolSpec, TransformersBackend, preset_for
from medagent.testing import TINY_FAMILIES, build_tiny_family

pytestmark = [pytest.mark.slow, pytest.mark.hf]

TOKENS_PER_IMAGE = {"gemma3": 4, "idefics3": 4, "internvl3": 4, "llava": 16, "llava-onevision": 3}
"""Image tokens each processor inserts per image: Gemma 3 pools, Idefics3 and InternVL shuffle
4×4 patches into 2×2; OneVision's base view, one tile and a newline; the tiny LLaVA keeps its
16. Qwen's follow each image's shape: counted from the processor's grids instead."""


class CountingBackend(TransformersBackend):
    """Records, per request, the images sent and the image tokens the processor inserted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counts: list[tuple[int, int]] = []
        self.grid_tokens: list[int | None] = []

    def _model_inputs(
        self,
        messages: Sequence[Message],
        tools: list[ToolSpec],
        artifacts: ArtifactStore | None,
        template: dict[str, Any] | None = None,
    ) -> Any:
        inputs = super()._model_inputs(messages, tools, artifacts, template)
        sent = sum(isinstance(p, ImagePart) for m in messages for p in m.content)
        token = self._model.config.image_token_id
        self.counts.append((sent, int((inputs["input_ids"] == token).sum())))
        grids = inputs.get("image_grid_thw")  # Qwen: patches per image, merged 2×2
        self.grid_tokens.append(None if grids is None else int(grids.prod(-1).sum()) // 4)
        return inputs


def test_every_tiny_family_has_a_preset() -> None:
    assert all(preset_for(family) is not None for family in TINY_FAMILIES)


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_giant_runs_on_each_tiny_family(family: str, nav_slide: Path, tmp_path: Path) -> None:
    folder = build_tiny_family(family, tmp_path / family)
    model = CountingBackend(folder, device="cpu", seed=0)
    navigator = GiantNavigator(
        model, GiantConfig(max_steps=2, long_side=256, max_tokens=1200), runs_dir=tmp_path
    )
    result = navigator.run(nav_slide, "Is there tumour?", options=["no", "yes"])
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())

    assert result.status in ("answered", "answered_at_limit"), result.error
    # xgrammar keeps every turn valid: no correction was needed, no request refused.
    assert trajectory.steps and all(not s.errors for s in trajectory.steps)
    assert model.usage_totals.failures == 0
    assert model.counts and all(sent >= 1 for sent, _ in model.counts)
    for (sent, tokens), from_grid in zip(model.counts, model.grid_tokens, strict=True):
        expected = from_grid if from_grid is not None else sent * TOKENS_PER_IMAGE[family]
        assert tokens == expected > 0
