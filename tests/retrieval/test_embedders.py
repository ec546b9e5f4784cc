"""Embedders: the weight-free default one and the transformers one (on a tiny random CLIP).

The contract (shape, dtype, unit rows, determinism, batching) runs on both. The default
embedder is also judged on real data: organ retrieval on VQA-RAD and radiology-vs-pathology
separation, the job the domain router gives it.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from medagent.errors import ConfigError, InputError
from medagent.imaging import Region, Renderer, open_image
from medagent.retrieval._default_embedder import DefaultEmbedder
from medagent.retrieval._embedders import make_embedder
from medagent.retrieval.base import Embedder
from medagent.testing import synthetic_tissue
from medagent.testing._tiny_clip import TINY_CLIP_PROJECTION_DIM, build_tiny_clip

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HF = [pytest.mark.slow, pytest.mark.hf]


def radiograph(seed: int, size: int = 256) -> Image.Image:
    """A greyscale cross-section: black background, a grey body, a bright bone, dark organs."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    rx, ry = rng.uniform(0.32, 0.45) * size, rng.uniform(0.25, 0.4) * size
    c = size / 2
    draw.ellipse((c - rx, c - ry, c + rx, c + ry), fill=int(rng.integers(90, 130)))
    draw.ellipse((c - 12, c + ry - 40, c + 12, c + ry - 16), fill=235)
    for _ in range(4):
        x, y = rng.uniform(c - rx / 2, c + rx / 2), rng.uniform(c - ry / 2, c + ry / 2)
        r = rng.uniform(8, 24)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.integers(50, 80)))
    return image


def mixed_images() -> list[Image.Image]:
    """Modes and sizes an embedder meets: RGB, greyscale, RGBA, 16-bit, tiny, wide."""
    deep = Image.fromarray((np.arange(64 * 48).reshape(48, 64) % 4000).astype(np.uint16))
    return [
        synthetic_tissue(300, 200, seed=1),
        radiograph(1),
        Image.new("RGBA", (40, 40), (200, 120, 180, 128)),
        deep,
        Image.new("RGB", (1, 1), (10, 20, 30)),
        Image.new("RGB", (1000, 90), (250, 250, 250)),
    ]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), seed=0)


@pytest.fixture(params=["default", pytest.param("hf", marks=HF)])
def embedder(request: pytest.FixtureRequest) -> Embedder:
    if request.param == "default":
        return make_embedder("default")
    return make_embedder("hf", request.getfixturevalue("tiny_clip"), device="cpu", batch_size=2)


# -- the contract, on every embedder -----------------------------------------------------------


def test_vectors_are_float32_unit_rows_of_dim(embedder: Embedder) -> None:
    vectors = embedder.embed_images(mixed_images())

    assert isinstance(embedder, Embedder)
    assert vectors.dtype == np.float32
    assert vectors.shape == (6, embedder.dim)
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_images_give_same_vectors_batched_or_one_by_one(embedder: Embedder) -> None:
    images = mixed_images()

    together = embedder.embed_images(images)
    again = embedder.embed_images(images)
    alone = np.concatenate([embedder.embed_images([image]) for image in images])

    np.testing.assert_array_equal(together, again)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_no_images_give_an_empty_matrix(embedder: Embedder) -> None:
    assert embedder.embed_images([]).shape == (0, embedder.dim)


# -- the default embedder ----------------------------------------------------------------------


def test_default_embedder_groups_slides_with_slides_and_scans_with_scans() -> None:
    tissue = [synthetic_tissue(256, 256, seed=s) for s in range(4)]
    scans = [radiograph(s) for s in range(4)]
    vectors = DefaultEmbedder().embed_images(tissue + scans)
    kind = np.array([0] * 4 + [1] * 4)

    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)

    assert np.array_equal(kind[similarity.argmax(axis=1)], kind)
    same = similarity[kind[:, None] == kind[None, :]]
    other = similarity[kind[:, None] != kind[None, :]]
    assert same[np.isfinite(same)].min() > other.max()


