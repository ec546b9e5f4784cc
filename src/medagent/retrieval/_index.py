"""``ImageIndex``: FAISS vectors next to SQLite records, saved as one versioned folder.

Design, in the order a reader needs it:

- **Rows.** Every added vector gets a *row*: its position in the raw vector store, its FAISS
  label and its key in SQLite. Keeping the raw vectors (in memory while building, memory-mapped
  after ``load``) costs ``4·dim`` bytes per vector and buys exact re-ranking, the IVF training
  buffer, compaction and switching kinds without asking the caller for the vectors again.
- **Kinds.** ``flat`` (exact), ``hnsw`` (graph), ``ivf`` (IVF-Flat), ``ivfpq`` (IVF with product
  quantization, for millions). All use inner product on unit vectors, i.e. cosine. ``auto``
  starts flat and switches as the index grows (never back): flat below ``flat_below`` (10k)
  vectors, where exact search is fast; IVF-Flat from there; IVF-PQ from ``pq_from`` (3M), where
  full float vectors (4·dim bytes each, twice) stop fitting in memory. IVF-Flat beat HNSW in
  ``benchmarks/bench_index.py`` (1M x 256 clustered, 2 cores): at equal recall@10 it is
  faster (0.97 at 16.4k QPS, nprobe 4; HNSW 0.96 at 6.9k, efSearch 96), it builds 3x faster
  (47 s vs 129 s), and it can delete and run on a GPU. The default nprobe 16 (recall 1.00,
  5.0k QPS there) leaves room for embeddings less clustered than that benchmark's. Each switch
  rebuilds from the stored vectors once.
- **Training.** IVF kinds need k-means before they can hold vectors. Until enough vectors are
  there (39 per list, faiss's rule; 10k when ``nlist`` is automatic) they wait in the raw store
  and searches over them are exact; the add that crosses the threshold trains on a sample and
  indexes everything. With automatic ``nlist`` (≈ 4·√n) the index retrains each time it grows
  fourfold, so lists stay short.
- **Removal.** Removing deletes the record; flat and IVF drop the vector too. HNSW cannot delete,
  so its vector stays in the graph, is filtered out of every search (over-fetching to keep k),
  and goes at ``compact()``, which ``save`` runs when over 10% of rows are dead.
- **Adding.** Vectors must be float, finite, of the index's dimension and L2-normalized to within
  1e-3 (then renormalized exactly): a far-off norm means the wrong embedder or a bug, and quietly
  normalizing would hide it. An id already present, or repeated in the batch, is refused (the
  message names them); to replace a record, ``remove`` it first.
- **Filters.** ``where`` is a mapping (SQL over the record columns, ``extra.<key>`` for
  ``extra``) or a callable on ``IndexRecord``. Searches over-fetch (k × expected factor, then ×4)
  and drop non-matching hits; when matches are too rare for that (more than 2048 to fetch) or
  FAISS runs out (an IVF probes lists with too few), they search the matching vectors exactly,
  so filtered results are never short. A mapping's matching rows are cached until the next
  change, so one query at a time with the same filter does not rescan SQLite.
- **GPU.** With faiss-gpu installed, flat and IVF indexes are copied to all GPUs for searching
  (rebuilt after a change); HNSW has no GPU version and stays on the CPU.
"""

from __future__ import annotations

import importlib
import itertools
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent._version import __version__
from medagent.errors import ConfigError, DependencyMissingError, InputError
from medagent.retrieval._metadata import (
    FILES,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    Manifest,
    MetadataStore,
    corrupt,
    read_manifest,
    refuse_to_overwrite,
    write_folder,
)
from medagent.retrieval.base import Embedder, IndexRecord, Neighbour, Vectors

__all__ = ["FORMAT_VERSION", "ImageIndex", "IndexConfig", "IndexInfo", "IndexKind", "Where"]

IndexKind = Literal["auto", "flat", "ivf", "hnsw", "ivfpq"]
BuiltKind = Literal["flat", "ivf", "hnsw", "ivfpq"]
Where = Mapping[str, Any] | Callable[[IndexRecord], bool] | None

