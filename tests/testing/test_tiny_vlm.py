"""The tiny random-weight LLaVA: loads offline without torchvision, small, reproducible."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from medagent.testing import build_tiny_vlm

pytestmark = [pytest.mark.slow, pytest.mark.hf]

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"), seed=0)


def test_config_names_the_llava_architecture(tiny_vlm: Path) -> None:
    config = json.loads((tiny_vlm / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["model_type"] == "llava"
    assert config["vision_config"]["model_type"] == "clip_vision_model"
    assert config["text_config"]["model_type"] == "llama"


def test_loads_offline_with_the_auto_classes(
    tiny_vlm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model, info = AutoModelForImageTextToText.from_pretrained(tiny_vlm, output_loading_info=True)

    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    if importlib.util.find_spec("torchvision") is None:
        # The PIL image processor is what makes the model usable without torchvision.
        assert type(processor.image_processor).__name__ == "CLIPImageProcessorPil"
    assert model.config.get_text_config().vocab_size >= len(processor.tokenizer)


def test_weights_use_the_llava_hf_checkpoint_layout(tiny_vlm: Path) -> None:
    # The layout of the LLaVA checkpoints on the hub, which vLLM's weight loader expects.
    from safetensors import safe_open

    with safe_open(str(tiny_vlm / "model.safetensors"), "pt") as weights:
        names = set(weights.keys())

    assert "vision_tower.vision_model.embeddings.patch_embedding.weight" in names
    assert "language_model.model.embed_tokens.weight" in names
    assert "language_model.lm_head.weight" in names
    assert "multi_modal_projector.linear_1.weight" in names
    assert all(
        n.startswith(("vision_tower.vision_model.", "language_model.", "multi_modal_projector."))
        for n in names
    )


def test_eos_is_the_end_of_turn_marker(tiny_vlm: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_vlm)
    generation = json.loads((tiny_vlm / "generation_config.json").read_text())
    assert tokenizer.eos_token == "<|im_end|>"
    assert generation["eos_token_id"] == [tokenizer.eos_token_id]


def test_image_becomes_one_token_per_patch(tiny_vlm: Path) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}
    ]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=prompt, images=[Image.new("RGB", (90, 60), "red")], return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    config = json.loads((tiny_vlm / "config.json").read_text())

    assert prompt == "<|im_start|>user\n<image>What?<|im_end|>\n<|im_start|>assistant\n"
    assert int((inputs["input_ids"] == image_id).sum()) == config["image_seq_length"] == 16
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 56, 56)


def test_chat_template_renders_tools_calls_and_results(tiny_vlm: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_vlm)
    call = {"type": "function", "function": {"name": "zoom", "arguments": {"x": 1}}}
    tool = {
        "type": "function",
        "function": {"name": "zoom", "description": "Zoom in", "parameters": {"type": "object"}},
    }
    conversation = [
        {"role": "system", "content": "You read slides."},
        {"role": "user", "content": "Look closer."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [call],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "zoomed"},
    ]
    prompt = tokenizer.apply_chat_template(
        conversation, tools=[tool], add_generation_prompt=True, tokenize=False
    )

    assert prompt.startswith("<|im_start|>system\nYou read slides.\n\n# Tools")
    assert '<tools>\n{"type": "function"' in prompt
    assert '<tool_call>\n{"name": "zoom", "arguments": {"x": 1}}\n</tool_call><|im_end|>' in prompt
    assert "<|im_start|>user\n<tool_response>\nzoomed\n</tool_response><|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_tool_call_markers_survive_decoding(tiny_vlm: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_vlm)
    text = '<tool_call>\n{"name": "zoom"}\n</tool_call>'
    ids = tokenizer.encode(text + "<|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_stays_small(tiny_vlm: Path) -> None:
    size = sum(f.stat().st_size for f in tiny_vlm.iterdir())
    assert size < 10 * 1024 * 1024


def test_same_seed_gives_identical_files(tiny_vlm: Path, tmp_path: Path) -> None:
    again = build_tiny_vlm(tmp_path / "again", seed=0)
    other = build_tiny_vlm(tmp_path / "other", seed=1)

    names = sorted(f.name for f in tiny_vlm.iterdir())
    assert names == sorted(f.name for f in again.iterdir())
    for name in names:
        assert (tiny_vlm / name).read_bytes() == (again / name).read_bytes(), name
    weights = (tiny_vlm / "model.safetensors").read_bytes()
    assert weights != (other / "model.safetensors").read_bytes()
