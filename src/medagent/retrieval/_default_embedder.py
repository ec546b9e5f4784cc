"""An embedder that needs no weights: colour, stain, intensity, texture and layout statistics.

So that search and domain routing work on a fresh offline machine. Each image is resized to
128×128 and described by six blocks of hand-made features:

- ``layout``: the low-frequency 2-D DCT of a contrast-normalized 32×32 grayscale thumbnail,
  i.e. where the bright and dark masses are (skull, lungs, spine, the tissue on the glass);
- ``edges``: gradient orientations in a 4×4 grid of cells (a coarse HOG): the shape of the
  outlines in each part of the image;
- ``intensity``: a smoothed grey-level histogram (black background, glass, bone, soft tissue);
- ``texture``: local binary patterns at two scales and a gradient-magnitude histogram;
- ``colour``: exact grey / near grey / 12 hues × 2 chroma levels;
- ``stain``: haematoxylin, eosin and DAB amounts (``skimage.color.rgb2hed``) of the coloured
  pixels.

Every block is centred and scaled to unit length, then weighted, so the cosine similarity of
two images is the weighted mean of their per-block correlations and no block swamps the others
because it has more numbers. Colour and stain weigh a little more: they are what tells a stained
slide from a greyscale scan.

What it is good at: telling a greyscale scan from a stained slide or blank glass (all
correct on VQA-RAD vs the H&E tiles and slide regions in ``../shared/data``), and finding
images that look alike: modality, body region and view for radiographs and CT/MR slices
(leave-one-out organ precision@5 0.94 on the 314 VQA-RAD images; chance 0.33), stain colour,
background and texture for pathology tiles. What it is not: semantic. It does not know a
tumour from normal tissue or a fracture from an intact bone, and it is not invariant to
rotation or flips; use ``HFEmbedder`` with a real model for that, and for text queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image

from medagent.errors import ConfigError
from medagent.imaging.base import flatten_rgba
from medagent.retrieval.base import Vectors

__all__ = ["DefaultEmbedder"]

_Array = npt.NDArray[np.float64]

_SIDE: Final = 128
"""Every image is resized to this square first: fixed cost, whatever the input size."""
_THUMB: Final = _SIDE // 4
"""The layout thumbnail: the 128-px image halved twice."""
_DCT_KEEP: Final = 8
_EDGE_CELLS: Final = 4
_ORIENTATIONS: Final = 8
_GREY_BINS: Final = 32
_HUES: Final = 12
_STAIN_BINS: Final = 8
_STAIN_MAX: Final = 0.08
"""rgb2hed amounts above this (a dark, saturated stain) share the last bin."""
_EXACT_GREY: Final = 1.5 / 255
"""Chroma below this is a greyscale file (radiology); scanned glass and stain mostly exceed it."""
_NEAR_GREY: Final = 0.03
_STRONG_CHROMA: Final = 0.12

_WEIGHTS: Final[dict[str, float]] = {
    "layout": 1.0,
    "edges": 1.0,
    "intensity": 1.0,
    "texture": 1.0,
    "colour": 1.5,
    "stain": 1.5,
}
_SIZES: Final[dict[str, int]] = {
    "layout": _DCT_KEEP * _DCT_KEEP - 1,
    "edges": _EDGE_CELLS * _EDGE_CELLS * _ORIENTATIONS,
    "intensity": _GREY_BINS,
    "texture": 10 + 10 + 8,
    "colour": 2 + 2 * _HUES,
    "stain": 1 + 3 * _STAIN_BINS,
}
_LUMA: Final = np.array([0.299, 0.587, 0.114])


def _dct_matrix(n: int) -> _Array:
    """The orthonormal DCT-II matrix: ``m @ x @ m.T`` is the 2-D DCT of an n×n ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m: _Array = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


_DCT: Final = _dct_matrix(_THUMB)
_SMOOTH: Final = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)


