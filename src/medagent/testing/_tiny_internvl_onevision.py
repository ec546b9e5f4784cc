"""Tiny random-weight InternVL3 and LLaVA-OneVision, built offline, for the in-process paths.

Like ``build_tiny_vlm``: real architecture, random weights, answers are noise. Both families
put a Qwen2 text model behind a ChatML template; what differs, and what these doubles exist to
exercise, is how each processor turns an image into tokens. Tiling is cut to one tile so each
image costs a few tokens, the same for every image the agents send.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medagent.testing._tiny_vlm import _train_tokenizer, _use_llava_hf_layout, tiny_text_dims

__all__ = ["BUILDERS"]

_IMAGE_SIZE = 56


def _render_macro(placeholder: str) -> str:
    """Jinja macro rendering a message's content, each image part as ``placeholder``."""
    return (
        """\
{%- macro render(content, images=true, texts=true) -%}
    {%- if content is string -%}
        {%- if texts -%}{{- content -}}{%- endif -%}
    {%- elif content is not none -%}
        {%- for part in content -%}
            {%- if part.type == 'text' and texts -%}
                {{- part.text -}}
            {%- elif part.type in ['image', 'image_url', 'image_pil'] and images -%}
                {{- '"""
        + placeholder
        + """' -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
"""
    )


# The -hf checkpoints' ChatML: every role, system included, is a plain turn; each image part is
# a context token and a newline, which the processor expands to <img>, the tile's tokens, </img>.
_INTERNVL_CHAT_TEMPLATE = (
    _render_macro("<IMG_CONTEXT>\\n")
    + """\
{%- for message in messages -%}
    {{- '<|im_start|>' + message.role + '\\n' + render(message.content) + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""
)

# llava-hf's OneVision ChatML: a turn's images come first, one ``<image>\n`` each, then its text.
_ONEVISION_CHAT_TEMPLATE = (
    _render_macro("<image>\\n")
    + """\
{%- for message in messages -%}
    {{- '<|im_start|>' + message.role + '\\n' + render(message.content, texts=false)
        + render(message.content, images=false) + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""
)


def _qwen2_text(tokenizer: Any) -> Any:
    """The Qwen2 language model both families use, at the tiny size."""
    from transformers import Qwen2Config

    # Imported here: ``_tiny_families`` will import this module's ``BUILDERS``.
    from medagent.testing._tiny_families import _padded_vocab

    return Qwen2Config(**tiny_text_dims(tokenizer, _padded_vocab(tokenizer)))


def _build_internvl3(target: Path, seed: int) -> None:
    """InternVL3 (-hf layout): one 56-px tile, pixel-shuffled from 4×4 patches to 4 tokens.

    ``max_patches=1`` keeps the processor's tiling on but always picks the single tile, and a
    single tile gets no thumbnail, so every image costs ``<img>`` + 4 tokens + ``</img>``.
    """
    import torch
    from transformers import (
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
    )

    from medagent.testing._tiny_families import _generation_config

    tokenizer = _train_tokenizer(seed)
    tokenizer.add_tokens(["<img>", "</img>", "<IMG_CONTEXT>", "<video>"], special_tokens=True)
    # The processor finds its tokens by these names, as in the real tokenizer's config.
    tokenizer._set_model_specific_special_tokens(
        special_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        }
    )
    tokenizer.chat_template = _INTERNVL_CHAT_TEMPLATE

    vision = InternVLVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        image_size=_IMAGE_SIZE,
        patch_size=14,
    )
    tokens_per_image = 4  # 4×4 patches, downsample_ratio 0.5: 2×2 tokens
    config = InternVLConfig(
        vision_config=vision,
        text_config=_qwen2_text(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=tokens_per_image,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(target)
    size = {"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessorPil(
            size=size, crop_to_patches=True, min_patches=1, max_patches=1
        ),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size=size),
        image_seq_length=tokens_per_image,
        chat_template=_INTERNVL_CHAT_TEMPLATE,
    )
    processor.save_pretrained(target)


def _build_llava_onevision(target: Path, seed: int) -> None:
    """LLaVA-OneVision: SigLIP seeing a 56-px image as one patch, anyres with one grid point.

    An image costs its base view (1 token) plus the one high-res tile (1 token and a newline):
    3 tokens. With a 1×1 grid, anyres' unpadding never removes a row or column, so the count
    does not depend on the image's shape (on a 4×4 grid it already drops rows past 4:3, and
    GIANT's crops have any shape). The SigLIP head is left out, as in the released checkpoints.
    """
    import torch
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        SiglipVisionConfig,
    )

    from medagent.testing._tiny_families import _generation_config

    tokenizer = _train_tokenizer(seed)
    tokenizer.add_tokens(["<video>"], special_tokens=True)
    tokenizer.chat_template = _ONEVISION_CHAT_TEMPLATE

    vision = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        image_size=_IMAGE_SIZE,
        patch_size=_IMAGE_SIZE,
        vision_use_head=False,
    )
    pinpoints = [[_IMAGE_SIZE, _IMAGE_SIZE]]
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=_qwen2_text(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        # The released checkpoints' choices: the last layer's features, all of them (no CLS).
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(target)
    _use_llava_hf_layout(target / "model.safetensors")
    size = {"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}
    processor = LlavaOnevisionProcessor(  # type: ignore[no-untyped-call]
        image_processor=LlavaOnevisionImageProcessorPil(size=size, image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=1,  # base view: the one patch
        vision_feature_select_strategy="full",
        chat_template=_ONEVISION_CHAT_TEMPLATE,
        vision_aspect_ratio="anyres_max_9",
    )
    processor.save_pretrained(target)


BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "internvl3": _build_internvl3,
    "llava-onevision": _build_llava_onevision,
}
"""Builders by preset name (``medagent.models.preset_for``)."""
