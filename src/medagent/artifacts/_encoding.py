"""Turning images into the bytes and data URLs that models receive."""

from __future__ import annotations

import base64
import io

from PIL import Image

__all__ = ["data_url", "fit_long_side", "to_jpeg"]


def fit_long_side(image: Image.Image, long_side: int) -> Image.Image:
    """Shrink ``image`` so its long side is at most ``long_side``; never upscale."""
    width, height = image.size
    current = max(width, height)
    if current <= long_side:
        return image
    scale = long_side / current
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def to_jpeg(image: Image.Image, *, long_side: int | None = None, quality: int = 90) -> bytes:
    """Encode as RGB JPEG (alpha dropped: slides come back RGBA from OpenSlide)."""
    if long_side is not None:
        image = fit_long_side(image, long_side)
    if image.mode != "RGB":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/jpeg") -> str:
    """A ``data:`` URL, the form OpenAI-compatible servers accept for inline images."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
