"""The tools over the Model Context Protocol, with the official ``mcp`` SDK (low-level server).

Every tool is the one defined in ``medagent.tools``, listed with its own JSON schemas plus a
``slide`` argument: a path under the slide folders, or a series in an allowed DICOMweb archive
(``dicomweb+https://…``), resolved by ``medagent.imaging.resolve_slide_source`` (the web app
uses the same rules). Views come back as
MCP image content next to the tool's text, and the whole output as structured content.
Failures — a bad argument, a refused path, an image too large to decode, and any exception at
all — are one-line tool results with ``isError`` set, worded for the model that called and
naming no server folder; tracebacks go only to the server's log (``SlideTools.acall`` is the
one boundary).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from medagent._version import __version__
from medagent.artifacts import ArtifactRef, ArtifactStore
from medagent.errors import ConfigError, DependencyMissingError, InputError, MedagentError
from medagent.imaging import (
    REMOTE_MAX_PIXELS,
    ImageSlide,
    PathHider,
    RenderPolicy,
    Slide,
    list_under_roots,
    normalize_archive,
    open_image,
    resolve_slide_source,
)
from medagent.mcp_server._http import check_binding, serve_http
from medagent.tools import (
    DEFAULT_TOOLS,
    ImageSearcher,
    SearchOutput,
    Segmenter,
    TextImageScorer,
    Tool,
    ToolContext,
    ToolFailure,
    search_similar,
    zero_shot,
)

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server

__all__ = ["MAX_PIXELS", "SlideTools", "build_mcp_server", "require_mcp", "serve"]

#: Most pixels a plain image (PNG, JPEG, TIFF strip) opened for a client may have: checked from
#: the header before decoding, so a small file declaring 9400 x 9400 px is refused unread.
#: Pyramidal slides are read a region at a time and are not bounded by this.
MAX_PIXELS = REMOTE_MAX_PIXELS

_LIST_LIMIT = 500
_OPEN_SLIDES = 8
_MAX_ERROR_CHARS = 500
_LOG = logging.getLogger("medagent.mcp")


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
    turns each result into MCP content. Independent of the transport.

    ``max_pixels`` bounds every plain image a client opens (see ``MAX_PIXELS``); give the
    store the same bound for the images it decodes. ``cache_mb`` bounds what the open slides
    keep decoded in memory. ``long_side`` is that of the views returned (``None``: the
    renderer's default, the one every agent uses). The tools are ``DEFAULT_TOOLS``, less
    ``search_similar`` without a ``searcher`` and ``zero_shot`` without a ``scorer`` (an
    image-text model such as ``medagent.retrieval.make_embedder("plip")``). ``archives`` are the
    DICOMweb roots whose series a client may name (``resolve_slide_source``); the archive's
    credentials come from the settings (``MEDAGENT_DICOMWEB_TOKEN`` / ``_BASIC``).
    """

    def __init__(
        self,
        roots: Sequence[Path],
        artifacts: ArtifactStore,
        *,
        searcher: ImageSearcher | None = None,
        long_side: int | None = None,
        segmenter: Segmenter | None = None,
        scorer: TextImageScorer | None = None,
        max_pixels: int = MAX_PIXELS,
        cache_mb: int = 512,
        archives: Sequence[str] = (),
    ) -> None:
        self.roots = [Path(root) for root in roots]
        self.archives = _checked_archives(archives)
        self.artifacts = artifacts
        self.searcher = searcher
        self.policy = RenderPolicy() if long_side is None else RenderPolicy(long_side=long_side)
        self.segmenter = segmenter
        self.scorer = scorer
        self.max_pixels = max_pixels
        self.cache_bytes = cache_mb * 2**20
        store = artifacts.root
        self._for_client = PathHider(
            {**{root: "the slide folder" for root in self.roots}, store: "the image store"}
        )
        missing = {search_similar: searcher is None, zero_shot: scorer is None}
        self.tools: dict[str, Tool[Any, Any]] = {
            t.name: t for t in DEFAULT_TOOLS if not missing.get(t, False)
        }
        self._open: OrderedDict[Path | str, tuple[ToolContext, int]] = OrderedDict()
        self._lock = threading.Lock()

    # -- listing ------------------------------------------------------------------------------
    def schemas(self) -> list[dict[str, Any]]:
        """``tools/list`` entries: each tool's schemas with the ``slide`` argument added."""
        entries = [_list_slides_entry()]
        for tool in self.tools.values():
            entry = tool.to_mcp_tool()
            schema = dict(entry["inputSchema"])
            schema["properties"] = {
                "slide": {"type": "string", "description": self._slide_help()},
                **schema.get("properties", {}),
            }
            schema["required"] = ["slide", *schema.get("required", [])]
            entry["inputSchema"] = schema
            entry["description"] = f"{tool.description} Give the slide with 'slide'."
            entries.append(entry)
        return entries

    def _slide_help(self) -> str:
        text = "the slide or image: a path relative to a slide folder (see list_slides)"
        if self.archives:
            text += ", or a series in an allowed DICOMweb archive: " + ", ".join(
                f"dicomweb+{archive}/studies/STUDY-UID/series/SERIES-UID"
                for archive in self.archives
            )
        return text

    def list_slides(self, contains: str | None = None) -> list[str]:
        """Paths of images under the roots (relative to their root), sorted, at most 500."""
        return list_under_roots(self.roots, limit=_LIST_LIMIT, contains=contains)

    # -- calling ------------------------------------------------------------------------------
    def context(self, requested: str) -> ToolContext:
        """The tool context for a client's slide: a path resolved under the roots, or a series
        in an allowed archive; cached."""
        source = resolve_slide_source(requested, self.roots, self.archives)
        key = source if isinstance(source, Path) else source.url
        with self._lock:
            if key in self._open:
                self._open.move_to_end(key)
                return self._open[key][0]
        slide = open_image(key, max_pixels=self.max_pixels)
        ctx = ToolContext(
            artifacts=self.artifacts,
            slide=slide,
            policy=self.policy,
            segmenter=self.segmenter,
            searcher=self.searcher,
            scorer=self.scorer,
        )
        with self._lock:
            self._open[key] = (ctx, _resident_bytes(slide))
            # Bounded by count and by decoded bytes; the slide just opened always stays.
            while len(self._open) > 1 and (
                len(self._open) > _OPEN_SLIDES
                or sum(size for _, size in self._open.values()) > self.cache_bytes
            ):
                _, (old, _size) = self._open.popitem(last=False)
                if old.slide is not None:
                    old.slide.close()
        return ctx

    def call(
        self, name: str, arguments: dict[str, Any] | None
    ) -> tuple[BaseModel, list[ArtifactRef]]:
        """Run a tool for a client: its output (or a ``ToolFailure``) and the images to send."""
        if arguments is not None and not isinstance(arguments, dict):
            message = "arguments must be a JSON object"
            return ToolFailure(tool=name, kind="invalid_arguments", message=message), []
        arguments = dict(arguments or {})
        if name == "list_slides":
            contains = arguments.get("contains")
            slides = self.list_slides(contains if isinstance(contains, str) else None)
            return _SlideList(slides=slides), []
        tool = self.tools.get(name)
        if tool is None:
            message = f"there is no tool named {_shown_name(name)!r}; the tools are: " + ", ".join(
                ["list_slides", *self.tools]
            )
            return ToolFailure(
                tool=_shown_name(name), kind="invalid_arguments", message=message
            ), []
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
        """The ``tools/call`` result as an MCP ``CallToolResult``.

        The one place tool calls meet the client: whatever goes wrong below (a bug included)
        becomes a one-line error result, and the traceback goes to the server's log only.
        """
        import mcp_types as types

        try:
            result, images = await asyncio.to_thread(self.call, name, arguments)
            if not isinstance(result, ToolFailure):
                content: list[Any] = [
                    types.TextContent(type="text", text=self._for_client(_text(result)))
                ]
                for ref in images:
                    data = base64.b64encode(self.artifacts.read_bytes(ref)).decode("ascii")
                    content.append(
                        types.ImageContent(type="image", data=data, mime_type=ref.media_type)
                    )
                return types.CallToolResult(
                    content=content, structured_content=result.model_dump(mode="json")
                )
        except MedagentError as exc:
            result = ToolFailure(tool=_shown_name(name), kind="failed", message=str(exc))
        except Exception:
            _LOG.exception("MCP tool %s failed", _shown_name(name))
            result = ToolFailure(
                tool=_shown_name(name),
                kind="failed",
                message="the tool failed on the server (the server log has the details); "
                "try other arguments or another slide",
            )
        text = " ".join(self._for_client(result.to_text()).split())
        if len(text) > _MAX_ERROR_CHARS:
            text = text[: _MAX_ERROR_CHARS - 3] + "..."
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], is_error=True
        )


