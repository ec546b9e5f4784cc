"""``medagent serve``: the web app — chat with an agent over a slide in the browser."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

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
    app,
    build_settings,
    err_console,
)
from medagent.errors import ConfigError
from medagent.imaging import REMOTE_MAX_PIXELS


@app.command("serve")
def serve(
    slides: Annotated[
        list[Path],
        typer.Option(
            "--slides",
            metavar="DIR",
            help="Folder of slides the app may open (repeat for several). Nothing outside "
            "these folders can be opened: no '..', no absolute paths elsewhere, no links out.",
            show_default=False,
        ),
    ],
    dicomweb_archive: Annotated[
        list[str] | None,
        typer.Option(
            "--dicomweb-archive",
            metavar="URL",
            help="A DICOMweb root (https://HOST/PATH) whose whole-slide series are listed "
            "beside the slide folders and may be opened (repeatable; adds to "
            "MEDAGENT_DICOMWEB_ARCHIVES). Credentials: MEDAGENT_DICOMWEB_TOKEN or _BASIC.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind. Anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="MEDAGENT_SERVER_TOKEN",
            metavar="TOKEN",
            help="Shared secret (16+ URL-safe characters, e.g. from `python -c 'import "
            "secrets; print(secrets.token_urlsafe())'`). Clients send 'Authorization: Bearer "
            "TOKEN'; a browser opens /?token=TOKEN once and gets a cookie. Required off "
            "loopback.",
            show_default=False,
        ),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="MEDAGENT_ADMIN_TOKEN",
            metavar="TOKEN",
            help="Secret of the admin routes (16+ URL-safe characters, not --token): GET "
            "/api/admin/sessions lists every session, DELETE /api/admin/sessions/ID deletes "
            "one. Only 'Authorization: Bearer TOKEN' on a direct connection, never through a "
            "proxy. [off: those routes answer 404]",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        Path,
        typer.Option(
            metavar="DIR",
            help="Session table, SQLite checkpoints and crops; sessions survive restarts "
            "as long as this folder does.",
        ),
    ] = Path(".medagent/server"),
    checkpoint: Annotated[
        str | None,
        typer.Option(
            metavar="URL|FILE",
            help="postgresql://USER:PASS@HOST/DB to keep sessions in Postgres, so several "
            "replicas can serve them (needs pip install 'medagent[postgres]' and --data on "
            "shared storage); or a SQLite file. [default: DATA/checkpoints.sqlite]",
            show_default=False,
        ),
    ] = None,
    db_pool_min: Annotated[
        int,
        typer.Option(
            envvar="MEDAGENT_DB_POOL_MIN",
            help="With --checkpoint postgresql://: connections kept open when idle.",
        ),
    ] = 1,
    db_pool_max: Annotated[
        int,
        typer.Option(
            envvar="MEDAGENT_DB_POOL_MAX",
            help="With --checkpoint postgresql://: most connections this replica opens (plus "
            "one for turn locks); keep replicas x (this + 1) under Postgres's max_connections.",
        ),
    ] = 10,
    db_timeout: Annotated[
        float,
        typer.Option(
            envvar="MEDAGENT_DB_TIMEOUT_S",
            help="Seconds a request waits for an unreachable database before a 503.",
        ),
    ] = 5.0,
    uploads: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Accept slide uploads (POST /api/uploads) into this folder. [off]",
            show_default=False,
        ),
    ] = None,
    runs: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Folder of eval runs to review at /review: grade answers and paths, export "
            "CSV/JSONL; each save also writes the run's review.jsonl for `eval report`. "
            "[default: MEDAGENT_RUNS_ROOT, else off]",
            show_default=False,
        ),
    ] = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest upload accepted, MB.")] = 4096,
    max_body_kb: Annotated[
        int, typer.Option(help="Largest request body other than an upload, KiB (413 beyond).")
    ] = 1024,
    max_image_mpx: MaxImageMpxOpt = REMOTE_MAX_PIXELS / 1e6,
    open_slides_mb: Annotated[
        int, typer.Option(help="Memory the cache of open slides may hold, MB.")
    ] = 1024,
    upload_checks: Annotated[
        int, typer.Option(help="Uploads opened for checking at once (each may decode an image).")
    ] = 2,
    active_turns: Annotated[
        int,
        typer.Option(help="Chat turns running at once, all sessions; later ones wait their turn."),
    ] = 32,
    image_workers: Annotated[
        int | None,
        typer.Option(
            help="Threads for reading and rendering slide regions. [default: one per CPU]",
            show_default=False,
        ),
    ] = None,
    messages_per_minute: Annotated[
        float, typer.Option(help="Messages per minute per session, on average.")
    ] = 20.0,
    burst: Annotated[int, typer.Option(help="Messages a session may send at once.")] = 5,
    client_messages_per_minute: Annotated[
        float,
        typer.Option(help="Messages per minute per client address, all its sessions together."),
    ] = 60.0,
    client_message_burst: Annotated[
        int, typer.Option(help="Messages a client address may send at once.")
    ] = 30,
    client_sessions_per_minute: Annotated[
        float, typer.Option(help="New sessions per minute per client address, on average.")
    ] = 10.0,
    client_session_burst: Annotated[
        int, typer.Option(help="New sessions a client address may open at once.")
    ] = 20,
    client_max_sessions: Annotated[
        int,
        typer.Option(
            help="Live sessions a client address may hold (429 beyond: delete one or let one "
            "expire); 0: no cap."
        ),
    ] = 100,
    session_idle_hours: Annotated[
        float,
        typer.Option(
            envvar="MEDAGENT_SESSION_IDLE_HOURS",
            help="Delete a session unused this long, with its checkpoints and crops (one "
            "answering is never deleted); 0: keep sessions for ever.",
        ),
    ] = 72.0,
    allowed_origin: Annotated[
        list[str] | None,
        typer.Option(
            metavar="URL",
            help="Another origin whose pages may write, e.g. https://slides.example.org when a "
            "proxy in front rewrites the Host header (repeat for several). [none]",
            show_default=False,
        ),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ADDR",
            help="A reverse proxy in front (address or network, e.g. 127.0.0.1) whose "
            "X-Forwarded-For names the client, for per-client limits (repeatable; needs "
            "--token). Requests carrying proxy headers need a token either way. [none]",
            show_default=False,
        ),
    ] = None,
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
    """Serve the chat page: a deep-zoom slide viewer beside a chat with the agent.

      medagent serve --slides /data/slides --base-url http://127.0.0.1:8000/v1 --model M

    Open http://127.0.0.1:8000/, pick a slide, ask. The regions the agent looks at appear
    as numbered boxes on the slide and as crops in the chat; "Ask about a region" lets you
    drag a box and ask about it. Each session has its own address and survives a restart.

    Binds 127.0.0.1 (this machine only) unless --host says otherwise, which needs --token.
    With --backend scripted every session replays --script from its first line (a test
    double: its answers mean nothing).
    """
    from medagent.models import build_model
    from medagent.server import ServerConfig, create_app
    from medagent.server import serve as run

    for folder in slides:
        if not folder.is_dir():
            raise ConfigError(f"--slides {folder}: not a folder; give the folder of the slides")
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
    runs = runs or settings.runs_root
    if runs is not None and not runs.is_dir():
        raise ConfigError(f"--runs {runs}: not a folder; give the folder of the eval runs")
    config = ServerConfig.build(
        slide_roots=tuple(slides),
        dicomweb_archives=(*settings.dicomweb_archives, *(dicomweb_archive or [])),
        host=host,
        port=port,
        token=token,
        admin_token=admin_token,
        data_dir=data,
        checkpoint=checkpoint,
        db_pool_min=db_pool_min,
        db_pool_max=db_pool_max,
        db_timeout_s=db_timeout,
        upload_dir=uploads,
        runs_root=runs,
        max_upload_mb=max_upload_mb,
        max_body_kb=max_body_kb,
        max_image_mpx=max_image_mpx,
        open_slides_mb=open_slides_mb,
        upload_checks=upload_checks,
        active_turns=active_turns,
        image_workers=image_workers,
        messages_per_minute=messages_per_minute,
        message_burst=burst,
        client_messages_per_minute=client_messages_per_minute,
        client_message_burst=client_message_burst,
        client_sessions_per_minute=client_sessions_per_minute,
        client_session_burst=client_session_burst,
        client_max_sessions=client_max_sessions,
        session_idle_hours=session_idle_hours,
        allowed_origins=tuple(allowed_origin or ()),
        trusted_proxies=tuple(trusted_proxy or ()),
    )
    first = build_model(settings)  # a bad backend setting fails here, before the port is taken
    kwargs: dict[str, Any] = (
        {"model_factory": lambda _session: build_model(settings)}
        if settings.backend == "scripted"
        else {"model": first}
    )
    # --trace: a span per chat turn, with its steps, model and tool calls; flushed at exit.
    with traced(settings) as tracing:
        application = create_app(config, **kwargs, tracing=tracing)
        where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        err_console.print(
            f"medagent: chat over the slides in {', '.join(str(s) for s in slides)} at {where}"
            + ("?token=TOKEN (once; then a cookie)" if config.token else ""),
            markup=False,
            highlight=False,
        )
        if config.admin_token:
            err_console.print(
                f"medagent: admin routes at {where}api/admin/sessions "
                "('Authorization: Bearer ADMIN_TOKEN'; direct to this port, not via a proxy)",
                markup=False,
                highlight=False,
            )
        run(application, config)
