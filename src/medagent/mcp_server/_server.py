"""The tools over the Model Context Protocol, with the official ``mcp`` SDK (low-level server).

Every tool is the one defined in ``medagent.tools``, listed with its own JSON schemas plus a
``slide`` argument: a path under the slide folders, resolved by
``medagent.imaging.resolve_under_roots`` (the web app uses the same rules). Views come back as
MCP image content next to the tool's text, and the whole output as structured content.
Failures — a bad argument, a refused path — are tool results with ``isError`` set, worded for
the model that called.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from medagent._version import __version__
from medagent.artifacts import ArtifactRef, ArtifactStore
from medagent.errors import DependencyMissingError, MedagentError
from medagent.imaging import (
    RenderPolicy,
    list_under_roots,
    open_image,
    resolve_under_roots,
)
from medagent.tools import (
    ImageSearcher,
    SearchOutput,
    Tool,
    ToolContext,
    ToolFailure,
    measure,
    overview,
    search_similar,
    segment,
    tissue,
    zoom,
)

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server

__all__ = ["SlideTools", "build_mcp_server", "require_mcp", "serve"]

_LIST_LIMIT = 500
_OPEN_SLIDES = 8


def require_mcp() -> None:
    """A one-line error naming the extra when the ``mcp`` SDK (2.x) is not installed."""
    try:
        from mcp.server.lowlevel import Server
    except ImportError:
        raise DependencyMissingError("mcp", "mcp", "the MCP server") from None
    if "on_call_tool" not in Server.__init__.__code__.co_varnames:
        raise DependencyMissingError("mcp>=2", "mcp", "the MCP server")


class SlideTools:
    """The tools over slides under ``roots``: resolves paths, keeps recent slides open, and
    turns each result into MCP content. Independent of the transport."""

    def __init__(
        self,
        roots: Sequence[Path],
        artifacts: ArtifactStore,
        *,
        searcher: ImageSearcher | None = None,
        long_side: int = 1000,
        sam_model: str | None = None,
    ) -> None:
        self.roots = [Path(root) for root in roots]
        self.artifacts = artifacts
        self.searcher = searcher
        self.policy = RenderPolicy(long_side=long_side)
        self.sam_model = sam_model
        listed: list[Tool[Any, Any]] = [overview, zoom, tissue, segment, measure]
        self.tools: dict[str, Tool[Any, Any]] = {t.name: t for t in listed}
        if searcher is not None:
            self.tools[search_similar.name] = search_similar
        self._open: OrderedDict[Path, ToolContext] = OrderedDict()
        self._lock = threading.Lock()

    # -- listing ------------------------------------------------------------------------------
    def schemas(self) -> list[dict[str, Any]]:
        """``tools/list`` entries: each tool's schemas with the ``slide`` argument added."""
        entries = [_list_slides_entry()]
        for tool in self.tools.values():
            entry = tool.to_mcp_tool()
            schema = dict(entry["inputSchema"])
            schema["properties"] = {
                "slide": {
                    "type": "string",
                    "description": "the slide or image: a path relative to a slide folder "
                    "(see list_slides)",
                },
                **schema.get("properties", {}),
            }
            schema["required"] = ["slide", *schema.get("required", [])]
            entry["inputSchema"] = schema
            entry["description"] = f"{tool.description} Give the slide with 'slide'."
            entries.append(entry)
        return entries

    def list_slides(self, contains: str | None = None) -> list[str]:
        """Paths of images under the roots (relative to their root), sorted, at most 500."""
        return list_under_roots(self.roots, limit=_LIST_LIMIT, contains=contains)

    # -- calling ------------------------------------------------------------------------------
    def context(self, requested: str) -> ToolContext:
        """The tool context for a client's slide path (resolved under the roots, cached)."""
        path = resolve_under_roots(requested, self.roots)
        with self._lock:
            if path in self._open:
                self._open.move_to_end(path)
                return self._open[path]
        ctx = ToolContext(
            artifacts=self.artifacts,
            slide=open_image(path),
            policy=self.policy,
            sam_model=self.sam_model,
            searcher=self.searcher,
        )
        with self._lock:
            self._open[path] = ctx
            while len(self._open) > _OPEN_SLIDES:
                _, old = self._open.popitem(last=False)
                if old.slide is not None:
                    old.slide.close()
        return ctx

    def call(
        self, name: str, arguments: dict[str, Any] | None
    ) -> tuple[BaseModel, list[ArtifactRef]]:
        """Run a tool for a client: its output (or a ``ToolFailure``) and the images to send."""
        arguments = dict(arguments or {})
        if name == "list_slides":
            contains = arguments.get("contains")
            slides = self.list_slides(contains if isinstance(contains, str) else None)
            return _SlideList(slides=slides, roots=[str(r) for r in self.roots]), []
        tool = self.tools.get(name)
        if tool is None:
            message = f"there is no tool named {name!r}; the tools are: list_slides, " + ", ".join(
                self.tools
            )
            return ToolFailure(tool=name, kind="invalid_arguments", message=message), []
        requested = arguments.pop("slide", None)
        if not isinstance(requested, str):
            return (
                ToolFailure(
                    tool=name,
                    kind="invalid_arguments",
                    message="give the slide as 'slide': a path relative to a slide folder",
                ),
                [],
            )
        try:
            ctx = self.context(requested)
        except MedagentError as exc:
            return ToolFailure(tool=name, kind="bad_input", message=str(exc)), []
        result = tool.run(ctx, arguments)
        return result, _images(result)

    async def acall(self, name: str, arguments: dict[str, Any] | None) -> Any:
        """The ``tools/call`` result as an MCP ``CallToolResult``."""
        import mcp_types as types

        result, images = await asyncio.to_thread(self.call, name, arguments)
        text = _text(result)
        if isinstance(result, ToolFailure):
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=text)], is_error=True
            )
        content: list[Any] = [types.TextContent(type="text", text=text)]
        for ref in images:
            data = base64.b64encode(self.artifacts.read_bytes(ref)).decode("ascii")
            content.append(types.ImageContent(type="image", data=data, mime_type=ref.media_type))
        return types.CallToolResult(
            content=content, structured_content=result.model_dump(mode="json")
        )


