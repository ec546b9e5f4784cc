"""Embedder presets (timm and open_clip pathology models) through their real loaders.

Each preset's architecture is built tiny with random weights (same arguments, tiny widths) and
loaded through the preset path, as the published weights would be. Vectors mean nothing here:
accuracy needs the real weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from medagent.errors import ConfigError, DependencyMissingError, InputError
from medagent.retrieval import PRESETS, embedder_names, make_embedder, register_embedder
from medagent.retrieval.base import Embedder
from medagent.testing import synthetic_tissue

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _importable(package: str) -> bool:
    try:
        __import__(package)
    except Exception:
        return False
    return True


def _missing(package: str) -> str:
    return (
        f"{package} is not importable: the [pathology] extra (timm, open_clip_torch) needs a "
        "torchvision built for the installed torch, and none is installed"
    )


NEEDS_TIMM = pytest.mark.skipif(not _importable("timm"), reason=_missing("timm"))
NEEDS_OPEN_CLIP = pytest.mark.skipif(not _importable("open_clip"), reason=_missing("open_clip"))
TIMM_PRESETS = [p for p, spec in PRESETS.items() if spec.backend == "timm"]
OPEN_CLIP_PRESETS = [p for p, spec in PRESETS.items() if spec.backend == "open_clip"]


def tiles() -> list:  # type: ignore[type-arg]
    return [synthetic_tissue(300, 200, seed=seed) for seed in range(3)]


def check_contract(embedder: Embedder, dim: int) -> None:
    images = tiles()
    batched = embedder.embed_images(images)
    single = np.concatenate([embedder.embed_images([image]) for image in images])
    assert embedder.dim == dim
    assert batched.shape == (3, dim) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])


# -- the table -------------------------------------------------------------------------------


def test_every_named_model_has_a_preset() -> None:
    wanted = {"uni", "uni2-h", "virchow2", "prov-gigapath", "h-optimus-0", "h-optimus-1"}
    assert wanted | {"plip", "quiltnet", "coca"} <= set(PRESETS)
    assert set(PRESETS) <= set(embedder_names())


@pytest.mark.parametrize("name", TIMM_PRESETS)
def test_preset_dims_follow_width_and_pooling(name: str) -> None:
    spec = PRESETS[name]
    widths = {"vit_large_patch16_224": 1024, "vit_huge_patch14_224": 1280}
    width = spec.model_args.get("embed_dim", widths.get(spec.architecture, 1536))
    assert spec.dim == spec.pooled_dim(width)


def test_virchow2_concatenates_class_and_patch_mean() -> None:
    spec = PRESETS["virchow2"]
    assert spec.pooling == "cls+mean" and spec.dim == 2560
    assert spec.layers == {"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}


# -- loading, offline -------------------------------------------------------------------------


@NEEDS_TIMM
@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM_PRESETS)
def test_timm_preset_loads_a_tiny_model_of_its_architecture(name: str, tmp_path: Path) -> None:
    from medagent.testing import TINY_TIMM_WIDTH, build_tiny_timm

    folder = build_tiny_timm(tmp_path / name, name)
    embedder = make_embedder(name, folder, device="cpu", batch_size=2)
    check_contract(embedder, PRESETS[name].pooled_dim(TINY_TIMM_WIDTH))
    with pytest.raises(ConfigError, match="vision-only"):
        embedder.embed_texts(["tumour"])


@NEEDS_TIMM
@pytest.mark.slow
def test_a_preset_with_other_arguments_refuses_the_weights(tmp_path: Path) -> None:
    from medagent.testing import build_tiny_timm

    folder = build_tiny_timm(tmp_path / "virchow2", "virchow2")  # SwiGLU, 4 register tokens
    with pytest.raises(ConfigError, match=r"cannot load .* as uni "):
        make_embedder("uni", folder, device="cpu")


@NEEDS_OPEN_CLIP
@pytest.mark.slow
@pytest.mark.parametrize("name", OPEN_CLIP_PRESETS)
def test_open_clip_preset_embeds_images_and_texts(name: str, tmp_path: Path) -> None:
    from medagent.testing import TINY_OPEN_CLIP_DIM, build_tiny_open_clip

    folder = build_tiny_open_clip(tmp_path / name, name)
    embedder = make_embedder(name, folder, device="cpu", batch_size=2)
    check_contract(embedder, TINY_OPEN_CLIP_DIM)
    texts = embedder.embed_texts(["tumour", "normal", "necrosis"])
    assert texts.shape == (3, TINY_OPEN_CLIP_DIM)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_texts(["tumour"])[0], texts[0], atol=1e-5)
    assert embedder.logit_scale == pytest.approx(1 / 0.07, rel=1e-3)  # CLIP's initial value


@NEEDS_OPEN_CLIP
@pytest.mark.slow
def test_an_open_clip_folder_without_weights_is_refused(tmp_path: Path) -> None:
    from medagent.testing import build_tiny_open_clip

    folder = build_tiny_open_clip(tmp_path / "q", "quiltnet")
    (folder / "open_clip_model.safetensors").unlink()
    with pytest.raises(ConfigError, match="holds no weights"):
        make_embedder("quiltnet", folder, device="cpu")


@pytest.mark.slow
@pytest.mark.hf
def test_plip_preset_loads_a_clip_folder(tmp_path: Path) -> None:
    from medagent.testing import TINY_CLIP_PROJECTION_DIM, build_tiny_clip

    embedder = make_embedder("plip", build_tiny_clip(tmp_path / "plip"), device="cpu")
    check_contract(embedder, TINY_CLIP_PROJECTION_DIM)


@pytest.mark.parametrize("name", ["uni2-h", "virchow2", "quiltnet"])
def test_a_gated_model_missing_offline_says_how_to_get_it(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    try:
        make_embedder(name, device="cpu")
    except DependencyMissingError:
        pytest.skip(_missing(PRESETS[name].backend))
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and PRESETS[name].hub_id in message
        if PRESETS[name].gated:
            assert "accept the licence" in message and "--local-dir" in message
    else:
        pytest.fail("no error for a model that is not there")


def test_a_missing_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises((InputError, DependencyMissingError)):
        make_embedder("uni", tmp_path / "nowhere", device="cpu")


def test_unknown_options_are_refused_before_loading() -> None:
    with pytest.raises(ConfigError, match="not colour"):
        make_embedder("virchow2", "x/y", colour=True)


# -- a custom embedder is one call --------------------------------------------------------------


class _Constant:
    name = "constant"
    dim = 4

    def __init__(self, model: object, scale: float = 1.0) -> None:
        self.model = model

    def embed_images(self, images: object) -> np.ndarray:  # type: ignore[type-arg]
        return np.tile(np.float32([1, 0, 0, 0]), (len(images), 1))  # type: ignore[arg-type]

    def embed_texts(self, texts: object) -> np.ndarray:  # type: ignore[type-arg]
        return np.tile(np.float32([0, 1, 0, 0]), (len(texts), 1))  # type: ignore[arg-type]


def test_register_embedder_makes_a_name() -> None:
    register_embedder("test-constant", _Constant)

    embedder = make_embedder("test-constant", "/models/x", scale=2.0)

    assert isinstance(embedder, _Constant) and embedder.model == "/models/x"
    assert "test-constant" in embedder_names()
    with pytest.raises(ConfigError, match="already built in"):
        register_embedder("uni", _Constant)
