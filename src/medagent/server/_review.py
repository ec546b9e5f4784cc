"""The review page's API: eval runs under the runs root, their items, a reviewer's grades.

Every name a client sends is checked before anything is read. A run is named by its folder
relative to the runs root: each part a plain file name (``PLAIN_NAME``), then resolved under
the root by the same guard as slide paths (no ``..``, no links out). An item is named by its id,
looked up in the run's own ``results.jsonl`` — never joined onto a path. What the run's files
name in turn (an item's trajectory, the slide it looked at) is not trusted either: the
trajectory must resolve inside the run's folder, the slide under the slide folders.

Grades go to the app's database (``ReviewStore``); after each save the run's grades are also
written to ``RUN/review.jsonl``, which ``eval report`` reads.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

from anyio import to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent.errors import InputError, MedagentError, PathRefusedError
from medagent.evals import (
    REVIEW_FILE,
    AnswerGrade,
    ItemResult,
    ReviewGrade,
    StepGrade,
    grades_csv,
    grades_jsonl,
    load_results,
    write_review_file,
)
from medagent.imaging import Region, resolve_slide_source, resolve_under_roots
from medagent.server._config import ServerConfig
from medagent.server._review_store import ReviewStore
from medagent.server._routes import _tile_number
from medagent.server._tiles import SlideKey, TileService
from medagent.server._uploads import PLAIN_NAME

__all__ = ["RunIndex", "check_item_id", "check_run_name", "review_router"]

log = logging.getLogger("medagent.server")

_MAX_RUN_CHARS = 512
_MAX_RUN_DEPTH = 4
_MAX_RUNS = 1000
_MAX_ITEM_CHARS = 512
#: Files of a run read whole: results and trajectories larger than this are refused.
_MAX_FILE_BYTES = 256 * 1024 * 1024
_MAX_TRAJECTORY_BYTES = 64 * 1024 * 1024
_CACHED_RUNS = 16
_TILE_CACHE = "private, max-age=3600"
_OFF = "the review page is off; start the server with --runs DIR"


class RunNotFoundError(InputError):
    """No run by that name under the runs root (404)."""


class GradeIn(BaseModel):
    """A reviewer's grade of one item, as the page sends it."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(max_length=_MAX_RUN_CHARS)
    item: str = Field(max_length=_MAX_ITEM_CHARS)
    answer: AnswerGrade | None = None
    steps: dict[int, StepGrade] = Field(default_factory=dict, max_length=1000)
    comment: str = Field("", max_length=4000)


class _StepView(BaseModel):
    """What the page shows of a trajectory step (any agent's: unknown fields ignored)."""

    model_config = ConfigDict(extra="ignore")

    step: int
    kind: str = ""
    action: dict[str, Any] | None = None
    region: Region | None = None
    level: int | None = None
    mpp: float | None = None
    errors: list[str] = Field(default_factory=list)


class _TrajectoryView(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: str = ""
    options: list[str] | None = None
    slide_path: str | None = None
    steps: list[_StepView] = Field(default_factory=list)
    status: str | None = None


@dataclass(frozen=True)
class _Run:
    name: str  # relative to the runs root, "/"-separated: the run's one spelling
    folder: Path
    config: dict[str, Any]
    results: dict[str, ItemResult]


def _config(request: Request) -> ServerConfig:
    config: ServerConfig = request.app.state.config
    return config


def _store(request: Request) -> ReviewStore:
    store: ReviewStore | None = getattr(request.app.state, "reviews", None)
    if store is None:
        raise RunNotFoundError(_OFF)
    return store


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def check_run_name(name: str) -> None:
    """A run name is a relative path of plain names: ``giant`` or ``2024/giant-tcga``."""
    parts = name.split("/")
    if (
        not name
        or len(name) > _MAX_RUN_CHARS
        or len(parts) > _MAX_RUN_DEPTH
        or not all(PLAIN_NAME.fullmatch(part) for part in parts)
    ):
        raise PathRefusedError(
            f"run {_shown(name)}: name a run as listed (folder names of letters, digits, "
            "'.', '_', '-' and spaces, separated by '/')"
        )


def check_item_id(item: str) -> None:
    """An item id is text of bounded length without control characters; it is only ever
    looked up, never used as a path."""
    if not item or len(item) > _MAX_ITEM_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in item):
        raise InputError(f"item {_shown(item)}: no such item in this run")


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    if path.stat().st_size > limit:
        raise InputError(f"{what} is larger than {limit // (1024 * 1024)} MB; not read")
    return path.read_bytes()


