"""A tiny random-weight LLaVA, built offline: a test double for the in-process model paths.

Random weights, real architecture. The model answers nonsense, but it loads with
``AutoProcessor``/``AutoModelForImageTextToText``, takes images through the same processor code
as a real LLaVA, follows a ChatML chat template with Hermes-style tools, and can be served by
vLLM. Use it to test code paths (message conversion, image handling, constrained decoding, tool
parsing, serving), never to judge answers.

Why LLaVA and not Qwen2-VL: in transformers 5.x the Qwen2-VL processor needs a video processor,
which needs torchvision; LLaVA's processor is a tokenizer plus CLIP's PIL image processor.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

__all__ = ["TINY_VLM_CHAT_TEMPLATE", "build_tiny_vlm"]

IMAGE_SIZE = 56
"""Pixels per side after the processor's resize and crop: 4×4 patches of 14 px."""
PATCH_SIZE = 14
VOCAB_TARGET = 2000
"""BPE vocabulary the trainer aims for (plus specials); the model's rows are padded to 64."""

_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
# Not special: they must survive ``skip_special_tokens`` so tool calls can be parsed from text.
_TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

# ChatML with Hermes-style tools: tool signatures go into the system turn, calls come back as
# <tool_call>{json}</tool_call>, tool results go in a user turn inside <tool_response>. Content
# may be a string or a list of parts (what vLLM's "openai" content format passes); an image part
# becomes the image token, which the processor expands to one token per patch. All output is in
# {{- ... }} expressions so the template renders the same whatever the whitespace settings.
TINY_VLM_CHAT_TEMPLATE = """\
{%- macro render(content) -%}
    {%- if content is string -%}
        {{- content -}}
    {%- elif content is not none -%}
        {%- for part in content -%}
            {%- if part.type == 'text' -%}
                {{- part.text -}}
            {%- elif part.type in ['image', 'image_url', 'image_pil'] -%}
                {{- '<image>' -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- set has_system = messages | length > 0 and messages[0].role == 'system' -%}
{%- if tools -%}
    {{- '<|im_start|>system\\n' -}}
    {%- if has_system -%}
        {{- render(messages[0].content) + '\\n\\n' -}}
    {%- endif -%}
    {{- '# Tools\\n\\nYou may call the functions listed inside <tools></tools>:\\n<tools>' -}}
    {%- for tool in tools -%}
        {{- '\\n' + (tool | tojson) -}}
    {%- endfor -%}
    {{- '\\n</tools>\\n\\nTo call one, answer with a JSON object of its name and arguments '
        'inside <tool_call></tool_call> tags:\\n<tool_call>\\n'
        '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' -}}
{%- elif has_system -%}
    {{- '<|im_start|>system\\n' + render(messages[0].content) + '<|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages -%}
    {%- if loop.first and has_system -%}
    {%- elif message.role == 'tool' -%}
        {{- '<|im_start|>user\\n<tool_response>\\n' + render(message.content)
            + '\\n</tool_response><|im_end|>\\n' -}}
    {%- elif message.role == 'assistant' -%}
        {{- '<|im_start|>assistant\\n' + render(message.content) -}}
        {%- for call in message.tool_calls or [] -%}
            {%- set fn = call.function if call.function is defined else call -%}
            {%- if not loop.first or message.content -%}
                {{- '\\n' -}}
            {%- endif -%}
            {{- '<tool_call>\\n{"name": ' + (fn.name | tojson) + ', "arguments": ' -}}
            {%- if fn.arguments is string -%}
                {{- fn.arguments -}}
            {%- else -%}
                {{- fn.arguments | tojson -}}
            {%- endif -%}
            {{- '}\\n</tool_call>' -}}
        {%- endfor -%}
        {{- '<|im_end|>\\n' -}}
    {%- else -%}
        {{- '<|im_start|>' + message.role + '\\n' + render(message.content) + '<|im_end|>\\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""

_VOCABULARY = (
    "the a of and to in is with for on by this that slide tissue tumor normal cell cells nucleus "
    "nuclei stroma gland region margin patch image zoom level view field lesion mitosis grade "
    "benign malignant carcinoma necrosis inflammation lymphocyte scan chest lung nodule opacity "
    "fracture bone liver kidney heart brain mass size shape edge left right upper lower center "
    "label confidence finding report answer question yes no maybe high low score reason because "
    "look find show call tool name arguments result error value true false null none"
)


def _corpus(seed: int) -> list[str]:
    """Deterministic training text: prose, JSON and chat markup, so all of them tokenize well."""
    rng = random.Random(seed)
    words_pool = _VOCABULARY.split()
    lines: list[str] = []
    for _ in range(1500):
        words = rng.choices(words_pool, k=rng.randint(4, 14))
        sentence = " ".join(words).capitalize() + rng.choice([".", "?", "!", ",", ":", ";"])
        lines.append(sentence)
        key, other = rng.sample(words_pool, 2)
        number = rng.randint(0, 1000)
        lines.append(f'{{"{key}": "{other}", "{other}": {number}, "ok": true, "x": [1, 2.5]}}')
        lines.append(f"x = {number} + {rng.random():.3f} * ({key} - {other}) # {key}_{other}()")
    return lines


def _train_tokenizer(seed: int) -> Any:
    """A byte-level BPE (every byte representable, like GPT-2/Qwen) with the chat specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=4096,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<image>"]})
    tokenizer.add_tokens(_TOOL_TOKENS, special_tokens=False)
    tokenizer.chat_template = TINY_VLM_CHAT_TEMPLATE
    return tokenizer


def tiny_text_dims(tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """The language model every tiny test VLM shares: 2 layers of width 128, one KV head."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }


def _use_llava_hf_layout(weights: Path) -> None:
    """Rename vision weights to ``vision_tower.vision_model.*``, as in the hub's checkpoints.

    transformers 5.x drops the ``vision_model`` level when saving a CLIP or SigLIP tower (LLaVA,
    Gemma 3), but vLLM's loaders expect it, as do the real checkpoints on the hub; transformers
    loads both layouts.
    """
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    prefix, legacy = "vision_tower.", "vision_tower.vision_model."
    renamed = {
        prefix + "vision_model." + name[len(prefix) :]
        if name.startswith(prefix) and not name.startswith(legacy)
        else name: tensor
        for name, tensor in tensors.items()
    }
    save_file(renamed, weights, metadata={"format": "pt"})


def build_tiny_vlm(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight LLaVA (CLIP vision, Llama text) to ``path`` and return it.

    Test double: random weights, real architecture, for testing code paths only. The same
    ``seed`` gives the same tokenizer and weights. Takes a few seconds and about 5 MB.
    """
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(seed)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vocab_size = -(-len(tokenizer) // 64) * 64

    # head_dim 64 in both towers: the common size, so no attention kernel meets an odd one.
    vision = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=128,
    )
    text = LlamaConfig(**tiny_text_dims(tokenizer, vocab_size))
    patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=patches,
        # LLaVA-1.5's choices: the penultimate layer's features, the CLS token dropped.
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )

    with torch.random.fork_rng(devices=[]):  # seed the weights, leave the caller's RNG alone
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(target)
    _use_llava_hf_layout(target / "model.safetensors")

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(  # type: ignore[no-untyped-call]
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=TINY_VLM_CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(target)
    return target
