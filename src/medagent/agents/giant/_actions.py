"""What the model may answer each turn: one JSON object, validated by these models.

Bounds on every field keep the JSON schema finite, so constrained decoding terminates even with
a weak model (free integers and strings would let it write digits until ``max_tokens``).

A CT/MR volume adds one action, ``slice`` (go to a slice, optionally a region of it); slides
keep exactly ``GiantAction``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model, model_validator

from medagent.imaging import Region, VolumeAxis, WindowPreset

__all__ = [
    "AnswerAction",
    "FinalAnswer",
    "GiantAction",
    "LookAction",
    "RandomAction",
    "SliceAction",
    "VolumeAction",
    "ZoomAction",
    "decoding_schema",
    "volume_schemas",
]

_STRICT = ConfigDict(frozen=True, extra="forbid")
COORD = 10_000_000
REASONING = 800
ANSWER = 300


class ZoomAction(BaseModel):
    """Look at a region: top-left corner and size in level-0 pixels."""

    model_config = ConfigDict(frozen=True)

    reasoning: str = Field(max_length=REASONING)
    action: Literal["zoom"]
    x: int = Field(ge=-COORD, le=COORD)
    y: int = Field(ge=-COORD, le=COORD)
    width: int = Field(ge=1, le=COORD)
    height: int = Field(ge=1, le=COORD)


class AnswerAction(BaseModel):
    """Stop looking and answer."""

    model_config = ConfigDict(frozen=True)

    reasoning: str = Field(max_length=REASONING)
    action: Literal["answer"]
    answer: str = Field(min_length=1, max_length=ANSWER)


class LookAction(BaseModel):
    """The random-region baseline's only tool: show me another region (no coordinates)."""

    model_config = ConfigDict(frozen=True)

    reasoning: str = Field(max_length=REASONING)
    action: Literal["look"]


class SliceAction(BaseModel):
    """Go to slice ``index`` along ``axis`` of a CT/MR volume, through ``window`` (``None``:
    keep the current one); with x, y, width, height (that slice's pixels), only that region."""

    model_config = ConfigDict(frozen=True)

    reasoning: str = Field(max_length=REASONING)
    action: Literal["slice"]
    index: int = Field(ge=0, le=COORD)
    axis: VolumeAxis = "axial"
    window: WindowPreset | None = None
    x: int | None = Field(None, ge=-COORD, le=COORD)
    y: int | None = Field(None, ge=-COORD, le=COORD)
    width: int | None = Field(None, ge=1, le=COORD)
    height: int | None = Field(None, ge=1, le=COORD)

    @model_validator(mode="after")
    def _whole_region(self) -> SliceAction:
        given = [v is not None for v in (self.x, self.y, self.width, self.height)]
        if any(given) and not all(given):
            raise ValueError("give x, y, width and height together, or none for the whole slice")
        return self

    @property
    def region(self) -> Region | None:
        """The region asked for, in the slice's pixels (``None``: the whole slice)."""
        if self.x is None or self.y is None or self.width is None or self.height is None:
            return None
        return Region(x=self.x, y=self.y, width=self.width, height=self.height)


class GiantAction(RootModel[Annotated[ZoomAction | AnswerAction, Field(discriminator="action")]]):
    """One turn of the navigator."""


class RandomAction(RootModel[Annotated[LookAction | AnswerAction, Field(discriminator="action")]]):
    """One turn of the random-region baseline."""


class VolumeAction(
    RootModel[Annotated[ZoomAction | SliceAction | AnswerAction, Field(discriminator="action")]]
):
    """One turn of the navigator over a CT/MR volume."""


class FinalAnswer(BaseModel):
    """The last turn: an answer, nothing else."""

    model_config = ConfigDict(frozen=True)

    reasoning: str = Field(max_length=REASONING)
    answer: str = Field(min_length=1, max_length=ANSWER)


