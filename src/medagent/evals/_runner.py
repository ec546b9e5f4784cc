"""The evaluation runner: concurrent, resumable, and never losing a finished item.

``RUN_DIR/results.jsonl`` gets one line per finished item, flushed and fsynced as it finishes;
``RUN_DIR/manifest.json`` says how the run was configured (and its hash), written atomically;
``RUN_DIR/items/<id>`` holds each item's trajectory and raw responses. Rerunning the same
command skips finished items; ``rerun_failed`` retries only failures; a changed configuration is
refused unless ``new_run`` (which sets the old results aside).

A spend cap (``spend``, the ``Spend`` the model's ``SpendCap`` draws on) ends the run cleanly:
an item whose model call the budget refused is left unfinished (not failed), items not started
stay pending, and the manifest's ``budget`` says that the budget ended the run; a rerun with a
higher budget resumes them.

Faults are told apart by whose they are. Anything that goes wrong inside one item's work (an
unreadable image, a model error, a bug in a method) is that item's failed result, with a
one-line reason, and the batch goes on. A fault of the run itself (its folder cannot be written,
the disk is full) stops the run with one ``InputError``: "cannot write results to DIR: …".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medagent._files import write_atomic, write_json_atomic
from medagent._trace import span, trace_labels
from medagent._version import package_versions
from medagent.errors import ConfigError, InputError, MedagentError
from medagent.evals._choices import closed_choices
from medagent.evals._methods import ItemMethod
from medagent.evals._records import EvalItem, ItemResult
from medagent.models import ChatModel, Prices, Spend, watch_budget

__all__ = ["EvalRunner", "ItemTask", "RunConfig", "RunOutcome", "load_results", "read_manifest"]


class RunConfig(BaseModel):
    """Everything that changes results; its hash guards resumed runs against mixing configs."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    data_path: str
    dataset_sha256: str
    tasks: list[str] | None = None
    limit: int | None = None
    method: str
    method_params: dict[str, Any] = Field(default_factory=dict)
    backend: str
    model: str
    seed: int | None = 0
    cache: bool = False

    def hash(self) -> str:
        text = json.dumps(self.model_dump(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunOutcome(BaseModel):
    """What one invocation did."""

    run_dir: Path
    total: int
    skipped: int
    ran: int
    ok: int
    failed: int
    elapsed_s: float
    notes: list[str] = Field(default_factory=list, description="one line each, for the user")
    stopped_by_budget: bool = Field(False, description="the spend cap ended the run")
    unfinished: int = Field(0, description="items left for a rerun when the budget ended it")
    spent_usd: float | None = None
    budget_usd: float | None = None


def load_results(path: Path) -> dict[str, ItemResult]:
    """The latest result per item id; a torn or garbled line (killed mid-write) is ignored."""
    results: dict[str, ItemResult] = {}
    if not path.exists():
        return results
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            result = ItemResult.model_validate_json(line)
        except ValueError:
            continue
        results[result.id] = result
    return results


def read_manifest(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(manifest, None)``; ``(None, None)`` when there is none; ``(None, why)`` when damaged.

    A manifest written before writes were atomic may be cut short by a crash: that is a
    reason to say so and rewrite it, never a ``JSONDecodeError``.
    """
    if not path.exists():
        return None, None
    try:
        manifest = json.loads(path.read_bytes())
    except OSError as exc:
        return None, f"unreadable: {_strerror(exc)}"
    except ValueError:
        return None, "not valid JSON, cut short by a crash?"
    if not isinstance(manifest, dict):
        return None, "not a JSON object"
    return manifest, None


def _strerror(exc: OSError) -> str:
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _cannot_write(run_dir: Path, exc: OSError) -> InputError:
    """The one line that stops a run whose own folder cannot be written."""
    culprit = Path(exc.filename) if isinstance(exc.filename, str) else None
    where = f"{culprit.name}: " if culprit is not None and culprit != run_dir else ""
    return InputError(
        f"cannot write results to {run_dir}: {where}{_strerror(exc)}; check the folder's "
        "permissions and free space, or choose another --out",
        path=str(run_dir),
    )


def _item_error(exc: Exception) -> str:
    """One line for an item's failure: a MedagentError says it all; anything else is named."""
    if isinstance(exc, MedagentError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line[:300]


def _safe_name(item_id: str) -> str:
    """The item's folder name: the id itself when it is a plain file name, else the id made
    one (no separators, no leading dot, at most 100 characters) plus a digest of the whole id,
    so two ids never share a folder (``a/b`` and ``a b``; long ids that differ at the end) and
    no id from a dataset file can name ``..`` or a path outside ``items/``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id).lstrip(".")[:100]
    if cleaned and cleaned == item_id:
        return item_id
    digest = hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:12]
    return f"{cleaned or 'item'}-{digest}"


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


class ResultsFile:
    """Appends result lines durably: one write, flush and fsync per finished item."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    def prepare(self) -> None:
        """Open for appending once (so an unwritable file stops the run before any item), and
        end a torn last line, so the next result is not glued onto it and lost."""
        with self.path.open("ab") as handle:
            if handle.tell() == 0:
                return
        with self.path.open("rb") as reader:
            reader.seek(-1, os.SEEK_END)
            torn = reader.read(1) != b"\n"
        if torn:
            with self.path.open("ab") as handle:
                handle.write(b"\n")
                handle.flush()
                os.fsync(handle.fileno())

    async def append(self, result: ItemResult) -> None:
        line = result.model_dump_json() + "\n"
        async with self._lock:
            # fsync takes milliseconds: in a thread, so the other items' requests go on.
            await asyncio.to_thread(self._write, line)

    def _write(self, line: str) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def compact(self) -> None:
        """Keep one line per item (the latest), atomically: reruns append, this tidies."""
        latest = load_results(self.path)
        write_atomic(self.path, "".join(r.model_dump_json() + "\n" for r in latest.values()))


Score = Callable[[EvalItem, str | None], tuple[bool | None, float | None]]


@dataclass(frozen=True)
class ItemTask:
    """One item's work, as either executor runs it: the model (or its factory), the method,
    where the item's files go, its time limit, prices and scorer. Picklable when the model is a
    factory: this, not the runner, is what Ray workers get."""

    model: ChatModel | Callable[[], ChatModel]
    method: ItemMethod
    config_hash: str
    run_dir: Path
    item_timeout_s: float
    prices: Prices | None
    score: Score

    def make_model(self) -> ChatModel:
        """The model instance (a factory is called: Ray workers build their own)."""
        if isinstance(self.model, ChatModel):
            return self.model
        return self.model()

    def item_dir(self, item_id: str) -> Path:
        """Where the item's files go: ``RUN_DIR/items/<safe id>``."""
        return self.run_dir / "items" / _safe_name(item_id)

    def _base(self, item: EvalItem) -> dict[str, Any]:
        metadata: dict[str, Any] = {"metric": item.metric}
        if item.metric == "closed":
            # Kept with the result: a report rescores closed answers without the dataset.
            metadata["choices"] = closed_choices(item.question, item.metadata)
        return {
            "id": item.id,
            "task": item.task,
            "config_hash": self.config_hash,
            "reference": item.answer,
            "metadata": metadata,
        }

    def failed_result(self, item: EvalItem, error: str, latency_s: float = 0.0) -> ItemResult:
        """``item`` as a failed result saying ``error`` (one line)."""
        return ItemResult(
            **self._base(item),
            status="failed",
            error=error,
            latency_s=latency_s,
            finished_at=datetime.now(UTC).isoformat(),
        )

    async def run_item(self, item: EvalItem, model: ChatModel) -> ItemResult:
        """One item, start to finish (``_run_item``), in a span whose item id labels every span
        of the item when tracing is on."""
        with (
            trace_labels(item_id=item.id),
            span("eval_item", {"medagent.task": item.task}) as current,
        ):
            result = await self._run_item(item, model)
            current.set_attribute("medagent.item.status", result.status)
            if result.correct is not None:
                current.set_attribute("medagent.item.correct", result.correct)
        return result

    async def _run_item(self, item: EvalItem, model: ChatModel) -> ItemResult:
        """One item, start to finish; any failure of its own is a result, never an exception.

        A ``MedagentError`` (a missing image, a model that cannot be reached) is reported as
        it says; any other exception is a bug or a library's surprise: its one-line name goes
        in the result and its traceback in ``items/<id>/error.txt``.
        """
        item_dir = self.item_dir(item.id)
        started = time.perf_counter()
        hits_before = getattr(model, "hits", 0)
        try:
            output = await asyncio.wait_for(
                self.method(item, model, item_dir), timeout=self.item_timeout_s
            )
            correct, score = self.score(item, output.prediction) if output.ok else (False, None)
            trajectory = (
                str(output.trajectory.relative_to(self.run_dir)) if output.trajectory else None
            )
        except TimeoutError:
            return ItemResult(
                **self._base(item),
                status="timeout",
                latency_s=time.perf_counter() - started,
                error=f"no answer within {self.item_timeout_s:g} s",
                finished_at=datetime.now(UTC).isoformat(),
            )
        except MedagentError as exc:
            return self.failed_result(item, _item_error(exc), time.perf_counter() - started)
        except Exception as exc:  # one item's surprise must not end the batch
            error = _item_error(exc)
            if _keep_traceback(item_dir, exc):
                error += f" (traceback in items/{item_dir.name}/error.txt)"
            return self.failed_result(item, error, time.perf_counter() - started)
        return ItemResult(
            **self._base(item),
            status="ok" if output.ok else "failed",
            answer=output.answer,
            prediction=output.prediction,
            correct=correct,
            score=score,
            agent_status=output.agent_status,
            error=output.error,
            steps=output.steps,
            prompt_tokens=output.prompt_tokens,
            completion_tokens=output.completion_tokens,
            latency_s=time.perf_counter() - started,
            cost_usd=(
                self.prices.cost(output.prompt_tokens, output.completion_tokens)
                if self.prices
                else None
            ),
            cached_calls=getattr(model, "hits", 0) - hits_before,
            trajectory=trajectory,
            finished_at=datetime.now(UTC).isoformat(),
        )


Progress = Callable[[ItemResult, int, int], None]


class EvalRunner:
    """Runs ``method`` with ``model`` over items, ``concurrency`` at a time."""

    def __init__(
        self,
        model: ChatModel | Callable[[], ChatModel],
        method: ItemMethod,
        config: RunConfig,
        run_dir: str | Path,
        *,
        concurrency: int = 4,
        item_timeout_s: float = 900.0,
        rerun_failed: bool = False,
        new_run: bool = False,
        prices: Prices | None = None,
        spend: Spend | None = None,
        executor: Literal["local", "ray"] = "local",
        ray_address: str | None = None,
        ray_item_max_bytes: int = 512 * 2**20,
        on_result: Progress | None = None,
        score: Callable[[EvalItem, str | None], tuple[bool | None, float | None]] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
        if ray_item_max_bytes < 1:
            raise ConfigError(f"the item folder cap must be positive, not {ray_item_max_bytes}")
        if spend is not None and spend.budget_usd is not None and executor == "ray":
            raise ConfigError(
                "--budget-usd needs --executor local: Ray workers cannot share one budget"
            )
        self.model = model
        self.method = method
        self.config = config
        self.run_dir = Path(run_dir)
        self.concurrency = concurrency
        self.item_timeout_s = item_timeout_s
        self.rerun_failed = rerun_failed
        self.new_run = new_run
        self.spend = spend
        self.prices = prices if prices is not None or spend is None else spend.prices
        self.executor = executor
        self.ray_address = ray_address
        # A Ray worker ships each item folder back packed; a bigger one is not shipped.
        self.ray_item_max_bytes = ray_item_max_bytes
        self.on_result = on_result or (lambda result, done, total: None)
        if score is None:
            from medagent.evals._summary import score_item

            score = score_item
        self.score = score
        self.results = ResultsFile(self.run_dir / "results.jsonl")

    # -- preparing -----------------------------------------------------------------------------
    def _prepare(self) -> list[str]:
        """Check the folder, its manifest and results file before any item runs; notes back."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.results.prepare()
            return self._check_manifest()
        except OSError as exc:
            raise _cannot_write(self.run_dir, exc) from None

    def _check_manifest(self) -> list[str]:
        path = self.run_dir / "manifest.json"
        config_hash = self.config.hash()
        notes: list[str] = []
        previous, problem = read_manifest(path)
        rewrite = previous is None
        if problem is not None:
            notes.append(f"{path} was damaged ({problem}); it was written again")
        if previous is None:
            # No usable manifest: the results' own configuration hashes still tell the run.
            found = {r.config_hash for r in load_results(self.results.path).values()}
            if found - {config_hash}:
                previous = {"config_hash": min(found - {config_hash})}
        if previous is not None and previous.get("config_hash") != config_hash:
            if not self.new_run:
                raise ConfigError(
                    f"{self.run_dir} holds a run with another configuration "
                    f"({previous.get('config_hash')} vs {config_hash}); rerun with the same "
                    "options to resume, pass --new-run to start over there, or use "
                    "another --out"
                )
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            for name in ("results.jsonl", "manifest.json"):
                old = self.run_dir / name
                if old.exists():
                    old.rename(self.run_dir / f"{old.stem}.{stamp}{old.suffix}")
            rewrite = True
        if rewrite:
            write_json_atomic(
                path,
                {
                    "config": self.config.model_dump(),
                    "config_hash": config_hash,
                    "method": self.method.name,
                    "versions": package_versions(),
                    "git_commit": _git_commit(),
                    "prices": self.prices.model_dump() if self.prices else None,
                    "executor": self.executor,
                    "created_at": datetime.now(UTC).isoformat(),
                },
            )
        return notes

    def pending(self, items: Sequence[EvalItem]) -> list[EvalItem]:
        """The items this invocation has to run."""
        done = load_results(self.results.path)
        if self.rerun_failed:
            return [i for i in items if i.id in done and done[i.id].status != "ok"]
        return [i for i in items if i.id not in done]

    def task(self) -> ItemTask:
        """What one item needs, and nothing else (no results writer, no progress callback):
        small and picklable, so ``--executor ray`` ships it to every worker."""
        return ItemTask(
            model=self.model,
            method=self.method,
            config_hash=self.config.hash(),
            run_dir=self.run_dir,
            item_timeout_s=self.item_timeout_s,
            prices=self.prices,
            score=self.score,
        )

    def make_model(self) -> ChatModel:
        """The model instance (a factory is called: Ray workers build their own)."""
        return self.task().make_model()

    def failed_result(self, item: EvalItem, error: str, latency_s: float = 0.0) -> ItemResult:
        """``item`` as a failed result saying ``error`` (one line)."""
        return self.task().failed_result(item, error, latency_s)

    async def run_item(self, item: EvalItem, model: ChatModel) -> ItemResult:
        """One item, start to finish (``ItemTask.run_item``)."""
        return await self.task().run_item(item, model)

    async def run_within_budget(self, item: EvalItem, model: ChatModel) -> ItemResult | None:
        """``run_item``, or ``None`` when the budget refused one of the item's model calls:
        the item is unfinished, for a rerun with a higher budget, not failed."""
        with watch_budget() as refused:
            result = await self.run_item(item, model)
        return None if refused else result

    def _note_budget(self, unfinished: int) -> str | None:
        """Record in the manifest how the budget went; the line for the user when it ended
        the run."""
        if self.spend is None:
            return None
        stopped = self.spend.exhausted
        path = self.run_dir / "manifest.json"
        manifest, _ = read_manifest(path)
        if manifest is not None:
            manifest["budget"] = {
                **self.spend.summary(),
                "stopped_run": stopped,
                "unfinished": unfinished,
                "at": datetime.now(UTC).isoformat(),
            }
            try:
                write_json_atomic(path, manifest)
            except OSError as exc:
                raise _cannot_write(self.run_dir, exc) from None
        if not stopped:
            return None
        return (
            f"the budget ended the run: ${self.spend.spent_usd:.4f} spent of "
            f"${self.spend.budget_usd or 0:.2f}; {unfinished} item(s) left unfinished (not "
            "failed); rerun with a higher --budget-usd to resume"
        )

    async def run(self, items: Sequence[EvalItem]) -> RunOutcome:
        """Run what is pending; every finished item is on disk before the next one counts."""
        notes = self._prepare()
        try:
            todo = self.pending(items)
        except OSError as exc:
            raise _cannot_write(self.run_dir, exc) from None
        started = time.perf_counter()
        counts = {"ok": 0, "failed": 0, "unfinished": 0}
        total = len(todo)

        async def record(result: ItemResult) -> None:
            try:
                await self.results.append(result)
            except OSError as exc:
                raise _cannot_write(self.run_dir, exc) from None
            counts["ok" if result.status == "ok" else "failed"] += 1
            self.on_result(result, counts["ok"] + counts["failed"], total)

        if self.executor == "ray":
            from medagent.evals._ray import run_on_ray

            await run_on_ray(self, todo, record)
        else:
            model = self.make_model()
            slots = asyncio.Semaphore(self.concurrency)

            async def one(item: EvalItem) -> None:
                async with slots:
                    # Once the budget refused a call, no item starts: each would be refused.
                    stopped = self.spend is not None and self.spend.exhausted
                    result = None if stopped else await self.run_within_budget(item, model)
                if result is None:
                    counts["unfinished"] += 1
                    return
                await record(result)

            await asyncio.gather(*(one(item) for item in todo))
        try:
            self.results.compact()
        except OSError as exc:
            # Every result is already on disk, line by line; only the tidying failed.
            notes.append(f"{self.results.path} was not compacted ({_strerror(exc)})")
        budget_line = self._note_budget(counts["unfinished"])
        if budget_line is not None:
            notes.append(budget_line)
        return RunOutcome(
            run_dir=self.run_dir,
            total=len(items),
            skipped=len(items) - total,
            ran=counts["ok"] + counts["failed"],
            ok=counts["ok"],
            failed=counts["failed"],
            elapsed_s=time.perf_counter() - started,
            notes=notes,
            stopped_by_budget=budget_line is not None,
            unfinished=counts["unfinished"],
            spent_usd=self.spend.spent_usd if self.spend else None,
            budget_usd=self.spend.budget_usd if self.spend else None,
        )


def _keep_traceback(item_dir: Path, exc: Exception) -> bool:
    """Write ``exc``'s traceback next to the item's other files; False when that fails too."""
    try:
        item_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(item_dir / "error.txt", "".join(traceback.format_exception(exc)))
    except OSError:
        return False
    return True