class RunIndex:
    """The runs under the root, each read once per change of its ``results.jsonl``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: OrderedDict[Path, tuple[tuple[int, int], _Run]] = OrderedDict()
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Run folders (holding ``results.jsonl``) under the root, at most a few levels down;
        hidden folders and links are not entered."""
        found: list[str] = []
        for folder, dirs, files in os.walk(self.root):
            here = Path(folder)
            depth = len(here.relative_to(self.root).parts)
            dirs[:] = sorted(
                d for d in dirs if not d.startswith(".") and not (here / d).is_symlink()
            )
            if "results.jsonl" in files and here != self.root:
                name = here.relative_to(self.root).as_posix()
                try:
                    check_run_name(name)
                except PathRefusedError:
                    continue  # a name a client could not send back: not offered
                found.append(name)
                dirs[:] = []  # items/ holds no runs
            if depth >= _MAX_RUN_DEPTH:
                dirs[:] = []
            if len(found) >= _MAX_RUNS:
                break
        return found

    def run(self, name: str) -> _Run:
        """The run ``name`` names (``PathRefusedError``: outside; ``RunNotFoundError``)."""
        check_run_name(name)
        try:
            folder = resolve_under_roots(name, [self.root])
        except PathRefusedError:
            raise PathRefusedError(
                f"run {_shown(name)} is outside the runs folder; name a run as listed"
            ) from None
        except InputError:
            raise RunNotFoundError(f"no run {_shown(name)} under the runs folder") from None
        results_path = folder / "results.jsonl"
        try:
            stat = results_path.stat()
        except OSError:
            raise RunNotFoundError(
                f"{_shown(name)} is not an eval run (no results.jsonl)"
            ) from None
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(folder)
            if cached is not None and cached[0] == key:
                self._cache.move_to_end(folder)
                return cached[1]
        if stat.st_size > _MAX_FILE_BYTES:
            raise InputError(f"run {_shown(name)}: results.jsonl is too large to review here")
        run = _Run(
            name=folder.relative_to(self.root).as_posix(),
            folder=folder,
            config=_manifest_config(folder / "manifest.json"),
            results=load_results(results_path),
        )
        with self._lock:
            self._cache[folder] = (key, run)
            while len(self._cache) > _CACHED_RUNS:
                self._cache.popitem(last=False)
        return run

    def item(self, name: str, item: str) -> tuple[_Run, ItemResult]:
        check_item_id(item)
        run = self.run(name)
        result = run.results.get(item)
        if result is None:
            raise InputError(f"item {_shown(item)}: no such item in this run")
        return run, result

    def trajectory(self, run: _Run, result: ItemResult) -> _TrajectoryView | None:
        """The item's trajectory, when it has one inside the run's folder."""
        if not result.trajectory:
            return None
        try:
            path = resolve_under_roots(result.trajectory, [run.folder])
            return _TrajectoryView.model_validate_json(
                _read_bounded(path, _MAX_TRAJECTORY_BYTES, "the trajectory")
            )
        except (MedagentError, OSError, ValidationError) as exc:
            log.warning(
                "review: item %r of run %s: trajectory not shown: %s", result.id, run.name, exc
            )
            return None


def _manifest_config(path: Path) -> dict[str, Any]:
    """The run's configuration from ``manifest.json``; nothing from a missing or bad one."""
    try:
        manifest = json.loads(_read_bounded(path, 16 * 1024 * 1024, "manifest.json"))
    except (OSError, ValueError, MedagentError):
        return {}
    config = manifest.get("config") if isinstance(manifest, dict) else None
    return config if isinstance(config, dict) else {}


