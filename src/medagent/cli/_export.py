"""``medagent export``: what a run did, in formats other tools open."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medagent.cli._app import app, console

__all__ = ["export_app"]

export_app = typer.Typer(
    help="Export what runs did for other tools (QuPath GeoJSON).", no_args_is_help=True
)
app.add_typer(export_app, name="export")


@export_app.command("geojson")
def export_geojson_command(
    run: Annotated[
        Path,
        typer.Argument(
            help="A run folder: medagent ask/demo (GIANT), insight, chat, an eval item folder "
            "(RUN/items/ID) or a whole eval run.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="The file to write (default RUN/regions.geojson); for a folder holding "
            "several runs, the folder for one NAME.geojson each (default RUN/geojson).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Every region the agent viewed, as QuPath annotations in level-0 pixels.

      medagent export geojson runs/20260101-120000-ab12cd

      medagent export geojson runs/e1 --out qupath/

    Each view becomes a locked rectangle named by its step and reasoning, with its step,
    pyramid level and downsample as measurements; tools' evidence regions and the root
    finder's findings come as their own classes, and masks a tool wrote as simplified
    polygons with the tool's measurements. In QuPath: File → Import objects, on the slide.
    """
    from medagent.evals import export_geojson

    written = export_geojson(run, out)
    for path in written:
        console.print(str(path), markup=False, highlight=False, soft_wrap=True)
