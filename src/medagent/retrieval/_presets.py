"""Named pathology foundation models: how each one is built, fed and pooled.

The weights of these models are published with a short loading snippet whose arguments are not
all in the hub's ``config.json`` (``mlp_layer=SwiGLUPacked``, ``act_layer=SiLU`` are classes; some
repos omit the sizes). A preset keeps that snippet as data, so loading a folder or a cached hub
snapshot builds exactly the published architecture. Every gated model needs its licence accepted
on its hub page first; ``gated_help`` says how.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PRESETS", "EmbedderPreset", "Pooling", "PresetBackend", "gated_help"]

PresetBackend = Literal["timm", "open_clip", "hf"]
Pooling = Literal["cls", "cls+mean", "model"]
"""``cls``: the class token; ``cls+mean``: the class token concatenated with the mean of the patch
tokens (register tokens skipped), Virchow2's recipe; ``model``: what the model's own image
features call returns (CLIP, CoCa)."""

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
_HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)


class EmbedderPreset(BaseModel):
    """One named model: backend, architecture and its arguments, input, pooling, licence."""

    model_config = ConfigDict(frozen=True)

    name: str
    backend: PresetBackend
    hub_id: str = Field(description="where the weights are published (Hugging Face hub)")
    architecture: str = Field(description="timm or open_clip architecture name; '' for hf")
    model_args: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON-able architecture arguments; a folder's config.json overrides them",
    )
    layers: dict[str, str] = Field(
        default_factory=dict,
        description="class-valued arguments by name (mlp_layer: SwiGLUPacked, act_layer: SiLU)",
    )
    image_size: int = 224
    resize: int = Field(224, description="shorter side before the centre crop to image_size")
    mean: tuple[float, float, float] = _IMAGENET_MEAN
    std: tuple[float, float, float] = _IMAGENET_STD
    pooling: Pooling = "cls"
    dim: int = Field(description="length of the published model's vectors")
    licence: str
    gated: bool
    text: bool = Field(False, description="has a text tower (zero-shot, text search)")

    def layer_classes(self) -> dict[str, Any]:
        """``layers`` as classes: ``SwiGLUPacked`` from timm, ``SiLU`` from torch."""
        import timm.layers
        import torch

        resolved: dict[str, Any] = {}
        for key, name in self.layers.items():
            module = next((m for m in (timm.layers, torch.nn) if hasattr(m, name)), None)
            if module is None:
                raise ValueError(f"unknown layer {name!r} in the {self.name} preset")
            resolved[key] = getattr(module, name)
        return resolved

    def pooled_dim(self, width: int) -> int:
        """Vector length for a model of token width ``width`` (the tiny test models too)."""
        return 2 * width if self.pooling == "cls+mean" else width


def gated_help(hub_id: str) -> str:
    """The steps to get a gated model, in one line."""
    return (
        f"accept the licence on https://huggingface.co/{hub_id}, run `hf auth login` "
        f"(or huggingface-cli login), download it with `hf download {hub_id} --local-dir DIR`, "
        "and pass DIR as the model"
    )


_TIMM_GIANT_DINOV2 = {"img_size": 224, "init_values": 1e-5, "num_classes": 0}

PRESETS: dict[str, EmbedderPreset] = {
    preset.name: preset
    for preset in (
        EmbedderPreset(
            name="uni",
            backend="timm",
            hub_id="MahmoodLab/UNI",
            architecture="vit_large_patch16_224",
            model_args={
                "img_size": 224,
                "patch_size": 16,
                "init_values": 1e-5,
                "num_classes": 0,
                "dynamic_img_size": True,
            },
            dim=1024,
            licence="CC-BY-NC-ND-4.0, gated (academic, non-commercial)",
            gated=True,
        ),
        EmbedderPreset(
            name="uni2-h",
            backend="timm",
            hub_id="MahmoodLab/UNI2-h",
            architecture="vit_giant_patch14_224",
            model_args={
                "img_size": 224,
                "patch_size": 14,
                "depth": 24,
                "num_heads": 24,
                "init_values": 1e-5,
                "embed_dim": 1536,
                "mlp_ratio": 2.66667 * 2,
                "num_classes": 0,
                "no_embed_class": True,
                "reg_tokens": 8,
                "dynamic_img_size": True,
            },
            layers={"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"},
            dim=1536,
            licence="CC-BY-NC-ND-4.0, gated (academic, non-commercial)",
            gated=True,
        ),
        EmbedderPreset(
            name="virchow2",
            backend="timm",
            hub_id="paige-ai/Virchow2",
            architecture="vit_huge_patch14_224",
            model_args={
                "img_size": 224,
                "init_values": 1e-5,
                "num_classes": 0,
                "mlp_ratio": 5.3375,
                "global_pool": "",
                "dynamic_img_size": True,
                "reg_tokens": 4,
                "no_embed_class": True,
            },
            layers={"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"},
            pooling="cls+mean",
            dim=2560,
            licence="CC-BY-NC-ND-4.0, gated (non-commercial)",
            gated=True,
        ),
        EmbedderPreset(
            name="prov-gigapath",
            backend="timm",
            hub_id="prov-gigapath/prov-gigapath",
            architecture="vit_giant_patch14_dinov2",
            model_args={
                **_TIMM_GIANT_DINOV2,
                "in_chans": 3,
                "patch_size": 16,
                "embed_dim": 1536,
                "depth": 40,
                "num_heads": 24,
                "mlp_ratio": 5.33334,
            },
            resize=256,
            dim=1536,
            licence="Apache-2.0 terms, gated (accept on the hub page)",
            gated=True,
        ),
        EmbedderPreset(
            name="h-optimus-0",
            backend="timm",
            hub_id="bioptimus/H-optimus-0",
            architecture="vit_giant_patch14_reg4_dinov2",
            model_args={**_TIMM_GIANT_DINOV2, "dynamic_img_size": False},
            mean=_HOPTIMUS_MEAN,
            std=_HOPTIMUS_STD,
            dim=1536,
            licence="Apache-2.0, gated (accept on the hub page)",
            gated=True,
        ),
        EmbedderPreset(
            name="h-optimus-1",
            backend="timm",
            hub_id="bioptimus/H-optimus-1",
            architecture="vit_giant_patch14_reg4_dinov2",
            model_args={**_TIMM_GIANT_DINOV2, "dynamic_img_size": False},
            mean=_HOPTIMUS_MEAN,
            std=_HOPTIMUS_STD,
            dim=1536,
            licence="non-commercial licence, gated (accept on the hub page)",
            gated=True,
        ),
        EmbedderPreset(
            name="plip",
            backend="hf",
            hub_id="vinid/plip",
            architecture="",
            pooling="model",
            dim=512,
            licence="research use (see the hub page), not gated",
            gated=False,
            text=True,
        ),
        EmbedderPreset(
            name="quiltnet",
            backend="open_clip",
            hub_id="wisdomik/QuiltNet-B-32",
            architecture="ViT-B-32",
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
            pooling="model",
            dim=512,
            licence="MIT (research use), not gated",
            gated=False,
            text=True,
        ),
        EmbedderPreset(
            name="coca",
            backend="open_clip",
            hub_id="laion/CoCa-ViT-B-32-laion2B-s13B-b90k",
            architecture="coca_ViT-B-32",
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
            pooling="model",
            dim=512,
            licence="MIT, not gated; CONCH (a pathology CoCa) needs its own package: "
            "register it with register_embedder",
            gated=False,
            text=True,
        ),
    )
}