def _index(request: Request) -> RunIndex:
    index: RunIndex | None = getattr(request.app.state, "run_index", None)
    if index is None:
        raise RunNotFoundError(_OFF)
    return index


def _slide_key(
    config: ServerConfig, trajectory: _TrajectoryView | None
) -> tuple[SlideKey | None, str]:
    """The item's slide under the slide folders (or in an allowed archive), or ``None`` and
    why it cannot be shown. The path comes from a file: it is checked like a client's."""
    if trajectory is None or not trajectory.slide_path:
        return None, "this item's trajectory names no slide"
    try:
        source = resolve_slide_source(trajectory.slide_path, config.roots, config.dicomweb_archives)
    except PathRefusedError:
        return None, "the item's slide is outside this server's slide folders (--slides)"
    except InputError:
        return None, "the item's slide is not found under this server's slide folders (--slides)"
    return (source if isinstance(source, Path) else source.url), ""


def _item_view(
    run: _Run, result: ItemResult, trajectory: _TrajectoryView | None, grade: ReviewGrade | None
) -> dict[str, Any]:
    steps = []
    for step in (trajectory.steps if trajectory else [])[:1000]:
        action = step.action or {}
        steps.append(
            {
                "step": step.step,
                "kind": step.kind,
                "reasoning": str(action.get("reasoning", ""))[:4000],
                "answer": str(action["answer"])[:1000] if "answer" in action else None,
                "region": step.region.model_dump() if step.region else None,
                "level": step.level,
                "mpp": step.mpp,
                "errors": [e[:300] for e in step.errors[:5]],
            }
        )
    return {
        "run": run.name,
        "item": result.id,
        "task": result.task,
        "status": result.status,
        "question": trajectory.question if trajectory else "",
        "options": trajectory.options if trajectory else None,
        "answer": result.answer,
        "prediction": result.prediction,
        "reference": result.reference,
        "correct": result.correct,
        "score": result.score,
        "agent_status": result.agent_status,
        "error": result.error,
        "steps": steps,
        "grade": grade.model_dump(mode="json") if grade else None,
    }


