"""``medagent chat`` (talk with an agent about a slide, in the terminal) and ``medagent mcp``
(the tools for any MCP client)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.markdown import Markdown
from rich.markup import escape

from medagent._trace import traced
from medagent.cli._app import (
    BackendOpt,
    BaseUrlOpt,
    DeviceOpt,
    MaxImageMpxOpt,
    ModelOpt,
    RetriesOpt,
    ScriptOpt,
    TimeoutOpt,
    TraceContentOpt,
    TraceOpt,
    ZeroShotModelOpt,
    ZeroShotOpt,
    app,
    build_scorer,
    build_settings,
    config_from_flags,
    console,
    err_console,
)
from medagent.errors import ConfigError
from medagent.imaging import REMOTE_MAX_PIXELS

if TYPE_CHECKING:
    from medagent.agents.chat import ChatAgent, ChatEvent
    from medagent.imaging import Region

_HELP_LINE = (
    "Type a question. '/region X,Y,W,H [question]' points at a level-0 region; "
    "'/history' replays the thread; '/quit' or Ctrl-D leaves."
)

IndexOpt = Annotated[
    Path | None,
    typer.Option(
        "--index",
        help="An image index (`medagent index build`) for the search_similar tool.",
        show_default=False,
    ),
]
LongSideOpt = Annotated[
    int | None,
    typer.Option("--long-side", min=64, max=4096, help="Long side of every view, px. [1000]"),
]


class _Printer:
    """Prints a turn's events as they arrive; remembers whether the turn ended in an error."""

    def __init__(self, artifacts_root: Path) -> None:
        self.root = artifacts_root
        self.streamed = False
        self.failed = False

    def __call__(self, event: ChatEvent) -> None:
        if event.type == "turn_start":
            self.streamed = False
            if event.region is not None:
                console.print(f"[dim]pointing at {event.region}[/dim]")
        elif event.type == "token":
            self.streamed = True
            console.print(event.text or "", end="", markup=False, highlight=False)
        elif event.type == "tool_call":
            if event.text:
                console.print(f"[dim]{escape(event.text)}[/dim]")
            arguments = json.dumps(event.arguments) if event.arguments is not None else "(invalid)"
            console.print(f"[cyan]→ {event.tool}[/cyan] {escape(arguments)}", highlight=False)
        elif event.type == "tool_result":
            mark = "[green]✓[/green]" if event.ok else "[yellow]✗[/yellow]"
            text = " ".join((event.text or "").split())
            console.print(f"  {mark} {escape(text[:300])}", highlight=False, soft_wrap=True)
        elif event.type == "crop":
            label = f"crop #{event.box}" if event.box is not None else "overview"
            found = sorted(self.root.glob(f"{event.artifact_id}.*"))
            where = next((p for p in found if p.suffix != ".json"), self.root)
            console.print(
                f"  [magenta]{label}[/magenta] {event.region} saved to {where}", soft_wrap=True
            )
        elif event.type == "answer":
            if self.streamed:
                console.print()
            else:
                console.print(Markdown(event.text or ""))
        elif event.type == "error":
            self.failed = True
            console.print(f"[red]error:[/red] {escape(event.text or '')}", highlight=False)
        elif event.type == "turn_end":
            console.print()


def _parse_line(line: str) -> tuple[str, Region | None] | None:
    """A typed line as (message, region); ``None`` for a line that asks for nothing."""
    from medagent.imaging import Region

    text = line.strip()
    if not text:
        return None
    if not text.startswith("/region"):
        return text, None
    parts = text.split(maxsplit=2)
    if len(parts) < 2:
        raise ConfigError("use /region X,Y,W,H [question], e.g. /region 1000,2000,500,500")
    try:
        region = Region.parse(parts[1])
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"/region: {exc}") from None
    return (parts[2] if len(parts) > 2 else ""), region


def _typed_lines() -> Iterator[str]:
    while True:
        try:
            line = console.input("[bold]you>[/bold] ")
        except EOFError:
            console.print()
            return
        if line.strip() in ("/quit", "/exit"):
            return
        yield line


