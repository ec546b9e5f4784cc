"""The zero-shot tool: a score map over the tissue, a heat map aligned with the view, best tiles.

A stub scorer that tells tiles apart by colour makes every number checkable: the slide is pink
tissue with one violet tile at a known place, so that tile must come first for "violet", and
its tint must sit exactly on it in the overlay. The tiny random CLIP runs the real loading path
(the ``hf`` embedder) on a generated pyramid and on the shared real slide.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageDraw

from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError, InputError
from medagent.imaging import Region, open_image, tissue_mask
from medagent.testing import write_pyramid_tiff
from medagent.tools import (
    TextImageScorer,
    ToolContext,
    ToolFailure,
    ZeroShotOutput,
    zero_shot,
)

HF = [pytest.mark.slow, pytest.mark.hf]
PINK, VIOLET = (214, 140, 190), (120, 80, 200)
#: The violet tile, level-0: on the 250 px grid, far from the top-left pink tile.
VIOLET_TILE = Region(x=1250, y=750, width=250, height=250)


class ColourScorer:
    """Embeds a tile as its (red, blue) means; "pink" is the red axis, "violet" the blue."""

    name = "colour-stub"
    logit_scale = 10.0

    def __init__(self) -> None:
        self.tiles_seen = 0

    def embed_images(self, images: Sequence[Image.Image]) -> npt.NDArray[np.float32]:
        self.tiles_seen += len(images)
        means = [
            np.asarray(image.convert("RGB"), dtype=np.float32).mean(axis=(0, 1)) for image in images
        ]
        vectors = np.array([[m[0], m[2]] for m in means], dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def embed_texts(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        axes = {"pink": (1.0, 0.0), "violet": (0.0, 1.0)}
        return np.array([next(v for k, v in axes.items() if k in t) for t in texts], np.float32)


def inside(inner: Region, outer: Region) -> bool:
    return inner.intersect(outer) == inner


def expected_violet_share(colour: tuple[int, int, int]) -> float:
    red, blue = colour[0], colour[2]
    norm = math.hypot(red, blue)
    logits = np.array([red / norm, blue / norm]) * ColourScorer.logit_scale
    return float(np.exp(logits[1]) / np.exp(logits).sum())


@pytest.fixture(scope="module")
def two_colour_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2000x1500 glass; pink tissue over (250..1750, 250..1250); one violet tile in it."""
    image = Image.new("RGB", (2000, 1500), (242, 242, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((250, 250, 1749, 1249), fill=PINK)
    v = VIOLET_TILE
    draw.rectangle((v.x, v.y, v.x_end - 1, v.y_end - 1), fill=VIOLET)
    path = tmp_path_factory.mktemp("zero_shot") / "two-colour.tif"
    return write_pyramid_tiff(path, image, mpp=0.5, levels=2)


@pytest.fixture
def ctx(tmp_path: Path, two_colour_slide: Path) -> ToolContext:
    return ToolContext(
        artifacts=ArtifactStore(tmp_path / "artifacts"),
        slide=open_image(two_colour_slide),
        guides=None,  # nothing drawn over the tint but the heat map itself
        scorer=ColourScorer(),
    )


def test_the_stub_is_a_scorer() -> None:
    assert isinstance(ColourScorer(), TextImageScorer)


def test_score_map_shape_shares_and_the_best_tile(ctx: ToolContext) -> None:
    out = zero_shot(ctx, prompts=["violet", "pink"], tile_size=250, k=3)

    assert isinstance(out, ZeroShotOutput)
    assert out.grid == (6, 8) and len(out.score_map) == 6
    assert all(len(row) == 8 for row in out.score_map)
    assert out.tiles == 24  # 6 x 4 tiles of tissue
    assert out.score_map[0] == [None] * 8  # glass row
    assert out.score_map[3][5] == pytest.approx(expected_violet_share(VIOLET), abs=1e-3)
    assert out.score_map[1][1] == pytest.approx(expected_violet_share(PINK), abs=1e-3)
    assert out.top[0].region == VIOLET_TILE and out.top[0].best == "violet"
    for hit in out.top:
        assert sum(hit.scores.values()) == pytest.approx(1.0)
        assert hit.score == hit.scores["violet"]
    assert sum(out.shares.values()) == pytest.approx(1.0)
    # best regions never touch one another
    assert all(
        max(abs(a.region.x - b.region.x), abs(a.region.y - b.region.y)) > 250
        for a in out.top
        for b in out.top
        if a is not b
    )
    text = out.to_text()
    assert "1. (x=1250, y=750, w=250, h=250)" in text and "not a diagnosis" in text


def test_the_heat_map_sits_on_the_tiles_it_scores(ctx: ToolContext) -> None:
    # "pink" shown: the violet tile is the one low (blue) tile and carries no numbered box.
    out = zero_shot(ctx, prompts=["pink", "violet"], tile_size=250, k=1)
    image = np.asarray(ctx.artifacts.get(out.artifact).convert("RGB"), dtype=int)
    assert image.shape[:2] == (750, 1000)  # the overview: 2 level-0 px per pixel

    def is_blue(x: int, y: int) -> bool:
        r, _, b = image[y, x]
        return bool(b > r + 50)

    def is_warm(x: int, y: int) -> bool:
        r, _, b = image[y, x]
        return bool(r > b + 50)

    x0, y0 = VIOLET_TILE.x // 2, VIOLET_TILE.y // 2
    x1, y1 = VIOLET_TILE.x_end // 2, VIOLET_TILE.y_end // 2
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    slack = 2  # JPEG blurs an edge by a pixel or two
    assert is_blue(x0 + slack, cy) and is_warm(x0 - 1 - slack, cy)
    assert is_blue(x1 - 1 - slack, cy) and is_warm(x1 + slack, cy)
    assert is_blue(cx, y0 + slack) and is_warm(cx, y0 - 1 - slack)
    assert is_blue(cx, y1 - 1 - slack) and is_warm(cx, y1 + slack)
    # glass is not tinted: the pixel keeps its grey
    assert np.abs(image[60, 60] - np.array([242, 242, 240])).max() < 12
    assert out.artifact.kind == "zero_shot" and out.artifact.region == out.region


def test_a_region_limits_the_scoring(ctx: ToolContext) -> None:
    area = Region(x=1000, y=500, width=750, height=750)
    out = zero_shot(ctx, prompts=["violet", "pink"], region=area, tile_size=250)
    assert out.region == area and out.grid == (3, 3) and out.tiles == 9
    assert all(inside(hit.region, area) for hit in out.top)
    assert out.top[0].region == VIOLET_TILE


def test_tiles_grow_to_stay_within_the_cap(ctx: ToolContext) -> None:
    scorer = ColourScorer()
    ctx.scorer = scorer
    out = zero_shot(ctx, prompts=["violet", "pink"], tile_size=250, max_tiles=5)
    assert out.tiles <= 5 and scorer.tiles_seen == out.tiles
    assert out.tile_size > 250 and out.note and "enlarged from 250" in out.note


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"prompts": []}, "two or more"),
        ({"prompts": ["tumour"]}, "two or more"),
        ({"prompts": ["tumour", "  "]}, "non-empty"),
        ({"prompts": ["tumour", "tumour"]}, "repeat"),
        ({"prompts": ["tumour", "normal"], "show": "necrosis"}, "not one of the prompts"),
        ({"prompts": ["tumour", "normal"], "template": "an image"}, "{}"),
    ],
)
def test_bad_prompts_are_one_line_errors(
    ctx: ToolContext, arguments: dict[str, object], words: str
) -> None:
    result = zero_shot.run(ctx, arguments)
    assert isinstance(result, ToolFailure) and result.kind == "bad_input"
    assert words in result.message and "\n" not in result.message


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"prompts": ["tumour", "x" * 10_000]}, "at most 200 characters"),
        ({"prompts": ["tumour", "normal"], "template": "{}" + "y" * 10_000}, "at most 200"),
        ({"prompts": [f"p{i}" for i in range(100)]}, "at most 16"),
    ],
)
def test_oversized_arguments_are_refused_before_any_scoring(
    ctx: ToolContext, arguments: dict[str, object], words: str
) -> None:
    result = zero_shot.run(ctx, arguments)
    assert isinstance(result, ToolFailure) and result.kind == "invalid_arguments"
    assert words in result.message and "\n" not in result.message


