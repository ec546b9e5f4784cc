"""Searching an index with images, and building one from images, a dataset or a slide.

``IndexSearcher`` is what tools and agents get (it satisfies ``medagent.tools.ImageSearcher``).
Builders embed in batches with a progress callback and save every few batches, so an
interrupted build resumes where it stopped (ids already in the index are skipped).
"""

from __future__ import annotations

import csv
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from PIL import Image

from medagent.errors import ConfigError, InputError, MedagentError
from medagent.imaging import (
    Region,
    Renderer,
    Slide,
    iter_tissue_tiles,
    open_image,
    tissue_mask,
)
from medagent.retrieval._embedders import make_embedder
from medagent.retrieval._index import ImageIndex, IndexConfig
from medagent.retrieval._router import DOMAINS
from medagent.retrieval.base import Embedder, IndexRecord, Vectors
from medagent.tools import SimilarImage

__all__ = [
    "IndexSearcher",
    "IndexWriter",
    "build_index",
    "check_slide_names",
    "images_from_dataset",
    "images_from_folder",
    "images_from_slide",
    "images_from_slides",
    "open_index",
    "render_tiles",
    "slide_tiles",
]

Progress = Callable[[int, int], None]
ImageSource = Callable[[], Image.Image]
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".webp"}


def _embedder_for(name: str) -> Embedder:
    """The embedder an index was built with, from the name in its manifest."""
    if name.startswith("default"):
        return make_embedder("default")
    return make_embedder("hf", name)


def open_index(folder: str | Path, embedder: Embedder | None = None) -> IndexSearcher:
    """Load an index and the embedder it was built with (or check the one given)."""
    if embedder is None:
        embedder = _embedder_for(ImageIndex.read_manifest(folder).embedder)
    return IndexSearcher(ImageIndex.load(folder, embedder=embedder), embedder)


class IndexSearcher:
    """An index plus its embedder: images in, similar cases out."""

    def __init__(self, index: ImageIndex, embedder: Embedder) -> None:
        self.index = index
        self.embedder = embedder

    def search_image(self, image: Image.Image, k: int, domain: str | None) -> list[SimilarImage]:
        vector = self.embedder.embed_images([image])[0]
        where = {"domain": domain} if domain else None
        return [
            SimilarImage(
                id=n.record.id,
                source=n.record.source,
                score=n.score,
                label=n.record.label,
                domain=n.record.domain,
                report=n.record.report,
                region=n.record.region,
            )
            for n in self.index.search_one(vector, k, where=where)
        ]

    def thumbnail(self, hit: SimilarImage, long_side: int) -> Image.Image | None:
        """The hit's image (its region, for slide tiles); ``None`` when the source is gone."""
        try:
            slide = open_image(hit.source)
        except MedagentError:
            return None
        with slide:
            renderer = Renderer(slide)
            view = (
                renderer.render(hit.region, long_side)
                if hit.region
                else renderer.overview(long_side)
            )
            return view.image


def images_from_folder(
    folder: str | Path, labels_csv: str | Path | None = None
) -> Iterator[tuple[IndexRecord, ImageSource]]:
    """Every image file below ``folder``; labels (and domain, report) from an optional CSV.

    The CSV has a header with ``file`` (path relative to ``folder``, or a file name) and any of
    ``label``, ``domain``, ``report``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder of images", path=str(root))
    facts: dict[str, dict[str, str]] = {}
    if labels_csv is not None:
        with Path(labels_csv).open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "file" not in reader.fieldnames:
                raise InputError(f"{labels_csv} needs a 'file' column", path=str(labels_csv))
            for row in reader:
                facts[row["file"]] = row
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES):
        relative = str(path.relative_to(root))
        row = facts.get(relative) or facts.get(path.name) or {}
        domain = row.get("domain") or None
        if domain is not None and domain not in DOMAINS:
            raise InputError(
                f"{labels_csv}: domain {domain!r} for {relative} is not one of "
                f"{', '.join(DOMAINS)}",
                path=str(labels_csv),
            )
        record = IndexRecord.model_validate(
            {
                "id": relative,
                "source": str(path),
                "label": row.get("label") or None,
                "domain": domain,
                "report": row.get("report") or None,
            }
        )
        yield record, functools.partial(_read, path)


def _render(renderer: Renderer, region: Region, long_side: int) -> Image.Image:
    return renderer.render(region, long_side).image


def _read(path: Path) -> Image.Image:
    with open_image(path) as slide:
        return Renderer(slide).overview(512).image


def images_from_dataset(
    items: Iterable[object], *, domain: str = "radiology"
) -> Iterator[tuple[IndexRecord, ImageSource]]:
    """One record per distinct image of an evaluation dataset (e.g. VQA-RAD), label = task.

    The report is the dataset's first question/answer about the image — what a case report
    would be for retrieval-augmented answering.
    """
    seen: set[str] = set()
    for item in items:
        for image in getattr(item, "images", []):
            if image in seen:
                continue
            seen.add(image)
            task = str(getattr(item, "task", ""))
            question, answer = getattr(item, "question", ""), getattr(item, "answer", None)
            report = f"{question} {answer}" if answer else None
            record = IndexRecord.model_validate(
                {
                    "id": Path(image).name,
                    "source": image,
                    "label": task.split("/")[0] or None,
                    "domain": domain,
                    "report": report,
                }
            )
            yield record, functools.partial(_read, Path(image))


def images_from_slide(
    path: str | Path,
    *,
    tile_px: int = 256,
    level: int = 0,
    min_tissue: float = 0.5,
    label: str | None = None,
) -> Iterator[tuple[IndexRecord, ImageSource]]:
    """The tissue tiles of a slide, each with its level-0 region."""
    slide = open_image(path)
    renderer = Renderer(slide)
    for record in _tiles(slide, renderer, path, tile_px, level, min_tissue, label):
        assert record.region is not None
        yield record, functools.partial(_render, renderer, record.region, tile_px)


def images_from_slides(
    paths: Sequence[str | Path],
    *,
    tile_px: int = 256,
    level: int = 0,
    min_tissue: float = 0.5,
    label: str | None = None,
) -> Iterator[tuple[IndexRecord, ImageSource]]:
    """The tissue tiles of several slides, one after another; refused at once when two
    slides share a file name (it starts every tile id)."""
    check_slide_names(paths)
    return itertools.chain.from_iterable(
        images_from_slide(p, tile_px=tile_px, level=level, min_tissue=min_tissue, label=label)
        for p in paths
    )


def slide_tiles(
    path: str | Path,
    *,
    tile_px: int = 256,
    level: int = 0,
    min_tissue: float = 0.5,
    label: str | None = None,
) -> list[IndexRecord]:
    """The records ``images_from_slide`` yields, without pixels: what a parallel build plans."""
    with open_image(path) as slide:
        return list(_tiles(slide, Renderer(slide), path, tile_px, level, min_tissue, label))


def render_tiles(path: str | Path, regions: Sequence[Region], tile_px: int) -> list[Image.Image]:
    """The pixels ``images_from_slide`` gives for ``regions``, the slide opened once."""
    with open_image(path) as slide:
        renderer = Renderer(slide)
        return [_render(renderer, region, tile_px) for region in regions]


def check_slide_names(slides: Sequence[str | Path]) -> None:
    """Tile ids start with the slide's file name, so two slides must not share one."""
    seen: dict[str, Path] = {}
    for slide in map(Path, slides):
        if slide.name in seen:
            raise ConfigError(
                f"{seen[slide.name]} and {slide} share the file name {slide.name!r}, which "
                "starts every tile id; index each once, under distinct names"
            )
        seen[slide.name] = slide


