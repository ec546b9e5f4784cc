"""The tiny Qwen2.5-VL and Qwen3-VL: real architectures, their prompts and their image tokens
(GIANT runs on every family in ``tests/agents/test_giant_families.py``).

Qwen's image tokens follow each image's shape (sides rounded to the merged patch, within a
pixel budget), so the count is checked against the processor's own grids, and bounded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medagent.models import preset_for
from medagent.testing._tiny_qwen import BUILDERS

pytestmark = [pytest.mark.slow, pytest.mark.hf]

ARCHITECTURES = {
    "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3-vl": "Qwen3VLForConditionalGeneration",
}
MAX_TOKENS_PER_IMAGE = 16
"""The pixel budget's ceiling: 112² px in 28-px units (Qwen2.5-VL), 128² in 32-px (Qwen3-VL)."""


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
