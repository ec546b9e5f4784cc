"""``create_app``: the FastAPI application for chat over a slide, and ``serve`` to run it."""

from __future__ import annotations

import asyncio
import ctypes
import sys
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from medagent._asgi import BodyLimit
from medagent.errors import ConfigError
from medagent.server._admin import admin_router
from medagent.server._chat import AgentFactory, ChatService, chat_agent_factory
from medagent.server._config import ServerConfig
from medagent.server._limits import TurnGate
from medagent.server._redact import redact_logs
from medagent.server._review import RunIndex, review_router
from medagent.server._review_store import open_review_store
from medagent.server._routes import add_error_handlers, api_router
from medagent.server._security import RAW_BODY_PATHS, ClientLimits, RequestGuard
from medagent.server._state import open_stores
from medagent.server._tiles import TileService
from medagent.server._uploads import upload_router

if TYPE_CHECKING:
    from medagent._trace import Tracing
    from medagent.models import ChatModel

__all__ = ["create_app", "return_freed_memory", "serve"]

#: How long an idle keep-alive connection stays open. Longer than clients keep theirs (httpx
#: 5 s, nginx's upstream pool 60 s): with uvicorn's 5 s, a client reusing a connection just
#: as the server closed it had its request reset — under 1,000 clients, when the event loop
#: runs late, the close came after the request had arrived (``httpx.ReadError``).
_KEEP_ALIVE_S = 75
#: Threads for the server's blocking calls (anyio's default is 40).
_BLOCKING_THREADS = 8
STATIC = Path(str(resources.files("medagent.server") / "static"))
#: The page loads only its own files: no CDN, no inline script, nothing framed elsewhere.
#: Inline styles stay allowed: OpenSeadragon positions its elements with style attributes.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def create_app(
    config: ServerConfig,
    *,
    model: ChatModel | None = None,
    model_factory: Callable[[str], ChatModel] | None = None,
    agent_factory: AgentFactory = chat_agent_factory,
    tracing: Tracing | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The web app. Give one ``model`` shared by every session (the app closes it on
    shutdown), or a ``model_factory`` building one per session id (e.g. a scripted test
    double that replays its script from the start in each session). With ``tracing``, every
    chat turn is traced to it (a turn span per message, its steps, model and tool calls).
    ``clock`` (wall-clock seconds) dates each session's use, for idle expiry."""
    if (model is None) == (model_factory is None):
        raise ConfigError("give exactly one of model= or model_factory=")

    def model_for(session_id: str) -> ChatModel:
        if model_factory is not None:
            return model_factory(session_id)
        assert model is not None
        return model

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.upload_dir is not None:  # a slide root too: listed from the start
            await anyio.Path(config.upload_dir.expanduser()).mkdir(parents=True, exist_ok=True)
        async with AsyncExitStack() as stack:
            stores = await stack.enter_async_context(open_stores(config))
            if config.runs_root is not None:  # grades beside the sessions, same database
                app.state.reviews = await stack.enter_async_context(
                    open_review_store(config.data_dir, stores.postgres)
                )
            chats = ChatService(
                config,
                store=stores.sessions,
                checkpointer=stores.checkpointer,
                turns=stores.turns,
                model_for=model_for,
                open_slide=tiles.shared,
                agent_factory=TurnGate(config.active_turns).wrap(agent_factory),
                tracing=tracing,
                clock=clock,
            )
            app.state.chats = chats
            app.state.sessions = stores.sessions  # the admin listing reads the table itself
            # Checking an upload decodes it: a few at a time, however many arrive at once.
            app.state.upload_checks = anyio.CapacityLimiter(config.upload_checks)
            # Agents run image work with asyncio.to_thread, whose default pool is CPUs + 4
            # threads: one per CPU decodes as fast and leaves the event loop less to wait for.
            images = stack.enter_context(
                ThreadPoolExecutor(config.image_threads, thread_name_prefix="medagent-image")
            )
            asyncio.get_running_loop().set_default_executor(images)
            # The same for the server's own blocking calls (opening sessions, tiles): forty
            # threads taking turns at the interpreter lock kept the loop waiting 200 ms.
            to_thread.current_default_thread_limiter().total_tokens = _BLOCKING_THREADS
            # Idle sessions are removed in the background (every replica sweeps; they agree).
            sweeps = None
            if config.session_idle_s is not None:
                sweeps = asyncio.create_task(chats.reaper.run(config.sweep_interval_s))
            try:
                yield
            finally:
                if sweeps is not None:
                    sweeps.cancel()
                    await asyncio.gather(sweeps, return_exceptions=True)
                await chats.aclose()
                if model is not None:
                    await model.aclose()

    app = FastAPI(
        title="medagent",
        summary="Chat with an agent over a whole-slide image.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.config = config
    app.state.clock = clock
    app.state.tiles = tiles = TileService(
        tile_size=config.tile_size,
        overlap=config.tile_overlap,
        quality=config.tile_quality,
        cache_bytes=config.tile_cache_mb * 1024 * 1024,
        open_slides=config.open_slides,
        open_slides_bytes=config.open_slides_mb * 1024 * 1024,
        max_pixels=config.max_image_pixels,
    )
    app.state.client_limits = ClientLimits(
        sessions_per_minute=config.client_sessions_per_minute,
        session_burst=config.client_session_burst,
        messages_per_minute=config.client_messages_per_minute,
        message_burst=config.client_message_burst,
    )
    app.state.run_index = None if config.runs is None else RunIndex(config.runs)
    add_error_handlers(app)
    app.include_router(api_router())
    app.include_router(upload_router())
    app.include_router(review_router())
    if config.admin_token is not None:
        app.include_router(admin_router())

    @app.get("/", include_in_schema=False)
    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    @app.get("/review", include_in_schema=False)
    async def review_page(request: Request) -> Response:
        return FileResponse(STATIC / "review.html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Outermost: bodies are counted while they stream in, before anything parses them (413
    # past the limit, declared or chunked); uploads have their own, larger limit.
    app.add_middleware(
        BodyLimit,
        limit=lambda path: (
            config.max_upload_bytes if path in RAW_BODY_PATHS else config.max_body_bytes
        ),
    )
    app.add_middleware(
        RequestGuard,
        token=config.token,
        hosts=config.hosts,
        origins=config.origins,
        admin_token=config.admin_token,
    )
    if config.trusted_proxies:
        # Outermost: the client address (per-client limits) and scheme (the Origin check)
        # are the user's, from the proxy's X-Forwarded-For / -Proto, only when the direct peer
        # is a trusted proxy; anyone else's headers are ignored.
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(config.trusted_proxies))
    return app


def serve(app: FastAPI, config: ServerConfig) -> None:
    """Run ``app`` with uvicorn on the configured host and port until interrupted; nothing it
    logs shows either token."""
    import uvicorn

    settings = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=_KEEP_ALIVE_S,
        proxy_headers=False,  # client addresses are not trusted from headers by default
    )
    redact_logs(config.token)  # after uvicorn.Config, which sets up the log handlers
    if config.admin_token:
        redact_logs(config.admin_token)
    return_freed_memory()
    uvicorn.Server(settings).run()


def return_freed_memory() -> None:
    """Make the C allocator give large freed buffers back to the system at once.

    Decoded regions and crops are megabytes each, allocated from many worker threads. glibc
    raises its mmap threshold after the first large free, so later buffers come from per-thread
    heaps that it keeps: after a burst of concurrent turns the server stayed ~300 MB above its
    baseline for good. A fixed 1 MiB threshold maps each large buffer on its own and unmaps it
    when freed. A no-op where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl): it returns memory itself
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 1024 * 1024)
    mallopt(m_trim_threshold, 8 * 1024 * 1024)
