"""``--executor ray``: items as Ray tasks, each running the runner's own per-item code.

Workers build their model from the runner's factory (so pass a picklable one, e.g. a
``functools.partial(build_model, settings)``) and return the result; the driver writes every
result line, so ``results.jsonl`` has one writer whatever the executor.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from medagent.errors import ConfigError, DependencyMissingError
from medagent.evals._records import EvalItem, ItemResult

if TYPE_CHECKING:
    from medagent.evals._runner import EvalRunner

__all__ = ["run_on_ray"]


def _run_one(runner: EvalRunner, item_json: str) -> str:
    """Executed in a Ray worker: the same per-item code as the local executor."""
    item = EvalItem.model_validate_json(item_json)

    async def go() -> ItemResult:
        model = runner.make_model()
        try:
            return await runner.run_item(item, model)
        finally:
            await model.aclose()

    return asyncio.run(go()).model_dump_json()


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
    if not ray.is_initialized():
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "ignore_reinit_error": True,
        }
        if runner.ray_address:
            options["address"] = runner.ray_address
        else:
            options["num_cpus"] = max(1, runner.concurrency)
        ray.init(**options)
    remote = ray.remote(_run_one)
    # The runner goes to the workers without its lock-holding results writer.
    shipped = runner.__class__.__new__(runner.__class__)
    shipped.__dict__.update({k: v for k, v in runner.__dict__.items() if k != "results"})
    runner_ref = ray.put(shipped)
    queue = list(items)
    in_flight: list[Any] = []
    submitted: dict[Any, EvalItem] = {}
    while queue or in_flight:
        while queue and len(in_flight) < runner.concurrency:
            item = queue.pop(0)
            ref = remote.remote(runner_ref, item.model_dump_json())
            submitted[ref] = item
            in_flight.append(ref)
        done, in_flight = await asyncio.to_thread(ray.wait, in_flight, num_returns=1)
        for ref in done:
            item = submitted.pop(ref)
            try:
                text = await asyncio.to_thread(ray.get, ref)
            except Exception as exc:  # a worker that died is that item's failure, not the run's
                first = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
                result = runner.failed_result(item, f"the Ray task failed: {first[0][:300]}")
            else:
                result = ItemResult.model_validate(json.loads(text))
            await record(result)
