"""The review page in a real browser (Debian chromium through Playwright) over a GIANT run.

Opens the run, opens an item (tiles load, the agent's views are boxes numbered by step),
grades two items, reloads and finds the grades, and downloads the CSV export.
"""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from review_support import make_giant_run

from browser_support import chromium_page
from medagent.models import ScriptedModel
from medagent.server import ServerConfig, create_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def server(slide_root: Path, tmp_path: Path) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    runs = tmp_path / "runs"
    make_giant_run(runs / "giant", slide_root / "cases" / "tissue.tif")
    config = ServerConfig(slide_roots=(slide_root,), data_dir=tmp_path / "data", runs_root=runs)
    app = create_app(config, model_factory=lambda _: ScriptedModel([]))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    runner = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not runner.started:
        assert time.monotonic() < deadline, "the server did not start within 30 s"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    runner.should_exit = True
    thread.join(timeout=15)
    sock.close()


def _wait_for_tiles(page: Any, count: int, timeout: float = 30.0) -> None:
    """Polled from Python: the page's CSP forbids the evaluation ``wait_for_function`` uses."""
    deadline = time.monotonic() + timeout
    while int(page.locator("body").get_attribute("data-tiles") or 0) < count:
        assert time.monotonic() < deadline, f"fewer than {count} tiles shown after {timeout} s"
        time.sleep(0.1)


def _ready(page: Any) -> None:
    page.wait_for_selector("body[data-ready='true']", timeout=30_000)


def test_grade_two_items_reload_and_export(server: str, tmp_path: Path) -> None:
    with chromium_page(viewport={"width": 1280, "height": 800}, accept_downloads=True) as page:
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("response", lambda r: problems.append(r.url) if r.status >= 400 else None)

        page.goto(f"{server}/review")
        _ready(page)
        page.get_by_role("button", name="giant").click()
        _ready(page)
        page.get_by_role("button", name="q0").click()
        _ready(page)
        _wait_for_tiles(page, 3)
        for number in (1, 2):  # the two zooms, numbered by step
            page.locator(f'.box[data-box="{number}"]').wait_for(state="visible")
        assert page.locator("#steps li").count() == 3
        assert "a gland at the top left" in page.locator("#step-1").inner_text()
        assert page.locator("#reference").inner_text() == "colon"

        # First item: partly right, one useful and one wasteful step, a comment.
        page.check("input[name=answer][value=partly]")
        page.check("input[name='step-1'][value=useful]")
        page.check("input[name='step-2'][value=wasteful]")
        page.fill("#comment", "the second view was not needed")
        page.click("#save")
        page.wait_for_selector("#saved:text('saved')")

        # Second item, reached through "next".
        page.click("#next-item")
        _ready(page)
        assert "tcga:case/7" in page.locator("#item-title").inner_text()
        page.check("input[name=answer][value=wrong]")
        page.click("#save")
        page.wait_for_selector("#saved:text('saved')")

        # Reloaded, the grades are still there.
        page.reload()
        _ready(page)
        assert page.is_checked("input[name=answer][value=wrong]")
        page.click("#prev-item")
        _ready(page)
        assert page.is_checked("input[name=answer][value=partly]")
        assert page.is_checked("input[name='step-1'][value=useful]")
        assert page.is_checked("input[name='step-2'][value=wasteful]")
        assert page.input_value("#comment") == "the second view was not needed"

        # The run's list shows them, and the CSV export holds them.
        page.click("#back-to-run")
        _ready(page)
        grades = page.locator("#items tbody td.grade").all_inner_texts()
        assert grades == ["partly", "wrong", ""]
        with page.expect_download() as download:
            page.click("#export-csv")
        saved = tmp_path / "export.csv"
        download.value.save_as(saved)
        rows = list(csv.DictReader(io.StringIO(saved.read_text())))
        assert [(r["item"], r["answer_grade"], r["step_grades"]) for r in rows] == [
            ("q0", "partly", "1:useful;2:wasteful"),
            ("tcga:case/7", "wrong", ""),
        ]
        assert problems == []
