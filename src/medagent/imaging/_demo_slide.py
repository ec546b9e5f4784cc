"""A gigapixel demo slide of real tissue, built offline in seconds.

``medagent demo`` has to show the agent navigating a whole-slide image on a fresh machine with
no download, and a slide of drawn blobs would not show what the agent does with real tissue.
scikit-image's wheel ships a real immunohistochemistry image (``skimage.data.ihc.png``: colon
tissue, DAB brown with haematoxylin counterstain, 512x512; read from the package folder, never
fetched), so the slide is built from it: a few irregular tissue pieces on white glass, each
filled with a seamless texture made of that image, written as a JPEG-tiled TIFF pyramid with
the pixel spacing set, which OpenSlide opens like a scan.

A 60,000 x 50,000 slide has about 61,000 tiles, far too many to encode one by one in seconds.
Most tiles repeat, though: each glass tile is the same, and tissue tiles are cut from a periodic
texture, so each distinct tile is JPEG-encoded once and its bytes written wherever it recurs.
Only tiles where tissue meets glass are composited and encoded individually; their number grows
with the outline's length, not the slide's area. Each pyramid level is composed the same way
from a downsampled texture and the same low-resolution layout, so no level is ever decoded
and the full-resolution image never exists in memory.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medagent.errors import ConfigError

__all__ = ["build_demo_slide"]

_TILE = 256
#: Side of the periodic tissue texture (level-0 px); a power of two so every level's tiles
#: fall on a few phases of it, and large enough (2 mm at 0.5 µm/px) that repeats are not obvious.
_ATLAS = 4096
#: Discs of the source laid over each other to make the texture: how many, how large, and
#: the width of their soft rims (px). Enough that few of the base copies' seams show through.
_PATCHES = 200
_PATCH_RADII = (128, 240)
_FEATHER = 24.0
_MASKS = 24
_ANGLES = 16
#: Patches over the base's joins are at least this large, so they cover a join from end to end.
_SEAM_PATCH_RADIUS = 208
#: Level-0 pixels per cell of the layout grid the tissue outline is defined on: the finest of
#: these that keeps the grid near a million cells (it must divide the tile size).
_GRIDS = (64, 128, 256)
_GRID_CELLS = 1 << 20
#: How far (level-0 px) the outline follows the stain: dense tissue reaches out, pale recedes.
_RAGGED = 16.0
#: The coarsest level written has a long side at most this (an overview in one read).
_COARSEST = 1000
#: A scan's glass is a little below white; this is still brighter than the tissue detector's
#: cut-off for glass (HSV value 0.95), so glass never counts as tissue.
_GLASS = (243, 243, 241)
_QUALITY = 80
#: YCbCrSubSampling of the TIFF; must match the chroma subsampling Pillow is asked for (4:2:0).
_SUBSAMPLING = (2, 2)
_PILLOW_SUBSAMPLING = 2


def build_demo_slide(
    path: str | Path,
    *,
    width: int = 60_000,
    height: int = 50_000,
    mpp: float = 0.5,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a ``width`` x ``height`` pyramidal TIFF of real tissue at ``path`` and return it.

    Two to four irregular tissue pieces (the layout depends on ``seed``) textured with
    scikit-image's bundled immunohistochemistry image, on glass; ``mpp`` micrometres per
    level-0 pixel; levels halve down to a long side of at most 1000 px. The file appears
    atomically: it is written under a temporary name in the same folder, then renamed.
    ``progress(done, total)`` is called as tiles are written (all levels together).
    """
    if width < 1024 or height < 1024:
        raise ConfigError(f"a demo slide needs at least 1024 px a side, not {width}x{height}")
    if not mpp > 0:
        raise ConfigError(f"the demo slide's pixel spacing must be positive, not {mpp} µm/px")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        _write(partial, width, height, mpp, np.random.default_rng(seed), progress)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _source() -> np.ndarray:
    from skimage.data import immunohistochemistry

    return np.asarray(immunohistochemistry(), dtype=np.uint8)