class _SlideList(BaseModel):
    slides: list[str]
    roots: list[str]

    def to_text(self) -> str:
        if not self.slides:
            return f"No slides or images under {', '.join(self.roots)}."
        more = " (the first 500)" if len(self.slides) >= _LIST_LIMIT else ""
        return f"{len(self.slides)} slides or images{more}:\n" + "\n".join(self.slides)


def _list_slides_entry() -> dict[str, Any]:
    return {
        "name": "list_slides",
        "description": "The slides and images that can be opened: paths relative to the slide "
        "folders, to give as 'slide' to the other tools.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "contains": {"type": "string", "description": "only paths containing this text"}
            },
        },
        "outputSchema": _SlideList.model_json_schema(),
    }


def _images(result: BaseModel) -> list[ArtifactRef]:
    if isinstance(result, SearchOutput):
        return [result.query] + [c.thumbnail for c in result.cases if c.thumbnail is not None]
    artifact = getattr(result, "artifact", None)
    return [artifact] if isinstance(artifact, ArtifactRef) else []


def _text(result: BaseModel) -> str:
    to_text = getattr(result, "to_text", None)
    return str(to_text()) if callable(to_text) else result.model_dump_json()


def build_mcp_server(tools: SlideTools) -> Server[Any]:
    """An ``mcp`` low-level ``Server`` serving ``tools`` (run it over stdio or HTTP)."""
    require_mcp()
    import mcp_types as types
    from mcp.server.lowlevel import Server

    listed = [types.Tool.model_validate(entry) for entry in tools.schemas()]

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        result: types.CallToolResult = await tools.acall(params.name, params.arguments)
        return result

    return Server(
        "medagent",
        version=__version__,
        instructions="Tools to look at whole-slide pathology images and medical images: "
        "list_slides, then overview, zoom, tissue, segment and measure with 'slide' set. "
        "Coordinates are level-0 pixels.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def serve(
    tools: SlideTools,
    *,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
) -> None:
    """Serve until stopped: over stdin/stdout, or streamable HTTP at ``http://HOST:PORT/mcp``."""
    server = build_mcp_server(tools)
    if transport == "http":
        import uvicorn

        app = server.streamable_http_app(host=host)
        uvicorn.run(app, host=host, port=port, log_level="warning")
        return
    import anyio
    from mcp.server.stdio import stdio_server

    async def run() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(run)
