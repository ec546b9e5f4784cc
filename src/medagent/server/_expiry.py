"""Sessions over time: deleting one (on request, or when idle too long) and listing them.

A session is three things: its row in the session table, its LangGraph checkpoints (the
thread named by its id) and its folder of crops. Removing one takes the session's turn lock
first, so a session that is answering — here or on another replica — is never removed, and no
turn can start while it goes. The row goes first: it is what every request checks, and a
conditional delete ("still idle?") decides, once, between two replicas sweeping together.
The checkpoints and the folder go next; the folder last, so that a replica killed half-way
leaves a folder without a row, which the next sweep (on any replica) finishes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from anyio import to_thread
from pydantic import BaseModel, ConfigDict

from medagent.errors import ConfigError, DatabaseUnavailableError
from medagent.server._config import ServerConfig
from medagent.server._state import SessionStore, open_stores, session_folder
from medagent.server._turns import TurnLocks

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

__all__ = ["Removal", "SessionListing", "SessionReaper", "SessionUsage", "list_sessions"]

log = logging.getLogger("medagent.server")

Removal = Literal["removed", "busy", "missing"]
#: Sessions one sweep removes at most; the next sweep takes the rest.
_SWEEP_BATCH = 500


class SessionReaper:
    """Removes sessions whole; ``sweep`` removes those unused for ``idle_s`` seconds.

    ``forget`` is told each id removed, so the caller drops what it keeps in memory.
    ``clock`` is wall-clock seconds, as stored in the session table.
    """

    def __init__(
        self,
        *,
        store: SessionStore,
        checkpointer: BaseCheckpointSaver[Any],
        turns: TurnLocks,
        data_dir: Path,
        idle_s: float | None,
        forget: Callable[[str], None] = lambda _id: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._checkpointer = checkpointer
        self._turns = turns
        self._data_dir = data_dir
        self.idle_s = idle_s
        self._forget = forget
        self._clock = clock

    async def remove(self, session_id: str, *, idle_before: float | None = None) -> Removal:
        """Delete the session (only if unused since ``idle_before``, when given): "busy" when
        it is answering, "missing" when it is gone (or was used since)."""
        if not await self._turns.try_acquire(session_id):
            return "busy"
        try:
            if not await self._store.delete(session_id, idle_before=idle_before):
                return "missing"
            self._forget(session_id)
            await self._purge(session_id)
            return "removed"
        finally:
            await asyncio.shield(self._turns.release(session_id))

    async def _purge(self, session_id: str) -> None:
        """The checkpoints, then the folder (see the module's note on order)."""
        await self._checkpointer.adelete_thread(session_id)
        folder = session_folder(self._data_dir, session_id)
        await to_thread.run_sync(functools.partial(shutil.rmtree, folder, ignore_errors=True))

    async def sweep(self) -> int:
        """Remove the sessions idle for ``idle_s`` (and what a cut-off removal left); returns
        how many sessions were removed."""
        if self.idle_s is None:
            return 0
        cutoff = self._clock() - self.idle_s
        removed = 0
        for session_id in await self._store.idle(cutoff, _SWEEP_BATCH):
            if await self.remove(session_id, idle_before=cutoff) == "removed":
                removed += 1
        await self._finish_cut_off()
        return removed

    async def _finish_cut_off(self) -> None:
        """Purge folders whose row is gone: a removal cut off after its first step."""
        root = self._data_dir / "sessions"
        # Folders first, rows second: a session is written before its folder, so a folder
        # listed here whose row is missing afterwards was removed, never still being made.
        folders = await to_thread.run_sync(_folder_names, root)
        if not folders:
            return
        known = {record.id for record in await self._store.all()}
        for session_id in sorted(folders - known):
            log.info("finishing the removal of session %s", session_id)
            await self._purge(session_id)

    async def run(self, interval_s: float) -> None:
        """Sweep every ``interval_s`` until cancelled; a failed sweep is logged, not fatal."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                removed = await self.sweep()
            except DatabaseUnavailableError:
                continue  # logged where it was raised; the next sweep tries again
            except Exception:
                log.exception("the sweep of idle sessions failed; it runs again later")
                continue
            if removed:
                log.info("removed %d session(s) idle for %.0f s or more", removed, self.idle_s)


def _folder_names(root: Path) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False)}
    except FileNotFoundError:
        return set()


def _size(folder: Path) -> tuple[int, int]:
    """Bytes and files under ``folder`` (links not followed)."""
    total = files = 0
    for parent, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
                files += 1
            except OSError:  # removed while we walked
                continue
    return total, files


class SessionUsage(BaseModel):
    """One session in the admin listing."""

    model_config = ConfigDict(frozen=True)

    id: str
    slide: str
    client: str | None
    created_at: float
    idle_s: float
    disk_bytes: int
    files: int


class SessionListing(BaseModel):
    """Every session with its disk use (crops, manifest) and idle time, and the totals."""

    model_config = ConfigDict(frozen=True)

    sessions: list[SessionUsage]
    count: int
    disk_bytes: int
    idle_after_s: float | None


async def usage(
    store: SessionStore, data_dir: Path, idle_s: float | None, now: float | None = None
) -> SessionListing:
    """The listing from an open session table (the app's, or one opened for the CLI)."""
    now = time.time() if now is None else now
    rows = []
    for record in await store.all():
        size, files = await to_thread.run_sync(_size, session_folder(data_dir, record.id))
        rows.append(
            SessionUsage(
                id=record.id,
                slide=record.slide,
                client=record.client,
                created_at=record.created_at,
                idle_s=max(0.0, now - record.last_active),
                disk_bytes=size,
                files=files,
            )
        )
    return SessionListing(
        sessions=rows,
        count=len(rows),
        disk_bytes=sum(row.disk_bytes for row in rows),
        idle_after_s=idle_s,
    )


async def list_sessions(
    data_dir: Path, checkpoint: str | None = None, *, idle_hours: float = 0.0
) -> SessionListing:
    """The sessions of the server whose ``--data`` folder (and ``--checkpoint``, for Postgres)
    are given, read from its database while it runs or not."""
    postgres = bool(checkpoint) and str(checkpoint).startswith(("postgresql://", "postgres://"))
    table = data_dir / "sessions.sqlite"
    if not postgres and not await to_thread.run_sync(table.is_file):
        raise ConfigError(
            f"--data {data_dir}: no sessions.sqlite there; give the --data folder that "
            "`medagent serve` uses (and its --checkpoint for Postgres)"
        )
    config = ServerConfig.build(
        slide_roots=(data_dir,),  # not read: the listing opens no slide
        data_dir=data_dir,
        checkpoint=checkpoint,
        db_pool_min=1,
        db_pool_max=2,
        session_idle_hours=idle_hours,
    )
    async with open_stores(config) as stores:
        return await usage(stores.sessions, data_dir, config.session_idle_s)
