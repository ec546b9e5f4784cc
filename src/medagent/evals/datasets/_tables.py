"""Rows of a benchmark as its authors publish them: Parquet, Hugging Face on disk, JSON, CSV.

Benchmarks ship as tables in a handful of layouts, and the same benchmark often in several:
PathVQA as Hugging Face Parquet shards with the image bytes inside, SLAKE as JSON beside an
image folder, any of them as a ``datasets`` ``save_to_disk`` folder. Loaders ask `open_table`
for a split and get plain dict rows, whatever the layout; `image_file` turns a row's image
cell (bytes, a Hugging Face ``{"bytes", "path"}`` struct, or a path) into a file an agent can
open. Layouts found for ``path``:

- a ``.parquet`` file, or a folder of them (``data/`` too), shards named ``SPLIT-…parquet``;
- a ``save_to_disk`` folder: ``state.json`` + ``.arrow`` shards, or ``dataset_dict.json`` with
  one such folder per split;
- a ``.json`` file (a list of objects), ``.jsonl`` (one object per line) or ``.csv`` file.

Parquet and Arrow need ``pip install 'medagent[eval]'`` (pyarrow); nothing here imports the
``datasets`` library. Rows are read lazily, batch by batch, so ``--limit 5`` reads five.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medagent.errors import ConfigError, DependencyMissingError, InputError
from medagent.evals.datasets._base import absolute
from medagent.imaging import magic_kind

__all__ = [
    "MAX_IMAGE_BYTES",
    "Layout",
    "Table",
    "default_image_dir",
    "image_file",
    "open_table",
    "table_splits",
]

Layout = Literal["parquet", "hf-disk", "json", "jsonl", "csv"]

#: The largest image a table cell may hold. A radiograph or a pathology tile is a few MB; a
#: cell far larger is a damaged or hostile file, refused before anything is written.
MAX_IMAGE_BYTES = 64 << 20

_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
_EXTENSIONS["WebP"] = ".webp"
_BATCH_ROWS = 256


@dataclass(frozen=True)
class Table:
    """One split of a published table: where it came from and its rows, read on demand."""

    layout: Layout
    split: str | None
    files: tuple[Path, ...]
    base: Path  # relative image paths in the rows are read from here

    @property
    def source_path(self) -> Path:
        """The file read, or the folder when the split spans several files."""
        return self.files[0] if len(self.files) == 1 else absolute(self.files[0].parent)

    def sha256(self) -> str:
        """One digest over every file of the split (name and bytes), for run manifests."""
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(path.name.encode() + b"\0")
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()

    def rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(where, row)`` pairs in file order; ``where`` names the file and row for errors."""
        for path in self.files:
            reader = _READERS[self.layout]
            for number, row in enumerate(reader(path), 1):
                if not isinstance(row, dict):
                    raise InputError(
                        f"{path.name} row {number}: expected an object, got {type(row).__name__}",
                        path=str(path),
                    )
                yield f"{path.name} row {number}", row


# -- finding the split ---------------------------------------------------------------------------
def _shard_split(name: str) -> str:
    """``test-00000-of-00001.parquet`` -> ``test``; an unsharded ``test.parquet`` -> ``test``."""
    stem = name.split(".", 1)[0]
    return stem.split("-", 1)[0]


def _parquet_files(folder: Path) -> list[Path]:
    for where in (folder, folder / "data"):
        files = sorted(where.glob("*.parquet")) if where.is_dir() else []
        if files:
            return files
    return []


def _hf_disk_files(folder: Path) -> list[Path]:
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"{folder}/state.json is not a Hugging Face dataset state ({error}); "
            "write the folder with datasets' save_to_disk",
            path=str(folder),
        ) from None
    files = []
    for name in names:
        # A shard name comes from the file: it must stay inside the dataset's folder.
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".arrow"):
            raise InputError(f"{folder}/state.json names a data file outside it: {name!r}")
        files.append(folder / name)
    return files


def table_splits(path: Path | str) -> list[str]:
    """The splits a published table at ``path`` holds (empty for a single file)."""
    root = Path(path).expanduser()
    if (root / "dataset_dict.json").is_file():
        try:
            splits = json.loads((root / "dataset_dict.json").read_text(encoding="utf-8"))
            return [str(s) for s in splits["splits"]]
        except (OSError, ValueError, KeyError, TypeError):
            return sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())
    if root.is_dir():
        return list(dict.fromkeys(_shard_split(p.name) for p in _parquet_files(root)))
    return []


def _no_split(path: Path, split: str, found: Sequence[str]) -> ConfigError:
    have = ", ".join(found) if found else "none"
    return ConfigError(
        f"{path} has no split {split!r} (it has: {have}); pass --split, or give the split's "
        "own folder or file as --data"
    )


