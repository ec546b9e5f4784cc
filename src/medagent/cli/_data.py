"""``medagent data``: fetch the files a benchmark's questions are about."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from medagent.cli._app import app, build_settings, config_from_flags, console, err_console
from medagent.errors import ConfigError

__all__ = ["data_app"]

data_app = typer.Typer(
    help="Benchmark data: fetch the slides a dataset's questions are about.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


class _Bar:
    """`PullEvents` for a rich progress bar: bytes on disk against the sizes known so far."""

    def __init__(self, progress: Progress, files: int) -> None:
        self.progress = progress
        self.files = files
        self.settled = 0
        self.sizes: dict[str, int] = {}
        self.task = progress.add_task(self._label(), total=None)

    def _label(self) -> str:
        return f"slides {self.settled}/{self.files}"

    def sized(self, name: str, size: int) -> None:
        self.sizes[name] = size
        self.progress.update(self.task, total=sum(self.sizes.values()) or None)

    def advanced(self, size: int) -> None:
        self.progress.advance(self.task, size)

    def finished(self, outcome: Any) -> None:
        self.settled += 1
        if outcome.status == "skipped":  # already there: counts as on disk
            self.sizes[outcome.name] = outcome.size
            self.progress.update(self.task, total=sum(self.sizes.values()) or None)
            self.progress.advance(self.task, outcome.size)
        self.progress.update(self.task, description=self._label())


def _table(outcomes: list[Any]) -> Table:
    table = Table(title="data pull")
    for column in ("source", "done", "skipped", "failed"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for source in sorted({o.source for o in outcomes}):
        mine = [o for o in outcomes if o.source == source]
        counts = [sum(o.status == s for o in mine) for s in ("done", "skipped", "failed")]
        table.add_row(source, *(str(c) for c in counts))
    return table


def _failures(failed: list[Any]) -> Table:
    table = Table(title="failed")
    table.add_column("file", no_wrap=True)
    table.add_column("source")
    table.add_column("reason", overflow="fold")
    for outcome in failed:
        table.add_row(outcome.name, outcome.source, outcome.reason)
    return table


@data_app.command("pull")
def data_pull(
    dataset: Annotated[str, typer.Argument(help="The benchmark: multipathqa.")],
    csv: Annotated[Path, typer.Option("--csv", help="MultiPathQA.csv (from its dataset card).")],
    out: Annotated[
        Path, typer.Option(help="Folder the slides go to; give it to eval run --slides.")
    ],
    tasks: Annotated[
        str, typer.Option(help="Sources, comma-separated: tcga (all TCGA tasks), gtex, panda.")
    ] = "tcga,gtex,panda",
    jobs: Annotated[int, typer.Option(help="Files downloading at once.")] = 4,
    max_gib: Annotated[
        float, typer.Option(help="Refuse a file a server says is bigger than this (GiB).")
    ] = 20.0,
    retries: Annotated[
        int, typer.Option(help="Retries per file on a dropped connection or a 5xx.")
    ] = 5,
    timeout: Annotated[float, typer.Option(help="Seconds without data before a retry.")] = 60.0,
) -> None:
    """Download a benchmark's slides: resumable, verified, several at a time.

      medagent data pull multipathqa --csv MultiPathQA.csv --out slides/

      medagent data pull multipathqa --csv MultiPathQA.csv --out slides/ --tasks tcga --jobs 8

      medagent eval run --dataset multipathqa --data MultiPathQA.csv --slides slides/ ...

    TCGA slides come from the GDC by file id and are checked against the GDC's md5 and size;
    GTEx slides come from the GTEx image service and PANDA slides from Kaggle (needs
    KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json; skipped without), and must open
    as slides. A file that fails its check is removed and listed with the reason.

    An interrupted file stays NAME.part; rerunning the command continues it where it stopped
    and fetches only what is missing or wrong. Mirrors: MEDAGENT_GDC_URL, MEDAGENT_GTEX_URL
    ({slide_id} in it), MEDAGENT_PANDA_URL ({name} in it).

    Exit codes: 0 every file there and verified, 1 some failed, 2 an error, 130 interrupted.
    """
    from medagent.evals.pull import (
        PullPolicy,
        PullSources,
        kaggle_credentials,
        plan_multipathqa,
        pull_files,
    )

    if dataset != "multipathqa":
        raise ConfigError(f"data pull {dataset!r}: the one dataset it fetches is multipathqa")
    if max_gib <= 0:
        raise ConfigError(f"invalid --max-gib: must be above 0 (got {max_gib})")
    policy = config_from_flags(
        PullPolicy,
        flag_names={"max_bytes": "--max-gib", "timeout_s": "--timeout"},
        jobs=jobs,
        max_bytes=int(max_gib * 2**30),
        retries=retries,
        timeout_s=timeout,
    )
    settings = build_settings()
    wanted = [t.strip() for t in tasks.split(",") if t.strip()]
    sources = PullSources(
        gdc_url=settings.gdc_url,
        gtex_url=settings.gtex_url,
        panda_url=settings.panda_url,
        kaggle_auth=kaggle_credentials(os.environ, Path.home()) if "panda" in wanted else None,
    )
    files, refused, notes = plan_multipathqa(csv, sources, wanted)
    for note in notes:
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        bar = _Bar(progress, len(files))
        try:
            outcomes = asyncio.run(
                pull_files(files, out, sources=sources, policy=policy, events=bar)
            )
        except KeyboardInterrupt:
            err_console.print(
                "interrupted: partial files are kept as NAME.part; rerun the same command to "
                "continue them",
                markup=False,
            )
            raise typer.Exit(130) from None
    outcomes = refused + outcomes
    console.print(_table(outcomes))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        console.print(_failures(failed))
    done = sum(o.status == "done" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    console.print(
        f"{done} done, {skipped} skipped (already there and verified), {len(failed)} failed "
        f"→ {out}",
        markup=False,
        highlight=False,
    )
    if failed:
        raise typer.Exit(1)
