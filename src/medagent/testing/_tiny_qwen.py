"""Tiny random-weight Qwen2.5-VL and Qwen3-VL, built offline, for the in-process model paths.

Like ``build_tiny_vlm``: real architecture, random weights, answers are noise. Qwen's
processors resize every image to a multiple of the merged patch (28 px, 32 px for Qwen3-VL)
within a pixel budget and insert one ``<|image_pad|>`` per merged patch, so the token count
follows the image's shape; the budget here is small (at most 16 tokens an image).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medagent.testing._tiny_vlm import TINY_VLM_CHAT_TEMPLATE, _train_tokenizer, tiny_text_dims

__all__ = ["BUILDERS", "QWEN_CHAT_TEMPLATE"]

_MERGE = 2  # 2×2 patches become one token in both families

# Qwen's image markup in the tiny LLaVA's ChatML template (native system turn, Hermes tools).
QWEN_CHAT_TEMPLATE = TINY_VLM_CHAT_TEMPLATE.replace(
    "{{- '<image>' -}}", "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
)
assert QWEN_CHAT_TEMPLATE != TINY_VLM_CHAT_TEMPLATE

# Qwen's special tokens, in the real vocabulary's order (after <|endoftext|>, <|im_start|>,
# <|im_end|>, which the tiny tokenizer has already).
_QWEN_SPECIALS = [
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _qwen_tokenizer(seed: int) -> Any:
    tokenizer = _train_tokenizer(seed)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", *_QWEN_SPECIALS]})
    tokenizer.add_tokens(["<think>", "</think>"], special_tokens=False)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def _vision_token_ids(tokenizer: Any) -> dict[str, Any]:
    """The ids the model config needs: M-RoPE finds images by ``<|vision_start|>``."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def _text_kwargs(tokenizer: Any) -> dict[str, Any]:
    """The shared tiny language model; Qwen keeps its own default for tied embeddings."""
    from medagent.testing._tiny_families import _padded_vocab  # late: it will import BUILDERS

    dims = tiny_text_dims(tokenizer, _padded_vocab(tokenizer))
    del dims["tie_word_embeddings"]
    return dims


def _save(
    model_class: Any, config: Any, tokenizer: Any, processor: Any, target: Path, seed: int
) -> None:
    import torch

    from medagent.testing._tiny_families import _generation_config  # late, as above

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config = _generation_config(tokenizer)
    # Qwen ends a turn with <|im_end|> and a completion with <|endoftext|>: both stop.
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.bos_token_id]
    model.save_pretrained(target)
    processor.save_pretrained(target)


def _image_processor(patch: int, side_min: int, side_max: int, **kwargs: Any) -> Any:
    """Qwen's resizer with a pixel budget of ``side_min``² .. ``side_max``²."""
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(
        size=_budget(side_min, side_max), patch_size=patch, merge_size=_MERGE, **kwargs
    )


def _budget(side_min: int, side_max: int) -> dict[str, int]:
    return {"shortest_edge": side_min * side_min, "longest_edge": side_max * side_max}


def _build_qwen2_5_vl(target: Path, seed: int) -> None:
    """Qwen2.5-VL: windowed ViT of 14-px patches, 2×2-merged; 4..16 tokens an image."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2_5_VLTextConfig,
        Qwen2_5_VLVisionConfig,
        Qwen2VLVideoProcessor,
    )

    tokenizer = _qwen_tokenizer(seed)
    text = Qwen2_5_VLTextConfig(
        **_text_kwargs(tokenizer),
        # Qwen2.5-VL's [16, 24, 24] halved: temporal, height, width parts of head_dim / 2.
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
    )
    vision = Qwen2_5_VLVisionConfig(
        depth=2,
        hidden_size=64,
        intermediate_size=128,
        num_heads=1,
        out_hidden_size=text.hidden_size,
        patch_size=14,
        window_size=112,
        fullatt_block_indexes=[1],  # windowed, then full attention, as the real tower ends
    )
    config = Qwen2_5_VLConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        tie_word_embeddings=False,
        **_vision_token_ids(tokenizer),
    )
    processor = Qwen2_5_VLProcessor(  # type: ignore[no-untyped-call]
        image_processor=_image_processor(14, 56, 112),
        tokenizer=tokenizer,
        # Capped frames (qwen-vl-utils' behaviour): also silences transformers' warning.
        video_processor=Qwen2VLVideoProcessor(
            size=_budget(56, 112), patch_size=14, merge_size=_MERGE, cap_pixels_per_frame=True
        ),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    _save(Qwen2_5_VLForConditionalGeneration, config, tokenizer, processor, target, seed)


def _build_qwen3_vl(target: Path, seed: int) -> None:
    """Qwen3-VL (dense): 16-px patches, 2×2-merged, DeepStack; 4..16 tokens an image."""
    from transformers import (
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLTextConfig,
        Qwen3VLVideoProcessor,
        Qwen3VLVisionConfig,
    )

    tokenizer = _qwen_tokenizer(seed)
    text = Qwen3VLTextConfig(
        **_text_kwargs(tokenizer),
        head_dim=64,
        # Qwen3-VL's [24, 20, 20] halved, interleaved as in the real config.
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [12, 10, 10],
            "mrope_interleaved": True,
        },
    )
    vision = Qwen3VLVisionConfig(
        depth=2,
        hidden_size=64,
        intermediate_size=128,
        num_heads=1,
        out_hidden_size=text.hidden_size,
        patch_size=16,
        num_position_embeddings=64,  # an 8×8 grid, interpolated to each image's
        deepstack_visual_indexes=[0],  # one early layer's features added to text layer 0
    )
    config = Qwen3VLConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        tie_word_embeddings=False,
        **_vision_token_ids(tokenizer),
    )
    # Qwen3-VL normalizes to [-1, 1] (SigLIP-2's statistics), not with CLIP's mean and std.
    half = [0.5, 0.5, 0.5]
    processor = Qwen3VLProcessor(  # type: ignore[no-untyped-call]
        image_processor=_image_processor(16, 64, 128, image_mean=half, image_std=half),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(
            size=_budget(64, 128), patch_size=16, merge_size=_MERGE
        ),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    _save(Qwen3VLForConditionalGeneration, config, tokenizer, processor, target, seed)


BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "qwen2.5-vl": _build_qwen2_5_vl,
    "qwen3-vl": _build_qwen3_vl,
}
"""Builders by preset name (``medagent.models.preset_for``)."""
