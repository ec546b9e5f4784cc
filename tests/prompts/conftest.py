"""Fixtures for prompt-program tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prompt_support import make_items

from medagent.evals._methods import vqa_example
from medagent.prompts import Example


@pytest.fixture
def examples(tmp_path: Path) -> Callable[..., list[Example]]:
    """``examples(numbers, keyword_in={...})``: VQA examples built from eval items."""

    def build(numbers: list[int], keyword_in: set[int] | None = None) -> list[Example]:
        return [vqa_example(i) for i in make_items(tmp_path / "images", numbers, keyword_in)]

    return build