def test_default_embedder_reads_transparency_as_glass_and_stretches_16_bit() -> None:
    embedder = DefaultEmbedder()
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    ramp = np.tile(np.arange(64, dtype=np.uint16) * 60, (64, 1))  # 0..3780: beyond 8 bits
    stretched = (ramp.astype(np.float64) * 255 / ramp.max()).astype(np.uint8)

    vectors = embedder.embed_images(
        [clear, white, Image.fromarray(ramp), Image.fromarray(stretched)]
    )

    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    np.testing.assert_allclose(vectors[2], vectors[3], atol=1e-6)


def test_default_embedder_has_no_text_side() -> None:
    with pytest.raises(ConfigError, match="cannot embed text"):
        DefaultEmbedder().embed_texts(["a chest radiograph"])


def test_default_embedder_name_carries_a_version() -> None:
    embedder = make_embedder("default")
    assert isinstance(embedder, DefaultEmbedder)
    assert embedder.name == "default-v1"
    assert embedder.dim == 302


# -- building embedders from settings ----------------------------------------------------------


def test_hf_without_a_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs a model"):
        make_embedder("hf")


@pytest.mark.parametrize(
    ("name", "model", "options", "message"),
    [
        ("default", "some/model", {}, "needs no model"),
        ("default", None, {"device": "cpu"}, "needs no model"),
        ("hf", "some/model", {"colour": True}, "not colour"),
        ("clip", None, {}, "unknown embedder 'clip'"),
    ],
)
def test_wrong_settings_are_config_errors(
    name: str, model: str | None, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_embedder(name, model, **options)  # type: ignore[arg-type]


@pytest.mark.hf
def test_missing_model_folder_is_a_one_line_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as caught:
        make_embedder("hf", tmp_path / "no-such-model")
    assert "\n" not in str(caught.value)


@pytest.mark.hf
def test_folder_without_config_is_a_one_line_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no config\.json") as caught:
        make_embedder("hf", str(tmp_path))
    assert "\n" not in str(caught.value)


@pytest.mark.hf
def test_hub_id_not_cached_offline_is_a_one_line_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache") as caught:
        make_embedder("hf", "medagent-tests/no-such-clip")
    assert "\n" not in str(caught.value)


# -- the transformers embedder on the tiny CLIP ------------------------------------------------


@pytest.mark.slow
@pytest.mark.hf
def test_tiny_clip_loads_offline_with_auto_classes_and_is_reproducible(
    tiny_clip: Path, tmp_path: Path
) -> None:
    import importlib.util

    from transformers import AutoModel, AutoProcessor

    model, info = AutoModel.from_pretrained(tiny_clip, output_loading_info=True)
    processor = AutoProcessor.from_pretrained(tiny_clip)  # type: ignore[no-untyped-call]
    again = build_tiny_clip(tmp_path / "again", seed=0)

    assert type(model).__name__ == "CLIPModel"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    if importlib.util.find_spec("torchvision") is None:
        assert type(processor.image_processor).__name__ == "CLIPImageProcessorPil"
    for name in ("model.safetensors", "tokenizer.json"):
        assert (again / name).read_bytes() == (tiny_clip / name).read_bytes()
    assert sum(f.stat().st_size for f in tiny_clip.iterdir()) < 2_000_000


@pytest.mark.slow
@pytest.mark.hf
def test_tiny_clip_embeds_images_and_texts_into_one_space(tiny_clip: Path) -> None:
    embedder = make_embedder("hf", tiny_clip, device="cpu")
    texts = ["a chest radiograph", "H&E stained tissue", "axial CT of the head " * 20]

    images = embedder.embed_images(mixed_images())
    vectors = embedder.embed_texts(texts)

    assert embedder.dim == TINY_CLIP_PROJECTION_DIM
    assert images.shape == (6, embedder.dim)
    assert vectors.shape == (3, embedder.dim)  # the long text is truncated, not refused
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


@pytest.mark.slow
@pytest.mark.hf
def test_tiny_clip_texts_batched_equal_one_by_one(tiny_clip: Path) -> None:
    embedder = make_embedder("hf", tiny_clip, device="cpu", batch_size=2)
    texts = ["lung", "a small nodule in the left upper lobe", "liver", "no fracture"]

    together = embedder.embed_texts(texts)
    alone = np.concatenate([embedder.embed_texts([text]) for text in texts])

    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.slow
@pytest.mark.hf
def test_half_precision_still_gives_float32_unit_rows(tiny_clip: Path) -> None:
    embedder = make_embedder("hf", tiny_clip, device="cpu", dtype="bfloat16")

    vectors = embedder.embed_images([radiograph(0), synthetic_tissue(100, 100)])

    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.hf
def test_vision_only_model_embeds_images_and_refuses_texts(tmp_path: Path) -> None:
    import torch
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    config = ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    ViTModel(config).save_pretrained(tmp_path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    embedder = make_embedder("hf", tmp_path, device="cpu")

    assert embedder.embed_images([radiograph(0)]).shape == (1, 32)
    with pytest.raises(ConfigError, match="has no text side"):
        embedder.embed_texts(["a chest radiograph"])


# -- the default embedder on real data ---------------------------------------------------------


def _vqa_rad(shared_data: Path) -> tuple[list[Image.Image], np.ndarray]:
    """Every VQA-RAD image with an organ label (HEAD, CHEST, ABD) and the labels."""
    folder = shared_data / "vqa-rad"
    questions = json.loads((folder / "vqa_rad_public.json").read_text())
    organ = {q["image_name"]: q["image_organ"] for q in questions}
    names = sorted(organ)
    images = []
    for name in names:
        with Image.open(folder / "images" / name) as image:
            images.append(image.convert("RGB"))
    return images, np.array([organ[name] for name in names])


def _pathology(shared_data: Path) -> list[Image.Image]:
    """The H&E tiles (tissue, glass, pen) and regions of the real slide at three scales."""
    images = []
    for path in sorted((shared_data / "tiles").glob("*.png")):
        with Image.open(path) as image:
            images.append(image.copy())
    slide = open_image(shared_data / "slides" / "cmu-1-small-region.svs")
    renderer = Renderer(slide)
    width, height = slide.dimensions.width, slide.dimensions.height
    images.append(renderer.render(Region(x=0, y=0, width=width, height=height), 256).image)
    for columns, rows in ((4, 5), (2, 3)):
        w, h = width // columns, height // rows
        for i in range(columns):
            for j in range(rows):
                region = Region(x=i * w, y=j * h, width=w, height=h)
                images.append(renderer.render(region, 256).image)
    return images


@pytest.fixture(scope="module")
def vqa_rad(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    images, organs = _vqa_rad(shared_data)
    return DefaultEmbedder().embed_images(images), organs


@pytest.mark.realdata
def test_vqa_rad_organ_precision_at_5(
    vqa_rad: tuple[np.ndarray, np.ndarray], record_property: Callable[[str, object], None]
) -> None:
    vectors, organs = vqa_rad
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)  # leave one out
    top5 = np.argsort(-similarity, axis=1, kind="stable")[:, :5]

    precision = float((organs[top5] == organs[:, None]).mean())
    record_property("vqa_rad_organ_precision_at_5", precision)

    assert len(organs) == 314 and set(organs) == {"HEAD", "CHEST", "ABD"}
    assert precision >= 0.93  # measured 0.942; chance is about 0.33


@pytest.mark.realdata
def test_radiology_and_pathology_are_each_others_strangers(
    shared_data: Path, vqa_rad: tuple[np.ndarray, np.ndarray]
) -> None:
    radiology, _ = vqa_rad
    pathology = DefaultEmbedder().embed_images(_pathology(shared_data))
    vectors = np.concatenate([radiology, pathology])
    domain = np.array(["radiology"] * len(radiology) + ["pathology"] * len(pathology))
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)  # leave one out

    nearest = similarity.argmax(axis=1)
    wrong_1nn = np.flatnonzero(domain[nearest] != domain)
    # What the kNN domain router does: a similarity-weighted vote of the 7 nearest.
    wrong_vote = []
    for i, row in enumerate(similarity):
        votes: dict[str, float] = defaultdict(float)
        for j in np.argsort(-row, kind="stable")[:7]:
            votes[domain[j]] += max(float(row[j]), 0.0) + 1e-6
        if max(votes, key=votes.__getitem__) != domain[i]:
            wrong_vote.append(i)

    assert len(pathology) == 14 + 27
    assert wrong_1nn.tolist() == []
    assert wrong_vote == []
