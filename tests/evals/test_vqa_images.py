"""Every image path an eval item names is read by ``open_image``: DICOM, slides, plain images.

``eval run --method vqa`` with a DICOM file in a JSONL ``images`` list failed with "cannot
identify image file" (PIL was asked to read it). Cases: pydicom's own CT test file; the shared
real chest radiograph (skipped when absent); a pyramidal slide, sent as an overview no larger
than the path-image limit; a plain PNG, sent pixel for pixel; and ``eval run`` end to end
with a DICOM image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from cli_support import medagent
from medagent.evals import EvalItem, EvalRunner, RunConfig, load_results, make_method
from medagent.models import ScriptedModel
from medagent.prompts._modules import PATH_IMAGE_LONG_SIDE
from medagent.testing import synthetic_tissue, write_pyramid_tiff

YES = {"json": {"answer": "yes"}}


def ct_small() -> Path:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None, "pydicom ships CT_small.dcm"
    return Path(path)


async def sent_image(image: Path, tmp_path: Path) -> Image.Image:
    """Run the vqa method on one item with ``image``; the image the model was sent."""
    item = EvalItem(id="x", task="t", images=[str(image)], question="Is it?", answer="yes")
    model = ScriptedModel([YES])
    config = RunConfig(
        dataset="t", data_path="x", dataset_sha256="0", method="vqa", backend="s", model="s"
    )
    outcome = await EvalRunner(model, make_method("vqa"), config, tmp_path / "run").run([item])
    result = load_results(tmp_path / "run" / "results.jsonl")["x"]
    assert outcome.ok == 1, result.error
    (part,) = model.requests[0].messages[-1].images
    assert part.image is not None
    return part.image


async def test_a_dicom_ct_is_sent_as_its_pixels(tmp_path: Path) -> None:
    image = await sent_image(ct_small(), tmp_path)
    assert image.mode == "RGB" and image.size == (128, 128)
    assert np.asarray(image).std() > 0  # windowed, not a blank frame


@pytest.mark.realdata
async def test_the_shared_chest_radiograph_is_sent(shared_data: Path, tmp_path: Path) -> None:
    dicom = shared_data / "radiology" / "dx_image.dcm"
    if not dicom.is_file():
        pytest.skip(f"real-data test: {dicom} is not present")
    image = await sent_image(dicom, tmp_path)
    assert image.size == (211, 169)


async def test_a_slide_is_sent_as_an_overview(tmp_path: Path) -> None:
    slide = write_pyramid_tiff(
        tmp_path / "slide.tif", synthetic_tissue(3000, 1500, seed=3), mpp=0.5, levels=3
    )
    image = await sent_image(slide, tmp_path)
    assert max(image.size) == PATH_IMAGE_LONG_SIDE and image.size[0] == 2 * image.size[1]


async def test_a_plain_image_is_sent_pixel_for_pixel(tmp_path: Path) -> None:
    pixels = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    image = await sent_image(tmp_path / "photo.png", tmp_path)
    assert np.array_equal(np.asarray(image), pixels)


def test_eval_run_with_a_dicom_in_a_jsonl_images_list(tmp_path: Path) -> None:
    line = {"id": "ct", "task": "ct", "images": [str(ct_small())], "question": "CT?"}
    (tmp_path / "items.jsonl").write_text(json.dumps({**line, "answer": "yes"}) + "\n")
    (tmp_path / "replies.jsonl").write_text(json.dumps(YES) + "\n")
    done = medagent(
        "eval", "run", "--dataset", "jsonl", "--data", str(tmp_path / "items.jsonl"),
        "--method", "vqa", "--backend", "scripted", "--script", str(tmp_path / "replies.jsonl"),
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert load_results(tmp_path / "run" / "results.jsonl")["ct"].status == "ok"
