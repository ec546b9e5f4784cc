"""``medagent sessions``: what the web app keeps, read from its database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from medagent.cli._app import app, console

__all__ = ["sessions_app"]

sessions_app = typer.Typer(
    help="The web app's chat sessions: how many, their disk use and idle time.",
    no_args_is_help=True,
)
app.add_typer(sessions_app, name="sessions")


def _duration(seconds: float) -> str:
    """``93784`` → ``"1d 2h"``: idle times span seconds to weeks."""
    seconds = int(seconds)
    for unit, size, smaller, smaller_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if seconds >= size:
            return f"{seconds // size}{unit} {(seconds % size) // smaller_size}{smaller}"
    return f"{seconds}s"


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"


@sessions_app.command("list")
def list_command(
    data: Annotated[
        Path,
        typer.Option(metavar="DIR", help="The --data folder of `medagent serve`."),
    ] = Path(".medagent/server"),
    checkpoint: Annotated[
        str | None,
        typer.Option(
            metavar="URL|FILE",
            help="Its --checkpoint, when the sessions live in Postgres (postgresql://...).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object: every session and the totals.")
    ] = False,
) -> None:
    """Every session, longest idle first: its slide, client, idle time and disk use (crops
    and manifest), then the totals. Reads the database while the server runs or not.

      medagent sessions list --data /shared/medagent --checkpoint postgresql://medagent@db/medagent
    """
    from medagent.server import list_sessions

    listing = asyncio.run(list_sessions(data, checkpoint))
    if as_json:
        console.print_json(listing.model_dump_json())
        return
    from rich.table import Table

    table = Table("session", "slide", "client", "idle", "disk", "files", box=None)
    for row in listing.sessions:
        table.add_row(
            row.id,
            row.slide,
            row.client or "",
            _duration(row.idle_s),
            _mib(row.disk_bytes),
            str(row.files),
        )
    if listing.sessions:
        console.print(table)
    console.print(
        f"{listing.count} session(s), {_mib(listing.disk_bytes)} on disk",
        markup=False,
        highlight=False,
    )
