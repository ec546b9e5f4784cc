"""The HTTP API: sessions, messages (streamed as server-sent events), history, tiles, crops.

Everything about a slide is reached through a session: the slide path is checked once, when
the session is created, and tile and crop URLs carry only the session id.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException

from medagent.errors import (
    DatabaseUnavailableError,
    InputError,
    MedagentError,
    PathRefusedError,
    PHIRefusedError,
    SlideOpenError,
)
from medagent.imaging import (
    PathHider,
    Region,
    is_dicomweb_ref,
    list_archive_series,
    list_under_roots,
)
from medagent.server._chat import (
    ChatService,
    OpenSession,
    RateLimitedError,
    SessionCapError,
    SessionNotFoundError,
    TurnInProgressError,
)
from medagent.server._config import ServerConfig
from medagent.server._security import ClientLimits
from medagent.server._tiles import TileNotFoundError, TileService

__all__ = ["add_error_handlers", "api_router"]

#: Files offered in the slide list (anything ``open_image`` reads can still be named directly).
_LIST_LIMIT = 2000
_TILE_CACHE = "private, max-age=86400"
#: A validation reply lists at most this many problems, each cut to one short line.
_MAX_PROBLEMS = 10
_LOC_PART = 40
_TILE_NUMBER = re.compile(r"[0-9]{1,9}")
_MAX_PATH_CHARS = 1024


class NewSession(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slide: str = Field(
        max_length=2048,
        description="Path under a slide folder (at most 1024 characters), or a series in an "
        "allowed DICOMweb archive (dicomweb+https://…), as listed.",
    )

    @field_validator("slide")
    @classmethod
    def _path_length(cls, slide: str) -> str:
        # A reference carries two 64-character UIDs and a host; a path has no such excuse.
        if not is_dicomweb_ref(slide) and len(slide) > _MAX_PATH_CHARS:
            raise ValueError(f"a slide path is at most {_MAX_PATH_CHARS} characters")
        return slide


class NewMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field("", description="The question; may be empty when a region is given.")
    region: Region | None = Field(None, description="Level-0 region the user pointed at.")


def _chats(request: Request) -> ChatService:
    chats: ChatService = request.app.state.chats
    return chats


def _tiles(request: Request) -> TileService:
    tiles: TileService = request.app.state.tiles
    return tiles


def _limits(request: Request) -> ClientLimits:
    limits: ClientLimits = request.app.state.client_limits
    return limits


def _config(request: Request) -> ServerConfig:
    config: ServerConfig = request.app.state.config
    return config


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _error(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def _hide_paths(config: ServerConfig) -> PathHider:
    """What takes the server's folders out of a reply: a client sees a path relative to its
    slide folder, never where the server keeps it."""
    folders = [*config.roots, config.data_dir, *([config.runs] if config.runs else [])]
    return PathHider(dict.fromkeys(folders, "."))


def _scrubbed(value: Any, hide: PathHider) -> Any:
    """``value`` (an event as JSON data) with every string passed through ``hide``."""
    if isinstance(value, str):
        return hide(value)
    if isinstance(value, dict):
        return {key: _scrubbed(item, hide) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item, hide) for item in value]
    return value


def _tile_number(text: str) -> int:
    """A Deep Zoom level or tile index from the URL. Parsed here, not by the router's ``int``
    converter: that one raises on a number of more than 4,300 digits (a 500)."""
    if not _TILE_NUMBER.fullmatch(text):
        raise TileNotFoundError("no such tile in this slide's Deep Zoom pyramid")
    return int(text)


def _problem(error: dict[str, Any]) -> str:
    """One short line for one validation error: where and what, never the value sent."""
    where = ".".join(str(part)[:_LOC_PART] for part in error.get("loc", ()))
    what = str(error.get("msg", "invalid value")).splitlines()[0][:120]
    return f"{where}: {what}" if where else what


def add_error_handlers(app: FastAPI) -> None:
    """Expected failures become statuses with one-line details; anything else is a one-line
    500 (the traceback goes to the server log only)."""

    def invalid(request: Request, exc: Exception) -> Response:
        # FastAPI's own handler echoes each input back: a 10 MB body came back in the reply.
        assert isinstance(exc, RequestValidationError)
        problems = [_problem(error) for error in exc.errors()[:_MAX_PROBLEMS]]
        return _error(422, "; ".join(problems) or "invalid request")

    app.add_exception_handler(RequestValidationError, invalid)

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail), **(exc.headers or {}))

    app.add_exception_handler(HTTPException, http_error)

    def internal(request: Request, exc: Exception) -> Response:
        # Starlette logs the traceback after this reply; the client learns nothing of it.
        return _error(500, "internal error; the server log has the details")

    app.add_exception_handler(Exception, internal)
    statuses: list[tuple[type[Exception], int, str | None]] = [
        (SessionNotFoundError, 404, "no such session"),
        (TileNotFoundError, 404, None),
        (PathRefusedError, 403, None),
        (PHIRefusedError, 403, None),
        (SlideOpenError, 422, None),
        (InputError, 404, None),
        (MedagentError, 422, None),
        (TurnInProgressError, 409, "this session is still answering; wait for turn_end"),
    ]
    for kind, status, fixed in statuses:

        def handler(
            request: Request, exc: Exception, status: int = status, fixed: str | None = fixed
        ) -> Response:
            return _error(status, fixed or _hide_paths(_config(request))(str(exc)))

        app.add_exception_handler(kind, handler)

    def rate_limited(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RateLimitedError)
        return _error(429, str(exc), **{"Retry-After": str(exc.retry_after)})

    app.add_exception_handler(RateLimitedError, rate_limited)

    def session_cap(request: Request, exc: Exception) -> Response:
        return _error(429, str(exc))

    app.add_exception_handler(SessionCapError, session_cap)

    def database_down(request: Request, exc: Exception) -> Response:
        # A fixed line: the driver's text names hosts and ports the client has no use for.
        return _error(503, str(exc), **{"Retry-After": "5"})

    app.add_exception_handler(DatabaseUnavailableError, database_down)


async def _session_info(request: Request, session: OpenSession) -> dict[str, Any]:
    info = (await to_thread.run_sync(_tiles(request).slide, session.slide_path)).slide.info
    base = f"/api/sessions/{session.record.id}"
    return {
        "id": session.record.id,
        "slide": session.record.slide,
        "created_at": session.record.created_at,
        "width": info.dimensions.width,
        "height": info.dimensions.height,
        "mpp_x": info.mpp_x,
        "mpp_y": info.mpp_y,
        "vendor": info.vendor,
        "level_count": info.level_count,
        "associated_images": info.associated_images,  # names only, never the pixels
        "dzi": f"{base}/slide.dzi",
    }


def api_router() -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @router.get("/api/slides")
    async def list_slides(request: Request) -> dict[str, Any]:
        """Slides a session can be opened on: files under the folders, then the whole-slide
        series of the allowed DICOMweb archives (QIDO-RS; an archive that is down is left out)."""
        config = _config(request)
        slides = await to_thread.run_sync(
            functools.partial(list_under_roots, config.roots, limit=_LIST_LIMIT)
        )
        room = _LIST_LIMIT - len(slides)
        if config.dicomweb_archives and room > 0:
            slides += await to_thread.run_sync(
                functools.partial(list_archive_series, config.dicomweb_archives, limit=room)
            )
        return {"slides": slides, "truncated": len(slides) >= _LIST_LIMIT}

    @router.post("/api/sessions", status_code=201, response_model=None)
    async def create_session(request: Request, body: NewSession) -> dict[str, Any] | Response:
        """A new chat session on a slide under a configured folder."""
        wait = _limits(request).new_session(_client(request))
        if wait:
            return _error(
                429, f"too many new sessions; retry in {wait} s", **{"Retry-After": str(wait)}
            )
        session = await _chats(request).create(body.slide, client=_client(request))
        return await _session_info(request, session)

    @router.delete("/api/sessions/{session_id}", status_code=204)
    async def delete_session(request: Request, session_id: str) -> Response:
        """The session, its checkpoints and its crops, gone (409 while it answers)."""
        await _chats(request).delete(session_id)
        return Response(status_code=204)

    @router.get("/api/sessions/{session_id}")
    async def get_session(request: Request, session_id: str) -> dict[str, Any]:
        return await _session_info(request, await _chats(request).open(session_id))

    @router.get("/api/sessions/{session_id}/access", status_code=204)
    async def access(request: Request, session_id: str) -> Response:
        """204 when this request may read the session (the guard has checked its token):
        what a caching proxy asks before it serves a tile it keeps, so a kept tile never
        reaches a request the app would refuse. Cheap: no slide is read."""
        await _chats(request).open(session_id)
        return Response(status_code=204)

    @router.get("/api/sessions/{session_id}/history")
    async def history(request: Request, session_id: str) -> dict[str, Any]:
        """Every event of every turn so far, in order (what the page redraws from)."""
        chats = _chats(request)
        events = await chats.history(await chats.open(session_id))
        # Events carry error texts and tool results, which may name server paths.
        hide = _hide_paths(_config(request))
        return {"events": [_scrubbed(event.model_dump(mode="json"), hide) for event in events]}

    @router.post("/api/sessions/{session_id}/messages")
    async def send_message(request: Request, session_id: str, body: NewMessage) -> Response:
        """Ask; the reply streams back as server-sent events, one per agent event."""
        config = _config(request)
        if not body.text.strip() and body.region is None:
            return _error(422, "the message is empty; type a question or draw a region")
        if len(body.text) > config.max_message_chars:
            return _error(413, f"message longer than {config.max_message_chars} characters")
        chats = _chats(request)
        session = await chats.open(session_id)
        wait = _limits(request).new_message(_client(request))
        if wait:
            return _error(
                429, f"too many messages; retry in {wait} s", **{"Retry-After": str(wait)}
            )
        region = body.region
        if region is not None:
            slide = (await to_thread.run_sync(_tiles(request).slide, session.slide_path)).slide
            region = region.clamp(slide.dimensions)
            if region is None:
                return _error(422, "the region is outside the slide")
        events = await chats.start_turn(session, body.text, region)

        hide = _hide_paths(config)

        async def stream() -> Any:
            async for event in events:
                ident = f"{event.get('turn', 0)}.{event.get('seq', 0)}"
                data = json.dumps(_scrubbed(event, hide))
                yield {"event": event["type"], "id": ident, "data": data}

        return EventSourceResponse(stream(), ping=15, headers={"Cache-Control": "no-store"})

    @router.get("/api/sessions/{session_id}/slide.dzi")
    async def dzi(request: Request, session_id: str) -> Response:
        session = await _chats(request).open(session_id)
        xml = await to_thread.run_sync(_tiles(request).dzi, session.slide_path)
        return Response(xml, media_type="application/xml", headers={"Cache-Control": _TILE_CACHE})

    @router.get("/api/sessions/{session_id}/slide_files/{level}/{col}_{row}.jpeg")
    async def tile(request: Request, session_id: str, level: str, col: str, row: str) -> Response:
        session = await _chats(request).open(session_id)
        dz_level, dz_col, dz_row = (_tile_number(text) for text in (level, col, row))
        data = await to_thread.run_sync(
            _tiles(request).tile, session.slide_path, dz_level, dz_col, dz_row
        )
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": _TILE_CACHE})

    @router.get("/api/sessions/{session_id}/crops/{artifact_id}")
    async def crop(request: Request, session_id: str, artifact_id: str) -> Response:
        """A view the agent saw, from this session's own store only."""
        session = await _chats(request).open(session_id)
        try:
            # Only the session's own store names files: the id is never joined onto a path.
            ref = await to_thread.run_sync(session.artifacts.find, artifact_id)
            data = await to_thread.run_sync(session.artifacts.read_bytes, ref)
        except (InputError, ValueError):  # unknown, malformed, or its file gone
            return _error(404, "no such crop in this session")
        return Response(data, media_type=ref.media_type, headers={"Cache-Control": _TILE_CACHE})

    @router.get("/api/sessions/{session_id}/associated/{name}")
    async def associated(request: Request, session_id: str, name: str) -> Response:
        """Refused by design: label and macro images may show patient identifiers."""
        await _chats(request).open(session_id)
        return _error(
            403,
            f"associated image {name[:40]!r} is not served: label and macro images may show "
            "patient identifiers",
        )

    return router
