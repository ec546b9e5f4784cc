"""Who may talk to the app: the Host check, cross-site writes, the shared token, rate limits.

The token travels three ways, for three kinds of client:

* ``Authorization: Bearer TOKEN`` — scripts and the page's own API calls;
* the ``medagent_token`` cookie (HttpOnly, SameSite=Strict) — what ``<img>`` tiles and crops can
  carry; it is set when the page is opened once as ``/?token=TOKEN``, which then redirects to a
  URL without the token, so it does not linger in history or logs;
* nothing else: a token in any other query string is ignored.

SameSite=Strict keeps other sites' pages from riding on the cookie. A page elsewhere can still
*send* a request without it (a server without a token needs none), so every state-changing
request must come from the app's own origin: ``Sec-Fetch-Site`` (set by browsers, unforgeable by
a page) must not say ``cross-site`` or ``same-site`` (another port of the same host is
same-site), ``Origin``, when sent, must be the server's own, and JSON routes take only
``application/json`` bodies (a type a page elsewhere cannot send without a CORS preflight, which
this app never grants).

Behind a reverse proxy every request reaches the app from the proxy's address, often
127.0.0.1: "loopback needs no token" would then admit the whole network. So a request that
carries a proxy's headers (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``) is remote, and a
server without a token refuses it; the shipped nginx config sets those headers.

The admin routes (``/api/admin/``) list every session, and a session id is all it takes to
read a session, so they cannot sit behind a token every user holds. They take only their own
token (``--admin-token``), only as ``Authorization: Bearer``, never the cookie (a page never
holds it), and only on a direct connection: a request carrying a proxy's headers is refused,
so an admin reaches a replica on its own port (loopback, VPN), not through the public proxy.
Without an admin token they answer 404, whoever asks.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from medagent._asgi import send_json
from medagent.server._config import origin_netloc

__all__ = [
    "ADMIN_PREFIX",
    "COOKIE",
    "PROXY_HEADERS",
    "RAW_BODY_PATHS",
    "ClientLimits",
    "RateLimiter",
    "RequestGuard",
]

COOKIE = "medagent_token"
#: Routes under this prefix take the admin token, and nothing else (see the module's note).
ADMIN_PREFIX = "/api/admin"
#: Paths anyone may fetch: vendored viewer code and a liveness probe hold nothing private.
_PUBLIC_PREFIXES = ("/static/", "/healthz")
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Headers a reverse proxy adds: a request carrying one came from elsewhere.
PROXY_HEADERS = frozenset({"forwarded", "x-forwarded-for", "x-real-ip"})
#: Write routes whose body is a raw file, not JSON.
RAW_BODY_PATHS = frozenset({"/api/uploads"})


def _host_name(value: str) -> str:
    """``"[::1]:8000"`` → ``"::1"``; ``"localhost:8000"`` → ``"localhost"``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _bearer(headers: dict[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if one was sent."""
    authorization = headers.get("authorization", "")
    return authorization[7:].strip() if authorization[:7].lower() == "bearer " else None


def _equal(presented: str | None, secret: bytes) -> bool:
    """Constant-time: how long a refusal takes says nothing of how much of a guess was right."""
    return presented is not None and hmac.compare_digest(presented.encode(), secret)


def _cookie(header: str, name: str) -> str | None:
    """The value of cookie ``name``; a malformed header (any client can send one) is no cookie."""
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(header)
    except CookieError:
        return None
    return cookie[name].value if name in cookie else None


class RequestGuard:
    """ASGI middleware in front of every route, so no new route can forget the checks."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        hosts: frozenset[str] | None,
        origins: frozenset[str] = frozenset(),
        admin_token: str | None = None,
    ) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._admin_token = admin_token.encode() if admin_token else None
        self._hosts = hosts
        self._origins = origins

    def _matches(self, presented: str | None) -> bool:
        assert self._token is not None
        return _equal(presented, self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the app has no WebSocket routes: refuse, unchecked
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self._hosts is not None and _host_name(headers.get("host", "")) not in self._hosts:
            await send_json(
                send, 400, "unexpected Host header; open the app as http://127.0.0.1:PORT/"
            )
            return
        path: str = scope["path"]
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            await self._admin(scope, receive, send, headers)
            return
        public = path.startswith(_PUBLIC_PREFIXES)
        if self._token is None and not public and not PROXY_HEADERS.isdisjoint(headers):
            await send_json(
                send,
                403,
                "this request came through a proxy and the server has no token: behind a "
                "proxy the network reaches it; start it with --token (MEDAGENT_SERVER_TOKEN)",
            )
            return
        if scope["method"] in _WRITES:
            refused = self._write_refusal(scope, headers)
            if refused is not None:
                await send_json(send, *refused)
                return
        if self._token is None or public:
            await self.app(scope, receive, send)
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if path == "/" and "token" in query:
            await self._enter_page(query, send)
            return
        presented = _bearer(headers)
        if presented is None and "cookie" in headers:
            presented = _cookie(headers["cookie"], COOKIE)
        if presented is None:
            await send_json(
                send,
                401,
                "this server needs its token: send 'Authorization: Bearer TOKEN', "
                "or open /?token=TOKEN once in the browser",
                [(b"www-authenticate", b'Bearer realm="medagent"')],
            )
            return
        if not self._matches(presented):
            await send_json(
                send,
                401,
                "wrong token; use the one the server was started with",
                [(b"www-authenticate", b'Bearer realm="medagent", error="invalid_token"')],
            )
            return
        await self.app(scope, receive, send)

    async def _admin(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        """An admin route: the admin token as a bearer, on a direct connection, or nothing."""
        if self._admin_token is None:  # off: as if the routes did not exist
            await send_json(send, 404, "Not Found")
            return
        if not PROXY_HEADERS.isdisjoint(headers):
            await send_json(
                send,
                403,
                "admin routes are not served through a proxy; call a replica directly on its "
                "own port (loopback or VPN)",
            )
            return
        refused = self._write_refusal(scope, headers) if scope["method"] in _WRITES else None
        if refused is not None:
            await send_json(send, *refused)
            return
        presented = _bearer(headers)
        if presented is None:
            await send_json(
                send,
                401,
                "admin routes need 'Authorization: Bearer ADMIN_TOKEN' (the server's "
                "--admin-token); the user token and the page's cookie do not open them",
                [(b"www-authenticate", b'Bearer realm="medagent-admin"')],
            )
            return
        if not _equal(presented, self._admin_token):
            await send_json(
                send,
                401,
                "wrong admin token; use the server's --admin-token (the user token does not "
                "open admin routes)",
                [(b"www-authenticate", b'Bearer realm="medagent-admin", error="invalid_token"')],
            )
            return
        await self.app(scope, receive, send)

    def _write_refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """Why a state-changing request is refused (status, detail), or ``None``."""
        own = headers.get("host", "").strip().lower()
        default_port = {"http": ":80", "https": ":443"}.get(scope.get("scheme", ""))
        if default_port:
            own = own.removesuffix(default_port)
        origin = headers.get("origin")
        from_here = origin is not None and origin_netloc(origin) in {own, *self._origins}
        site = headers.get("sec-fetch-site", "").strip().lower()
        if site == "cross-site" or (site == "same-site" and not from_here):
            return 403, "cross-site request refused: write to this server from its own page only"
        if origin is not None and not from_here:
            return 403, "request from another origin refused: write from the app's own page only"
        if scope["path"] not in RAW_BODY_PATHS and scope["method"] != "DELETE":
            kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if kind != "application/json":
                return 415, "send the body as JSON, with 'Content-Type: application/json'"
        return None

    async def _enter_page(self, query: dict[str, str], send: Send) -> None:
        """``/?token=T``: trade the token for a cookie and drop it from the address bar."""
        if not self._matches(query.pop("token")):
            await send_json(send, 401, "wrong token; use the one the server was started with")
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


class ClientLimits:
    """Limits per client address, across its sessions: opening a new session per message must
    not get round the per-session limit, nor may one client open sessions without end."""

    def __init__(
        self,
        *,
        sessions_per_minute: float,
        session_burst: int,
        messages_per_minute: float,
        message_burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = RateLimiter(sessions_per_minute, session_burst, clock=clock)
        self._messages = RateLimiter(messages_per_minute, message_burst, clock=clock)

    def new_session(self, client: str) -> int:
        """0 when ``client`` may open a session now; else the seconds to wait."""
        return self._sessions.take(client)

    def new_message(self, client: str) -> int:
        """0 when ``client`` may start a turn now (in any session); else the seconds to wait."""
        return self._messages.take(client)


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
