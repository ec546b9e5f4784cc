"""GIANT's prompts as filled for one image: what it is (``image_words``) and at what scale each
view is shown, so a radiograph is never called a slide and a stated spacing is true of the
pixels sent.
"""

from __future__ import annotations

from medagent.agents.base import image_words
from medagent.agents.giant._config import GiantConfig
from medagent.imaging import Slide
from medagent.prompts import Predict, fill_instructions, load_template

__all__ = ["RANDOM_REGION_NOTE", "options_text", "system_prompt", "view_scale"]

RANDOM_REGION_NOTE = (
    "\nIn this setting you cannot choose where to look: answer "
    '{"reasoning": "...", "action": "look"} to be shown another tissue region '
    "picked at random.\n"
)
"""Appended to the system prompt for the random-region baseline (its only action)."""


def options_text(options: list[str] | None) -> str:
    """The numbered answer options of a multiple-choice question ("" without options)."""
    if not options:
        return ""
    lines = "\n".join(f"{i}. {option}" for i, option in enumerate(options, start=1))
    return f"Options:\n{lines}\nAnswer with the number of the correct option.\n"


def system_prompt(
    slide: Slide,
    config: GiantConfig,
    method: str = "giant",
    navigate: Predict | None = None,
) -> str:
    """The system prompt as sent: the template (or a compiled program's ``navigate``
    instructions) with the turn limit and the image's words filled in."""
    words = image_words(slide)
    if navigate is not None:
        text = fill_instructions(navigate, steps=config.max_steps, **words)
    else:
        text = load_template("giant/system").render(steps=config.max_steps, **words)
    return text + RANDOM_REGION_NOTE if method == "random-region" else text


def view_scale(slide: Slide, region_width: int, image_width: int, mpp: float | None) -> str:
    """The scale a view is shown at: its spacing in the image's unit, or, without a known
    spacing, how many level-0 pixels each image pixel stands for (no unit claimed)."""
    if mpp is not None and slide.mpp_x is not None:
        return image_words(slide, mpp=mpp)["spacing"]
    return f"{region_width / image_width:.3g} level-0 pixels per image pixel"