async def _converse(
    agent: ChatAgent, thread: str, lines: Iterator[str] | list[str], printer: _Printer
) -> bool:
    """Runs each line as a turn; returns whether every turn ended without an error."""
    from medagent.errors import MedagentError

    ok = True
    for line in lines:
        if line.strip() == "/history":
            for event in await agent.ahistory(thread):
                if event.type == "turn_start":
                    console.print(f"[bold]you>[/bold] {escape(event.text or '')}")
                elif event.type in ("answer", "error"):
                    console.print(f"{event.type}: {escape(event.text or '')}\n")
            continue
        try:
            parsed = _parse_line(line)
        except MedagentError as exc:
            err_console.print(f"error: {exc}", markup=False)
            continue
        if parsed is None:
            continue
        message, region = parsed
        printer.failed = False
        async for event in agent.astream(thread, message, region=region):
            printer(event)
        ok = ok and not printer.failed
    return ok


@app.command("chat")
def chat(
    slide: Annotated[Path, typer.Argument(help="Slide or image to talk about.")],
    message: Annotated[
        list[str] | None,
        typer.Option(
            "--message",
            "-q",
            help="Send this message and exit instead of asking interactively; repeat for "
            "several turns. '/region X,Y,W,H question' points at a region.",
            show_default=False,
        ),
    ] = None,
    thread: Annotated[
        str, typer.Option(help="Conversation name; the same --out and --thread resume it.")
    ] = "main",
    out: Annotated[
        Path | None,
        typer.Option(help="Chat folder: crops (artifacts/) and the conversation (chat.sqlite)."),
    ] = None,
    max_tool_calls: Annotated[
        int | None, typer.Option(help="Tool calls per message. [8]", show_default=False)
    ] = None,
    tool_mode: Annotated[
        str | None,
        typer.Option(
            help="auto (native tool calls, JSON actions if the server refuses tools), native, "
            "schema (JSON actions only). [auto]",
            show_default=False,
        ),
    ] = None,
    long_side: LongSideOpt = None,
    index: IndexOpt = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    script: ScriptOpt = None,
    timeout: TimeoutOpt = None,
    max_retries: RetriesOpt = None,
    device: DeviceOpt = None,
    trace: TraceOpt = None,
    trace_content: TraceContentOpt = None,
) -> None:
    """Talk with an agent about a slide: it looks at the overview, zooms, measures, and answers.

      medagent chat slide.svs --base-url http://127.0.0.1:8000/v1 --model MODEL

    Each tool call and result is printed as it happens, with the file every crop was saved to.
    Type '/region X,Y,W,H what is this?' to point at a level-0 region. The conversation is kept
    in OUT/chat.sqlite (what ran in OUT/manifest.json): run again with the same --out and
    --thread to carry on. With --message
    (repeatable) the messages are sent in turn and the command exits: 0 when every turn was
    answered, 1 when one ended in an error, 2 on a usage error.
    """
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from medagent.agents.chat import ChatAgent
    from medagent.artifacts import ArtifactStore
    from medagent.imaging import open_image
    from medagent.models import build_model

    settings = build_settings(
        backend=backend,
        model=model,
        base_url=base_url,
        script=script,
        timeout_s=timeout,
        max_retries=max_retries,
        device=device,
        trace=trace,
        trace_content=trace_content,
    )
    from medagent.agents.chat import ChatConfig

    config = config_from_flags(
        ChatConfig,
        max_tool_calls=max_tool_calls,
        tool_mode=tool_mode,
        image_long_side=long_side,
        seed=settings.seed,
        sam_model=settings.sam_model,
    )
    opened = open_image(slide)
    searcher = _searcher(index)
    folder = out or Path("runs") / f"chat-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = ArtifactStore(folder / "artifacts")
    chat_model = build_model(settings)
    printer = _Printer(artifacts.root)

    async def run() -> bool:
        try:
            async with AsyncSqliteSaver.from_conn_string(str(folder / "chat.sqlite")) as saver:
                agent = ChatAgent(
                    chat_model,
                    opened,
                    artifacts=artifacts,
                    checkpointer=saver,
                    config=config,
                    searcher=searcher,
                )
                agent.write_manifest(folder)
                earlier = [e for e in await agent.ahistory(thread) if e.type == "turn_start"]
                if message:
                    return await _converse(agent, thread, list(message), printer)
                resumed = f", resuming {len(earlier)} earlier turns" if earlier else ""
                console.print(f"chat about {slide} in {folder} (thread {thread}{resumed})")
                console.print(f"[dim]{escape(_HELP_LINE)}[/dim]")
                return await _converse(agent, thread, _typed_lines(), printer)
        finally:
            await chat_model.aclose()

    with traced(settings):  # --trace: a span per turn, its steps, model and tool calls
        answered = asyncio.run(run())
    if not answered:
        raise typer.Exit(1)


