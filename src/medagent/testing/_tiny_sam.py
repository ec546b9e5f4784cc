"""A tiny random-weight SAM, built offline: a test double for the segment tool's SAM path.

Random weights, real architecture (transformers ``SamModel``). Its masks are noise, but it loads
with ``SamModel``/``SamProcessor.from_pretrained``, takes box and point prompts through the same
processor code as a real SAM checkpoint, and runs in milliseconds on a CPU. Use it to test code
paths (prompt conversion, post-processing, artifacts), never to judge masks.

The processor saved with it is SAM's PIL image processor, so it works without torchvision.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TINY_SAM_IMAGE_SIZE", "build_tiny_sam"]

TINY_SAM_IMAGE_SIZE = 64
"""Pixels per side of the model's input (real SAM: 1024): an 8×8 grid of 8-px patches."""
_PATCH_SIZE = 8
_HIDDEN = 32


def build_tiny_sam(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight SAM and its processor to ``path`` and return it.

    Test double: random weights, for testing code paths only. The same ``seed`` gives the same
    weights. Takes well under a second and about 0.3 MB.
    """
    import torch
    from transformers import (
        SamConfig,
        SamImageProcessorPil,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    embedding = TINY_SAM_IMAGE_SIZE // _PATCH_SIZE
    vision = SamVisionConfig(
        hidden_size=_HIDDEN,
        output_channels=_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_dim=2 * _HIDDEN,
        image_size=TINY_SAM_IMAGE_SIZE,
        patch_size=_PATCH_SIZE,
        # Windowed attention in the first layer, global in the second, as SAM alternates them.
        window_size=embedding // 2,
        global_attn_indexes=[1],
        num_pos_feats=_HIDDEN // 2,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=_HIDDEN,
        image_size=TINY_SAM_IMAGE_SIZE,
        patch_size=_PATCH_SIZE,
        mask_input_channels=4,
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=_HIDDEN,
        mlp_dim=2 * _HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        iou_head_hidden_dim=_HIDDEN,
    )
    config = SamConfig(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder
    )
    with torch.random.fork_rng(devices=[]):  # seed the weights, leave the caller's RNG alone
        torch.manual_seed(seed)
        model = SamModel(config)
    model.save_pretrained(target)

    # Images are resized and padded to the model's input; label masks (for training only) to
    # the decoder's output, 4x the embedding grid, as in real SAM (1024 px in, 256 px masks).
    mask_side = 4 * embedding
    image_processor = SamImageProcessorPil(
        size={"longest_edge": TINY_SAM_IMAGE_SIZE},
        pad_size={"height": TINY_SAM_IMAGE_SIZE, "width": TINY_SAM_IMAGE_SIZE},
        mask_size={"longest_edge": mask_side},
        mask_pad_size={"height": mask_side, "width": mask_side},
    )
    processor = SamProcessor(image_processor=image_processor)  # type: ignore[no-untyped-call]
    processor.save_pretrained(target)
    return target
