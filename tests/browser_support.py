"""A real Chromium page for browser tests: the system's chromium driven by Playwright.

Never a downloaded browser (``playwright install`` is not used): the Debian package's binary,
with the flags that keep it from reaching the network. Skips, saying why, when either the
binary or the Python package is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium_page(**context_options: Any) -> Iterator[Any]:
    """A new page in a fresh browser context (``context_options``: e.g. ``viewport``)."""
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    if executable is None:
        pytest.skip("browser test: /usr/bin/chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(
            "browser test: the playwright package is not installed (pip install playwright)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        context = browser.new_context(**context_options)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()
