"""``--executor ray``: items as Ray tasks, each running the same per-item code as local runs.

Workers get an ``ItemTask`` (the model factory, the method, the item's time limit, prices and
scorer), never the runner: the runner holds the driver's results writer and progress callback,
which neither pickle nor belong on a worker. So pass a picklable model factory, e.g. a
``functools.partial(build_model, settings)``. Each task returns its result and the id of the
node it ran on; the driver writes every result line (``results.jsonl`` has one writer whatever
the executor) and, per item, the node in ``RUN_DIR/ray_nodes.jsonl``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from medagent._ray import connect_ray
from medagent.errors import ConfigError, DependencyMissingError
from medagent.evals._records import EvalItem, ItemResult

if TYPE_CHECKING:
    from medagent.evals._runner import EvalRunner, ItemTask

__all__ = ["NODES_FILE", "run_on_ray"]

NODES_FILE = "ray_nodes.jsonl"


def _run_one(task: ItemTask, item_json: str) -> str:
    """Executed in a Ray worker: the item's result and the node it ran on, as JSON."""
    import ray

    item = EvalItem.model_validate_json(item_json)

    async def go() -> ItemResult:
        model = task.make_model()
        try:
            return await task.run_item(item, model)
        finally:
            await model.aclose()

    result = asyncio.run(go())
    node = ray.get_runtime_context().get_node_id()
    return json.dumps({"result": result.model_dump(mode="json"), "node": node})


async def run_on_ray(
    runner: EvalRunner,
    items: Sequence[EvalItem],
    record: Callable[[ItemResult], Awaitable[None]],
) -> None:
    """Submit at most ``runner.concurrency`` tasks at a time; record results as they land."""
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
        await _submit_all(runner, task_ref, items, record)
    finally:
        if connected:
            ray.shutdown()


async def _submit_all(
    runner: EvalRunner,
    task_ref: Any,
    items: Sequence[EvalItem],
    record: Callable[[ItemResult], Awaitable[None]],
) -> None:
    import ray

    remote = ray.remote(_run_one)
    nodes_path = runner.run_dir / NODES_FILE
    queue = list(items)
    in_flight: list[Any] = []
    submitted: dict[Any, EvalItem] = {}
    while queue or in_flight:
        while queue and len(in_flight) < runner.concurrency:
            item = queue.pop(0)
            ref = remote.remote(task_ref, item.model_dump_json())
            submitted[ref] = item
            in_flight.append(ref)
        done, in_flight = await asyncio.to_thread(ray.wait, in_flight, num_returns=1)
        for ref in done:
            item = submitted.pop(ref)
            node: str | None = None
            try:
                text = await asyncio.to_thread(ray.get, ref)
            except Exception as exc:  # a worker that died is that item's failure, not the run's
                first = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
                result = runner.failed_result(item, f"the Ray task failed: {first[0][:300]}")
            else:
                shipped = json.loads(text)
                result = ItemResult.model_validate(shipped["result"])
                node = shipped["node"]
            await record(result)
            line = json.dumps({"id": item.id, "node": node, "status": result.status})
            await asyncio.to_thread(_append, nodes_path, line)


def _append(path: Any, line: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
