"""A tiny random-weight CLIP, built offline: a test double for the ``hf`` embedder.

Random weights, real architecture (transformers ``CLIPModel``). Its vectors mean nothing, but it
loads with ``AutoProcessor``/``AutoModel``, takes images through CLIP's PIL image processor and
texts through a real BPE tokenizer, and embeds both into one space in milliseconds on a CPU.
Use it to test code paths (batching, devices, dtypes, normalization), never to judge retrieval.

The image processor saved with it is ``CLIPImageProcessorPil``, so it works without torchvision.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

__all__ = ["TINY_CLIP_IMAGE_SIZE", "TINY_CLIP_PROJECTION_DIM", "build_tiny_clip"]

TINY_CLIP_IMAGE_SIZE = 32
"""Pixels per side after the processor's resize and crop: 4×4 patches of 8 px."""
TINY_CLIP_PROJECTION_DIM = 32
"""Length of the image and text vectors (the shared projection)."""
_PATCH_SIZE = 8
_HIDDEN = 64
_MAX_TEXT_TOKENS = 32
_VOCAB_TARGET = 500

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"

_WORDS = (
    "a an the of with and in on photo image scan slide tile view axial coronal sagittal chest "
    "head brain abdomen liver kidney lung heart bone fracture mass nodule effusion lesion normal "
    "tumour tumor carcinoma gland stroma nuclei cells necrosis mitosis inflammation haematoxylin "
    "eosin stain ct mri xray x-ray radiograph pathology histology left right upper lower small "
    "large no sign evidence showing shows"
)


def _corpus(seed: int) -> list[str]:
    """Deterministic caption-like text for the BPE trainer."""
    rng = random.Random(seed)
    words = _WORDS.split()
    return [" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(800)]


def _train_tokenizer(seed: int) -> Any:
    """A byte-level BPE that wraps every text in start/end tokens, as CLIP's tokenizer does.

    CLIP pools the text at the end token, so the end token must be there and be the pad token's
    id only after it (padding goes on the right).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_TARGET,
        special_tokens=[_BOS, _EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(seed), trainer=trainer)
    core.post_processor = processors.TemplateProcessing(
        single=f"{_BOS} $A {_EOS}",
        special_tokens=[(_BOS, core.token_to_id(_BOS)), (_EOS, core.token_to_id(_EOS))],
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        bos_token=_BOS,
        eos_token=_EOS,
        pad_token=_EOS,
        model_max_length=_MAX_TEXT_TOKENS,
        padding_side="right",
    )


def build_tiny_clip(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight CLIP, its tokenizer and image processor to ``path``.

    Test double: random weights, for testing code paths only. The same ``seed`` gives the same
    tokenizer and weights. Takes about a second and well under 1 MB.
    """
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPVisionConfig,
    )

    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(seed)
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN,
        intermediate_size=2 * _HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=_MAX_TEXT_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=_HIDDEN,
        intermediate_size=2 * _HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TINY_CLIP_IMAGE_SIZE,
        patch_size=_PATCH_SIZE,
    )
    config = CLIPConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        projection_dim=TINY_CLIP_PROJECTION_DIM,
    )
    with torch.random.fork_rng(devices=[]):  # seed the weights, leave the caller's RNG alone
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(target)

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": TINY_CLIP_IMAGE_SIZE},
        crop_size={"height": TINY_CLIP_IMAGE_SIZE, "width": TINY_CLIP_IMAGE_SIZE},
    )
    processor = CLIPProcessor(  # type: ignore[no-untyped-call]
        image_processor=image_processor, tokenizer=tokenizer
    )
    processor.save_pretrained(target)
    return target
