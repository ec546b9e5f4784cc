"""Synthetic slides for tests and smoke checks: tiled pyramidal TIFFs OpenSlide opens.

A TEST DOUBLE for real scans: H&E-coloured blobs on glass, with known size, levels and pixel
spacing, so every rule that depends on them can be checked exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["synthetic_tissue", "write_pyramid_tiff"]


def synthetic_tissue(width: int, height: int, seed: int = 0) -> Image.Image:
    """White glass with a few purple–pink tissue blobs and dark nuclei-like dots."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), (242, 242, 240))
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    for _ in range(3):
        cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
        rx, ry = rng.uniform(0.08, 0.2) * short, rng.uniform(0.08, 0.2) * short
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=(214, 140, 190))
        for _ in range(int(rx * ry / 400) + 5):
            nx, ny = cx + rng.uniform(-0.7, 0.7) * rx, cy + rng.uniform(-0.7, 0.7) * ry
            r = max(1.0, short / 300)
            draw.ellipse((nx - r, ny - r, nx + r, ny + r), fill=(90, 60, 150))
    return image


def write_pyramid_tiff(
    path: str | Path,
    image: Image.Image,
    *,
    mpp: float | None = 0.5,
    levels: int = 3,
    tile: int = 256,
) -> Path:
    """Write ``image`` as a tiled TIFF pyramid (each level half the previous one).

    ``mpp`` is stored as TIFF resolution in pixels per centimetre, which OpenSlide reports as
    ``openslide.mpp-x``/``-y``; ``None`` writes no resolution (spacing unknown).
    """
    import tifffile

    path = Path(path)
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        level_image = image.convert("RGB")
        for level in range(levels):
            per_cm = 1e4 / (mpp * 2**level) if mpp is not None else None
            tif.write(
                np.asarray(level_image),
                tile=(tile, tile),
                photometric="rgb",
                # zlib: JPEG would need the imagecodecs package; the files are small either way.
                compression="zlib",
                # OpenSlide takes only IFDs marked "reduced resolution" as the coarser levels.
                subfiletype=1 if level else 0,
                resolution=(per_cm, per_cm) if per_cm is not None else None,
                resolutionunit="CENTIMETER" if per_cm is not None else None,
            )
            if min(level_image.size) // 2 < 1:
                break
            level_image = level_image.reduce(2)
    return path
