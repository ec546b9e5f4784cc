"""``index build --executor ray``: many slides' tissue tiles embedded as Ray tasks.

Workers get slide paths and tile regions, never pixels: each opens the slide itself (so every
node must read the slides at the same path, e.g. a shared mount), plans a slide's tiles or
renders and embeds a chunk of them, and returns vectors. The driver alone writes the index,
through the same ``IndexWriter`` as a local build: ids already in the folder are skipped when
planning and again when adding, so a task Ray retries after a worker died, or a rerun after
the driver was killed, never stores a tile twice, and a rerun embeds only what is missing.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from medagent._ray import connect_ray
from medagent.errors import ConfigError, InputError, MedagentError
from medagent.imaging import Region
from medagent.retrieval._embedders import make_embedder
from medagent.retrieval._index import ImageIndex, IndexConfig
from medagent.retrieval._presets import PRESETS
from medagent.retrieval._search import IndexWriter, check_slide_names, render_tiles, slide_tiles
from medagent.retrieval.base import Embedder, IndexRecord, Vectors

__all__ = ["EmbedderSpec", "RayBuild", "build_index_on_ray"]

# A task whose worker process or node died is run again elsewhere (Ray's own retry); the
# driver's id check makes the retry harmless.
_RETRIES = 3


class EmbedderSpec(BaseModel):
    """Which embedder workers build: a name and model, small and picklable where the embedder
    itself (weights, sessions) is not. Built-in names and presets only: a name added with
    ``register_embedder`` lives in the driver's process, not in the workers'."""

    model_config = ConfigDict(frozen=True)

    name: str = "default"
    model: str | None = None

    def build(self) -> Embedder:
        return make_embedder(self.name, self.model)

    def check(self) -> None:
        """Refuse, on the driver, a name no worker can build."""
        if self.name not in ("default", "hf", "timm", "open_clip", *PRESETS):
            raise ConfigError(
                f"embedder {self.name!r} cannot be built on Ray workers; use default, hf, "
                "timm, open_clip or a preset"
            )


@dataclass(frozen=True, slots=True)
class RayBuild:
    """What a build on Ray did: the saved index, tiles planned, embedded now, found already
    in the folder (a resumed build), and how many Ray nodes embedded them."""

    index: ImageIndex
    tiles: int
    embedded: int
    already: int
    nodes: int


@dataclass(frozen=True, slots=True)
class _Embedded:
    node: str
    embedder: str
    dim: int
    vectors: Vectors


@dataclass(frozen=True, slots=True)
class _Failed:
    message: str


@functools.lru_cache(maxsize=2)
def _worker_embedder(spec: EmbedderSpec) -> Embedder:
    """One embedder per worker process: a worker runs many chunks, and loading a model for
    each would cost more than embedding it."""
    return spec.build()


def _plan(path: str, tile_px: int, level: int, min_tissue: float) -> list[IndexRecord] | _Failed:
    """In a worker: a slide's tissue tiles (a slide that cannot be read is a one-line failure)."""
    try:
        return slide_tiles(path, tile_px=tile_px, level=level, min_tissue=min_tissue)
    except MedagentError as exc:
        return _Failed(str(exc))


def _embed(
    spec: EmbedderSpec, path: str, regions: list[Region], tile_px: int
) -> _Embedded | _Failed:
    """In a worker: render ``regions`` of the slide at ``path`` and embed them, in order."""
    import ray

    try:
        embedder = _worker_embedder(spec)
        vectors = embedder.embed_images(render_tiles(path, regions, tile_px))
    except MedagentError as exc:
        return _Failed(str(exc))
    node = ray.get_runtime_context().get_node_id()
    return _Embedded(node=node, embedder=embedder.name, dim=embedder.dim, vectors=vectors)


