"""The zero-shot tool: where on the tissue each text prompt fits best ("where to look").

Every tissue tile of the slide (or of a region) is embedded with an image-text model of the
CLIP family, next to the text prompts ("tumour", "normal", "necrosis"); each tile's cosine
similarities to the prompts become shares that sum to 1 (a softmax at the model's CLIP logit
scale). The result is a score map over the tissue, a heat map of one prompt drawn over the
overview, and the best tiles in level-0 coordinates.

The scores are only as good as the model: a general CLIP knows little histology, and a
random-weight test model knows nothing. Meaningful maps need pathology image-text weights such
as PLIP, QuiltNet or CONCH. The model lives in ``medagent.retrieval`` (a layer above this one);
the tool defines what it needs (``TextImageScorer``) and the caller puts one in
``ToolContext.scorer`` — the CLIP-family embedders (``make_embedder("hf", FOLDER)``, the
``plip`` and ``quiltnet`` presets) are such scorers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from medagent.artifacts import ArtifactRef
from medagent.errors import ConfigError, InputError, ModelError
from medagent.imaging import (
    Region,
    Renderer,
    TissueTile,
    draw_boxes,
    iter_tissue_tiles,
    tissue_mask,
)
from medagent.tools.base import ToolContext, store_view, tool

__all__ = [
    "DEFAULT_LOGIT_SCALE",
    "TextImageScorer",
    "ZeroShotInput",
    "ZeroShotOutput",
    "ZeroShotRegion",
    "zero_shot",
]

#: The temperature when a scorer reports none: CLIP's learned scale ends at its cap, 100.
DEFAULT_LOGIT_SCALE = 100.0
#: Pixels a tile is shown to the model at: the input size of CLIP-family vision towers.
_MODEL_PX = 224
#: Tile side when the slide's spacing is known: 224 px at 0.5 µm/px, a 20x field.
_TILE_UM = 112.0
_MIN_TISSUE = 0.5
_EMBED_CHUNK = 64
#: Opacity of the heat map, from a score of 0 to 1: high scores stand out, low ones fade.
_HEAT_ALPHA = (70, 200)
#: Colour stops of the heat map, low to high score (blue, cyan, yellow, red).
_STOPS = np.array([(0.0, 40, 60, 220), (0.35, 0, 200, 230), (0.65, 250, 220, 0), (1.0, 230, 0, 0)])


@runtime_checkable
class TextImageScorer(Protocol):
    """Images and texts into one space of unit-norm vectors (a CLIP-family model).

    ``medagent.retrieval`` embedders with a text side satisfy it. A scorer may also have a
    ``logit_scale`` attribute (a float: CLIP's learned temperature); without one, 100 is used.
    """

    name: str

    def embed_images(self, images: Sequence[Image.Image]) -> npt.NDArray[np.float32]: ...

    def embed_texts(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class ZeroShotInput(BaseModel):
    prompts: list[Annotated[str, StringConstraints(max_length=200)]] = Field(
        description="two or more things to look for, e.g. ['tumour', 'normal tissue', 'necrosis']",
        max_length=16,
    )
    show: str | None = Field(
        None, description="the prompt whose heat map and best regions to return (default: first)"
    )
    region: Region | None = Field(
        None, description="level-0 region to score; the whole image when omitted"
    )
    template: str = Field(
        "an H&E image of {}.",
        max_length=200,
        description="how each prompt is put to the model; {} is replaced by the prompt",
    )
    tile_size: int | None = Field(
        None,
        ge=16,
        description="tile side in level-0 pixels (default: 112 µm, or 224 px without spacing)",
    )
    max_tiles: int = Field(
        256, ge=1, le=2048, description="most tiles scored; tiles are enlarged to stay within"
    )
    k: int = Field(5, ge=1, le=20, description="how many best regions to list")


class ZeroShotRegion(BaseModel):
    """One of the best tiles for the shown prompt, with every prompt's share."""

    model_config = ConfigDict(frozen=True)

    rank: int
    region: Region = Field(description="level-0 tile")
    score: float = Field(description="the shown prompt's share, 0..1")
    scores: dict[str, float] = Field(description="every prompt's share; they sum to 1")
    best: str = Field(description="the prompt with the largest share here")


class ZeroShotOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    artifact: ArtifactRef = Field(description="the heat map of the shown prompt over the view")
    region: Region = Field(description="the level-0 area scored")
    prompts: list[str]
    shown: str
    scorer: str = Field(description="the model that scored")
    tile_size: int = Field(description="tile side, level-0 pixels")
    tiles: int = Field(description="tissue tiles scored")
    grid: tuple[int, int] = Field(description="rows and columns of the score map")
    score_map: list[list[float | None]] = Field(
        description="the shown prompt's share per tile, row by row from region's top left; "
        "null where there is too little tissue"
    )
    shares: dict[str, float] = Field(description="each prompt's mean share over the tiles")
    top: list[ZeroShotRegion]
    note: str | None = None

    def to_text(self) -> str:
        shares = ", ".join(f"{p} {s:.0%}" for p, s in self.shares.items())
        lines = [
            f"Zero-shot scores of {len(self.prompts)} prompts over {self.tiles} tissue tiles of "
            f"{self.tile_size} px in {self.region} (model {self.scorer}). Mean shares: {shares}. "
            f"The image shows the share of {self.shown!r} from blue (0) to red (1); the best "
            "regions are numbered. A hint where to look, not a diagnosis.",
        ]
        if self.note:
            lines.append(self.note)
        for hit in self.top:
            lines.append(
                f"{hit.rank}. {hit.region}: {self.shown} {hit.score:.2f} (most like {hit.best})"
            )
        return "\n".join(lines)


def _tile_side(ctx: ToolContext, asked: int | None) -> int:
    if asked is not None:
        return asked
    slide = ctx.require_slide()
    return round(_TILE_UM / slide.mpp_x) if slide.mpp_x else _MODEL_PX


def _tissue_tiles(
    ctx: ToolContext, args: ZeroShotInput
) -> tuple[Region, int, list[TissueTile], str | None]:
    """The area, the tile side and the tissue tiles: enlarged until within ``max_tiles``."""
    slide = ctx.require_slide()
    mask = tissue_mask(ctx.renderer, args.region)
    first = side = _tile_side(ctx, args.tile_size)
    while True:
        tiles = list(iter_tissue_tiles(slide, mask, tile_px=side, level=0, min_tissue=_MIN_TISSUE))
        if len(tiles) <= args.max_tiles:
            break
        side = max(side + 1, math.ceil(side * math.sqrt(len(tiles) / args.max_tiles)))
    if not tiles:
        raise InputError(
            f"no tile of {side} px in {mask.region} is at least half tissue; nothing to score "
            "(give a region with tissue, or a smaller tile_size)"
        )
    note = None
    if side != first:
        note = f"Tiles enlarged from {first} to {side} px to stay within {args.max_tiles} tiles."
    return mask.region, side, tiles, note


def _logit_scale(scorer: TextImageScorer) -> float:
    scale = getattr(scorer, "logit_scale", None)
    return float(scale) if isinstance(scale, int | float) and scale > 0 else DEFAULT_LOGIT_SCALE


def _shares(
    ctx: ToolContext, scorer: TextImageScorer, tiles: list[TissueTile], texts: list[str]
) -> npt.NDArray[np.float64]:
    """(tiles, prompts) shares: a softmax over the prompts of the scaled cosine similarities."""
    text_vectors = np.asarray(scorer.embed_texts(texts), dtype=np.float64)
    # Tiles are read without the context's view cache, so they do not push out earlier views.
    reader = Renderer(ctx.require_slide(), ctx.policy.model_copy(update={"cache_entries": 0}))
    parts = []
    for start in range(0, len(tiles), _EMBED_CHUNK):
        chunk = tiles[start : start + _EMBED_CHUNK]
        images = [reader.render(tile.region, _MODEL_PX).image for tile in chunk]
        parts.append(np.asarray(scorer.embed_images(images), dtype=np.float64))
    image_vectors = np.concatenate(parts)
    if text_vectors.shape != (len(texts), image_vectors.shape[1]):
        raise ModelError(
            f"{scorer.name} gave text vectors of shape {text_vectors.shape} for "
            f"{len(texts)} prompts and image vectors of length {image_vectors.shape[1]}"
        )
    logits = _logit_scale(scorer) * image_vectors @ text_vectors.T
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    shares: npt.NDArray[np.float64] = weights / weights.sum(axis=1, keepdims=True)
    return shares


def _best(cells: list[tuple[int, int]], scores: npt.NDArray[np.float64], k: int) -> list[int]:
    """Indices of the ``k`` best tiles, no two touching (a tile's 8 neighbours are skipped)."""
    chosen: list[int] = []
    for index in np.argsort(-scores, kind="stable"):
        row, col = cells[index]
        if all(max(abs(row - cells[c][0]), abs(col - cells[c][1])) > 1 for c in chosen):
            chosen.append(int(index))
            if len(chosen) == k:
                break
    return chosen


def _heat_colours(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    """(n, 3) colours for shares in 0..1, blue through cyan and yellow to red."""
    clipped = np.clip(scores, 0.0, 1.0)
    channels = [np.interp(clipped, _STOPS[:, 0], _STOPS[:, c]) for c in (1, 2, 3)]
    return np.round(np.stack(channels, axis=1)).astype(np.uint8)


def _overlay(
    base: Image.Image, area: Region, tiles: list[TissueTile], scores: npt.NDArray[np.float64]
) -> Image.Image:
    """``base`` (a view of ``area``) with each tile tinted by its score, edges on tile edges."""
    sx, sy = base.width / area.width, base.height / area.height
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    low, high = _HEAT_ALPHA
    for tile, score, (r, g, b) in zip(tiles, scores, _heat_colours(scores), strict=True):
        alpha = round(low + (high - low) * min(max(float(score), 0.0), 1.0))
        box = tile.region
        x0, y0 = round((box.x - area.x) * sx), round((box.y - area.y) * sy)
        x1, y1 = round((box.x_end - area.x) * sx), round((box.y_end - area.y) * sy)
        if x1 > x0 and y1 > y0:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=(int(r), int(g), int(b), alpha))
    return Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")


def _prompts(args: ZeroShotInput) -> tuple[list[str], str]:
    prompts = [p.strip() for p in args.prompts]
    if len(prompts) < 2 or not all(prompts):
        raise InputError(
            "give two or more non-empty prompts to compare, e.g. ['tumour', 'normal tissue']: "
            "each tile's scores are shares between them"
        )
    if len(set(prompts)) != len(prompts):
        raise InputError("the prompts repeat one another; give each thing to look for once")
    shown = prompts[0] if args.show is None else args.show.strip()
    if shown not in prompts:
        raise InputError(f"show {shown!r} is not one of the prompts: {', '.join(prompts)}")
    if "{}" not in args.template:
        raise InputError("the template must contain {} where the prompt goes")
    return prompts, shown


@tool(
    "zero_shot",
    "Where to look: score every tissue tile of the image (or a level-0 region) against two or "
    "more text prompts (e.g. tumour, normal tissue, necrosis) with an image-text model, and "
    "get a heat map of one prompt over the image and its best regions in level-0 coordinates. "
    "A hint for where to zoom, only as good as the model; never a diagnosis.",
    ZeroShotInput,
    ZeroShotOutput,
)
def zero_shot(ctx: ToolContext, args: ZeroShotInput) -> ZeroShotOutput:
    scorer = ctx.scorer
    if scorer is None:
        raise ConfigError(
            "zero_shot needs an image-text model (CLIP family, e.g. PLIP or QuiltNet): give "
            "the agent one (ToolContext.scorer, e.g. medagent.retrieval.make_embedder('plip'))"
        )
    prompts, shown = _prompts(args)
    area, side, tiles, note = _tissue_tiles(ctx, args)
    shares = _shares(ctx, scorer, tiles, [args.template.replace("{}", p) for p in prompts])
    column = prompts.index(shown)
    rows, cols = area.height // side, area.width // side
    score_map: list[list[float | None]] = [[None] * cols for _ in range(rows)]
    cells = [((t.region.y - area.y) // side, (t.region.x - area.x) // side) for t in tiles]
    for (row, col), value in zip(cells, shares[:, column], strict=True):
        score_map[row][col] = round(float(value), 4)
    top = [
        ZeroShotRegion(
            rank=rank,
            region=tiles[index].region,
            score=float(shares[index, column]),
            scores={p: float(s) for p, s in zip(prompts, shares[index], strict=True)},
            best=prompts[int(shares[index].argmax())],
        )
        for rank, index in enumerate(_best(cells, shares[:, column], args.k), start=1)
    ]
    view = ctx.renderer.render(area, ctx.long_side(None))
    image = _overlay(view.image, view.region, tiles, shares[:, column])
    image = draw_boxes(image, view.region, [hit.region for hit in top])
    return ZeroShotOutput(
        artifact=store_view(ctx, image, view.region, view.mpp, "zero_shot"),
        region=area,
        prompts=prompts,
        shown=shown,
        scorer=scorer.name,
        tile_size=side,
        tiles=len(tiles),
        grid=(rows, cols),
        score_map=score_map,
        shares={p: float(s) for p, s in zip(prompts, shares.mean(axis=0), strict=True)},
        top=top,
        note=note,
    )
