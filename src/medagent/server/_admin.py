"""The admin routes: every session listed with its disk use, any session deleted.

They answer only what ``RequestGuard`` lets through: the admin token as a bearer, on a direct
connection (see ``_security``). The listing is the one ``medagent sessions list --json``
prints, read from the same tables, so either way an admin sees the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from medagent.server._chat import ChatService
from medagent.server._config import ServerConfig
from medagent.server._expiry import usage
from medagent.server._security import ADMIN_PREFIX
from medagent.server._state import SessionStore

__all__ = ["admin_router"]

log = logging.getLogger("medagent.server")
#: Session ids and clients: nothing a cache on the way may keep.
_NO_STORE = {"Cache-Control": "no-store"}


def admin_router() -> APIRouter:
    router = APIRouter(prefix=ADMIN_PREFIX, include_in_schema=False)

    @router.get("/sessions")
    async def list_all(request: Request) -> Response:
        """Every session, longest idle first: slide, client, idle time, disk use; totals."""
        config: ServerConfig = request.app.state.config
        store: SessionStore = request.app.state.sessions
        clock: Callable[[], float] = request.app.state.clock
        listing = await usage(store, config.data_dir, config.session_idle_s, now=clock())
        return JSONResponse(listing.model_dump(mode="json"), headers=_NO_STORE)

    @router.delete("/sessions/{session_id}", status_code=204)
    async def delete(request: Request, session_id: str) -> Response:
        """Any session, whole, as ``DELETE /api/sessions/ID`` does (409 while it answers)."""
        chats: ChatService = request.app.state.chats
        await chats.delete(session_id)
        log.info("admin deleted session %s", session_id)
        return Response(status_code=204, headers=_NO_STORE)

    return router
