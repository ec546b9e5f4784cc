"""Did the agent look where the pathologist drew? Trajectory metrics against annotations.

A pathologist's annotations for a slide are a QuPath GeoJSON export named after the slide
(``ANNOTATIONS/<slide stem>.geojson``, or ``.json``), read through the imaging layer's file
guard. Per item, over the regions the model was shown (``RunRegions.views``, in step order):

- ``steps_on_annotation``: the share of views overlapping an annotated region (positive area);
- ``first_step_on_annotation``: the step of the first such view (``None`` if never);
- ``area_viewed``: the share of the annotated area covered by views seen at a resolution of at
  least ``max_downsample`` level-0 pixels per pixel shown (smaller is finer).

``annotate_run`` adds them to each result of an eval run (``metadata["annotations"]``);
``annotation_summary`` averages them per task for ``eval report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from medagent._files import write_atomic
from medagent.errors import ConfigError, InputError
from medagent.evals._records import ItemResult
from medagent.evals._regions import RunRegions, ViewedRegion, read_run_regions
from medagent.evals._runner import load_results
from medagent.imaging import AnnotationLimits, Annotations, read_annotations

__all__ = [
    "ANNOTATION_MAX_DOWNSAMPLE",
    "AnnotationMetrics",
    "AnnotationTaskSummary",
    "annotate_run",
    "annotation_metrics",
    "annotation_summary",
    "check_annotations_folder",
    "find_annotations",
]

#: Level-0 pixels per pixel shown at or below which a view counts as seen closely: 4 is a 10x
#: view of a 40x scan (about 1 µm per pixel at 0.25 µm/px), where glands and cells are
#: recognisable; GIANT's overview of a large slide is 50-200.
ANNOTATION_MAX_DOWNSAMPLE = 4.0
_SUFFIXES = (".geojson", ".json")


class AnnotationMetrics(BaseModel):
    """How one item's views met its slide's annotations."""

    model_config = ConfigDict(frozen=True)

    file: str = Field(description="the annotation file's name")
    regions: int = Field(description="annotated polygons on the slide")
    classes: list[str] = Field(default_factory=list)
    steps: int = Field(description="views the model was shown")
    steps_on_annotation: float | None = Field(
        description="share of views overlapping an annotated region (None: no views)"
    )
    first_step_on_annotation: int | None = Field(
        description="step of the first view on an annotated region (None: never)"
    )
    area_viewed: float | None = Field(
        description="share of the annotated area seen at <= max_downsample (None: no area)"
    )
    max_downsample: float


def annotation_metrics(
    views: Sequence[ViewedRegion],
    annotations: Annotations,
    max_downsample: float = ANNOTATION_MAX_DOWNSAMPLE,
) -> AnnotationMetrics:
    """The three metrics for ``views`` (in step order) against ``annotations``."""
    from shapely import unary_union
    from shapely.geometry import box

    if max_downsample <= 0:
        raise ConfigError(f"the downsample threshold must be positive, not {max_downsample}")
    annotated = annotations.union()
    on_annotation: list[int] = []
    close = []
    for view in views:
        r = view.region
        rect = box(r.x, r.y, r.x_end, r.y_end)
        if rect.intersection(annotated).area > 0:
            on_annotation.append(view.step)
        if view.downsample is not None and view.downsample <= max_downsample:
            close.append(rect)
    area = annotated.area
    seen = unary_union(close).intersection(annotated).area if close else 0.0
    return AnnotationMetrics(
        file=Path(annotations.path).name,
        regions=len(annotations.shapes),
        classes=annotations.classes,
        steps=len(views),
        steps_on_annotation=len(on_annotation) / len(views) if views else None,
        first_step_on_annotation=min(on_annotation) if on_annotation else None,
        area_viewed=seen / area if area > 0 else None,
        max_downsample=max_downsample,
    )


def find_annotations(folder: Path, slide: str) -> Path | None:
    """``folder/<slide stem>.geojson`` (or ``.json``) when it exists; the stem is a plain file
    name taken from the slide's own, so it cannot lead out of ``folder``."""
    stem = Path(slide.rstrip("/")).stem
    if not stem or stem in (".", ".."):
        return None
    for suffix in _SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def check_annotations_folder(folder: Path) -> Path:
    """``folder`` when it is a folder; a ``ConfigError`` saying so otherwise (checked before
    an eval run starts, not after it)."""
    if not folder.is_dir():
        raise ConfigError(
            f"--annotations {folder}: not a folder; give the folder of QuPath GeoJSON files "
            "named after the slides (SLIDE_STEM.geojson)"
        )
    return folder