def _tiles(
    slide: Slide,
    renderer: Renderer,
    path: str | Path,
    tile_px: int,
    level: int,
    min_tissue: float,
    label: str | None,
) -> Iterator[IndexRecord]:
    mask = tissue_mask(renderer)
    for tile in iter_tissue_tiles(slide, mask, tile_px=tile_px, level=level, min_tissue=min_tissue):
        region: Region = tile.region
        yield IndexRecord(
            id=f"{Path(path).name}@{region.x},{region.y},{region.width},{region.height}",
            source=str(path),
            region=region,
            label=label,
            domain="pathology",
        )


class IndexWriter:
    """The one writer of an index folder during a build: adds only ids it lacks (a batch that
    arrives twice is harmless) and checkpoints every ``save_every`` batches, at most once per
    ``save_interval_s``, so an interrupted build resumes where it stopped."""

    def __init__(
        self, out: Path, index: ImageIndex, *, save_every: int = 20, save_interval_s: float = 60.0
    ) -> None:
        self.out, self.index = out, index
        self._save_every, self._interval = max(1, save_every), save_interval_s
        self._batches = 0
        self._unsaved = False
        self._last_save = time.monotonic()

    def add(self, vectors: Vectors, records: Sequence[IndexRecord]) -> int:
        """Add the records the index lacks; how many were new."""
        keep = [n for n, record in enumerate(records) if not self.index.contains(record.id)]
        if keep:
            self.index.add(vectors[keep], [records[n] for n in keep])
            self._unsaved = True
        self._batches += 1
        # A save rewrites the whole folder: checkpoint every few batches, but not too often
        # for big indexes.
        if (
            self._batches % self._save_every == 0
            and time.monotonic() - self._last_save >= self._interval
        ):
            self.save()
        return len(keep)

    def save(self) -> ImageIndex:
        """Write the index now (also when nothing changed, so a new build leaves a folder)."""
        self.index.save(self.out)
        self._unsaved = False
        self._last_save = time.monotonic()
        return self.index

    @property
    def unsaved(self) -> bool:
        return self._unsaved


def build_index(
    out: str | Path,
    sources: Iterable[tuple[IndexRecord, ImageSource]],
    embedder: Embedder,
    *,
    config: IndexConfig | None = None,
    batch_size: int = 64,
    save_every: int = 20,
    save_interval_s: float = 60.0,
    progress: Progress | None = None,
    total: int | None = None,
) -> ImageIndex:
    """Embed ``sources`` into the index at ``out`` (created, or resumed if it exists).

    Progress is saved every ``save_every`` batches, at most once per ``save_interval_s``, so an
    interrupted build loses little and resumes: ids already in the index are skipped.
    """
    out = Path(out)
    index = (
        ImageIndex.load(out, embedder=embedder)
        if (out / "manifest.json").exists()
        else ImageIndex.for_embedder(embedder, config)
    )
    writer = IndexWriter(out, index, save_every=save_every, save_interval_s=save_interval_s)
    batch: list[tuple[IndexRecord, ImageSource]] = []
    done = 0

    def flush() -> None:
        if not batch:
            return
        images = [load() for _, load in batch]
        writer.add(embedder.embed_images(images), [record for record, _ in batch])
        batch.clear()

    for record, load in sources:
        done += 1
        if index.contains(record.id):
            continue
        batch.append((record, load))
        if len(batch) >= batch_size:
            flush()
            if progress:
                progress(done, total or done)
    flush()
    if progress:
        progress(done, total or done)
    return writer.save()