def _as_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB: transparency shows white (like glass), 16-bit greyscale is stretched."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # High-bit-depth greyscale (e.g. DICOM): stretch its own range, as a viewer would; a
        # plain convert would clip everything above 255 to white.
        grey = np.asarray(image, dtype=np.float64)
        low, high = float(grey.min()), float(grey.max())
        grey = (grey - low) * (255 / (high - low)) if high > low else np.zeros_like(grey)
        return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    return flatten_rgba(image)


def _rgb(image: Image.Image) -> _Array:
    """``image`` as a 128×128×3 float array in 0..1 (aspect ratio not kept)."""
    small = _as_rgb(image).resize((_SIDE, _SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small, dtype=np.float64) / 255.0


def _halve(values: _Array) -> _Array:
    """Mean over 2×2 blocks of the first two axes (sides must be even)."""
    return (values[::2, ::2] + values[1::2, ::2] + values[::2, 1::2] + values[1::2, 1::2]) / 4


def _layout(grey64: _Array) -> _Array:
    thumb = _halve(grey64)
    spread = thumb.std()
    thumb = (thumb - thumb.mean()) / spread if spread > 1e-6 else np.zeros_like(thumb)
    coefficients = _DCT @ thumb @ _DCT.T
    return coefficients[:_DCT_KEEP, :_DCT_KEEP].ravel()[1:]  # DC is 0 after normalizing


def _edges(grey64: _Array) -> _Array:
    gy, gx = np.gradient(grey64)
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned: an edge, whichever side is brighter
    orientation = np.minimum((angle / np.pi * _ORIENTATIONS).astype(np.intp), _ORIENTATIONS - 1)
    cell = np.arange(grey64.shape[0]) * _EDGE_CELLS // grey64.shape[0]
    index = (cell[:, None] * _EDGE_CELLS + cell[None, :]) * _ORIENTATIONS + orientation
    counts = np.bincount(index.ravel(), magnitude.ravel(), _SIZES["edges"])
    return np.sqrt(counts / max(float(magnitude.sum()), 1e-9))


def _intensity(grey: _Array) -> _Array:
    bins = np.minimum((grey * _GREY_BINS).astype(np.intp), _GREY_BINS - 1)
    histogram = np.bincount(bins.ravel(), minlength=_GREY_BINS) / grey.size
    # Smoothed, so a slightly brighter exposure of the same thing still correlates.
    return np.sqrt(np.convolve(histogram, _SMOOTH / _SMOOTH.sum(), mode="same"))


def _uniform_lbp_table() -> npt.NDArray[np.intp]:
    """Uniform-LBP labels of the 256 8-bit codes: the count of set bits when the circular code
    has at most two 0/1 transitions (spots, edges, corners, flats), 9 for the rest."""
    codes = np.arange(256)
    bits = (codes[:, None] >> np.arange(8)) & 1
    transitions = (bits != np.roll(bits, 1, axis=1)).sum(axis=1)
    return np.where(transitions <= 2, bits.sum(axis=1), 9).astype(np.intp)


_LBP_LABELS: Final = _uniform_lbp_table()
_NEIGHBOURS: Final = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))
"""The 8 neighbours of the centre of a 3×3 window, in circular order."""


def _lbp_histogram(grey: _Array) -> _Array:
    """Histogram of uniform local binary patterns (8 square neighbours at distance 1)."""
    h, w = grey.shape
    centre = grey[1:-1, 1:-1]
    code = np.zeros(centre.shape, dtype=np.intp)
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        code |= (grey[dy : dy + h - 2, dx : dx + w - 2] >= centre).astype(np.intp) << bit
    return np.bincount(_LBP_LABELS[code].ravel(), minlength=10) / code.size


