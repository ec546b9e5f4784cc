"""What both HTTP front ends (the web app, the MCP server) share at their edge.

How a refusal is written and the bound on request bodies: one definition,
so ``medagent serve`` and ``medagent mcp --transport http`` cannot drift apart. Needs Starlette,
which both the ``server`` and ``mcp`` extras bring; nothing in the core imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit", "BodyTooLarge", "send_json"]


async def send_json(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Reply ``{"detail": …}`` straight from a middleware, before any route runs."""
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


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes its limit. Whoever is reading it (a route, a
    JSON parser) stops there; as an ``HTTPException`` it becomes the app's own one-line 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large (limit {limit:,} bytes)")


class BodyLimit:
    """ASGI middleware bounding every request body while it streams in.

    A declared ``Content-Length`` over the limit is refused before a byte is read; a body
    without one (chunked) is counted as it arrives and reading stops at the limit, so no
    parser ever sees more. ``limit`` may depend on the path (uploads take more than JSON).
    """

    def __init__(self, app: ASGIApp, limit: int | Callable[[str], int]) -> None:
        self.app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit if isinstance(self._limit, int) else self._limit(scope["path"])
        for key, value in scope["headers"]:
            if key.lower() == b"content-length":
                declared = value.decode("latin-1").strip()
                if declared.isdigit() and int(declared) > limit:
                    await send_json(send, 413, BodyTooLarge(limit).detail)
                    return
        seen = 0
        started = replaced = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked(message: Message) -> None:
            # Once the body was cut off, whatever the app answers (a framework's plain-text
            # error, say) is replaced by the same one-line JSON 413 as a declared length gets.
            nonlocal started, replaced
            if seen > limit and not started:
                if not replaced:
                    replaced = True
                    await send_json(send, 413, BodyTooLarge(limit).detail)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:  # an app that let it through (no handler of its own)
            if started:
                raise
            if not replaced:
                await send_json(send, 413, BodyTooLarge(limit).detail)