_RANK: dict[BuiltKind, int] = {"flat": 0, "ivf": 1, "hnsw": 1, "ivfpq": 2}
_AUTO_MIDDLE: BuiltKind = "ivf"
_NORM_TOLERANCE = 1e-3
_MIN_TRAIN = 10_000
_RETRAIN_GROWTH = 4
_MAX_FETCH = 2048  # also faiss-gpu's largest k
_COMPACT_ABOVE = 0.1


@cache
def _faiss() -> Any:
    """faiss, imported on first use (it ships no type hints, hence ``Any``)."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        raise DependencyMissingError("faiss-cpu", "retrieval", "The image index") from None


class IndexConfig(BaseModel):
    """How the FAISS side is built and searched; defaults meet recall@10 ≥ 0.95 (see module)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: IndexKind = "auto"
    flat_below: int = Field(10_000, ge=0, description="auto: exact search below this many")
    pq_from: int = Field(3_000_000, ge=1, description="auto: IVF-PQ from this many")
    nlist: int | None = Field(None, ge=1, description="IVF lists; None: ≈4·√n, retrained")
    nprobe: int = Field(16, ge=1, description="IVF lists visited per query")
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW links per node")
    hnsw_ef_search: int = Field(128, ge=1, description="HNSW candidate list while searching")
    hnsw_ef_construction: int = Field(80, ge=1, description="HNSW candidate list while adding")
    pq_m: int | None = Field(None, ge=1, description="PQ sub-vectors; None: one per 4 dims")
    pq_bits: int = Field(8, ge=4, le=12)
    rerank_factor: int = Field(4, ge=1, description="candidates per result when re-ranking")
    use_gpu: bool = Field(True, description="search on GPUs when faiss-gpu has any")
    record_cache: int = Field(
        100_000, ge=0, description="records kept in memory for search results (0: none)"
    )


class IndexInfo(BaseModel):
    """What an index holds, for ``medagent index info`` and for logs."""

    model_config = ConfigDict(frozen=True)

    embedder: str
    dim: int
    kind: BuiltKind = Field(description="the kind built now (``auto`` resolves to one)")
    config: IndexConfig
    count: int
    domains: dict[str, int] = Field(description="records per domain; '' for none")
    labels: dict[str, int] = Field(description="records per label; '' for none")
    trained: bool = Field(description="False while IVF vectors wait in the exact buffer")
    pending_removals: int = Field(description="removed vectors HNSW keeps until compact()")
    on_gpu: bool


