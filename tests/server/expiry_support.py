"""What the session-expiry tests share: a clock they move, apps on SQLite or on a fresh
Postgres database, a model that holds a turn open, and counts of what a session left behind
(imported by name: keep this basename unique)."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server_support import SCRIPT
from starlette.types import Receive, Scope, Send

from medagent.models import ScriptedModel
from medagent.server import ServerConfig, create_app

SLIDE = "cases/tissue.tif"
HOUR = 3600.0


class Clock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class HeldModel(ScriptedModel):
    """Scripted replies that wait for ``release`` to be set: a turn that runs until the test
    lets it end."""

    def __init__(self, script: list[dict[str, Any]], release: threading.Event) -> None:
        super().__init__(script)
        self._release = release

    async def generate(self, messages: Any, **kwargs: Any) -> Any:
        while not self._release.is_set():  # noqa: ASYNC110 - set from the test's thread
            await asyncio.sleep(0.02)
        return await super().generate(messages, **kwargs)


class ClientFromHeader:
    """The ASGI client address from an ``X-Test-Client`` header: one app, several clients."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-client":
                    scope = {**scope, "client": (value.decode(), 40000)}
        await self.app(scope, receive, send)


def build(
    slide_root: Path,
    data: Path,
    checkpoint: str | None,
    clock: Callable[[], float],
    *,
    release: threading.Event | None = None,
    **config: Any,
) -> ClientFromHeader:
    """The app over ``slide_root``, state in ``data`` (and ``checkpoint``), dated by ``clock``;
    with ``release``, every model call waits for it."""
    values: dict[str, Any] = {
        "slide_roots": (slide_root,),
        "data_dir": data,
        "checkpoint": checkpoint,
        **config,
    }

    def model(_session: str) -> ScriptedModel:
        return ScriptedModel(SCRIPT) if release is None else HeldModel(SCRIPT, release)

    return ClientFromHeader(create_app(ServerConfig(**values), model_factory=model, clock=clock))


def fresh_database(url: str) -> str:
    """A new, empty database on the server at ``url``; its URL."""
    import psycopg

    name = f"expiry_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + f"/{name}"


def checkpoint_rows(data: Path, checkpoint: str | None, thread_id: str) -> dict[str, int]:
    """Rows for ``thread_id`` in every checkpoint table that has a ``thread_id`` column."""
    if checkpoint:
        import psycopg

        with psycopg.connect(checkpoint) as connection:
            tables = [
                row[0]
                for row in connection.execute(
                    "SELECT table_name FROM information_schema.columns "
                    "WHERE column_name = 'thread_id' AND table_schema = 'public'"
                )
            ]
            return {
                table: int(
                    connection.execute(
                        f"SELECT count(*) FROM {table} WHERE thread_id = %s", (thread_id,)
                    ).fetchone()[0]  # type: ignore[index]
                )
                for table in tables
            }
    with sqlite3.connect(data / "checkpoints.sqlite") as connection:
        names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master")]
        tables = [
            name
            for name in names
            if any(
                col[1] == "thread_id" for col in connection.execute(f"PRAGMA table_info({name})")
            )
        ]
        return {
            table: int(
                connection.execute(
                    f"SELECT count(*) FROM {table} WHERE thread_id = ?", (thread_id,)
                ).fetchone()[0]
            )
            for table in tables
        }


def session_rows(data: Path, checkpoint: str | None, session_id: str) -> int:
    if checkpoint:
        import psycopg

        with psycopg.connect(checkpoint) as connection:
            row = connection.execute(
                "SELECT count(*) FROM medagent_sessions WHERE id = %s", (session_id,)
            ).fetchone()
            return int(row[0]) if row else 0
    with sqlite3.connect(data / "sessions.sqlite") as connection:
        query = "SELECT count(*) FROM medagent_sessions WHERE id = ?"
        return int(connection.execute(query, (session_id,)).fetchone()[0])
