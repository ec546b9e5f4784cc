"""The page in a real browser (Debian chromium through Playwright) through nginx.

The shipped ``deploy/nginx/medagent.conf`` in front of a replica with a token: the page is
opened with ``/?token=``, the cookie carries the tiles, a question's events show while the turn
is still running (a slow scripted model), and a tile the viewer loaded is then served from
nginx's cache. Screenshots go to ``.medagent/test-output/server/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from proxy_support import TOKEN, behind_nginx, require_nginx
from server_support import ANSWER, SlowModel

from browser_support import chromium_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OUTPUT = Path(__file__).resolve().parents[2] / ".medagent" / "test-output" / "server"


def _wait_for_tiles(page: Any, count: int, timeout: float = 30.0) -> None:
    """Until the viewer has loaded ``count`` tiles (polled: the page's CSP forbids the string
    evaluation ``wait_for_function`` uses)."""
    deadline = time.monotonic() + timeout
    while int(page.locator("body").get_attribute("data-tiles") or 0) < count:
        assert time.monotonic() < deadline, f"fewer than {count} tiles shown after {timeout} s"
        time.sleep(0.1)


def test_chat_through_nginx_in_a_browser(make_app: Callable[..., Any]) -> None:
    require_nginx()
    app = make_app(model_cls=SlowModel, token=TOKEN, trusted_proxies=("127.0.0.1",))
    with (
        behind_nginx([app]) as (proxy, _),
        chromium_page(viewport={"width": 1280, "height": 800}) as page,
    ):
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("response", lambda r: problems.append(r.url) if r.status >= 400 else None)
        tiles: list[str] = []
        page.on("response", lambda r: tiles.append(r.url) if "_files/" in r.url else None)

        page.goto(f"{proxy}/?token={TOKEN}")
        assert "token" not in page.url  # traded for the cookie
        page.get_by_role("button", name="cases/tissue.tif").click()
        page.wait_for_selector("body[data-ready='true']")
        _wait_for_tiles(page, 3)

        page.fill("#question", "What tissue is this?")
        page.press("#question", "Enter")
        # The overview crop shows while the turn still runs: the stream is not held back.
        page.locator(".agent-msg.pending figure.crop img").first.wait_for(timeout=20_000)
        answer = page.locator(".agent-msg:not(.pending) .answer").first
        answer.wait_for(timeout=30_000)
        assert answer.inner_text() == ANSWER
        assert page.locator("figure.crop img").count() == 2

        # A tile the viewer loaded (nginx kept it), fetched again with the page's cookie.
        again = page.request.get(tiles[0])
        assert again.status == 200 and again.headers["x-cache-status"] == "HIT"
        assert again.body()[:2] == b"\xff\xd8"
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUTPUT / "chat-through-nginx.png"))
        assert problems == []
