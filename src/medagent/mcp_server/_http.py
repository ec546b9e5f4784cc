"""The MCP server over streamable HTTP: who may connect.

The policy is the web app's (``medagent serve``): loopback needs no token; any other interface
refuses to start without one, because anyone who can reach the port could otherwise open every
slide under the folders. With a token, every HTTP request must carry ``Authorization: Bearer
TOKEN``; it is compared in constant time and never logged (no access log is kept).
"""

from __future__ import annotations

import hmac
import re
from typing import TYPE_CHECKING, Any

from medagent._hosts import is_loopback
from medagent.errors import ConfigError

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["MAX_BODY", "BearerGuard", "check_binding", "http_app", "is_loopback", "serve_http"]

_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,}")
#: Largest JSON-RPC request body: tool arguments are paths, regions and ids, never images.
MAX_BODY = 1024 * 1024


def check_binding(host: str, token: str | None) -> None:
    """``ConfigError`` for a token of the wrong form, or a non-loopback host without one."""
    if token is not None and not _TOKEN.fullmatch(token):
        # The message never quotes the token: it is a secret even when malformed.
        raise ConfigError(
            "the MCP token must be 16 or more URL-safe characters (letters, digits, . _ ~ + / = -)"
        )
    if not token and not is_loopback(host):
        raise ConfigError(
            f"binding {host} exposes the slides to the network; set a token (--token or "
            "MEDAGENT_MCP_TOKEN, at least 16 characters) or bind 127.0.0.1"
        )


class BearerGuard:
    """ASGI middleware in front of the whole MCP app: no request reaches it without the token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    def _matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode("latin-1", "replace"), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # the MCP app has no WebSocket routes
            await send({"type": "websocket.close", "code": 1008})
            return
        authorization = ""
        for key, value in scope["headers"]:
            if key.lower() == b"authorization":
                authorization = value.decode("latin-1")
        from medagent._asgi import send_json

        if authorization[:7].lower() != "bearer ":
            await send_json(
                send,
                401,
                "this MCP server needs its token: send 'Authorization: Bearer TOKEN'",
                [(b"www-authenticate", b'Bearer realm="medagent"')],
            )
            return
        if not self._matches(authorization[7:].strip()):
            await send_json(
                send,
                401,
                "wrong token; use the one the MCP server was started with",
                [(b"www-authenticate", b'Bearer realm="medagent", error="invalid_token"')],
            )
            return
        await self.app(scope, receive, send)


def http_app(
    server: Server[Any], *, host: str, token: str | None, max_body: int = MAX_BODY
) -> ASGIApp:
    """The streamable-HTTP app for ``server`` at ``/mcp``, behind the token when there is one;
    request bodies are bounded while they stream in (413 past ``max_body``)."""
    from medagent._asgi import BodyLimit

    check_binding(host, token)
    app: ASGIApp = server.streamable_http_app(host=host)
    return BodyLimit(BearerGuard(app, token) if token else app, max_body)


def serve_http(server: Server[Any], *, host: str, port: int, token: str | None) -> None:
    """Serve until stopped; refuses (``ConfigError``) what ``check_binding`` refuses."""
    import uvicorn

    app = http_app(server, host=host, token=token)
    # No access log: request lines are nobody's business, and nothing secret may reach a log.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
