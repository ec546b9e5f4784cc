"""The evaluation runner's throughput against a model with 100 ms per call.

500 items x 3 model calls each, against the stub OpenAI server (its own process, 100 ms per
reply), at concurrency 1 and 32. The ideal is items x calls x latency / concurrency; the
ratio to it says how much the runner (results, fsync, bookkeeping) and the HTTP client cost.
Target: >= 90% of ideal at concurrency 32.

    python benchmarks/bench_eval.py [--items 500] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medagent.evals import EvalItem, EvalRunner, MethodOutput, RunConfig
from medagent.models import ChatModel, Message, OpenAIBackend

CALLS = 3


class ThreeCalls:
    """A method that asks the model three times per item, like a short agent."""

    name = "three-calls"

    def params(self) -> dict[str, Any]:
        return {"calls": CALLS}

    async def __call__(self, item: EvalItem, model: ChatModel, item_dir: Path) -> MethodOutput:
        history = [Message.user(item.question)]
        tokens = 0
        for _ in range(CALLS):
            reply = await model.generate(history)
            history += [reply.as_message(), Message.user("and then?")]
            tokens += reply.usage.total_tokens
        return MethodOutput(
            answer=reply.text,
            prediction=reply.text,
            agent_status="answered",
            ok=True,
            steps=CALLS,
            completion_tokens=tokens,
        )


def start_stub(latency: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from medagent.testing._stub_server import main; main()",
            "--latency",
            str(latency),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


async def run(base_url: str, items: int, concurrency: int, run_dir: Path) -> float:
    model = OpenAIBackend("stub-model", [base_url], concurrency=max(8, concurrency))
    config = RunConfig(
        dataset="bench",
        data_path="-",
        dataset_sha256="-",
        method="three-calls",
        backend="openai",
        model="stub-model",
    )
    dataset = [
        EvalItem(id=f"i{n}", task="t", question=f"question {n}", answer="ok") for n in range(items)
    ]
    runner = EvalRunner(
        model,
        ThreeCalls(),
        config,
        run_dir,
        concurrency=concurrency,
        score=lambda item, prediction: (prediction == item.answer, None),
    )
    started = time.perf_counter()
    outcome = await runner.run(dataset)
    elapsed = time.perf_counter() - started
    await model.aclose()
    assert outcome.ok == items, outcome
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    process, base_url = start_stub(args.latency)
    try:
        print(
            f"{'conc':>5} {'items':>6} {'seconds':>8} {'items/s':>8} {'ideal s':>8} {'of ideal':>9}"
        )
        for concurrency in args.concurrency:
            with tempfile.TemporaryDirectory() as tmp:
                elapsed = asyncio.run(run(base_url, args.items, concurrency, Path(tmp)))
            ideal = args.items * CALLS * args.latency / concurrency
            print(
                f"{concurrency:>5} {args.items:>6} {elapsed:>8.1f} {args.items / elapsed:>8.1f} "
                f"{ideal:>8.1f} {ideal / elapsed:>9.1%}"
            )
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
