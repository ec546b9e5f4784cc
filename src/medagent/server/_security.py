"""Who may talk to the app: the Host check, the shared token, and a per-session rate limit.

The token travels three ways, for three kinds of client:

* ``Authorization: Bearer TOKEN`` — scripts and the page's own API calls;
* the ``medagent_token`` cookie (HttpOnly, SameSite=Strict) — what ``<img>`` tiles and crops can
  carry; it is set when the page is opened once as ``/?token=TOKEN``, which then redirects to a
  URL without the token, so it does not linger in history or logs;
* nothing else: a token in any other query string is ignored.

SameSite=Strict keeps other sites' pages from riding on the cookie.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["COOKIE", "RateLimiter", "RequestGuard"]

COOKIE = "medagent_token"
#: Paths anyone may fetch: vendored viewer code and a liveness probe hold nothing private.
_PUBLIC_PREFIXES = ("/static/", "/healthz")


def _host_name(value: str) -> str:
    """``"[::1]:8000"`` → ``"::1"``; ``"localhost:8000"`` → ``"localhost"``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


async def _reply(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware in front of every route, so no new route can forget the checks."""

    def __init__(self, app: ASGIApp, *, token: str | None, hosts: frozenset[str] | None) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._hosts = hosts

    def _matches(self, presented: str | None) -> bool:
        assert self._token is not None
        return presented is not None and hmac.compare_digest(presented.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the app has no WebSocket routes: refuse, unchecked
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self._hosts is not None and _host_name(headers.get("host", "")) not in self._hosts:
            await _reply(
                send, 400, "unexpected Host header; open the app as http://127.0.0.1:PORT/"
            )
            return
        path: str = scope["path"]
        if self._token is None or path.startswith(_PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if path == "/" and "token" in query:
            await self._enter_page(query, send)
            return
        presented: str | None = None
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            presented = authorization[7:].strip()
        elif "cookie" in headers:
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(headers["cookie"])
            presented = cookie[COOKIE].value if COOKIE in cookie else None
        if presented is None:
            await _reply(
                send,
                401,
                "this server needs its token: send 'Authorization: Bearer TOKEN', "
                "or open /?token=TOKEN once in the browser",
                [(b"www-authenticate", b'Bearer realm="medagent"')],
            )
            return
        if not self._matches(presented):
            await _reply(
                send,
                401,
                "wrong token; use the one the server was started with",
                [(b"www-authenticate", b'Bearer realm="medagent", error="invalid_token"')],
            )
            return
        await self.app(scope, receive, send)

    async def _enter_page(self, query: dict[str, str], send: Send) -> None:
        """``/?token=T``: trade the token for a cookie and drop it from the address bar."""
        if not self._matches(query.pop("token")):
            await _reply(send, 401, "wrong token; use the one the server was started with")
            return
        assert self._token is not None
        location = "/" + (f"?{urlencode(query)}" if query else "")
        cookie = f"{COOKIE}={self._token.decode()}; Path=/; HttpOnly; SameSite=Strict"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode()),
                    (b"set-cookie", cookie.encode()),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


class RateLimiter:
    """A token bucket per key: ``burst`` at once, then ``per_minute`` on average.

    Kept in memory: each replica limits what it serves, which bounds the model load it causes.
    """

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)

    def take(self, key: str) -> int:
        """0 when allowed (one token spent); else the whole seconds to wait (Retry-After)."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self._max_keys:
                self._forget_full(now)
            return 0
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self._rate))

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them changes nothing."""
        for key, (tokens, last) in list(self._buckets.items()):
            if tokens + (now - last) * self._rate >= self._burst:
                del self._buckets[key]
