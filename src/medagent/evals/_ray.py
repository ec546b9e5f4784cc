"""``--executor ray``: items as Ray tasks, each running the same per-item code as local runs.

Workers get an ``ItemTask`` (the model factory, the method, the item's time limit, prices and
scorer), never the runner: the runner holds the driver's results writer and progress callback,
which neither pickle nor belong on a worker. So pass a picklable model factory, e.g. a
``functools.partial(build_model, settings)``. The driver writes every result line
(``results.jsonl`` has one writer whatever the executor) and, per item, the node it ran on in
``RUN_DIR/ray_nodes.jsonl``.

Item folders travel back to the driver, so ``RUN_DIR`` need exist on the driver only. A worker
runs its item with a scratch folder of its own as the run folder (removed afterwards), packs
``items/<id>/`` into a tar (at most the runner's ``ray_item_max_bytes``: a bigger folder is not
shipped, and the item's result says so) and streams it back in chunks: a streaming generator
task that yields the result first, then the chunks. The driver unpacks them through
``unpack_tar`` next to the item's folder and renames the result into place; only then is the
result line written, so every result line has its folder.

A worker that dies mid-item is retried by Ray (``MAX_RETRIES``). Nothing is yielded before the
item is done, so a retry starts clean; every chunk carries its attempt's token, so chunks of two
attempts are never glued into one archive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from medagent._ray import connect_ray, size_text, unpack_tar
from medagent.errors import ConfigError, DependencyMissingError, InputError
from medagent.evals._records import EvalItem, ItemResult

if TYPE_CHECKING:
    from medagent.evals._runner import EvalRunner, ItemTask

__all__ = ["CHUNK_BYTES", "MAX_RETRIES", "NODES_FILE", "run_on_ray"]

NODES_FILE = "ray_nodes.jsonl"
CHUNK_BYTES = 8 * 2**20
"""One streamed piece of an item folder's archive."""
MAX_RETRIES = 3
"""Ray reruns an item this many times when its worker dies (not when the item fails)."""


