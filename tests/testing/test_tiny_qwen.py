"""The tiny Qwen2.5-VL and Qwen3-VL: load through the transformers backend and carry GIANT.

Qwen's image tokens follow each image's shape (sides rounded to the merged patch, within a
pixel budget), so the count is checked against the processor's own grids, and bounded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from medagent.agents.giant import GiantConfig, GiantNavigator, Trajectory
from medagent.artifacts import ArtifactStore
from medagent.models import ImagePart, Message, ToolSpec, TransformersBackend, preset_for
from medagent.testing import synthetic_tissue, write_pyramid_tiff
from medagent.testing._tiny_qwen import BUILDERS

pytestmark = [pytest.mark.slow, pytest.mark.hf]

ARCHITECTURES = {
    "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3-vl": "Qwen3VLForConditionalGeneration",
}
MAX_TOKENS_PER_IMAGE = 16
"""The pixel budget's ceiling: 112² px in 28-px units (Qwen2.5-VL), 128² in 32-px (Qwen3-VL)."""


class CountingBackend(TransformersBackend):
    """Records, per request, the images sent, image tokens inserted, and tokens per the grids."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counts: list[tuple[int, int, list[int]]] = []

    def _model_inputs(
        self, messages: Sequence[Message], tools: list[ToolSpec], artifacts: ArtifactStore | None
    ) -> Any:
        inputs = super()._model_inputs(messages, tools, artifacts)
        sent = sum(isinstance(p, ImagePart) for m in messages for p in m.content)
        token = self._model.config.image_token_id
        per_image = [int(g.prod()) // 4 for g in inputs.get("image_grid_thw", [])]
        self.counts.append((sent, int((inputs["input_ids"] == token).sum()), per_image))
        return inputs


@pytest.fixture(scope="module")
def nav_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8000 x 6000 px, 5 levels, mpp 0.25, as the GIANT family test's."""
    path = tmp_path_factory.mktemp("giant") / "nav.tif"
    return write_pyramid_tiff(path, synthetic_tissue(8000, 6000, seed=3), mpp=0.25, levels=5)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_builder_writes_the_real_architecture(family: str, tmp_path: Path) -> None:
    BUILDERS[family](tmp_path, 0)
    config = json.loads((tmp_path / "config.json").read_text())
    preset = preset_for(family)
    assert preset is not None and preset.name == family
    assert config["architectures"] == [ARCHITECTURES[family]]
    assert config["model_type"] in preset.model_types
    template = (tmp_path / "chat_template.jinja").read_text()
    assert "<|vision_start|><|image_pad|><|vision_end|>" in template


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_giant_runs_on_the_tiny_qwen(family: str, nav_slide: Path, tmp_path: Path) -> None:
    folder = tmp_path / family
    BUILDERS[family](folder, 0)
    model = CountingBackend(folder, device="cpu", seed=0)
    navigator = GiantNavigator(
        model, GiantConfig(max_steps=2, long_side=256, max_tokens=1200), runs_dir=tmp_path
    )
    result = navigator.run(nav_slide, "Is there tumour?", options=["no", "yes"])
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())

    assert result.status in ("answered", "answered_at_limit"), result.error
    assert trajectory.steps and all(not s.errors for s in trajectory.steps)
    assert model.usage_totals.failures == 0
    assert model.counts and all(sent >= 1 for sent, _, _ in model.counts)
    for sent, tokens, per_image in model.counts:
        assert len(per_image) == sent
        assert tokens == sum(per_image)
        assert all(4 <= n <= MAX_TOKENS_PER_IMAGE for n in per_image)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_system_turn_is_native(family: str, tmp_path: Path) -> None:
    from transformers import AutoProcessor

    BUILDERS[family](tmp_path, 0)
    processor = AutoProcessor.from_pretrained(tmp_path)  # type: ignore[no-untyped-call]
    prompt = processor.apply_chat_template(
        [
            {"role": "system", "content": "You are a pathologist."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Tumour?"}]},
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt == (
        "<|im_start|>system\nYou are a pathologist.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Tumour?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("family", sorted(BUILDERS))
@pytest.mark.parametrize(
    ("size", "tokens"), [((96, 96), 9), ((256, 192), 12), ((256, 256), 16), ((40, 30), 6)]
)
def test_image_tokens_follow_the_shape_within_the_budget(
    family: str, size: tuple[int, int], tokens: int, tmp_path: Path
) -> None:
    from PIL import Image
    from transformers import AutoProcessor

    BUILDERS[family](tmp_path, 0)
    processor = AutoProcessor.from_pretrained(tmp_path)  # type: ignore[no-untyped-call]
    inputs = processor(
        text="<|vision_start|><|image_pad|><|vision_end|>",
        images=[Image.new("RGB", size, "red")],
        return_tensors="pt",
    )
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == tokens
