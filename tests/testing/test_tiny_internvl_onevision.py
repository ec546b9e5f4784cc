"""The tiny InternVL3 and LLaVA-OneVision: load through the transformers backend and carry GIANT.

Each image costs a fixed number of tokens whatever its shape (one tile, no thumbnail; a 1×1
anyres grid), so GIANT's crops of any shape are checked against one count per family.
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
from medagent.testing._tiny_internvl_onevision import BUILDERS

pytestmark = [pytest.mark.slow, pytest.mark.hf]

ARCHITECTURES = {
    "internvl3": "InternVLForConditionalGeneration",
    "llava-onevision": "LlavaOnevisionForConditionalGeneration",
}
TOKENS_PER_IMAGE = {"internvl3": 4, "llava-onevision": 3}
"""Image tokens per image: InternVL shuffles 4×4 patches into 2×2 (between ``<img>`` and
``</img>``); OneVision's base view and its one high-res tile are a patch each, plus a newline."""


class CountingBackend(TransformersBackend):
    """Records, per request, the images sent and the image tokens the processor inserted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counts: list[tuple[int, int]] = []

    def _model_inputs(
        self, messages: Sequence[Message], tools: list[ToolSpec], artifacts: ArtifactStore | None
    ) -> Any:
        inputs = super()._model_inputs(messages, tools, artifacts)
        sent = sum(isinstance(p, ImagePart) for m in messages for p in m.content)
        token = self._model.config.image_token_id
        self.counts.append((sent, int((inputs["input_ids"] == token).sum())))
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
    assert config["text_config"]["model_type"] == "qwen2"


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_giant_runs_on_the_tiny_family(family: str, nav_slide: Path, tmp_path: Path) -> None:
    folder = tmp_path / family
    BUILDERS[family](folder, 0)
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
    for sent, tokens in model.counts:
        assert tokens == sent * TOKENS_PER_IMAGE[family]


@pytest.mark.parametrize("size", [(256, 192), (64, 256), (256, 8)])
@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_image_tokens_do_not_depend_on_shape(
    family: str, size: tuple[int, int], tmp_path: Path
) -> None:
    from PIL import Image
    from transformers import AutoProcessor

    BUILDERS[family](tmp_path, 0)
    processor = AutoProcessor.from_pretrained(tmp_path)
    user = {"role": "user", "content": [{"type": "image"}, {"type": "image"}]}
    prompt = processor.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
    images = [Image.new("RGB", size, "white")] * 2
    inputs = processor(text=prompt, images=images, return_tensors="pt", add_special_tokens=False)
    token = json.loads((tmp_path / "config.json").read_text())
    token_id = token.get("image_token_id", token.get("image_token_index"))
    assert int((inputs["input_ids"] == token_id).sum()) == 2 * TOKENS_PER_IMAGE[family]


SYSTEM_PROMPTS = {
    "internvl3": (
        "<|im_start|>system\nYou are a pathologist.<|im_end|>\n"
        "<|im_start|>user\nTumour?<IMG_CONTEXT>\n<|im_end|>\n<|im_start|>assistant\n"
    ),
    # OneVision puts a turn's images before its text.
    "llava-onevision": (
        "<|im_start|>system\nYou are a pathologist.<|im_end|>\n"
        "<|im_start|>user\n<image>\nTumour?<|im_end|>\n<|im_start|>assistant\n"
    ),
}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_system_turn_is_native(family: str, tmp_path: Path) -> None:
    from transformers import AutoProcessor

    BUILDERS[family](tmp_path, 0)
    processor = AutoProcessor.from_pretrained(tmp_path)
    prompt = processor.apply_chat_template(
        [
            {"role": "system", "content": "You are a pathologist."},
            {"role": "user", "content": [{"type": "text", "text": "Tumour?"}, {"type": "image"}]},
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt == SYSTEM_PROMPTS[family]