def _searcher(index: Path | None) -> Any:
    if index is None:
        return None
    from medagent.retrieval import open_index

    return open_index(index)


@app.command("mcp")
def mcp(
    slides: Annotated[
        list[Path] | None,
        typer.Option(
            "--slides",
            help="Folder of slides and images clients may open (repeatable). Paths from "
            "clients are relative to it; '..', outside paths and escaping symlinks are refused.",
            show_default=False,
        ),
    ] = None,
    dicomweb_archive: Annotated[
        list[str] | None,
        typer.Option(
            "--dicomweb-archive",
            metavar="URL",
            help="A DICOMweb root (https://HOST/PATH) whose series clients may name as "
            "dicomweb+URL/studies/UID/series/UID (repeatable; adds to "
            "MEDAGENT_DICOMWEB_ARCHIVES). Credentials: MEDAGENT_DICOMWEB_TOKEN or _BASIC.",
            show_default=False,
        ),
    ] = None,
    transport: Annotated[
        str,
        typer.Option(help="stdio (a client starts this command) or http (streamable HTTP)."),
    ] = "stdio",
    host: Annotated[
        str, typer.Option(help="http: address to listen on. Anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="http: port; the endpoint is /mcp.")
    ] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="MEDAGENT_MCP_TOKEN",
            metavar="TOKEN",
            help="http: shared secret (16+ URL-safe characters, e.g. from `python -c 'import "
            "secrets; print(secrets.token_urlsafe())'`); clients send 'Authorization: Bearer "
            "TOKEN'. Required off loopback.",
            show_default=False,
        ),
    ] = None,
    max_image_mpx: MaxImageMpxOpt = REMOTE_MAX_PIXELS / 1e6,
    artifacts: Annotated[
        Path | None,
        typer.Option(help="Keep the views in this folder. [a temporary folder]"),
    ] = None,
    long_side: LongSideOpt = None,
    index: IndexOpt = None,
    zero_shot: ZeroShotOpt = None,
    zero_shot_model: ZeroShotModelOpt = None,
) -> None:
    """Serve the image tools over the Model Context Protocol (needs medagent[mcp]).

      medagent mcp --slides /data/slides

    Tools: list_slides, overview, zoom, tissue, segment, measure, search_similar with
    --index, and zero_shot with --zero-shot. Each takes 'slide', a path under --slides;
    views come back as image content. With --dicomweb-archive URL, 'slide' may also name a
    series there: dicomweb+URL/studies/UID/series/UID (no other archive is opened).
    For a client that starts servers itself (Claude Desktop, an IDE), register the command
    `medagent mcp --slides DIR`; for a shared server use --transport http (with --token off
    loopback) and connect to http://HOST:PORT/mcp.
    """
    from medagent.artifacts import ArtifactStore
    from medagent.mcp_server import SlideTools, check_binding, require_mcp, serve
    from medagent.tools import SamSegmenter

    require_mcp()
    if transport not in ("stdio", "http"):
        raise ConfigError(f"--transport {transport!r}: choose stdio or http")
    if transport == "http":
        check_binding(host, token)  # before anything is opened or bound
    for folder in slides or []:
        if not folder.is_dir():
            raise ConfigError(f"--slides {folder}: not a folder")
    settings = build_settings()
    archives = [*settings.dicomweb_archives, *(dicomweb_archive or [])]
    if not slides and not archives:
        raise ConfigError("give --slides DIR, or --dicomweb-archive URL, or both")
    max_pixels = int(max_image_mpx * 1e6)
    with tempfile.TemporaryDirectory(prefix="medagent-mcp-") as scratch:
        tools = SlideTools(
            slides or [],
            ArtifactStore(artifacts or scratch, max_pixels=max_pixels),
            searcher=_searcher(index),
            long_side=long_side,
            segmenter=SamSegmenter.optional(settings.sam_model),
            scorer=build_scorer(zero_shot, zero_shot_model),
            max_pixels=max_pixels,
            archives=archives,
        )
        if transport == "http":
            err_console.print(f"MCP server at http://{host}:{port}/mcp (Ctrl-C stops it)")
        serve(
            tools,
            transport="http" if transport == "http" else "stdio",
            host=host,
            port=port,
            token=token,
        )
