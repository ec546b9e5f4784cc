"""The web app: chat with an agent over a whole-slide image (``medagent serve``).

FastAPI + uvicorn (``pip install 'medagent[server]'``). One page: a Deep Zoom viewer
(OpenSeadragon, served by the app), the agent's viewed regions as numbered boxes, answers
streamed as server-sent events with the crops inline. Sessions live in SQLite (or Postgres)
and survive restarts; slide paths never leave the configured folders.
"""

from medagent.errors import DependencyMissingError

try:
    import fastapi  # noqa: F401 - fail here, once, with the extra to install
    import sse_starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed in development
    raise DependencyMissingError(
        exc.name or "fastapi", "server", "the web app (medagent serve)"
    ) from None

from medagent.server._app import create_app, serve
from medagent.server._chat import (
    AgentContext,
    AgentFactory,
    ChatService,
    ChatSession,
    chat_agent_factory,
)
from medagent.server._config import ServerConfig, is_loopback
from medagent.server._expiry import SessionListing, SessionUsage, list_sessions
from medagent.server._security import ClientLimits, RateLimiter
from medagent.server._state import SessionRecord
from medagent.server._tiles import DeepZoomSlide, TileService

__all__ = [
    "AgentContext",
    "AgentFactory",
    "ChatService",
    "ChatSession",
    "ClientLimits",
    "DeepZoomSlide",
    "RateLimiter",
    "ServerConfig",
    "SessionListing",
    "SessionRecord",
    "SessionUsage",
    "TileService",
    "chat_agent_factory",
    "create_app",
    "is_loopback",
    "list_sessions",
    "serve",
]