def _dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 rotations/reflections of ``image`` (a view, no copy)."""
    turned = np.rot90(image, k % 4)
    return turned[:, ::-1] if k >= 4 else turned


def _patch_masks(rng: np.random.Generator) -> list[Image.Image]:
    """Opacity masks for patches: discs of random size with wavy, feathered rims."""
    largest = _PATCH_RADII[1]
    y, x = np.mgrid[0 : 2 * largest, 0 : 2 * largest].astype(np.float32) - (largest - 0.5)
    theta, distance = np.arctan2(y, x), np.hypot(x, y)
    harmonics = [(np.cos(n * theta), np.sin(n * theta)) for n in range(2, 6)]
    masks = []
    for radius in np.linspace(*_PATCH_RADII, _MASKS).round().astype(int):
        rim = np.full_like(theta, 0.84)
        for cos_n, sin_n in harmonics:
            phase = rng.uniform(0, 2 * math.pi)
            rim += rng.uniform(0.0, 0.03) * (cos_n * math.cos(phase) - sin_n * math.sin(phase))
        # Stay inside the disc the patch is cut from: resampling reads a few px around.
        rim = np.minimum(rim * radius, radius - 4.0 - _FEATHER / 2)
        alpha = np.clip((rim - distance) / _FEATHER + 0.5, 0.0, 1.0)
        crop = slice(largest - radius, largest + radius)
        masks.append(Image.fromarray(np.rint(alpha[crop, crop] * 255).astype(np.uint8)))
    return masks


def _wraps(start: int, length: int) -> list[int]:
    """Where to put a span at ``start`` so that, clipped to the atlas, it wraps round."""
    return [
        start + shift
        for shift in (-_ATLAS, 0, _ATLAS)
        if start + shift < _ATLAS and start + shift + length > 0
    ]


def _texture_atlas(source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seamless (periodic) ``_ATLAS``-square tissue texture made of pieces of ``source``.

    A base of whole copies of the source, turned or mirrored at random, is overlaid with discs
    cut from the source turned by any angle, with soft wavy rims: first one on every join and
    crossing of the base's grid, so no straight seam shows, then more at random places for
    variety. Patches wrap round the edges, so the texture tiles without seams.
    """
    side = source.shape[0]
    cells = _ATLAS // side
    atlas = Image.new("RGB", (_ATLAS, _ATLAS))
    for j in range(cells):
        for i in range(cells):
            copy = np.ascontiguousarray(_dihedral(source, int(rng.integers(8))))
            atlas.paste(Image.fromarray(copy), (i * side, j * side))
    image = Image.fromarray(source)
    turned = [
        image.rotate(float(angle), resample=Image.Resampling.BICUBIC)
        for angle in rng.uniform(0, 360, size=_ANGLES)
    ]
    masks = _patch_masks(rng)
    large = [m for m in masks if m.width // 2 >= _SEAM_PATCH_RADIUS]
    joins = [
        (i * side + dx, j * side + dy, large)
        for j in range(cells)
        for i in range(cells)
        for dx, dy in ((0, 0), (side // 2, 0), (0, side // 2))
    ]
    spots = [(int(x), int(y), masks) for x, y in rng.integers(0, _ATLAS, size=(_PATCHES, 2))]
    for x, y, pool in joins + spots:
        mask = pool[int(rng.integers(len(pool)))]
        radius = mask.width // 2
        # In a turned copy only the central disc holds tissue: cut the patch from inside it.
        reach = side // 2 - radius
        dx, dy = reach + 1, 0
        while dx * dx + dy * dy > reach * reach:
            dx, dy = (int(v) for v in rng.integers(-reach, reach + 1, size=2))
        cx, cy = side // 2 + dx, side // 2 + dy
        patch = turned[int(rng.integers(_ANGLES))].crop(
            (cx - radius, cy - radius, cx + radius, cy + radius)
        )
        if rng.random() < 0.5:
            patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        # Paste clips at the atlas's edges; pasting again one period over wraps the rest round.
        for ox in _wraps(x - radius, 2 * radius):
            for oy in _wraps(y - radius, 2 * radius):
                atlas.paste(patch, (ox, oy), mask)
    return np.asarray(atlas)


def _halve(texture: np.ndarray) -> np.ndarray:
    """The next pyramid level of a periodic texture: 2x2 means (the period halves too)."""
    if texture.shape[0] < 2:
        return texture
    total = texture.reshape(texture.shape[0] // 2, 2, texture.shape[1] // 2, 2, 3).sum(
        axis=(1, 3), dtype=np.uint16
    )
    return np.asarray((total + 2) // 4, dtype=np.uint8)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], knots: int) -> np.ndarray:
    """Unit-variance noise on a ``shape`` grid, smooth over about 1/``knots`` of its long side."""
    step = max(max(shape) / knots, 1.0)
    coarse = rng.standard_normal((math.ceil(shape[0] / step) + 3, math.ceil(shape[1] / step) + 3))
    image = Image.fromarray(coarse.astype(np.float32))
    size = (round(coarse.shape[1] * step), round(coarse.shape[0] * step))
    fine = np.asarray(image.resize(size, Image.Resampling.BICUBIC))
    top, left = round(step), round(step)
    noise = fine[top : top + shape[0], left : left + shape[1]]
    return np.asarray((noise - noise.mean()) / (noise.std() + 1e-6), dtype=np.float32)


@dataclass(frozen=True)
class _Layout:
    """Where the tissue is, on a grid of ``grid``-px cells (values at the cells' centres).

    ``field`` is about the signed distance (level-0 px) to the outline, positive inside;
    ``owner`` says which piece a cell belongs to, ``turns`` each piece's texture orientation.
    """

    field: np.ndarray
    owner: np.ndarray
    turns: tuple[int, ...]
    grid: int


def _layout(width: int, height: int, rng: np.random.Generator) -> _Layout:
    """Two to four irregular pieces side by side, like serial sections on one slide."""
    count = int(rng.integers(2, 5))
    across, down = (2, 2) if count == 4 else ((count, 1) if width >= height else (1, count))
    cell_w, cell_h = width / across, height / down
    grid = next((g for g in _GRIDS if width * height / g**2 <= _GRID_CELLS), _GRIDS[-1])
    shape = (math.ceil(height / grid), math.ceil(width / grid))
    ys = (np.arange(shape[0], dtype=np.float32) + 0.5) * grid
    xs = (np.arange(shape[1], dtype=np.float32) + 0.5) * grid
    fields = []
    scales = []
    for index in range(count):
        col, row = index % across, index // across
        cx = (col + 0.5 + rng.uniform(-0.05, 0.05)) * cell_w
        cy = (row + 0.5 + rng.uniform(-0.05, 0.05)) * cell_h
        angle = rng.uniform(-0.4, 0.4) + (math.pi / 2 if cell_h > cell_w else 0.0)
        rx, ry = rng.uniform(0.36, 0.46), rng.uniform(0.22, 0.32)
        # Keep the piece, bumps included (x1.3), inside its share of the slide.
        half_w = 1.3 * math.hypot(rx * math.cos(angle), ry * math.sin(angle))
        half_h = 1.3 * math.hypot(rx * math.sin(angle), ry * math.cos(angle))
        fit = min(0.45 * cell_w / half_w, 0.45 * cell_h / half_h)
        rx, ry = rx * fit, ry * fit
        dx, dy = xs[None, :] - cx, ys[:, None] - cy
        u = (dx * math.cos(angle) + dy * math.sin(angle)) / rx
        v = (-dx * math.sin(angle) + dy * math.cos(angle)) / ry
        theta = np.arctan2(v, u)
        outline = np.ones_like(theta)
        for n in range(2, 8):
            amplitude = rng.uniform(0.2, 1.0) * 0.12 / n**0.8
            outline += amplitude * np.cos(n * theta + rng.uniform(0, 2 * math.pi))
        piece = outline - np.hypot(u, v)
        # A hole or two (a tear, fat, a lumen), so the pieces have structure in an overview.
        for _ in range(int(rng.integers(1, 4))):
            distance, direction = rng.uniform(0.2, 0.6), rng.uniform(0, 2 * math.pi)
            hu, hv = distance * math.cos(direction), distance * math.sin(direction)
            piece = np.minimum(piece, np.hypot(u - hu, v - hv) - rng.uniform(0.04, 0.1))
        scale = min(rx, ry)
        fields.append(piece * scale)
        scales.append(scale)
    stacked = np.stack(fields)
    size = float(np.mean(scales))
    field = stacked.max(axis=0)
    for knots, amplitude in ((8, 0.1), (32, 0.035), (128, 0.012)):
        field += amplitude * size * _smooth_noise(rng, shape, knots)
    # Tissue never touches the slide's edges.
    margin = 0.02 * min(width, height)
    border = np.minimum(
        np.minimum(xs[None, :], width - xs[None, :]), np.minimum(ys, height - ys)[:, None]
    )
    field = np.minimum(field, border - margin)
    turns = tuple(int(t) for t in rng.permutation(8)[:count])
    return _Layout(
        field=field.astype(np.float32),
        owner=stacked.argmax(axis=0).astype(np.int8),
        turns=turns,
        grid=grid,
    )


def _spread(values: np.ndarray, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """3x3 min or max: bounds what bilinear interpolation can reach within a cell's reach."""
    padded = np.pad(values, 1, mode="edge")
    across = reduce(reduce(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
    return reduce(reduce(across[:-2], across[1:-1]), across[2:])


def _blocks(values: np.ndarray, size: int, shape: tuple[int, int], reduce: str) -> np.ndarray:
    """``values`` reduced over ``size``-cell blocks into ``shape`` (edges repeated to fill)."""
    rows, cols = shape[0] * size, shape[1] * size
    values = values[:rows, :cols]
    padded = np.pad(values, ((0, rows - values.shape[0]), (0, cols - values.shape[1])), "edge")
    blocks = padded.reshape(shape[0], size, shape[1], size)
    return np.asarray(getattr(blocks, reduce)(axis=(1, 3)))


def _encode(pixels: np.ndarray | Image.Image) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=_QUALITY, subsampling=_PILLOW_SUBSAMPLING)
    return buffer.getvalue()


#: The key of a glass tile among the keys of repeating tiles (turn, l_x, l_y of the texture).
_GLASS_KEY = (-1, 0, 0)


class _Level:
    """One pyramid level's tiles, each glass, tissue or edge according to the layout.

    Glass tiles are all alike and tissue tiles repeat with the texture's period, so only the
    first of each is encoded and written; ``repeat_of`` gives every later copy the index of
    that first one (-1 where a tile is its own), for the tile offsets to be pointed there.
    """

    def __init__(
        self, layout: _Layout, texture: np.ndarray, level: int, size: tuple[int, int]
    ) -> None:
        self.layout = layout
        self.texture = texture
        self.downsample = 2**level
        #: Rows and columns of tiles.
        self.tiles = (math.ceil(size[1] / _TILE), math.ceil(size[0] / _TILE))
        cells = _TILE * self.downsample // layout.grid
        # Half-width of the soft edge (one level-n pixel in all), in level-0 px.
        self.soft = float(self.downsample)
        reach = _RAGGED + self.soft
        low = _blocks(_spread(layout.field, np.minimum), cells, self.tiles, "min")
        high = _blocks(_spread(layout.field, np.maximum), cells, self.tiles, "max")
        self.glass = high <= -reach
        self.tissue = low >= reach
        rows = (np.arange(self.tiles[0]) * cells + cells // 2).clip(0, layout.owner.shape[0] - 1)
        cols = (np.arange(self.tiles[1]) * cells + cells // 2).clip(0, layout.owner.shape[1] - 1)
        self.owner = layout.owner[np.ix_(rows, cols)]
        self.repeat_of = np.full(self.tiles[0] * self.tiles[1], -1, dtype=np.int64)

    def encoded(self, glass: bytes, report: Callable[[int], None]) -> Iterator[bytes]:
        """Every tile's JPEG bytes, row by row; an empty string for a repeat.

        A row is encoded before any of it is handed on, and ``report(tiles)`` called then: the
        writer stops asking after the last tile, so a report after it would never be made.
        """
        first: dict[tuple[int, int, int], int] = {}
        for row in range(self.tiles[0]):
            encoded = [self._encode_once(row, col, glass, first) for col in range(self.tiles[1])]
            report(self.tiles[1])
            yield from encoded

    def _encode_once(
        self, row: int, col: int, glass: bytes, first: dict[tuple[int, int, int], int]
    ) -> bytes:
        index = row * self.tiles[1] + col
        turn = self.layout.turns[self.owner[row, col]]
        l_x, l_y = col * _TILE, row * _TILE
        if not (self.glass[row, col] or self.tissue[row, col]):
            return self._edge(turn, l_x, l_y)
        period = self.texture.shape[0]
        key = _GLASS_KEY if self.glass[row, col] else (turn, l_x % period, l_y % period)
        if key in first:
            self.repeat_of[index] = first[key]
            return b""
        first[key] = index
        return glass if key == _GLASS_KEY else _encode(self._texture_tile(*key))

    def _texture_tile(self, turn: int, l_x: int, l_y: int) -> np.ndarray:
        texture = _dihedral(self.texture, turn)
        period = texture.shape[0]
        y0, x0 = l_y % period, l_x % period
        if y0 + _TILE <= period and x0 + _TILE <= period:
            return np.ascontiguousarray(texture[y0 : y0 + _TILE, x0 : x0 + _TILE])
        # The texture is smaller than a tile at coarse levels: the tile wraps round it.
        ys, xs = (y0 + np.arange(_TILE)) % period, (x0 + np.arange(_TILE)) % period
        return np.ascontiguousarray(texture[np.ix_(ys, xs)])

    def _axis(self, l_start: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
        """For each pixel along one axis: the grid cell before its centre, and the weight of
        the next one (linear interpolation between cell centres)."""
        level0 = (l_start + np.arange(_TILE) + 0.5) * self.downsample
        u = np.clip(level0 / self.layout.grid - 0.5, 0, cells - 1)
        base = np.minimum(u.astype(np.intp), cells - 2)
        return base, (u - base).astype(np.float32)

    def _field(self, l_x: int, l_y: int) -> np.ndarray:
        """The layout field at the tile's pixel centres, bilinear between grid cells."""
        field = self.layout.field
        iy, fy = self._axis(l_y, field.shape[0])
        ix, fx = self._axis(l_x, field.shape[1])
        top, left = int(iy[0]), int(ix[0])
        patch = field[top : int(iy[-1]) + 2, left : int(ix[-1]) + 2]
        # Across first, on the few grid rows the tile spans; then down, copying whole rows.
        rows = patch[:, ix - left] * (1 - fx) + patch[:, ix - left + 1] * fx
        return np.asarray(rows[iy - top] * (1 - fy)[:, None] + rows[iy - top + 1] * fy[:, None])

    def _edge(self, turn: int, l_x: int, l_y: int) -> bytes:
        """A tile where tissue meets glass; the outline follows the stain a little."""
        tissue = Image.fromarray(self._texture_tile(turn, l_x, l_y))
        brightness = np.asarray(tissue.convert("L"), dtype=np.float32)
        stain = np.clip((245.0 - brightness) / 150.0, 0.0, 1.0)
        reach = self._field(l_x, l_y) + _RAGGED * (2.0 * stain - 1.0)
        alpha = np.clip(127.5 + reach * (127.5 / self.soft), 0.0, 255.0)
        mask = Image.fromarray(np.rint(alpha).astype(np.uint8))
        return _encode(Image.composite(tissue, Image.new("RGB", tissue.size, _GLASS), mask))


def _level_sizes(width: int, height: int) -> list[tuple[int, int]]:
    sizes = [(width, height)]
    while max(sizes[-1]) > _COARSEST:
        w, h = sizes[-1]
        sizes.append((math.ceil(w / 2), math.ceil(h / 2)))
    return sizes


def _write(
    path: Path,
    width: int,
    height: int,
    mpp: float,
    rng: np.random.Generator,
    progress: Callable[[int, int], None] | None,
) -> None:
    import tifffile

    layout = _layout(width, height, rng)
    texture = _texture_atlas(_source(), rng)
    sizes = _level_sizes(width, height)
    total = sum(math.ceil(w / _TILE) * math.ceil(h / _TILE) for w, h in sizes)
    done = 0
    glass = _encode(np.full((_TILE, _TILE, 3), _GLASS, dtype=np.uint8))
    repeats = []

    def report(tiles: int) -> None:
        nonlocal done
        done += tiles
        if progress is not None:
            progress(done, total)

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for index, (w, h) in enumerate(sizes):
            if index:
                texture = _halve(texture)
            level = _Level(layout, texture, index, (w, h))
            repeats.append(level.repeat_of)
            per_cm = 1e4 / (mpp * 2**index)
            tif.write(
                level.encoded(glass, report),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(_TILE, _TILE),
                # Declared uncompressed RGB here and re-tagged in _finish: tifffile writes
                # pre-encoded tile bytes as they are, but insists on the imagecodecs package
                # for any JPEG-tagged write, even when it has nothing to encode.
                photometric="rgb",
                compression=None,
                # OpenSlide takes only IFDs marked "reduced resolution" as the coarser levels.
                subfiletype=1 if index else 0,
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
                metadata=None,
                description=_DESCRIPTION if index == 0 else None,
                extratags=[
                    (530, "H", 2, _SUBSAMPLING, True),  # YCbCrSubSampling
                    (532, "2I", 6, (0, 1, 255, 1, 128, 1, 255, 1, 128, 1, 255, 1), True),
                ],
            )
    _finish(path, repeats)


_DESCRIPTION = (
    "medagent demo slide: real tissue from scikit-image's immunohistochemistry image "
    "(skimage.data.immunohistochemistry), arranged on glass; not a patient's scan"
)


def _finish(path: Path, repeats: list[np.ndarray]) -> None:
    """Mark every level as JPEG in YCbCr, and point repeated tiles at their first copy.

    Pillow writes JFIF (YCbCr) streams; OpenSlide decodes a tile as YCbCr only when the TIFF
    says so (PhotometricInterpretation 6); declared RGB, the same tiles come out in wrong
    colours. Tiles sharing one copy of their bytes are plain TIFF: readers seek to each
    tile's offset, and nothing requires offsets to differ. (At the default size this makes
    the file about 60 MB instead of 400 MB.)
    """
    import tifffile

    with tifffile.TiffFile(path, mode="r+") as tif:
        for page, repeat_of in zip(tif.pages, repeats, strict=True):
            assert isinstance(page, tifffile.TiffPage)
            page.tags[259].overwrite(7)  # Compression: JPEG
            page.tags[262].overwrite(6)  # PhotometricInterpretation: YCbCr
            copies = np.flatnonzero(repeat_of >= 0)
            if copies.size:
                offsets = np.array(page.dataoffsets, dtype=np.int64)
                counts = np.array(page.databytecounts, dtype=np.int64)
                offsets[copies] = offsets[repeat_of[copies]]
                counts[copies] = counts[repeat_of[copies]]
                page.tags[324].overwrite(offsets.tolist())  # TileOffsets
                page.tags[325].overwrite(counts.tolist())  # TileByteCounts
