"""Tiny random-weight VLMs of further families, built offline, for the in-process model paths.

Like ``build_tiny_vlm`` (LLaVA): real architecture, random weights, answers are noise. Each
family brings its own processor (image tokens, pooling, token types) and chat template
conventions, which is what these doubles exist to exercise. Qwen2.5-VL and Qwen3-VL are in
``_tiny_qwen``, InternVL3 and LLaVA-OneVision in ``_tiny_internvl_onevision``; all are listed
in ``TINY_FAMILIES``. The Qwen processors need torchvision (the ``pathology`` extra's pair).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medagent.errors import InputError
from medagent.testing._tiny_internvl_onevision import BUILDERS as INTERNVL_ONEVISION
from medagent.testing._tiny_qwen import BUILDERS as QWEN
from medagent.testing._tiny_vlm import (
    TINY_VLM_CHAT_TEMPLATE,
    _train_tokenizer,
    _use_llava_hf_layout,
    build_tiny_vlm,
    tiny_text_dims,
)

__all__ = ["TINY_FAMILIES", "build_tiny_family"]

_IMAGE_SIZE = 56
_PATCH_SIZE = 14

# Gemma's turn markup; the image placeholder is the begin-of-image token, which the processor
# expands into begin + soft tokens + end. Gemma has no system turn: the template folds a system
# message into the first user turn, as the real one does.
_GEMMA3_CHAT_TEMPLATE = """\
{%- macro render(content) -%}
    {%- if content is string -%}
        {{- content -}}
    {%- elif content is not none -%}
        {%- for part in content -%}
            {%- if part.type == 'text' -%}
                {{- part.text -}}
            {%- elif part.type in ['image', 'image_url', 'image_pil'] -%}
                {{- '<start_of_image>' -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
    {%- if message.role == 'system' -%}
        {%- set ns.system = render(message.content) + '\\n\\n' -%}
    {%- else -%}
        {%- set role = 'model' if message.role == 'assistant' else 'user' -%}
        {{- '<start_of_turn>' + role + '\\n' + ns.system + render(message.content)
            + '<end_of_turn>\\n' -}}
        {%- set ns.system = '' -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<start_of_turn>model\\n' -}}
{%- endif -%}
"""


def _padded_vocab(tokenizer: Any) -> int:
    return -(-len(tokenizer) // 64) * 64


def _generation_config(tokenizer: Any) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )


def _build_gemma3(target: Path, seed: int) -> None:
    """Gemma 3 (MedGemma's architecture): SigLIP tower, 4 pooled tokens per 56-px image."""
    import torch
    from tokenizers import AddedToken
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    tokenizer = _train_tokenizer(seed)
    specials = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"]
    tokenizer.add_tokens([*specials, "<image_soft_token>"], special_tokens=True)
    # Runs of newlines are single tokens in Gemma's vocabulary, and vLLM's Gemma 3 processor
    # looks them up by their literal text when it merges the newlines around an image.
    tokenizer.add_tokens([AddedToken("\n" * n, normalized=False) for n in range(1, 5)])
    # The processor finds its tokens by these names, as in the real tokenizer's config.
    tokenizer._set_model_specific_special_tokens(
        special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        }
    )
    tokenizer.eos_token = "<end_of_turn>"
    tokenizer.chat_template = _GEMMA3_CHAT_TEMPLATE
    token_id = tokenizer.convert_tokens_to_ids

    text = Gemma3TextConfig(
        vocab_size=_padded_vocab(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=4096,
        sliding_window=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        image_size=_IMAGE_SIZE,
        patch_size=_PATCH_SIZE,
    )
    tokens_per_image = 4  # 4×4 patches average-pooled to 2×2
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=token_id("<start_of_image>"),
        eoi_token_index=token_id("<end_of_image>"),
        image_token_index=token_id("<image_soft_token>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(target)
    _use_llava_hf_layout(target / "model.safetensors")
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}),
        tokenizer=tokenizer,
        chat_template=_GEMMA3_CHAT_TEMPLATE,
        image_seq_length=tokens_per_image,
    )
    processor.save_pretrained(target)


def _build_idefics3(target: Path, seed: int) -> None:
    """Idefics3 (SmolVLM's architecture): pixel-shuffled to 4 tokens per 56-px image.

    Image splitting is off, so every image costs the same (its own crop only); the chat
    template is the tiny LLaVA's ChatML, whose ``<image>`` the processor expands.
    """
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    tokenizer = _train_tokenizer(seed)
    tokenizer.add_tokens(["<fake_token_around_image>", "<global-img>"], special_tokens=True)
    text = LlamaConfig(**tiny_text_dims(tokenizer, _padded_vocab(tokenizer)))
    vision = Idefics3VisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        image_size=_IMAGE_SIZE,
        patch_size=_PATCH_SIZE,
    )
    config = Idefics3Config(
        text_config=text,
        vision_config=vision,
        scale_factor=2,  # 4×4 patches shuffled into 2×2 tokens
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Idefics3ForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(target)
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            size={"longest_edge": _IMAGE_SIZE},
            max_image_size={"longest_edge": _IMAGE_SIZE},
            do_image_splitting=False,
        ),
        tokenizer=tokenizer,
        image_seq_len=4,
        chat_template=TINY_VLM_CHAT_TEMPLATE,
    )
    processor.save_pretrained(target)


def _build_llava(target: Path, seed: int) -> None:
    build_tiny_vlm(target, seed=seed)


TINY_FAMILIES: dict[str, Callable[[Path, int], None]] = {
    "gemma3": _build_gemma3,
    "idefics3": _build_idefics3,
    "llava": _build_llava,
    **QWEN,
    **INTERNVL_ONEVISION,
}
"""Builders by preset name (``medagent.models.preset_for``)."""


def build_tiny_family(family: str, path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight VLM of ``family`` (a preset name) to ``path``; return it.

    Test double: random weights, real architecture. A few seconds and a few MB each. The
    tiny LLaVA (``llava``) is ``build_tiny_vlm``'s.
    """
    if family not in TINY_FAMILIES:
        known = ", ".join(sorted(TINY_FAMILIES))
        raise InputError(f"no tiny builder for {family!r}; known: {known}")
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    TINY_FAMILIES[family](target, seed)
    return target
