"""The page in a real browser (Debian chromium through Playwright) on the real CMU slide.

Opens a slide from the picker, waits for Deep Zoom tiles, asks a question and watches the
streamed answer and the numbered box where the agent zoomed; drags a region and asks about it;
reloads and finds the same boxes. Screenshots go to ``.medagent/test-output/server/``.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_support import ANSWER, SCRIPT, ZOOM

from browser_support import chromium_page
from medagent.models import ScriptedModel
from medagent.server import ServerConfig, create_app

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.realdata]

OUTPUT = Path(__file__).resolve().parents[2] / ".medagent" / "test-output" / "server"
CMU = (2220, 2967)


@pytest.fixture
def server(cmu_slide: Path, tmp_path: Path) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    config = ServerConfig(slide_roots=(cmu_slide.parent,), data_dir=tmp_path / "data")
    app = create_app(config, model_factory=lambda _: ScriptedModel(SCRIPT))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    runner = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not runner.started:
        assert time.monotonic() < deadline, "the server did not start within 30 s"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    runner.should_exit = True
    thread.join(timeout=15)
    sock.close()


@pytest.fixture
def page(server: str) -> Iterator[Any]:
    with chromium_page(viewport={"width": 1280, "height": 800}) as page:
        yield page


def _home_transform(page: Any) -> tuple[float, float, float]:
    """Screen x, y of image pixel (0, 0) and screen px per image px, in the home view."""
    view = page.locator("#viewer").bounding_box()
    scale = min(view["width"] / CMU[0], view["height"] / CMU[1])
    left = view["x"] + (view["width"] - CMU[0] * scale) / 2
    top = view["y"] + (view["height"] - CMU[1] * scale) / 2
    return left, top, scale


def _wait_for_tiles(page: Any, count: int, timeout: float = 30.0) -> None:
    """Until the viewer has loaded ``count`` tiles (polled from Python: the page's CSP forbids
    the string evaluation ``wait_for_function`` uses)."""
    deadline = time.monotonic() + timeout
    while int(page.locator("body").get_attribute("data-tiles") or 0) < count:
        assert time.monotonic() < deadline, f"fewer than {count} tiles shown after {timeout} s"
        time.sleep(0.1)


def _numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text)]


def test_chat_over_the_real_slide_in_a_browser(server: str, page: Any) -> None:
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    tiles: list[int] = []
    page.on("response", lambda r: tiles.append(r.status) if "_files/" in r.url else None)
    page.on("response", lambda r: problems.append(r.url) if r.status >= 400 else None)

    page.goto(f"{server}/")
    page.get_by_role("button", name="cmu-1-small-region.svs").click()
    page.wait_for_selector("body[data-ready='true']")
    _wait_for_tiles(page, 3)
    assert tiles and set(tiles) == {200}
    assert "session=" in page.url

    # A question: the answer streams in and box 1 is drawn where the agent zoomed.
    page.fill("#question", "What tissue is this?")
    page.press("#question", "Enter")
    answer = page.locator(".agent-msg:not(.pending) .answer").first
    answer.wait_for(timeout=30_000)
    assert answer.inner_text() == ANSWER
    assert page.locator("figure.crop img").count() == 2  # the overview and the zoom
    box = page.locator('.box[data-box="1"]')
    box.wait_for(state="visible")
    time.sleep(1.0)  # let the viewer's spring animation settle
    left, top, scale = _home_transform(page)
    zoom = ZOOM["arguments"]
    drawn = box.bounding_box()
    assert abs(drawn["x"] - (left + zoom["x"] * scale)) < 4
    assert abs(drawn["y"] - (top + zoom["y"] * scale)) < 4
    assert abs(drawn["width"] - zoom["width"] * scale) < 4
    assert abs(drawn["height"] - zoom["height"] * scale) < 4

    # Drag a box on the slide and ask about it.
    wanted = (1000, 1200, 600, 800)
    page.click("#select-region")
    page.mouse.move(left + wanted[0] * scale, top + wanted[1] * scale)
    page.mouse.down()
    end = (left + (wanted[0] + wanted[2]) * scale, top + (wanted[1] + wanted[3]) * scale)
    page.mouse.move(*end, steps=8)
    page.mouse.up()
    assert page.locator("#region-chip").is_visible()
    page.fill("#question", "And this part?")
    page.press("#question", "Enter")
    page.locator(".agent-msg:not(.pending)").nth(1).wait_for(timeout=30_000)
    asked = _numbers(page.locator(".user-msg .where").first.inner_text())
    tolerance = 3 / scale  # three screen pixels, in slide pixels
    assert all(abs(a - w) <= tolerance for a, w in zip(asked, wanted, strict=True)), asked
    assert page.locator(".box.user").count() == 1
    # The agent first looks at the region it was shown (box 2), then zooms (box 3).
    assert page.locator(".box[data-box]").count() == 3
    shown = page.locator('.box[data-box="2"]').bounding_box()
    assert abs(shown["x"] - (left + wanted[0] * scale)) < 4
    assert abs(shown["width"] - wanted[2] * scale) < 4

    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "chat.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000

    # A reload redraws the same conversation and boxes from the history.
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    page.locator('.box[data-box="3"]').wait_for(state="visible")
    assert page.locator(".box[data-box]").count() == 3
    assert page.locator(".answer").first.inner_text() == ANSWER
    page.screenshot(path=str(OUTPUT / "chat-reloaded.png"))
    assert problems == []