@functools.lru_cache(maxsize=256)
def decoding_schema(
    slide_width: int, slide_height: int, *, zoom_only: bool = False
) -> type[BaseModel]:
    """``GiantAction`` with coordinates bounded by the slide, for constrained decoding only.

    Sent to the model so a constrained decoder can only write regions that start inside the
    slide; replies are still validated against the looser ``GiantAction``, so a server that
    ignores the schema can send a partly-outside region, which is clamped with a note.
    ``zoom_only``: the bounded zoom alone (``GiantConfig.fixed_steps``). Cached per size: a new
    class every turn would cost its JSON schema again on every request.
    """

    class SlideZoom(ZoomAction):
        x: int = Field(ge=0, le=max(0, slide_width - 1))
        y: int = Field(ge=0, le=max(0, slide_height - 1))
        width: int = Field(ge=1, le=max(1, slide_width))
        height: int = Field(ge=1, le=max(1, slide_height))

    if zoom_only:
        SlideZoom.__name__ = "ZoomAction"
        return SlideZoom

    class SlideAction(
        RootModel[Annotated[SlideZoom | AnswerAction, Field(discriminator="action")]]
    ):
        """One turn of the navigator, within this slide."""

    SlideAction.__name__ = "GiantAction"
    return SlideAction


def volume_schemas(
    counts: Mapping[VolumeAxis, int],
    bound: int,
    *,
    hu: bool,
    on: tuple[int, int] | None,
) -> tuple[type[BaseModel], type[BaseModel]]:
    """``VolumeAction`` for one volume and turn: what replies are validated against, and what a
    constrained decoder is sent.

    Validation checks the index against the chosen axis (a JSON schema cannot tie one field's
    bound to another's value), refuses HU presets for an MR and a zoom before any slice (``on``
    is the current slice's width and height, ``None`` on the montage), so such replies go back
    through the correction loop; regions stay loose (clamped later, as a slide's). The decoding
    schema bounds every number: a slice's index by the axis it names (one variant per axis), its
    region by ``bound`` (the longest side any view can have), a zoom by the current slice.
    """

    class CheckedSlice(SliceAction):
        @model_validator(mode="after")
        def _inside(self) -> CheckedSlice:
            count = counts[self.axis]
            if self.index >= count:
                raise ValueError(
                    f"slice {self.index} is outside the volume: {self.axis} slices are "
                    f"0 to {count - 1}"
                )
            if self.window is not None and not hu:
                raise ValueError(
                    "an MR has no HU window presets; give window null (its own percentiles)"
                )
            return self

    class CheckedZoom(ZoomAction):
        @model_validator(mode="after")
        def _on_a_slice(self) -> CheckedZoom:
            if on is None:
                raise ValueError(
                    "zoom looks into the slice you are on, and you are on the montage: go to a "
                    'slice first ("action": "slice")'
                )
            return self

    class CheckedAction(
        RootModel[
            Annotated[CheckedZoom | CheckedSlice | AnswerAction, Field(discriminator="action")]
        ]
    ):
        """One turn of the navigator, within this volume."""

    on_w, on_h = on or (bound, bound)  # names of their own: a class body hides width, height

    class BoundedZoom(ZoomAction):
        x: int = Field(ge=0, le=max(0, on_w - 1))
        y: int = Field(ge=0, le=max(0, on_h - 1))
        width: int = Field(ge=1, le=max(1, on_w))
        height: int = Field(ge=1, le=max(1, on_h))

    def bounded_slice(axis: VolumeAxis, region: bool) -> type[BaseModel]:
        """A slice action along ``axis`` only, its index bounded by that axis's count, with a
        whole region or none: one per axis and form, so a decoder writes an index that fits
        the axis it chose and never half a region."""
        fields: dict[str, Any] = {
            "reasoning": (str, Field(max_length=REASONING)),
            "action": (Literal["slice"], ...),
            "axis": (Literal[axis], ...),
            "index": (int, Field(ge=0, le=counts[axis] - 1)),
            "window": (WindowPreset | None if hu else None, None),
        }
        if region:
            for name, low in (("x", 0), ("y", 0), ("width", 1), ("height", 1)):
                fields[name] = (int, Field(ge=low, le=max(low, bound - 1 if low == 0 else bound)))
        name = f"{axis.capitalize()}Slice{'Region' if region else ''}"
        return create_model(name, __config__=_STRICT, **fields)

    slices = tuple(bounded_slice(axis, region) for axis in counts for region in (False, True))
    # On the montage there is no slice to zoom into: the decoder is offered no zoom.
    choices = (BoundedZoom, *slices, AnswerAction) if on is not None else (*slices, AnswerAction)
    choice: Any = Union[choices]  # noqa: UP007 - a union built at run time

    class BoundedAction(RootModel[choice]):
        """One turn of the navigator, within this volume."""

    CheckedAction.__name__ = BoundedAction.__name__ = "VolumeAction"
    return CheckedAction, BoundedAction
