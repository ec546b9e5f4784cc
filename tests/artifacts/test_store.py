"""The content-addressed artifact store and image encoding."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from medagent.artifacts import ArtifactStore, fit_long_side, to_jpeg
from medagent.errors import InputError


def test_same_image_same_id_one_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    image = Image.new("RGB", (40, 20), (10, 200, 30))
    first, second = store.put(image), store.put(image.copy())
    assert first == second
    assert (first.width, first.height, first.media_type) == (40, 20, "image/jpeg")
    assert len(list(tmp_path.glob("*.jpg"))) == 1
    assert store.get(first).size == (40, 20)
    assert store.data_url(first).startswith("data:image/jpeg;base64,")


def test_png_for_lossless_masks(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    mask = Image.new("L", (5, 5), 255)
    ref = store.put(mask, media_type="image/png")
    assert store.path(ref).suffix == ".png"
    assert store.get(ref).getpixel((2, 2)) == 255


def test_missing_artifact_is_a_one_line_input_error(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = store.put(Image.new("RGB", (4, 4)))
    store.path(ref).unlink()
    with pytest.raises(InputError, match="is missing from"):
        store.get(ref)


def test_fit_long_side_never_upscales() -> None:
    assert fit_long_side(Image.new("RGB", (100, 50)), 1024).size == (100, 50)
    assert fit_long_side(Image.new("RGB", (2000, 1000)), 1000).size == (1000, 500)


def test_jpeg_drops_alpha() -> None:
    data = to_jpeg(Image.new("RGBA", (8, 8), (1, 2, 3, 0)))
    assert data[:2] == b"\xff\xd8"


def test_an_id_alone_finds_the_reference(tmp_path: Path) -> None:
    from medagent.imaging import Region

    store = ArtifactStore(tmp_path)
    ref = store.put(
        Image.new("RGB", (6, 4)), kind="zoom", region=Region(x=1, y=2, width=3, height=4)
    )
    assert store.find(ref.id) == ref
    with pytest.raises(InputError, match="not an artifact id"):
        store.find("../../etc/passwd")
    with pytest.raises(InputError, match="no such artifact"):
        store.find("0" * 32)