def test_without_a_scorer_it_says_how_to_get_one(ctx: ToolContext) -> None:
    ctx.scorer = None
    with pytest.raises(ConfigError, match="image-text model"):
        zero_shot(ctx, prompts=["tumour", "normal"])
    result = zero_shot.run(ctx, {"prompts": ["tumour", "normal"]})
    assert isinstance(result, ToolFailure) and "ToolContext.scorer" in result.message


def test_no_tissue_is_a_one_line_error(tmp_path: Path) -> None:
    blank = write_pyramid_tiff(tmp_path / "blank.tif", Image.new("RGB", (800, 600), "white"))
    ctx = ToolContext(
        artifacts=ArtifactStore(tmp_path / "a"), slide=open_image(blank), scorer=ColourScorer()
    )
    with pytest.raises(InputError, match="nothing to score"):
        zero_shot(ctx, prompts=["pink", "violet"])


# -- the real loading path, on a tiny random CLIP ------------------------------------------------


@pytest.fixture(scope="module")
def clip_scorer(tmp_path_factory: pytest.TempPathFactory) -> TextImageScorer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from medagent.retrieval import make_embedder
    from medagent.testing import build_tiny_clip

    folder = build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), seed=0)
    scorer = make_embedder("hf", folder, device="cpu", batch_size=16)
    assert isinstance(scorer, TextImageScorer)
    return scorer