class ImageIndex:
    """Vectors from one embedder with their records: add, remove, search, save, load.

    Thread-safe: one lock serializes calls (FAISS parallelizes each search internally).
    """

    def __init__(
        self, dim: int, *, embedder: str = "unknown", config: IndexConfig | None = None
    ) -> None:
        if dim < 1:
            raise ConfigError(f"index dimension must be positive, got {dim}")
        self._config = config or IndexConfig()
        self._dim = dim
        self._embedder = embedder
        self._lock = threading.RLock()
        self._meta = MetadataStore()
        self._vectors: npt.NDArray[np.float32] = np.empty((0, dim), np.float32)
        self._live = np.zeros(0, bool)
        self._nrows = 0  # rows used in _vectors (live or removed)
        self._nlive = 0
        self._stale = 0  # rows FAISS still returns although removed (HNSW)
        self._trained_at = 0
        self._kind: BuiltKind = self._first_kind()
        self._index: Any = None
        self._new_index(0)
        self._gpu: Any = None
        self._masks: dict[tuple[tuple[str, str], ...], npt.NDArray[np.bool_]] = {}
        self._records: dict[int, IndexRecord] = {}  # by row; see _cached_records
        self._gpu_failed = False
        self._created = self._updated = _now()

    @classmethod
    def for_embedder(cls, embedder: Embedder, config: IndexConfig | None = None) -> ImageIndex:
        """An empty index for ``embedder``'s vectors, recording its name and dimension."""
        return cls(embedder.dim, embedder=embedder.name, config=config)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def embedder(self) -> str:
        return self._embedder

    @property
    def config(self) -> IndexConfig:
        return self._config

    @property
    def kind(self) -> BuiltKind:
        """The kind built now; under ``auto`` it changes as the index grows."""
        return self._kind

    @property
    def faiss_index(self) -> Any:
        """The CPU FAISS index (labels are internal rows), for benchmarks and inspection only."""
        return self._index

    def __len__(self) -> int:
        return self._nlive

    def __contains__(self, record_id: object) -> bool:
        return isinstance(record_id, str) and self.contains(record_id)

    def __repr__(self) -> str:
        return f"ImageIndex({self._embedder!r}, dim={self._dim}, {self._kind}, n={self._nlive})"

    def contains(self, record_id: str) -> bool:
        """Whether ``record_id`` is stored; lets an interrupted build skip what it has done."""
        return self._meta.contains(record_id)

    def ids(self) -> list[str]:
        """Every stored id, oldest first."""
        return self._meta.ids()

    def get(self, record_id: str) -> IndexRecord | None:
        """The record stored under ``record_id``, if any."""
        return self._meta.get_by_id(record_id)

    def add(self, vectors: Vectors, records: Iterable[IndexRecord]) -> None:
        """Add one vector per record; see the module docstring for what is refused and why."""
        x = self._check_vectors(vectors, "vectors")
        batch = list(records)
        if len(batch) != len(x):
            raise InputError(f"got {len(x)} vectors but {len(batch)} records; they pair one to one")
        if not batch:
            return
        ids = [r.id for r in batch]
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:
            raise InputError(f"ids repeated within this batch: {_some(repeated)}")
        with self._lock:
            present = self._meta.existing(ids)
            if present:
                raise InputError(
                    f"ids already in the index: {_some(present)}; remove them first to replace"
                )
            start = self._nrows
            rows = np.arange(start, start + len(x), dtype=np.int64)
            with self._meta.transaction():
                self._meta.insert(rows, batch)
                self._append(x)
                try:
                    self._index_rows(rows)
                except BaseException:
                    self._live[start : self._nrows] = False
                    self._nrows, self._nlive = start, self._nlive - len(x)
                    raise
            self._changed()
            self._grow()

    def remove(self, ids: Iterable[str]) -> int:
        """Remove records by id; unknown ids are ignored. How many were removed."""
        wanted = [ids] if isinstance(ids, str) else list(dict.fromkeys(ids))
        with self._lock:
            rows = self._meta.delete(wanted)
            if not rows.size:
                return 0
            self._live[rows] = False
            self._nlive -= len(rows)
            self._records.clear()
            if self._kind == "hnsw":
                self._stale += len(rows)
            elif self._index.is_trained and self._index.ntotal:
                self._index.remove_ids(rows)
            self._changed()
            return len(rows)

    def compact(self) -> None:
        """Drop removed vectors for good: renumber rows and re-add the live ones (no retraining)."""
        with self._lock:
            if self._nrows != self._nlive or self._stale:
                self._rebuild(self._kind, retrain=False)

    def search(
        self, queries: Vectors, k: int = 10, *, where: Where = None, rerank: bool | None = None
    ) -> list[list[Neighbour]]:
        """The ``k`` nearest records to each query row, best first (fewer if fewer match).

        ``rerank`` recomputes exact inner products over ``k × rerank_factor`` candidates; by
        default only IVF-PQ (whose scores are approximate) re-ranks.
        """
        q = self._check_vectors(queries, "queries")
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        with self._lock:
            exact = self._kind == "flat" or not self._index.is_trained
            if rerank is None:
                rerank = self._kind == "ivfpq"
            want = k * self._config.rerank_factor if rerank and not exact else k
            cache: dict[int, IndexRecord] = {}
            rows, scores = self._candidates(q, want, where, cache)
            if rerank and not exact:
                rows, scores = self._rerank(q, rows, k)
            rows, scores = rows[:, :k], scores[:, :k]
            cache = self._cached_records(rows, cache)
            return [
                [Neighbour(cache[r], s) for r, s in zip(row, score, strict=True) if r >= 0]
                for row, score in zip(rows.tolist(), scores.tolist(), strict=True)
            ]

    def search_one(
        self, vector: Vectors, k: int = 10, *, where: Where = None, rerank: bool | None = None
    ) -> list[Neighbour]:
        """``search`` for a single (dim,) vector."""
        return self.search(np.asarray(vector).reshape(1, -1), k, where=where, rerank=rerank)[0]

    def info(self) -> IndexInfo:
        with self._lock:
            return IndexInfo(
                embedder=self._embedder,
                dim=self._dim,
                kind=self._kind,
                config=self._config,
                count=self._nlive,
                domains=self._meta.counts("domain"),
                labels=self._meta.counts("label"),
                trained=bool(self._index.is_trained),
                pending_removals=self._stale,
                on_gpu=self._gpu is not None,
            )

    def save(self, folder: str | Path, *, compact: bool | None = None) -> Path:
        """Write the index to ``folder`` as a whole: a new copy is built beside it, then swapped.

        The previous version stays in place until the new one is complete; only between two
        renames is it named ``.<folder>.old-…`` (a crash there leaves both on disk).
        ``compact=None`` compacts when over 10% of rows are removed ones.
        """
        folder = Path(folder)
        with self._lock:
            refuse_to_overwrite(folder)
            garbage = self._nrows - self._nlive
            if compact or (compact is None and garbage > _COMPACT_ABOVE * self._nrows):
                self.compact()
            self._updated = _now()
            manifest = Manifest(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                medagent_version=__version__,
                embedder=self._embedder,
                dim=self._dim,
                kind=self._kind,
                config=self._config.model_dump(),
                count=self._nlive,
                rows=self._nrows,
                trained_at=self._trained_at,
                created=self._created,
                updated=self._updated,
            )

            def write(tmp: Path) -> None:
                _faiss().write_index(self._index, str(tmp / FILES["index"]))
                np.save(tmp / FILES["vectors"], self._vectors[: self._nrows])
                self._meta.save(tmp / FILES["metadata"])
                (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2))

            write_folder(folder, write)
            if not self._vectors.flags.writeable:  # memory-mapped from a folder just replaced
                self._vectors = np.load(folder / FILES["vectors"], mmap_mode="r")
        return folder

    @staticmethod
    def read_manifest(folder: str | Path) -> Manifest:
        """What a saved index holds (embedder, dim, kind, counts, dates), without loading it."""
        return read_manifest(Path(folder))

    @classmethod
    def load(cls, folder: str | Path, *, embedder: Embedder | None = None) -> ImageIndex:
        """An index saved by ``save``; raw vectors stay memory-mapped until the next ``add``.

        A missing, corrupt or other-version folder is a one-line ``InputError``; an index
        built by another embedder than ``embedder`` is a ``ConfigError``.
        """
        folder = Path(folder)
        manifest = read_manifest(folder)
        try:
            config = IndexConfig.model_validate(manifest.config)
        except ValidationError:
            raise corrupt(folder, "its manifest holds an invalid configuration") from None
        if embedder is not None and (embedder.name, embedder.dim) != (
            manifest.embedder,
            manifest.dim,
        ):
            raise ConfigError(
                f"the index at {folder} holds {manifest.embedder!r} vectors (dim {manifest.dim})"
                f" but the embedder is {embedder.name!r} (dim {embedder.dim}); rebuild the index"
                " or configure the embedder it was built with"
            )
        self = cls(manifest.dim, embedder=manifest.embedder, config=config)
        self._meta = MetadataStore.load(folder / FILES["metadata"])
        try:
            index = _faiss().read_index(str(folder / FILES["index"]))
            vectors = np.load(folder / FILES["vectors"], mmap_mode="r")
        except (OSError, RuntimeError, ValueError) as exc:
            raise corrupt(folder, f"unreadable index data ({str(exc).splitlines()[0]})") from None
        rows = self._meta.rows()
        if (
            vectors.dtype != np.float32
            or vectors.shape != (manifest.rows, manifest.dim)
            or index.d not in (manifest.dim, self._pq_shape()[0])
            or len(rows) != manifest.count
            or (rows.size and rows[-1] >= manifest.rows)
        ):
            raise corrupt(folder, "its files disagree with each other")
        self._kind, self._index, self._vectors = manifest.kind, index, vectors
        self._nrows, self._nlive = manifest.rows, manifest.count
        self._trained_at = manifest.trained_at
        self._live = np.zeros(manifest.rows, bool)
        self._live[rows] = True
        self._stale = int(index.ntotal) - self._nlive if index.is_trained else 0
        self._created, self._updated = manifest.created, manifest.updated
        try:
            self._apply_search_params()
        except AttributeError:  # e.g. a flat index where the manifest says IVF
            raise corrupt(folder, f"index.faiss does not hold a {manifest.kind} index") from None
        return self

    # -- building ----------------------------------------------------------------------------

    def _first_kind(self) -> BuiltKind:
        kind = self._config.kind
        return self._auto_kind(0) if kind == "auto" else kind

    def _auto_kind(self, n: int) -> BuiltKind:
        if n < self._config.flat_below:
            return "flat"
        return _AUTO_MIDDLE if n < self._config.pq_from else "ivfpq"

    def _new_index(self, n: int) -> None:
        """A new, empty FAISS index of ``self._kind``; IVF lists from ``n`` unless configured."""
        faiss, cfg, d, kind = _faiss(), self._config, self._dim, self._kind
        ip = faiss.METRIC_INNER_PRODUCT
        if kind == "flat":
            index = faiss.IndexIDMap(faiss.IndexFlatIP(d))
        elif kind == "hnsw":
            index = faiss.IndexIDMap(faiss.IndexHNSWFlat(d, cfg.hnsw_m, ip))
            faiss.downcast_index(index.index).hnsw.efConstruction = cfg.hnsw_ef_construction
        else:
            nlist = cfg.nlist or _auto_nlist(n)
            if kind == "ivfpq":
                d, pq_m = self._pq_shape()
            quantizer = faiss.IndexFlatIP(d)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, d, nlist, ip)
            else:
                index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, cfg.pq_bits, ip)
        self._index = index
        self._apply_search_params()

    def _pq_shape(self) -> tuple[int, int]:
        """(dimension, sub-vectors) for IVF-PQ, whose sub-vectors must divide the dimension.

        A dimension that does not split (the default embedder's 302) is padded with zeros,
        which change no inner product; by default each sub-vector has 4 dimensions.
        """
        step = self._config.pq_m or 8
        padded = -(-self._dim // step) * step
        return padded, self._config.pq_m or padded // 4

    def _padded(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        pad = int(self._index.d) - self._dim
        return x if pad == 0 else np.pad(x, ((0, 0), (0, pad)))

    def _apply_search_params(self) -> None:
        faiss, cfg = _faiss(), self._config
        if self._kind == "hnsw":
            faiss.downcast_index(self._index.index).hnsw.efSearch = cfg.hnsw_ef_search
        elif self._kind in ("ivf", "ivfpq"):
            self._index.nprobe = min(cfg.nprobe, self._index.nlist)

    def _train_size(self) -> int:
        """Vectors needed before an IVF index is trained (39 per list and per PQ centroid)."""
        need = 39 * self._config.nlist if self._config.nlist else _MIN_TRAIN
        if self._kind == "ivfpq":
            need = max(need, 39 * 2**self._config.pq_bits)
        return need

    def _append(self, x: npt.NDArray[np.float32]) -> None:
        end = self._nrows + len(x)
        if end > len(self._vectors) or not self._vectors.flags.writeable:
            capacity = max(end, len(self._vectors) * 3 // 2, 1024)
            vectors = np.empty((capacity, self._dim), np.float32)
            vectors[: self._nrows] = self._vectors[: self._nrows]
            live = np.zeros(capacity, bool)
            live[: self._nrows] = self._live[: self._nrows]
            self._vectors, self._live = vectors, live
        self._vectors[self._nrows : end] = x
        self._live[self._nrows : end] = True
        self._nrows, self._nlive = end, self._nlive + len(x)

    def _index_rows(self, rows: npt.NDArray[np.int64]) -> None:
        """Put ``rows`` into FAISS; an untrained IVF index waits, then trains and takes all."""
        if not self._index.is_trained:
            if self._nlive < self._train_size():
                return
            rows = np.flatnonzero(self._live[: self._nrows]).astype(np.int64)
            self._new_index(len(rows))
            sample = rows
            limit = max(64 * self._index.nlist, 64 * 2**self._config.pq_bits)
            if len(rows) > limit:
                sample = np.sort(np.random.default_rng(0).choice(rows, limit, replace=False))
            self._index.train(self._padded(self._vectors[sample]))
            self._trained_at = len(rows)
        for start in range(0, len(rows), 65_536):  # bounded temporary copies
            chunk = rows[start : start + 65_536]
            self._index.add_with_ids(self._padded(self._vectors[chunk]), chunk)

    def _grow(self) -> None:
        """Switch ``auto`` to the next kind, or retrain an outgrown automatic IVF."""
        target = self._auto_kind(self._nlive) if self._config.kind == "auto" else self._kind
        if _RANK[target] > _RANK[self._kind]:
            self._rebuild(target, retrain=True)
        elif (
            self._kind in ("ivf", "ivfpq")
            and self._config.nlist is None
            and self._trained_at
            and self._nlive >= _RETRAIN_GROWTH * self._trained_at
        ):
            self._rebuild(self._kind, retrain=True)

    def _rebuild(self, kind: BuiltKind, *, retrain: bool) -> None:
        """Renumber live rows to 0..n-1 and re-add them, into a new index if ``retrain``."""
        live = np.flatnonzero(self._live[: self._nrows]).astype(np.int64)
        if len(live) != self._nrows:
            self._records.clear()
            self._meta.renumber(live)
            self._vectors = np.ascontiguousarray(self._vectors[live])
            self._live = np.ones(len(live), bool)
            self._nrows = len(live)
        if retrain or kind != self._kind:
            self._kind, self._trained_at = kind, 0
            self._new_index(self._nrows)
        else:
            self._index.reset()
        self._stale = 0
        self._changed()
        if self._nrows:
            self._index_rows(np.arange(self._nrows, dtype=np.int64))

    # -- searching ---------------------------------------------------------------------------

    def _check_vectors(self, vectors: Vectors, what: str) -> npt.NDArray[np.float32]:
        x = np.asarray(vectors)
        if x.ndim != 2:
            raise InputError(f"{what} must be a 2-D array (n, {self._dim}); got shape {x.shape}")
        if x.shape[1] != self._dim:
            raise ConfigError(
                f"{what} have dimension {x.shape[1]} but the index holds {self._dim}-d vectors "
                f"from {self._embedder!r}; use the embedder the index was built with"
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise InputError(f"{what} must be float32 (got {x.dtype})")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise InputError(f"{what} rows {_some(bad.tolist())} contain NaN or infinity")
        norms = np.linalg.norm(x, axis=1)
        off = np.abs(norms - 1)
        bad = np.flatnonzero(off > _NORM_TOLERANCE)
        if bad.size:
            shown = ", ".join(f"{i} (norm {norms[i]:.4g})" for i in bad[:5])
            raise InputError(f"{what} must be L2-normalized; rows {shown} are not")
        if off.size and off.max() > 1e-6:
            x = x / norms[:, None]
        return x

    def _searcher(self) -> Any:
        """The GPU copy when faiss-gpu sees a GPU and the kind has a GPU version, else the CPU."""
        if self._gpu is not None:
            return self._gpu
        faiss = _faiss()
        if (
            self._config.use_gpu
            and not self._gpu_failed
            and self._kind != "hnsw"
            and getattr(faiss, "get_num_gpus", lambda: 0)() > 0
        ):
            try:
                self._gpu = faiss.index_cpu_to_all_gpus(self._index)
                return self._gpu
            except RuntimeError:  # e.g. a PQ size the GPU code lacks: search on the CPU
                self._gpu_failed = True
        return self._index

    def _changed(self) -> None:
        """Forget what depends on the contents: the GPU copy and the filter masks."""
        self._gpu = None
        self._masks.clear()

    def _filter_mask(self, where: Mapping[str, Any]) -> npt.NDArray[np.bool_]:
        """Rows matching ``where``, kept until the next change: one query at a time with the
        same filter (an agent's) would otherwise pay an SQL scan of every match per query."""
        key = tuple(sorted((name, repr(value)) for name, value in where.items()))
        if key not in self._masks:
            if len(self._masks) >= 8:
                self._masks.clear()
            mask = np.zeros(self._nrows, bool)
            mask[self._meta.matching(where)] = True
            self._masks[key] = mask
        return self._masks[key]

    def _candidates(
        self,
        q: npt.NDArray[np.float32],
        want: int,
        where: Where,
        cache: dict[int, IndexRecord],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(rows, scores), (nq, want), best first, -1 where fewer match; see module docstring."""
        predicate: Callable[[IndexRecord], bool] | None = None
        mask: npt.NDArray[np.bool_] | None = None
        if isinstance(where, Mapping):
            mask = self._filter_mask(where)
        elif callable(where):
            predicate = where
        elif where is not None:
            raise ConfigError(f"where must be a mapping or a callable, not {type(where).__name__}")
        if mask is None and self._stale:
            mask = self._live[: self._nrows]
        n_ok = int(mask.sum()) if mask is not None else self._nlive
        indexed = int(self._index.ntotal) if self._index.is_trained else 0
        fetch = math.ceil(want * indexed / max(n_ok, 1) * (1.2 if mask is not None else 1))
        if predicate is not None:
            fetch = want * 4
        rows = np.full((len(q), want), -1, np.int64)
        scores = np.full((len(q), want), -np.inf, np.float32)
        if n_ok == 0:
            return rows, scores
        pending, give_up = np.arange(len(q)), np.zeros(0, np.int64)
        if indexed and fetch <= _MAX_FETCH:
            verdicts: dict[int, bool] = {}
            while True:
                fetch = min(fetch, indexed)
                found_scores, found = self._searcher().search(self._padded(q[pending]), fetch)
                ok = found >= 0
                full = ok.all(axis=1)  # else FAISS has no more to give (IVF: lists probed)
                if mask is not None:
                    ok &= mask[np.where(ok, found, 0)]
                if predicate is not None:
                    ok &= self._judge(found, ok, predicate, cache, verdicts)
                done = (ok.sum(axis=1) >= want) | (full & (fetch >= indexed))
                width = min(want, fetch)
                if not ok.all():  # matches first, in score order; the rest become -1
                    first = np.argsort(~ok, axis=1, kind="stable")[:, :width]
                    kept = np.take_along_axis(ok, first, axis=1)
                    found = np.where(kept, np.take_along_axis(found, first, axis=1), -1)
                    found_scores = np.where(
                        kept, np.take_along_axis(found_scores, first, axis=1), -np.inf
                    )
                rows[pending[done], :width] = found[done, :width]
                scores[pending[done], :width] = found_scores[done, :width]
                stuck = ~done & (~full | (fetch * 4 > _MAX_FETCH))
                give_up = np.concatenate([give_up, pending[stuck]])
                pending = pending[~done & ~stuck]
                if not pending.size:
                    break
                fetch *= 4
        pending = np.sort(np.concatenate([give_up, pending]))
        if pending.size:  # exact: untrained buffer, or matches too rare to fetch
            if predicate is not None:
                cache.update(self._meta.all_records())
                matches = [r for r, record in cache.items() if predicate(record)]
                candidates = np.sort(np.array(matches, np.int64))
            elif mask is not None:
                candidates = np.flatnonzero(mask).astype(np.int64)
            else:
                candidates = np.flatnonzero(self._live[: self._nrows]).astype(np.int64)
            rows[pending], scores[pending] = self._exact(q[pending], candidates, want)
        return rows, scores

    def _cached_records(
        self, rows: npt.NDArray[np.int64], fetched: dict[int, IndexRecord]
    ) -> dict[int, IndexRecord]:
        """The records of ``rows``, from memory where possible.

        A record costs about 6 µs to read from SQLite and rebuild, as much as the FAISS search
        itself at 10 hits per query; kept in memory (first in, first out, up to
        ``config.record_cache``), repeated hits cost a dict lookup. Rows are only renumbered
        or removed under the lock, which clears this.
        """
        known = self._records
        wanted = {r for r in rows.ravel().tolist() if r not in known and r >= 0}
        new = {r: fetched[r] for r in wanted if r in fetched}
        missing = [r for r in wanted if r not in new]
        if missing:
            new.update(self._meta.get(np.array(missing, np.int64)))
        limit = self._config.record_cache
        if len(new) > limit:  # more than fits: serve them without keeping them
            return known | new
        overflow = len(known) + len(new) - limit
        if overflow > 0:  # drop the oldest
            for row in list(itertools.islice(known, overflow)):
                del known[row]
        known.update(new)
        return known

    def _judge(
        self,
        found: npt.NDArray[np.int64],
        ok: npt.NDArray[np.bool_],
        predicate: Callable[[IndexRecord], bool],
        cache: dict[int, IndexRecord],
        verdicts: dict[int, bool],
    ) -> npt.NDArray[np.bool_]:
        """The callable filter over FAISS hits, each record fetched and judged once."""
        unseen = np.setdiff1d(found[ok], np.fromiter(verdicts, np.int64, len(verdicts)))
        fetched = self._meta.get(unseen)
        cache.update(fetched)
        verdicts.update({r: bool(predicate(rec)) for r, rec in fetched.items()})
        verdicts.update({int(r): False for r in unseen if int(r) not in fetched})
        judged = np.array([verdicts.get(r, False) for r in found.ravel().tolist()], bool)
        return judged.reshape(found.shape) & ok

    def _exact(
        self, q: npt.NDArray[np.float32], candidates: npt.NDArray[np.int64], want: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Brute-force top-``want`` over ``candidates``, in blocks of bounded memory (64 MB)."""
        rows = np.full((len(q), want), -1, np.int64)
        scores = np.full((len(q), want), -np.inf, np.float32)
        per_block = min(len(candidates), 65_536)
        q_block = max(1, 2**24 // max(per_block, 1))
        for start in range(0, len(candidates), per_block):
            chunk = candidates[start : start + per_block]
            vectors = self._vectors[chunk]
            for first in range(0, len(q), q_block):
                block = slice(first, first + q_block)
                # the best so far, then this chunk: keep the best ``want`` of both
                sims = np.concatenate([scores[block], q[block] @ vectors.T], axis=1)
                ids = np.concatenate([rows[block], np.broadcast_to(chunk, sims[:, want:].shape)], 1)
                top = np.argpartition(-sims, want - 1, axis=1)[:, :want]
                top_sims = np.take_along_axis(sims, top, axis=1)
                order = np.argsort(-top_sims, axis=1, kind="stable")
                rows[block] = np.take_along_axis(ids, np.take_along_axis(top, order, 1), 1)
                scores[block] = np.take_along_axis(top_sims, order, axis=1)
        rows[~np.isfinite(scores)] = -1
        return rows, scores

    def _rerank(
        self, q: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Exact inner products of the candidates, re-sorted; the best ``k`` of each row."""
        exact = np.empty(rows.shape, np.float32)
        for start in range(0, len(q), 256):  # the gathered vectors: 256 x fetch x dim floats
            block = slice(start, start + 256)
            gathered = self._vectors[np.maximum(rows[block], 0)]
            exact[block] = np.matmul(gathered, q[block, :, None])[:, :, 0]
        exact[rows < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(rows, order, axis=1), np.take_along_axis(exact, order, axis=1)


_read_manifest = read_manifest  # the name ``_search.open_index`` imports; prefer the method


def _auto_nlist(n: int) -> int:
    """≈ 4·√n lists, at least 39 training vectors each (faiss warns below that)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39, 65_536))


def _some(items: list[Any], shown: int = 5) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(repr(i) for i in items[:shown]) + more


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
