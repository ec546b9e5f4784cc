"""What is drawn on a view before a model sees it: guides, boxes, masks, a scale bar.

Guides follow GIANT: ``count`` vertical and horizontal lines at i/(count+1) of the image, each
labelled with its absolute level-0 coordinate, a border, and the origin ``(x0, y0)`` at the
top-left, so a model can name regions in slide coordinates. The font scales with the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel, ConfigDict, Field

from medagent.imaging._region import Region

__all__ = ["GuideStyle", "draw_boxes", "draw_guides", "draw_mask", "draw_scale_bar"]

RGB = tuple[int, int, int]


class GuideStyle(BaseModel):
    """How axis guides look; the defaults match GIANT's."""

    model_config = ConfigDict(frozen=True)

    count: int = Field(4, ge=0, le=20, description="guides per axis")
    color: RGB = (0, 200, 255)
    label_color: RGB = (255, 255, 255)
    font_fraction: float = Field(0.02, gt=0, description="font size / the image's short side")
    min_font_px: int = Field(8, ge=4)


def _font(image: Image.Image, fraction: float, minimum: int) -> ImageFont.FreeTypeFont:
    size = max(minimum, round(min(image.size) * fraction))
    return ImageFont.load_default(size=size)  # type: ignore[return-value]


def _label(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    font: ImageFont.FreeTypeFont,
    fill: RGB,
) -> None:
    """Text on a dark box so it reads on pale background and on dark stain alike."""
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    pad = max(1, font.size // 6)
    draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=(0, 0, 0))
    draw.text(xy, text, font=font, fill=fill)


def draw_guides(image: Image.Image, region: Region, style: GuideStyle | None = None) -> Image.Image:
    """A copy of ``image`` (which shows ``region``) with labelled level-0 guides."""
    style = style or GuideStyle()
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = _font(out, style.font_fraction, style.min_font_px)
    width, height = out.size
    line = max(1, round(min(width, height) / 500))
    draw.rectangle((0, 0, width - 1, height - 1), outline=style.color, width=line)
    for i in range(1, style.count + 1):
        fraction = i / (style.count + 1)
        px, py = round(fraction * width), round(fraction * height)
        draw.line((px, 0, px, height), fill=style.color, width=line)
        draw.line((0, py, width, py), fill=style.color, width=line)
        x_value = region.x + round(fraction * region.width)
        y_value = region.y + round(fraction * region.height)
        _label(
            draw, (px + 2 * line, 2 * line + font.size + 4), f"x={x_value}", font, style.label_color
        )
        _label(draw, (2 * line, py + 2 * line), f"y={y_value}", font, style.label_color)
    _label(draw, (2 * line, 2 * line), f"({region.x}, {region.y})", font, style.label_color)
    return out


def draw_boxes(
    image: Image.Image,
    region: Region,
    boxes: Sequence[Region],
    *,
    labels: Sequence[str] | None = None,
    color: RGB = (255, 200, 0),
) -> Image.Image:
    """A copy of ``image`` with level-0 ``boxes`` outlined and labelled (1, 2, … by default)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = _font(out, 0.025, 10)
    sx, sy = out.width / region.width, out.height / region.height
    line = max(2, round(min(out.size) / 300))
    for index, box in enumerate(boxes):
        x0, y0 = (box.x - region.x) * sx, (box.y - region.y) * sy
        x1, y1 = (box.x_end - region.x) * sx, (box.y_end - region.y) * sy
        draw.rectangle((x0, y0, max(x0 + 1, x1), max(y0 + 1, y1)), outline=color, width=line)
        text = labels[index] if labels is not None else str(index + 1)
        _label(draw, (x0 + line + 1, y0 + line + 1), text, font, color)
    return out


def draw_mask(
    image: Image.Image,
    mask: np.ndarray,
    *,
    color: RGB = (0, 255, 0),
    alpha: float = 0.35,
) -> Image.Image:
    """A copy of ``image`` with ``mask`` (any resolution, resized to fit) tinted over it."""
    out = image.convert("RGB").copy()
    mask_image = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
    if mask_image.size != out.size:
        mask_image = mask_image.resize(out.size, Image.Resampling.NEAREST)
    tint = Image.new("RGB", out.size, color)
    blend = mask_image.point(lambda v: round(v * alpha))
    out.paste(tint, mask=blend)
    return out


def _nice_length(target: float) -> float:
    """1, 2 or 5 × 10^k, the largest not above ``target``."""
    exponent = math.floor(math.log10(target))
    for step in (5, 2, 1):
        value = step * 10.0**exponent
        if value <= target:
            return value
    return 10.0**exponent


def draw_scale_bar(image: Image.Image, um_per_px: float) -> Image.Image:
    """A copy with a scale bar of a round length (µm or mm) at the bottom-left."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = _font(out, 0.025, 10)
    length_um = _nice_length(out.width * 0.2 * um_per_px)
    length_px = length_um / um_per_px
    # "um", not "µm": the bundled font has no micro sign.
    text = f"{length_um / 1000:g} mm" if length_um >= 1000 else f"{length_um:g} um"
    margin = max(6, out.height // 40)
    thickness = max(3, out.height // 150)
    y = out.height - margin - thickness
    draw.rectangle(
        (margin, y, margin + length_px, y + thickness), fill=(0, 0, 0), outline=(255, 255, 255)
    )
    _label(draw, (margin, y - font.size - 6), text, font, (255, 255, 255))
    return out