def open_table(path: Path | str, *, split: str | None = None, what: str = "dataset") -> Table:
    """The rows of ``split`` in the published table at ``path`` (a file or a folder).

    A single file is one split whatever ``split`` says. Raises `InputError` when ``path`` is
    neither a known file type nor a folder in a known layout, `ConfigError` when the split is
    not there (naming the splits that are).
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise InputError(f"{what} {root} does not exist", path=str(root))
    if root.is_file():
        layouts: dict[str, Layout] = {
            ".parquet": "parquet",
            ".arrow": "hf-disk",
            ".json": "json",
            ".jsonl": "jsonl",
            ".csv": "csv",
        }
        layout = layouts.get(root.suffix.lower())
        if layout is None:
            raise InputError(
                f"{what} {root}: not a table medagent reads (.parquet, .arrow, .json, .jsonl, "
                ".csv, or a folder of Parquet shards or a Hugging Face save_to_disk folder)",
                path=str(root),
            )
        return Table(layout, split, (absolute(root),), absolute(root.parent))
    if (root / "dataset_dict.json").is_file():
        splits = table_splits(root)
        if split is None or split not in splits or not (root / split / "state.json").is_file():
            raise _no_split(root, split or "(none given)", splits)
        root = root / split
    if (root / "state.json").is_file():
        return Table("hf-disk", split, tuple(_hf_disk_files(absolute(root))), absolute(root))
    shards = _parquet_files(root)
    if shards:
        found = list(dict.fromkeys(_shard_split(p.name) for p in shards))
        chosen = [p for p in shards if split is None or _shard_split(p.name) == split]
        if split is not None and not chosen:
            raise _no_split(root, split, found)
        if split is None and len(found) > 1:
            raise _no_split(root, "(none given)", found)
        return Table("parquet", split, tuple(absolute(p) for p in chosen), absolute(root))
    raise InputError(
        f"{what} folder {root} holds no table medagent reads (Parquet shards, a Hugging Face "
        "save_to_disk folder, or the dataset's own files)",
        path=str(root),
    )


# -- reading rows --------------------------------------------------------------------------------
def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise DependencyMissingError("pyarrow", "eval", "Reading Parquet or Arrow data") from None
    return pyarrow


def _read_parquet(path: Path) -> Iterator[Any]:
    pa = _pyarrow()
    try:
        handle = pa.parquet.ParquetFile(path)
        for batch in handle.iter_batches(batch_size=_BATCH_ROWS):
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as error:
        raise InputError(
            f"{path} is not a readable Parquet file ({error})", path=str(path)
        ) from None


def _read_arrow(path: Path) -> Iterator[Any]:
    pa = _pyarrow()
    try:
        with pa.memory_map(str(path)) as source:
            # save_to_disk writes the Arrow streaming format; older versions, the file format.
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:
                source.seek(0)
                reader = pa.ipc.open_file(source)
                for index in range(reader.num_record_batches):
                    yield from reader.get_batch(index).to_pylist()
                return
            for batch in reader:
                yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{path} is not a readable Arrow file ({error})", path=str(path)) from None


def _read_json(path: Path) -> Iterator[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error})", path=str(path)) from None
    if not isinstance(data, list):
        raise InputError(f"{path} should hold a JSON list of objects", path=str(path))
    yield from data


def _read_jsonl(path: Path) -> Iterator[Any]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text ({error.reason})", path=str(path)) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path.name} line {number}: not JSON ({error.msg})") from None


def _read_csv(path: Path) -> Iterator[Any]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            yield from csv.DictReader(handle)
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path} is not a readable CSV file ({error})", path=str(path)) from None


_READERS = {
    "parquet": _read_parquet,
    "hf-disk": _read_arrow,
    "json": _read_json,
    "jsonl": _read_jsonl,
    "csv": _read_csv,
}


# -- images in cells -----------------------------------------------------------------------------
def default_image_dir() -> Path:
    """Where images held inside tables are written: ``CACHE_DIR/dataset-images``."""
    from medagent.settings import Settings

    return Settings().cache_dir / "dataset-images"


def _write_blob(data: bytes, folder: Path, where: str) -> Path:
    if len(data) > MAX_IMAGE_BYTES:
        raise InputError(
            f"{where}: the image cell holds {len(data) / 2**20:.0f} MiB, more than the "
            f"{MAX_IMAGE_BYTES >> 20} MiB an image may have; the table is damaged"
        )
    kind = magic_kind(data[:16])
    if kind is None:
        raise InputError(f"{where}: the image cell does not hold PNG, JPEG, GIF, BMP, TIFF or WebP")
    # Named by content, never by the cell's own path: a name from a file cannot escape the
    # folder, and the same image in two splits or datasets is written once.
    target = folder / f"{hashlib.sha256(data).hexdigest()[:32]}{_EXTENSIONS[kind]}"
    if target.is_file() and target.stat().st_size == len(data):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".part-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def image_file(value: Any, *, base: Path, image_dir: Path, where: str) -> tuple[Path | None, str]:
    """The file behind a row's image cell, and the name the table gives it.

    ``value`` is what the table holds: raw bytes, a Hugging Face image struct ``{"bytes":
    …, "path": …}`` (bytes win; a path alone is read from ``base``), or a path. Bytes are
    written once to ``image_dir`` under their digest. ``(None, name)`` for an empty cell.
    """
    if isinstance(value, dict):
        data, name = value.get("bytes"), value.get("path")
        if data is not None:
            if not isinstance(data, bytes):
                raise InputError(f"{where}: the image bytes are a {type(data).__name__}")
            return _write_blob(data, image_dir, where), str(name or "")
        value = name
    if isinstance(value, bytes):
        return _write_blob(value, image_dir, where), ""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, ""
    if not isinstance(value, str):
        raise InputError(f"{where}: the image cell is a {type(value).__name__}, not a path")
    return absolute(base / Path(value).expanduser()), value
