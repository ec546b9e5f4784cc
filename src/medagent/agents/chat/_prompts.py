"""The chat's prompts as filled for one image: what the model is told the image is.

The system prompt and the overview message name the image's kind, its reader and its spacing
in the kind's unit (``image_words``), so a radiograph is a radiologist's with millimetres and an
image without spacing gets no unit claim at all.
"""

from __future__ import annotations

from pathlib import Path

from medagent.agents.base import image_words
from medagent.agents.chat._config import ChatConfig
from medagent.imaging import Slide
from medagent.prompts import load_template

__all__ = [
    "CHAT_TEMPLATES",
    "describe_image",
    "overview_prompt",
    "system_prompt",
    "template_hashes",
]

#: Every template a chat can send, hashed into its manifest.
CHAT_TEMPLATES: tuple[str, ...] = (
    "chat/system",
    "chat/overview",
    "chat/region",
    "chat/region_question",
    "chat/schema",
    "chat/limit",
    "chat/correction_schema",
    "chat/correction_native",
    "chat/tool_images",
)


def template_hashes() -> dict[str, str]:
    """The content hash of each chat template (name → sha256)."""
    return {name: load_template(name).sha256 for name in CHAT_TEMPLATES}


def describe_image(slide: Slide) -> str:
    """The file name, its size and its level-0 spacing in the kind's unit (or none)."""
    size = slide.dimensions
    spacing = image_words(slide)["spacing"]
    return f"{Path(slide.path).name}, {size.width} x {size.height} level-0 pixels, {spacing}"


def system_prompt(slide: Slide, config: ChatConfig) -> str:
    """The system prompt of a conversation about ``slide``."""
    words = image_words(slide)
    return load_template("chat/system").render(
        reader=words["reader"],
        a_image=words["a_image"],
        whole=words["whole"],
        image=describe_image(slide),
        max_tool_calls=config.max_tool_calls,
    )


def overview_prompt(slide: Slide) -> str:
    """The words sent with the overview in the first message."""
    return load_template("chat/overview").render(
        whole=image_words(slide)["whole"], facts=describe_image(slide)
    )