def _checked_archives(archives: Sequence[str]) -> list[str]:
    """The allowed DICOMweb roots, each checked now: a bad one stops the server at start."""
    checked: list[str] = []
    for archive in archives:
        try:
            normalize_archive(archive)
        except InputError as exc:
            raise ConfigError(f"--dicomweb-archive: {exc}") from None
        checked.append(archive.strip().rstrip("/"))
    return list(dict.fromkeys(checked))


def _shown_name(name: object) -> str:
    """A client's tool name as quoted back: bounded and printable."""
    return repr(name)[1:-1][:64] if isinstance(name, str) else "?"


def _resident_bytes(slide: Slide) -> int:
    """What an open slide keeps decoded: all of a plain image (every level), little of a pyramid."""
    if isinstance(slide, ImageSlide):
        return 3 * sum(size.width * size.height for size in slide.level_dimensions)
    return 0


class _SlideList(BaseModel):
    slides: list[str]

    def to_text(self) -> str:
        if not self.slides:
            return "No slides or images under the slide folders."
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
        f"list_slides, then {', '.join(tools.tools)} with 'slide' set. "
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
    token: str | None = None,
) -> None:
    """Serve until stopped: over stdin/stdout, or streamable HTTP at ``http://HOST:PORT/mcp``.

    Over HTTP, a host other than loopback needs ``token`` (a ``ConfigError`` otherwise), and
    with a token every request must send ``Authorization: Bearer TOKEN``.
    """
    if transport == "http":
        check_binding(host, token)
    server = build_mcp_server(tools)
    if transport == "http":
        serve_http(server, host=host, port=port, token=token)
        return
    import anyio
    from mcp.server.stdio import stdio_server

    async def run() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(run)