def check_on_slide(out: ZeroShotOutput, ctx: ToolContext) -> None:
    slide = ctx.require_slide()
    whole = Region.whole(slide.dimensions)
    mask = tissue_mask(slide)
    rows, cols = out.grid
    assert (rows, cols) == (out.region.height // out.tile_size, out.region.width // out.tile_size)
    assert sum(value is not None for row in out.score_map for value in row) == out.tiles
    assert out.top
    for hit in out.top:
        assert inside(hit.region, whole)
        assert mask.fraction(hit.region) >= 0.4  # on tissue (masks differ a little by scale)
        assert sum(hit.scores.values()) == pytest.approx(1.0, abs=1e-5)
    image = ctx.artifacts.get(out.artifact)
    view = ctx.renderer.overview(ctx.long_side(None))
    assert image.size == view.image.size and out.artifact.region == view.region


@pytest.mark.parametrize("_", [pytest.param(None, marks=HF)])
def test_tiny_clip_on_a_generated_pyramid(
    _: None, clip_scorer: TextImageScorer, pyramid_tiff: Path, tmp_path: Path
) -> None:
    ctx = ToolContext(
        artifacts=ArtifactStore(tmp_path), slide=open_image(pyramid_tiff), scorer=clip_scorer
    )
    out = zero_shot(ctx, prompts=["tumour", "normal", "necrosis"], show="necrosis")
    check_on_slide(out, ctx)
    assert out.shown == "necrosis" and out.scorer == clip_scorer.name
    assert out.tile_size == 448  # 112 µm at 0.25 µm/px


@pytest.mark.parametrize("_", [pytest.param(None, marks=HF)])
def test_the_hf_embedder_reports_clips_logit_scale(_: None, clip_scorer: TextImageScorer) -> None:
    # CLIPConfig's initial logit_scale, 2.6592, is ln(1/0.07): the scale is its exponential
    assert getattr(clip_scorer, "logit_scale", None) == pytest.approx(1 / 0.07, rel=1e-3)


@pytest.mark.realdata
@pytest.mark.parametrize("_", [pytest.param(None, marks=HF)])
def test_tiny_clip_on_the_shared_slide(
    _: None, clip_scorer: TextImageScorer, cmu_slide: Path, tmp_path: Path
) -> None:
    ctx = ToolContext(
        artifacts=ArtifactStore(tmp_path), slide=open_image(cmu_slide), scorer=clip_scorer
    )
    out = zero_shot(ctx, prompts=["tumour", "normal", "necrosis"], max_tiles=64)
    check_on_slide(out, ctx)
    assert out.tiles <= 64
