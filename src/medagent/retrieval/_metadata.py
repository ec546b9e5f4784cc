"""What an ``ImageIndex`` keeps besides FAISS: records in SQLite, and the saved folder.

Records: one row per live vector, keyed by its FAISS label.

The FAISS label of a vector is its row number in the index's vector store (``row`` below), so
the three stores (FAISS, raw vectors, metadata) agree without a separate id map. A record that
is not here is removed, whatever FAISS still holds (HNSW cannot delete).

The folder: ``manifest.json`` (format version, embedder, kind, counts, dates) says what the
other files are, and is checked before they are opened. A save fills a new folder beside the
old one and swaps it in with renames, so a reader never sees a half-written index.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, ValidationError

from medagent.errors import ConfigError, InputError
from medagent.imaging import Region
from medagent.retrieval.base import IndexRecord

__all__ = [
    "FILES",
    "FILTER_COLUMNS",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "Manifest",
    "MetadataStore",
    "corrupt",
    "read_manifest",
    "refuse_to_overwrite",
    "trusted",
    "write_folder",
]

_M = TypeVar("_M", bound=BaseModel)

FILTER_COLUMNS = ("domain", "id", "label", "report", "source")
"""Record fields a ``where`` mapping may name directly; ``extra.<key>`` reaches into ``extra``."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    row    INTEGER PRIMARY KEY,  -- FAISS label and row of the vector store
    id     TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    region TEXT,                 -- JSON {x, y, width, height} in level-0 pixels
    label  TEXT,
    domain TEXT,
    report TEXT,
    extra  TEXT NOT NULL         -- JSON object
);
CREATE INDEX IF NOT EXISTS records_domain ON records(domain);
CREATE INDEX IF NOT EXISTS records_label ON records(label);
"""
_SELECT = "SELECT row, id, source, region, label, domain, report, extra FROM records"


class MetadataStore:
    """Records in an in-memory SQLite database, copied from and to ``metadata.sqlite``.

    In memory so that edits after a load never touch the saved folder: ``save`` writes a new
    copy and the index swaps the whole folder at once.
    """

    def __init__(self, connection: sqlite3.Connection | None = None) -> None:
        self._db = connection or sqlite3.connect(":memory:", check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()

    @classmethod
    def load(cls, path: Path) -> MetadataStore:
        """A copy of the database at ``path``; ``InputError`` when it is not one of ours."""
        db = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                source.backup(db)
            finally:
                source.close()
            db.execute(f"{_SELECT} LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            db.close()
            raise InputError(
                f"{path} is not a readable metadata database ({exc})", path=str(path)
            ) from None
        return cls(db)

    def save(self, path: Path) -> None:
        """Write a standalone copy to ``path`` (which must not exist yet)."""
        with self._lock:
            target = sqlite3.connect(path)
            try:
                self._db.backup(target)
            finally:
                target.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit on success, roll back on any error (so a failed ``add`` leaves no rows)."""
        with self._lock, self._db:
            yield

    def insert(self, rows: npt.NDArray[np.int64], records: Sequence[IndexRecord]) -> None:
        """Insert ``records`` at ``rows``; run inside ``transaction``."""
        self._db.executemany(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    int(row),
                    r.id,
                    r.source,
                    r.region.model_dump_json() if r.region is not None else None,
                    r.label,
                    r.domain,
                    r.report,
                    json.dumps(r.extra),
                )
                for row, r in zip(rows, records, strict=True)
            ),
        )

    def existing(self, ids: Sequence[str]) -> list[str]:
        """Those of ``ids`` already stored, in the order given."""
        with self._lock:
            found = {
                row[0]
                for row in self._db.execute(
                    "SELECT id FROM records WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(ids)),),
                )
            }
        return [i for i in ids if i in found]

    def delete(self, ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Remove ``ids`` (unknown ones are ignored); the rows they held."""
        with self._lock, self._db:
            rows = self._rows_where("id IN (SELECT value FROM json_each(?))", json.dumps(list(ids)))
            self._db.execute(
                "DELETE FROM records WHERE row IN (SELECT value FROM json_each(?))",
                (json.dumps(rows.tolist()),),
            )
        return rows

    def renumber(self, old_rows: npt.NDArray[np.int64]) -> None:
        """Move the record at ``old_rows[i]`` to row ``i`` (``old_rows`` ascending), to compact.

        Ascending order never collides: row ``i`` is free once rows below it have moved.
        """
        with self._lock, self._db:
            self._db.executemany(
                "UPDATE records SET row = ? WHERE row = ?",
                ((new, int(old)) for new, old in enumerate(old_rows) if new != old),
            )

    def get(self, rows: npt.NDArray[np.int64]) -> dict[int, IndexRecord]:
        """Records by row; rows that were removed are absent."""
        if rows.size == 0:
            return {}
        with self._lock:
            cursor = self._db.execute(
                f"{_SELECT} WHERE row IN (SELECT value FROM json_each(?))",
                (json.dumps(np.unique(rows).tolist()),),
            )
            return {row[0]: _record(row) for row in cursor}

    def get_by_id(self, record_id: str) -> IndexRecord | None:
        with self._lock:
            row = self._db.execute(f"{_SELECT} WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else _record(row)

    def all_records(self) -> Iterator[tuple[int, IndexRecord]]:
        """Every (row, record), for callable filters that must scan everything."""
        with self._lock:
            rows = self._db.execute(_SELECT).fetchall()
        return ((row[0], _record(row)) for row in rows)

    def rows(self) -> npt.NDArray[np.int64]:
        """Every live row, ascending."""
        return self._rows_where("1")

    def ids(self) -> list[str]:
        """Every stored id, in insertion order."""
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT id FROM records ORDER BY row")]

    def contains(self, record_id: str) -> bool:
        with self._lock:
            found = self._db.execute("SELECT 1 FROM records WHERE id = ?", (record_id,))
            return found.fetchone() is not None

    def matching(self, where: Mapping[str, Any]) -> npt.NDArray[np.int64]:
        """Rows whose records match every key of ``where`` (SQL, so it is fast at any size).

        A value matches by equality, a list/tuple/set by membership, ``None`` by absence.
        """
        clauses: list[str] = []
        params: list[Any] = []
        for key, value in where.items():
            if key in FILTER_COLUMNS:
                column = key
            elif key.startswith("extra.") and len(key) > len("extra."):
                column = "json_extract(extra, ?)"
                params.append(f'$."{key.removeprefix("extra.")}"')
            else:
                raise ConfigError(
                    f"cannot filter on {key!r}: use one of {', '.join(FILTER_COLUMNS)} "
                    "or 'extra.<key>'"
                )
            if value is None:
                clauses.append(f"{column} IS NULL")
            elif isinstance(value, list | tuple | set | frozenset):
                clauses.append(f"{column} IN (SELECT value FROM json_each(?))")
                params.append(json.dumps(list(value)))
            else:
                clauses.append(f"{column} = ?")
                params.append(value)
        return self._rows_where(" AND ".join(clauses) or "1", *params)

    def counts(self, column: str) -> dict[str, int]:
        """Records per value of ``column`` (``domain`` or ``label``); missing values as ``""``."""
        if column not in FILTER_COLUMNS:
            raise ValueError(column)
        with self._lock:
            cursor = self._db.execute(
                f"SELECT {column}, COUNT(*) FROM records GROUP BY {column} ORDER BY {column}"
            )
            return {value or "": count for value, count in cursor}

    def close(self) -> None:
        self._db.close()

    def _rows_where(self, clause: str, *params: Any) -> npt.NDArray[np.int64]:
        with self._lock:
            found = self._db.execute(f"SELECT row FROM records WHERE {clause} ORDER BY row", params)
            return np.fromiter((r[0] for r in found), dtype=np.int64)


def trusted(cls: type[_M], values: dict[str, Any]) -> _M:
    """A pydantic model from values it validated before (all fields given), without validating.

    Search builds records from SQLite rows; at thousands of records per query batch
    ``model_validate`` (or even ``model_construct``, 3x slower than this) is most of the cost.
    This sets what ``model_construct`` sets: the field dict, the fields-set, no extras/privates.
    """
    obj = _new(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", set(values))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


_new, _set = object.__new__, object.__setattr__


def _record(row: tuple[Any, ...]) -> IndexRecord:
    """Rebuild a record stored by ``insert`` (validated then, so not again)."""
    _, record_id, source, region, label, domain, report, extra = row
    values = {
        "id": record_id,
        "source": source,
        "region": trusted(Region, json.loads(region)) if region is not None else None,
        "label": label,
        "domain": domain,
        "report": report,
        "extra": json.loads(extra) if extra != "{}" else {},
    }
    return trusted(IndexRecord, values)


# -- the folder ------------------------------------------------------------------------------

FORMAT = "medagent.image-index"
FORMAT_VERSION = 1
FILES = {"index": "index.faiss", "vectors": "vectors.npy", "metadata": "metadata.sqlite"}
MANIFEST = "manifest.json"


class Manifest(BaseModel):
    """``manifest.json``: read first, so a wrong or newer folder is refused before the rest."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["medagent.image-index"]
    format_version: int
    medagent_version: str
    embedder: str
    dim: int
    kind: Literal["flat", "ivf", "hnsw", "ivfpq"]
    config: dict[str, Any]  # an ``IndexConfig``, validated by the index
    count: int
    rows: int
    trained_at: int
    created: str
    updated: str


def corrupt(folder: Path, why: str) -> InputError:
    return InputError(
        f"{folder} is not a usable image index: {why}; rebuild it or restore a backup",
        path=str(folder),
    )


def read_manifest(folder: Path) -> Manifest:
    """The manifest, with a one-line ``InputError`` for a missing, corrupt or other version."""
    if not folder.is_dir():
        hint = ""
        leftovers = sorted(folder.parent.glob(f".{folder.name}.old-*"))
        if leftovers:
            hint = f"; an interrupted save left the previous version at {leftovers[-1]}"
        raise InputError(f"no image index at {folder}{hint}", path=str(folder))
    try:
        raw = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        raise corrupt(folder, f"{MANIFEST} is missing or not JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise corrupt(folder, f"{MANIFEST} is not a medagent image index manifest")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(
            f"{folder} is image-index format version {version}, this medagent reads version "
            f"{FORMAT_VERSION}; rebuild the index or use the medagent that wrote it",
            path=str(folder),
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise corrupt(folder, f"{MANIFEST} has {exc.error_count()} invalid fields") from None


def refuse_to_overwrite(folder: Path) -> None:
    """Only an earlier index (or an empty folder) may be replaced by a save."""
    if folder.exists() and not (
        folder.is_dir() and ((folder / MANIFEST).is_file() or not any(folder.iterdir()))
    ):
        raise InputError(
            f"{folder} exists and is not an image index; refusing to overwrite it",
            path=str(folder),
        )


def write_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """``write`` fills a new folder beside ``folder``, which is then flushed and swapped in.

    The previous version stays in place until the new one is complete; only between two
    renames is it named ``.<folder>.old-…`` (a crash there leaves both on disk, and
    ``read_manifest`` says where). OS and FAISS write errors become one-line ``InputError``s.
    """
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        for path in [*tmp.iterdir(), tmp]:  # flushed, so the rename never exposes partial files
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _swap_in(tmp, folder)
    except (OSError, RuntimeError, sqlite3.Error) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"cannot save the index to {folder}: {exc}", path=str(folder)) from None


def _swap_in(new: Path, folder: Path) -> None:
    """Rename ``new`` to ``folder``, moving any previous version aside until that succeeds."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        folder.rename(old)
    try:
        new.rename(folder)
    except BaseException:
        if old is not None:
            old.rename(folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
