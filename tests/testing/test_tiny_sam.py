"""The tiny random-weight SAM: loads offline without torchvision, small, reproducible."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from medagent.testing._tiny_sam import TINY_SAM_IMAGE_SIZE, build_tiny_sam

pytestmark = [pytest.mark.slow, pytest.mark.hf]

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sam(tmp_path_factory.mktemp("tiny_sam"), seed=0)


def test_config_names_the_sam_architecture(tiny_sam: Path) -> None:
    config = json.loads((tiny_sam / "config.json").read_text())
    assert config["architectures"] == ["SamModel"]
    assert config["model_type"] == "sam"
    assert config["vision_config"]["image_size"] == TINY_SAM_IMAGE_SIZE


def test_loads_offline_with_sam_classes(tiny_sam: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import SamModel, SamProcessor

    model, info = SamModel.from_pretrained(tiny_sam, output_loading_info=True)
    processor = SamProcessor.from_pretrained(tiny_sam)

    assert type(model).__name__ == "SamModel"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    if importlib.util.find_spec("torchvision") is None:
        # The PIL image processor is what makes the model usable without torchvision.
        assert type(processor.image_processor).__name__ == "SamImageProcessorPil"


def test_box_and_point_prompts_give_image_sized_masks(tiny_sam: Path) -> None:
    import torch
    from transformers import SamModel, SamProcessor

    model = SamModel.from_pretrained(tiny_sam).eval()
    processor = SamProcessor.from_pretrained(tiny_sam)
    image = Image.new("RGB", (150, 100), (230, 160, 200))
    prompts = [
        {"input_boxes": [[[10.0, 10.0, 80.0, 60.0]]]},
        {"input_points": [[[[40.0, 30.0]]]], "input_labels": [[[1]]]},
    ]
    for prompt in prompts:
        inputs = processor(images=image, return_tensors="pt", **prompt)
        assert tuple(inputs["pixel_values"].shape) == (
            1,
            3,
            TINY_SAM_IMAGE_SIZE,
            TINY_SAM_IMAGE_SIZE,
        )
        sizes = inputs.pop("original_sizes"), inputs.pop("reshaped_input_sizes")
        with torch.inference_mode():
            out = model(**inputs, multimask_output=False)
        masks = processor.post_process_masks(out.pred_masks, *sizes)
        assert tuple(masks[0].shape) == (1, 1, 100, 150)
        assert masks[0].dtype == torch.bool
        assert tuple(out.iou_scores.shape) == (1, 1, 1)


def test_stays_small(tiny_sam: Path) -> None:
    size = sum(f.stat().st_size for f in tiny_sam.iterdir())
    assert size < 2 * 1024 * 1024


def test_same_seed_gives_identical_files(tiny_sam: Path, tmp_path: Path) -> None:
    again = build_tiny_sam(tmp_path / "again", seed=0)
    other = build_tiny_sam(tmp_path / "other", seed=1)

    names = sorted(f.name for f in tiny_sam.iterdir())
    assert names == sorted(f.name for f in again.iterdir())
    for name in names:
        assert (tiny_sam / name).read_bytes() == (again / name).read_bytes(), name
    weights = (tiny_sam / "model.safetensors").read_bytes()
    assert weights != (other / "model.safetensors").read_bytes()
