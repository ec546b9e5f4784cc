"""The tools over the Model Context Protocol (``medagent mcp``); needs ``medagent[mcp]``.

``serve(SlideTools([Path("slides")], ArtifactStore("mcp-artifacts")))`` serves overview, zoom,
tissue, segment, measure (and search_similar with an index) for every slide under the folder.
"""

from medagent.mcp_server._http import check_binding
from medagent.mcp_server._server import (
    MAX_PIXELS,
    SlideTools,
    build_mcp_server,
    require_mcp,
    serve,
)

__all__ = [
    "MAX_PIXELS",
    "SlideTools",
    "build_mcp_server",
    "check_binding",
    "require_mcp",
    "serve",
]