def _run_one(task: ItemTask, item_json: str, max_bytes: int) -> Iterator[Any]:
    """Executed in a Ray worker: yields the result (JSON), then ``(token, bytes)`` chunks of the
    item folder's archive."""
    import ray

    item = EvalItem.model_validate_json(item_json)
    token = uuid.uuid4().hex
    scratch = Path(tempfile.mkdtemp(prefix="medagent-item-"))
    try:
        local = dataclasses.replace(task, run_dir=scratch)

        async def go() -> ItemResult:
            model = local.make_model()
            try:
                return await local.run_item(item, model)
            finally:
                await model.aclose()

        result = asyncio.run(go())
        archive = scratch / ".item.tar"
        try:
            size, problem = _pack(local.item_dir(item.id), archive, max_bytes)
        except OSError as exc:
            size, problem = None, f"its folder could not be packed on the worker: {exc}"
        if problem is not None:
            error = f"{result.error}; {problem}" if result.error else problem
            result = result.model_copy(update={"error": error, "trajectory": None})
        header = {
            "result": result.model_dump(mode="json"),
            "node": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            "token": token,
            "size": size,
        }
        yield json.dumps(header)
        if size is not None:
            with archive.open("rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    yield token, chunk
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _pack(folder: Path, archive: Path, max_bytes: int) -> tuple[int | None, str | None]:
    """``folder``'s folders and regular files into ``archive``: ``(archive size, None)``,
    ``(None, None)`` when the item wrote nothing, ``(None, why)`` when over ``max_bytes``."""
    if not folder.is_dir():
        return None, None
    entries: list[Path] = []
    total = 0
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        here = Path(root)
        entries.extend(here / d for d in dirs if not (here / d).is_symlink())
        for name in sorted(names):
            path = here / name
            if path.is_symlink() or not path.is_file():
                continue  # only regular files travel: the driver refuses anything else
            total += path.stat().st_size
            entries.append(path)
    over = (
        f"over the {size_text(max_bytes)} cap on an item folder shipped from a Ray worker; not kept"
    )
    if total > max_bytes:
        return None, f"its folder ({size_text(total)}) is {over}"
    with tarfile.open(archive, "w") as tar:
        for path in entries:
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    size = archive.stat().st_size
    if size > max_bytes:
        return None, f"its folder's archive ({size_text(size)}) is {over}"
    return size, None


async def run_on_ray(
    runner: EvalRunner,
    items: Sequence[EvalItem],
    record: Callable[[ItemResult], Awaitable[None]],
) -> None:
    """Run at most ``runner.concurrency`` items at a time; record results as they land."""
    try:
        import ray
    except ImportError:
        raise DependencyMissingError("ray", "distributed", "--executor ray") from None
    from medagent.models import ChatModel

    if isinstance(runner.model, ChatModel):
        raise ConfigError(
            "--executor ray needs a model factory (workers build their own model); pass "
            "functools.partial(build_model, settings) as the runner's model"
        )
    task = runner.task()
    connected = await asyncio.to_thread(connect_ray, runner.ray_address, runner.concurrency)
    try:
        try:
            task_ref = ray.put(task)
        except TypeError as exc:  # something in the method or the factory does not pickle
            first = str(exc).strip().splitlines()[:1] or [type(exc).__name__]
            raise ConfigError(f"--executor ray: {first[0][:300]}") from None
        await _submit_all(runner, task, task_ref, items, record)
    finally:
        if connected:
            ray.shutdown()


class _RunFault(Exception):
    """The driver could not write the run's own folder: the run stops (not the item's fault)."""

    def __init__(self, error: InputError) -> None:
        super().__init__(str(error))
        self.error = error


async def _submit_all(
    runner: EvalRunner,
    task: ItemTask,
    task_ref: Any,
    items: Sequence[EvalItem],
    record: Callable[[ItemResult], Awaitable[None]],
) -> None:
    import ray

    remote = ray.remote(_run_one).options(num_returns="streaming", max_retries=MAX_RETRIES)
    slots = asyncio.Semaphore(runner.concurrency)
    nodes_path = runner.run_dir / NODES_FILE

    async def one(item: EvalItem) -> None:
        async with slots:
            stream = remote.remote(task_ref, item.model_dump_json(), runner.ray_item_max_bytes)
            node: str | None = None
            ip: str | None = None
            try:
                header, problem = await _receive(
                    runner, stream, task.item_dir(item.id), runner.ray_item_max_bytes
                )
            except _RunFault as fault:
                raise fault.error from None
            except Exception as exc:  # a worker that died for good: that item's failure
                first = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
                result = task.failed_result(item, f"the Ray task failed: {first[0][:300]}")
            else:
                result = ItemResult.model_validate(header["result"])
                node, ip = header["node"], header["ip"]
                if problem is not None:
                    error = f"{result.error}; {problem}" if result.error else problem
                    result = result.model_copy(update={"error": error, "trajectory": None})
        await record(result)  # the folder, if any, is in place by now
        line = json.dumps({"id": item.id, "node": node, "ip": ip, "status": result.status})
        try:
            await asyncio.to_thread(_append, nodes_path, line)
        except OSError as exc:
            raise _cannot_write(runner, exc) from None

    await asyncio.gather(*(one(item) for item in items))


async def _receive(
    runner: EvalRunner, stream: Any, folder: Path, max_bytes: int
) -> tuple[dict[str, Any], str | None]:
    """The item's header; its folder put in place at ``folder``, or why it was not."""
    header: dict[str, Any] = json.loads(await (await anext(stream)))
    size = header["size"]
    if size is None:
        return header, None
    if not isinstance(size, int) or size > max_bytes:
        return header, f"its folder was refused: an archive of {size} bytes is over the cap"
    incoming = folder.with_name(f".{folder.name}.incoming.tar")
    staging = folder.with_name(f".{folder.name}.incoming")
    try:
        handle = _fresh(runner, incoming, staging)
        with handle:
            received = 0
            async for ref in stream:
                token, chunk = await ref
                if token != header["token"]:
                    return header, (
                        "its worker was restarted while shipping its folder, which was not "
                        "kept; rerun with --rerun-failed"
                    )
                received += len(chunk)
                if received > size:
                    return header, "its folder was refused: more bytes than announced"
                _io(runner, handle.write, chunk)
        if received != size:
            return header, f"its folder was cut short ({received} of {size} bytes)"
        try:
            await asyncio.to_thread(unpack_tar, incoming, staging, max_bytes=max_bytes)
        except InputError as exc:
            return header, f"its folder was refused: {exc}"
        except OSError as exc:
            raise _RunFault(_cannot_write(runner, exc)) from None
        await asyncio.to_thread(_io, runner, _into_place, staging, folder)
    finally:
        incoming.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return header, None


def _fresh(runner: EvalRunner, incoming: Path, staging: Path) -> IO[bytes]:
    """An empty file for the archive; what a killed driver left of this item is cleared."""

    def prepare() -> IO[bytes]:
        incoming.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        return incoming.open("wb")

    handle: IO[bytes] = _io(runner, prepare)
    return handle


def _into_place(staging: Path, folder: Path) -> None:
    """The unpacked folder replaces what an earlier attempt of the item left."""
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)
    elif folder.exists() or folder.is_symlink():
        folder.unlink()
    staging.rename(folder)


def _io(runner: EvalRunner, action: Callable[..., Any], *args: Any) -> Any:
    """``action(*args)`` on the run's folder; a failure there stops the run."""
    try:
        return action(*args)
    except OSError as exc:
        raise _RunFault(_cannot_write(runner, exc)) from None


def _cannot_write(runner: EvalRunner, exc: OSError) -> InputError:
    from medagent.evals._runner import _cannot_write as cannot_write

    return cannot_write(runner.run_dir, exc)


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
