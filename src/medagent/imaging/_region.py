"""Level-0 regions: the one coordinate type that crosses module boundaries.

Every coordinate an agent sees or sends is in level-0 (baseline) pixels; values at other
pyramid levels stay inside the imaging layer and are named ``l_…``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Point", "Region", "Size"]

#: Larger than any slide (the largest scanners make ~250,000 px a side), small enough for int32.
_LIMIT = 2**31 - 1


class Size(BaseModel):
    """Width and height in pixels."""

    model_config = ConfigDict(frozen=True)

    width: int = Field(ge=0)
    height: int = Field(ge=0)

    @property
    def long_side(self) -> int:
        return max(self.width, self.height)


class Region(BaseModel):
    """A rectangle in level-0 pixels: top-left corner and size (``width``/``height`` may be 0).

    Values outside the slide are allowed here (a model may ask for them); ``clamp`` says what
    is left inside.
    """

    model_config = ConfigDict(frozen=True)

    # Bounded so that no arithmetic on a region from outside can overflow a C integer.
    x: int = Field(ge=-_LIMIT, le=_LIMIT)
    y: int = Field(ge=-_LIMIT, le=_LIMIT)
    width: int = Field(ge=0, le=_LIMIT)
    height: int = Field(ge=0, le=_LIMIT)

    @classmethod
    def whole(cls, size: Size) -> Region:
        return cls(x=0, y=0, width=size.width, height=size.height)

    @classmethod
    def parse(cls, text: str) -> Region:
        """``"X,Y,W,H"`` (as typed on a command line)."""
        try:
            x, y, w, h = (int(float(v)) for v in text.split(","))
        except (ValueError, OverflowError):
            raise ValueError(f"expected X,Y,W,H as four integers, got {text[:80]!r}") from None
        if w < 0 or h < 0:
            raise ValueError(f"width and height must be 0 or more, got {w} x {h}")
        if max(abs(x), abs(y), w, h) > _LIMIT:
            raise ValueError(f"X,Y,W,H must each be within ±{_LIMIT}, got {text[:80]!r}")
        return cls(x=x, y=y, width=w, height=h)

    @property
    def x_end(self) -> int:
        return self.x + self.width

    @property
    def y_end(self) -> int:
        return self.y + self.height

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def size(self) -> Size:
        return Size(width=self.width, height=self.height)

    @property
    def long_side(self) -> int:
        return max(self.width, self.height)

    def intersect(self, other: Region) -> Region | None:
        """The overlap, or ``None`` when the two do not overlap with positive area."""
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.x_end, other.x_end), min(self.y_end, other.y_end)
        if x1 <= x0 or y1 <= y0:
            return None
        return Region(x=x0, y=y0, width=x1 - x0, height=y1 - y0)

    def clamp(self, bounds: Size) -> Region | None:
        """The part inside ``0..bounds``, or ``None`` when nothing is inside."""
        return self.intersect(Region.whole(bounds))

    def contains(self, x: float, y: float) -> bool:
        return self.x <= x < self.x_end and self.y <= y < self.y_end

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.width, self.height)

    def __str__(self) -> str:
        return f"(x={self.x}, y={self.y}, w={self.width}, h={self.height})"


class Point(BaseModel):
    """A point in level-0 pixels; ``[x, y]`` is accepted as well as ``{"x": …, "y": …}``."""

    model_config = ConfigDict(frozen=True)

    x: float = Field(allow_inf_nan=False)
    y: float = Field(allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) == 2:
            return {"x": value[0], "y": value[1]}
        return value

    def __str__(self) -> str:
        return f"({self.x:g}, {self.y:g})"