def build_index_on_ray(
    out: str | Path,
    slides: Sequence[str | Path],
    embedder: EmbedderSpec,
    *,
    address: str | None = None,
    tile_px: int = 256,
    level: int = 0,
    min_tissue: float = 0.5,
    config: IndexConfig | None = None,
    batch_size: int = 64,
    save_interval_s: float = 60.0,
    max_in_flight: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RayBuild:
    """Embed the tissue tiles of ``slides`` into the index at ``out`` on the Ray cluster at
    ``address`` (a local instance when ``None``), ``batch_size`` tiles per task.

    Resumes like ``build_index``: ids in a saved index at ``out`` are not embedded again. The
    driver checkpoints at most once per ``save_interval_s`` and saves what it has before
    raising, so a failed or killed build is rerun with the same call.
    """
    out = Path(out)
    if not slides:
        raise ConfigError("give at least one slide to index")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    check_slide_names(slides)
    embedder.check()
    existing = ImageIndex.load(out) if (out / "manifest.json").exists() else None
    connected = connect_ray(address, os.cpu_count() or 1, what="index build --executor ray")
    try:
        return _Build(out, existing, embedder, config, save_interval_s, progress).run(
            # Absolute: a worker's working folder is not the driver's.
            [str(Path(s).absolute()) for s in slides],
            tile_px,
            level,
            min_tissue,
            batch_size,
            max_in_flight,
        )
    finally:
        if connected:
            import ray

            ray.shutdown()


class _Build:
    """The driver's side: plans in, chunks out, results into one writer."""

    def __init__(
        self,
        out: Path,
        existing: ImageIndex | None,
        spec: EmbedderSpec,
        config: IndexConfig | None,
        save_interval_s: float,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.out, self.spec, self.config = out, spec, config
        self.existing = existing
        self.writer = (
            IndexWriter(out, existing, save_every=1, save_interval_s=save_interval_s)
            if existing is not None
            else None
        )
        self.save_interval_s = save_interval_s
        self.progress = progress
        self.tiles = self.done = self.embedded = self.already = 0
        self.nodes: set[str] = set()

    def run(
        self,
        slides: list[str],
        tile_px: int,
        level: int,
        min_tissue: float,
        batch_size: int,
        max_in_flight: int | None,
    ) -> RayBuild:
        import ray

        plan = ray.remote(num_cpus=1, max_retries=_RETRIES)(_plan)
        embed = ray.remote(num_cpus=1, max_retries=_RETRIES)(_embed)
        cpus = ray.cluster_resources().get("CPU", 1)  # type: ignore[no-untyped-call]
        limit = max_in_flight or max(2, 2 * int(cpus))  # two per CPU: none waits for work
        spec_ref = ray.put(self.spec)
        plans: dict[Any, str] = {
            plan.remote(path, tile_px, level, min_tissue): path for path in slides
        }
        chunks: deque[list[IndexRecord]] = deque()
        in_flight: dict[Any, list[IndexRecord]] = {}
        try:
            while plans or chunks or in_flight:
                while chunks and len(in_flight) < limit:
                    chunk = chunks.popleft()
                    regions = [r.region for r in chunk if r.region is not None]
                    in_flight[embed.remote(spec_ref, chunk[0].source, regions, tile_px)] = chunk
                ready, _ = ray.wait([*plans, *in_flight], num_returns=1)
                for ref in ready:
                    if ref in plans:
                        path = plans.pop(ref)
                        self._planned(path, _result(ref, path), batch_size, chunks)
                    else:
                        chunk = in_flight.pop(ref)
                        self._embedded(chunk, _result(ref, chunk[0].source))
                if self.progress:
                    self.progress(self.done, self.tiles)
        finally:
            if self.writer is not None and self.writer.unsaved:
                self.writer.save()  # what is done stays done, whatever stopped the build
        if self.writer is None:  # no index before, and no vectors came back
            raise InputError(
                f"no tissue tiles in {', '.join(slides)} at {tile_px} px; try a smaller "
                "--tile-px or check the slides show tissue"
            )
        index = self.writer.save()
        return RayBuild(index, self.tiles, self.embedded, self.already, len(self.nodes))

    def _planned(
        self, path: str, result: Any, batch_size: int, chunks: deque[list[IndexRecord]]
    ) -> None:
        if isinstance(result, _Failed):
            raise InputError(result.message, path=path)  # it names the slide
        records: list[IndexRecord] = result
        index = self.writer.index if self.writer is not None else self.existing
        missing = [r for r in records if index is None or not index.contains(r.id)]
        self.tiles += len(records)
        self.already += len(records) - len(missing)
        self.done += len(records) - len(missing)
        for start in range(0, len(missing), batch_size):
            chunks.append(missing[start : start + batch_size])

    def _embedded(self, chunk: list[IndexRecord], result: Any) -> None:
        if isinstance(result, _Failed):
            raise MedagentError(result.message)
        shipped: _Embedded = result
        writer = self._writer_for(shipped.embedder, shipped.dim)
        self.embedded += writer.add(shipped.vectors, chunk)
        self.done += len(chunk)
        self.nodes.add(shipped.node)

    def _writer_for(self, name: str, dim: int) -> IndexWriter:
        """The writer, made when the first vectors tell the embedder's name and dimension (the
        driver never loads the model itself)."""
        if self.writer is None:
            index = ImageIndex(dim, embedder=name, config=self.config)
            self.writer = IndexWriter(
                self.out, index, save_every=1, save_interval_s=self.save_interval_s
            )
        elif (self.writer.index.embedder, self.writer.index.dim) != (name, dim):
            raise ConfigError(
                f"the index at {self.out} holds {self.writer.index.embedder!r} vectors (dim "
                f"{self.writer.index.dim}) but the workers embed with {name!r} (dim {dim}); "
                "build into a new folder or use the embedder it was built with"
            )
        return self.writer


def _result(ref: Any, what: str) -> Any:
    """A task's return value. A task that raised, or whose worker died past Ray's retries, is
    one line; a rerun resumes from the save the driver makes on its way out."""
    import ray

    try:
        return ray.get(ref)
    except Exception as exc:  # Ray says it with RayTaskError, WorkerCrashedError, ...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1][:300] if lines else type(exc).__name__
        raise MedagentError(
            f"a Ray task for {what} failed: {reason}; what was embedded is saved, rerun the "
            "same command to resume"
        ) from None
