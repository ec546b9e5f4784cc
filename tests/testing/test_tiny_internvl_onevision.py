"""The tiny InternVL3 and LLaVA-OneVision: real architectures, their prompts and their image tokens
(GIANT runs on every family in ``tests/agents/test_giant_families.py``).

Each image costs a fixed number of tokens whatever its shape (one tile, no thumbnail; a 1×1
anyres grid), so GIANT's crops of any shape are checked against one count per family.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medagent.models import preset_for
from medagent.testing._tiny_internvl_onevision import BUILDERS

pytestmark = [pytest.mark.slow, pytest.mark.hf]

ARCHITECTURES = {
    "internvl3": "InternVLForConditionalGeneration",
    "llava-onevision": "LlavaOnevisionForConditionalGeneration",
}
TOKENS_PER_IMAGE = {"internvl3": 4, "llava-onevision": 3}
"""Image tokens per image: InternVL shuffles 4×4 patches into 2×2 (between ``<img>`` and
``</img>``); OneVision's base view and its one high-res tile are a patch each, plus a newline."""


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_builder_writes_the_real_architecture(family: str, tmp_path: Path) -> None:
    BUILDERS[family](tmp_path, 0)
    config = json.loads((tmp_path / "config.json").read_text())
    preset = preset_for(family)
    assert preset is not None and preset.name == family
    assert config["architectures"] == [ARCHITECTURES[family]]
    assert config["model_type"] in preset.model_types
    assert config["text_config"]["model_type"] == "qwen2"


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