def _item_run(run_dir: Path, result: ItemResult) -> RunRegions | None:
    """The item's regions, when it recorded a trajectory inside the run's own folder."""
    if not result.trajectory:
        return None
    root = run_dir.resolve()
    folder = (root / result.trajectory).resolve().parent
    if not folder.is_relative_to(root / "items"):
        return None  # a results line pointing elsewhere is not followed
    try:
        runs = read_run_regions(folder)
    except InputError:
        return None
    return runs[0] if len(runs) == 1 else None


def annotate_run(
    run_dir: str | Path,
    annotations_dir: str | Path,
    *,
    max_downsample: float = ANNOTATION_MAX_DOWNSAMPLE,
    limits: AnnotationLimits | None = None,
) -> list[str]:
    """Record the annotation metrics in ``metadata["annotations"]`` of each result of an eval
    run whose slide has an annotation file; notes for the user back (one line each).

    ``results.jsonl`` is rewritten in one step. A refused annotation file is a note naming
    it; its items get no metrics and the rest go on.
    """
    folder = Path(run_dir)
    annotations_folder = check_annotations_folder(Path(annotations_dir))
    results = load_results(folder / "results.jsonl")
    notes: list[str] = []
    loaded: dict[Path, Annotations | None] = {}
    annotated = 0
    for result in results.values():
        result.metadata.pop("annotations", None)
        run = _item_run(folder, result)
        path = find_annotations(annotations_folder, run.slide) if run else None
        if run is None or path is None:
            continue
        if path not in loaded:
            try:
                loaded[path] = read_annotations(path, limits)
            except InputError as exc:
                loaded[path] = None
                notes.append(f"annotations not used: {exc}")
        found = loaded[path]
        if found is None or not found.shapes:
            continue
        metrics = annotation_metrics(run.views, found, max_downsample)
        result.metadata["annotations"] = metrics.model_dump(mode="json")
        annotated += 1
    try:
        write_atomic(
            folder / "results.jsonl",
            "".join(r.model_dump_json() + "\n" for r in results.values()),
        )
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise InputError(f"cannot write {folder / 'results.jsonl'}: {reason}") from None
    notes.append(
        f"annotation metrics for {annotated} of {len(results)} items (slides with a file in "
        f"{annotations_folder})"
    )
    return notes


class AnnotationTaskSummary(BaseModel):
    """A task's annotation metrics, averaged over its items that have them."""

    model_config = ConfigDict(frozen=True)

    task: str
    items: int
    steps_on_annotation: float | None = Field(description="mean share over items with views")
    reached: float = Field(description="share of items with a view on an annotated region")
    first_step: float | None = Field(description="mean first step, over items that reached one")
    area_viewed: float | None
    max_downsample: float | None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def annotation_summary(results: Sequence[ItemResult]) -> list[AnnotationTaskSummary]:
    """Per task, the mean of each metric over its items with ``metadata["annotations"]``;
    empty when no item has them."""
    by_task: dict[str, list[AnnotationMetrics]] = {}
    for result in results:
        raw = result.metadata.get("annotations")
        if not isinstance(raw, dict):
            continue
        try:
            metrics = AnnotationMetrics.model_validate(raw)
        except ValueError:
            continue  # written by another version: left out rather than guessed
        by_task.setdefault(result.task, []).append(metrics)
    summaries = []
    for task, found in sorted(by_task.items()):
        firsts = [m.first_step_on_annotation for m in found]
        reached = [f for f in firsts if f is not None]
        thresholds = {m.max_downsample for m in found}
        summaries.append(
            AnnotationTaskSummary(
                task=task,
                items=len(found),
                steps_on_annotation=_mean(
                    [m.steps_on_annotation for m in found if m.steps_on_annotation is not None]
                ),
                reached=len(reached) / len(found),
                first_step=_mean([float(f) for f in reached]),
                area_viewed=_mean([m.area_viewed for m in found if m.area_viewed is not None]),
                max_downsample=thresholds.pop() if len(thresholds) == 1 else None,
            )
        )
    return summaries