def _texture(grey: _Array, grey64: _Array) -> _Array:
    # Quantized first, so flat regions read as flat despite JPEG or rounding noise.
    levels = [np.floor(values * 255) for values in (grey, grey64)]
    gy, gx = np.gradient(grey)
    steepness = np.log10(np.hypot(gx, gy) + 1e-4)  # -4 (flat) .. 0 (black to white)
    steep_bins = np.clip(((steepness + 4) * 2).astype(np.intp), 0, 7)
    parts = [_lbp_histogram(values) for values in levels]
    parts.append(np.bincount(steep_bins.ravel(), minlength=8) / grey.size)
    return np.sqrt(np.concatenate(parts))


def _colour(rgb: _Array, chroma: _Array) -> _Array:
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.arctan2(np.sqrt(3) * (green - blue), 2 * red - green - blue)
    hue_bin = np.minimum(((hue + np.pi) / (2 * np.pi) * _HUES).astype(np.intp), _HUES - 1)
    strong = (chroma > _STRONG_CHROMA).astype(np.intp)
    bins = np.where(chroma < _NEAR_GREY, 1, 2 + strong * _HUES + hue_bin)
    bins = np.where(chroma < _EXACT_GREY, 0, bins)
    return np.sqrt(np.bincount(bins.ravel(), minlength=_SIZES["colour"]) / bins.size)


def _stain(rgb64: _Array, chroma64: _Array) -> _Array:
    from skimage.color import rgb2hed

    stained = chroma64 >= _NEAR_GREY
    amounts: _Array = rgb2hed(rgb64)[stained]
    parts: list[_Array] = [np.array([1.0 - stained.mean()])]
    for channel in range(3):
        bins = np.clip(
            (amounts[:, channel] / _STAIN_MAX * _STAIN_BINS).astype(np.intp), 0, _STAIN_BINS - 1
        )
        parts.append(np.bincount(bins, minlength=_STAIN_BINS) / stained.size)
    return np.sqrt(np.concatenate(parts))


def _chroma(rgb: _Array) -> _Array:
    """max - min of R, G, B: 0 for any grey, whatever its brightness."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    chroma: _Array = np.maximum(np.maximum(red, green), blue) - np.minimum(
        np.minimum(red, green), blue
    )
    return chroma


def _standardize(block: _Array, weight: float) -> _Array:
    """Centred, unit length, times sqrt(weight): cosine becomes a weighted mean correlation."""
    centred: _Array = block - block.mean()
    norm = float(np.linalg.norm(centred))
    return centred * (np.sqrt(weight) / norm) if norm > 1e-12 else centred * 0.0


def _features(image: Image.Image) -> _Array:
    rgb = _rgb(image)
    grey = rgb @ _LUMA
    grey64 = _halve(grey)
    rgb64 = _halve(rgb)
    chroma = _chroma(rgb)
    blocks = {
        "layout": _layout(grey64),
        "edges": _edges(grey64),
        "intensity": _intensity(grey),
        "texture": _texture(grey, grey64),
        "colour": _colour(rgb, chroma),
        "stain": _stain(rgb64, _chroma(rgb64)),
    }
    vector = np.concatenate([_standardize(blocks[k], w) for k, w in _WEIGHTS.items()])
    # Never zero: the intensity and colour blocks of any image are non-constant histograms.
    unit: _Array = vector / np.linalg.norm(vector)
    return unit


class DefaultEmbedder:
    """Weight-free image vectors (``dim`` 302) from colour, stain, intensity, texture and layout.

    Deterministic, CPU only, a few milliseconds per image. Images only: ``embed_texts`` raises.
    The name carries a version; change it whenever the features change, so an index built with
    the old vectors is not silently mixed with new ones.
    """

    name: str = "default-v1"
    dim: int = sum(_SIZES.values())

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        """(len(images), 302) float32, L2-normalized rows."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([_features(image) for image in images]).astype(np.float32)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Always raises ``ConfigError``: hand-made image statistics have no text side."""
        raise ConfigError(
            "the default embedder describes images only and cannot embed text; search by image, "
            "or use an image-text model (embedder 'hf' with a CLIP or SigLIP model) for text"
        )