def review_router() -> APIRouter:
    """``/api/review/…``: 404 with a hint when the server has no runs root."""
    router = APIRouter(prefix="/api/review")

    @router.get("/runs")
    async def runs(request: Request) -> dict[str, Any]:
        """Every run under the runs root with its method, model, items and grades so far."""
        index, store = _index(request), _store(request)
        names = await to_thread.run_sync(index.names)
        graded = await store.counts()
        listed = []
        for name in names:
            try:
                run = await to_thread.run_sync(index.run, name)
            except MedagentError:
                continue
            listed.append(
                {
                    "name": run.name,
                    "method": str(run.config.get("method", "?")),
                    "model": str(run.config.get("model", "?")),
                    "dataset": str(run.config.get("dataset", "?")),
                    "items": len(run.results),
                    "graded": graded.get(run.name, 0),
                }
            )
        return {"runs": listed, "truncated": len(names) >= _MAX_RUNS}

    @router.get("/items")
    async def items(request: Request, run: str) -> dict[str, Any]:
        """The run's items with the automatic result and the reviewer's answer grade."""
        index, store = _index(request), _store(request)
        found = await to_thread.run_sync(index.run, run)
        grades = {g.item: g for g in await store.for_run(found.name)}
        rows = [
            {
                "item": r.id,
                "task": r.task,
                "status": r.status,
                "correct": r.correct,
                "score": r.score,
                "grade": grades[r.id].answer if r.id in grades else None,
                "reviewed": r.id in grades,
            }
            for r in found.results.values()
        ]
        return {"run": found.name, "items": rows}

    @router.get("/item")
    async def item(request: Request, run: str, item: str) -> dict[str, Any]:
        """One item: question, steps (reasoning, boxes), answer, reference, grade, slide."""
        config, index, store = _config(request), _index(request), _store(request)
        found, result = await to_thread.run_sync(index.item, run, item)
        trajectory = await to_thread.run_sync(index.trajectory, found, result)
        view = _item_view(found, result, trajectory, await store.get(found.name, result.id))
        key, reason = _slide_key(config, trajectory)
        slide: dict[str, Any] = {"available": False, "reason": reason}
        if key is not None:
            try:
                info = (await to_thread.run_sync(_tiles(request).slide, key)).slide.info
            except MedagentError as exc:
                slide["reason"] = f"the item's slide cannot be opened: {str(exc)[:200]}"
            else:
                query = _query(found.name, result.id)
                slide = {
                    "available": True,
                    "name": Path(str(key)).name,
                    "width": info.dimensions.width,
                    "height": info.dimensions.height,
                    "mpp_x": info.mpp_x,
                    "dzi": f"/api/review/slide.dzi?{query}",
                }
        view["slide"] = slide
        return view

    @router.post("/grades", response_model=None)
    async def save_grade(request: Request, body: GradeIn) -> dict[str, Any] | Response:
        """Save the grade of one item (replacing any earlier one), then the run's
        ``review.jsonl``."""
        index, store = _index(request), _store(request)
        found, result = await to_thread.run_sync(index.item, body.run, body.item)
        trajectory = await to_thread.run_sync(index.trajectory, found, result)
        numbers = {step.step for step in trajectory.steps} if trajectory else set()
        unknown = sorted(set(body.steps) - numbers)
        if unknown:
            return JSONResponse(
                {
                    "detail": f"steps: {unknown[0]} is not a step of this item "
                    f"({len(numbers)} step(s) in its trajectory)"
                },
                status_code=422,
            )
        grade = ReviewGrade(
            run=found.name,
            item=result.id,
            answer=body.answer,
            steps=body.steps,
            comment=body.comment,
            updated_at=time.time(),
        )
        await store.save(grade)
        grades = await store.for_run(found.name)
        try:
            await to_thread.run_sync(write_review_file, found.folder, grades)
            written: str | None = REVIEW_FILE
        except OSError as exc:
            log.warning("review: cannot write %s in run %s: %s", REVIEW_FILE, found.name, exc)
            written = None
        return {"grade": grade.model_dump(mode="json"), "review_file": written}

    @router.get("/export")
    async def export(
        request: Request, run: str, format: Literal["csv", "jsonl"] = "csv"
    ) -> Response:
        """The run's grades as CSV (with the automatic result beside each) or JSONL."""
        index, store = _index(request), _store(request)
        found = await to_thread.run_sync(index.run, run)
        grades = await store.for_run(found.name)
        stem = found.name.replace("/", "_").replace(" ", "_")
        if format == "jsonl":
            body, media = grades_jsonl(grades), "application/x-ndjson"
        else:
            body, media = grades_csv(grades, found.results), "text/csv; charset=utf-8"
        disposition = f'attachment; filename="{stem}-review.{format}"'
        return Response(body, media_type=media, headers={"Content-Disposition": disposition})

    async def item_slide(request: Request, run: str, item: str) -> SlideKey:
        config, index = _config(request), _index(request)
        found, result = await to_thread.run_sync(index.item, run, item)
        key, reason = _slide_key(config, await to_thread.run_sync(index.trajectory, found, result))
        if key is None:
            raise InputError(reason)
        return key

    @router.get("/slide.dzi")
    async def dzi(request: Request, run: str, item: str) -> Response:
        key = await item_slide(request, run, item)
        xml = await to_thread.run_sync(_tiles(request).dzi, key)
        return Response(xml, media_type="application/xml", headers={"Cache-Control": _TILE_CACHE})

    @router.get("/slide_files/{level}/{col}_{row}.jpeg")
    async def tile(
        request: Request, level: str, col: str, row: str, run: str, item: str
    ) -> Response:
        key = await item_slide(request, run, item)
        numbers = [_tile_number(text) for text in (level, col, row)]
        data = await to_thread.run_sync(functools.partial(_tiles(request).tile, key, *numbers))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": _TILE_CACHE})

    return router


def _tiles(request: Request) -> TileService:
    tiles: TileService = request.app.state.tiles
    return tiles


def _query(run: str, item: str) -> str:
    return urlencode({"run": run, "item": item})
