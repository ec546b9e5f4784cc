"""A spend cap: stop before the model call that could take a run over its budget in USD.

A full GIANT pass over MultiPathQA costs about $125 of API calls. ``SpendCap`` wraps any
``ChatModel``: before each call it adds the worst case of that call (its prompt, estimated, plus
``max_tokens`` of output) to what was spent and to what calls in flight may still cost, and
refuses with ``BudgetExhaustedError`` when that would pass the budget; after each call it adds
what the call really cost. One ``Spend`` is shared by every item of a run, so concurrent items
draw on one budget. ``watch_budget`` tells a caller whether the calls made under it were refused
(agents turn that into their ``budget_exhausted`` status, the eval runner leaves such an item
unfinished so a rerun resumes it).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from pydantic import BaseModel, ConfigDict, Field

from medagent.artifacts import ArtifactStore
from medagent.errors import BudgetExhaustedError, ConfigError
from medagent.models._messages import Message, ToolSpec
from medagent.models.base import (
    ChatModel,
    GenerateParams,
    Reply,
    StreamingChatModel,
    Usage,
    UsageTotals,
    image_cap,
)

__all__ = [
    "MODEL_PRICES",
    "PRICES_AS_OF",
    "Prices",
    "Spend",
    "SpendCap",
    "resolve_prices",
    "watch_budget",
]


class Prices(BaseModel):
    """USD per million tokens: what a model's prompt and output tokens cost."""

    model_config = ConfigDict(frozen=True)

    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        ) / 1e6


#: The providers' list prices when this table was written; pass --price-in/--price-out when
#: they have changed. Dated snapshots (``gpt-5-mini-2025-08-07``) take their family's price.
PRICES_AS_OF = "2025-08-15"
MODEL_PRICES: dict[str, Prices] = {
    "gpt-5": Prices(input_per_million=1.25, output_per_million=10.00),
    "gpt-5-mini": Prices(input_per_million=0.25, output_per_million=2.00),
    "gpt-5-nano": Prices(input_per_million=0.05, output_per_million=0.40),
    "gpt-4.1": Prices(input_per_million=2.00, output_per_million=8.00),
    "gpt-4.1-mini": Prices(input_per_million=0.40, output_per_million=1.60),
    "gpt-4.1-nano": Prices(input_per_million=0.10, output_per_million=0.40),
    "gpt-4o": Prices(input_per_million=2.50, output_per_million=10.00),
    "gpt-4o-mini": Prices(input_per_million=0.15, output_per_million=0.60),
    "o3": Prices(input_per_million=2.00, output_per_million=8.00),
    "o3-mini": Prices(input_per_million=1.10, output_per_million=4.40),
    "o4-mini": Prices(input_per_million=1.10, output_per_million=4.40),
}

#: Backends that run on the user's own hardware: no per-token bill unless priced.
_LOCAL_BACKENDS = ("vllm", "transformers", "scripted")


def _table_price(model: str) -> Prices | None:
    name = model.strip().lower().removeprefix("openai/")
    if name in MODEL_PRICES:
        return MODEL_PRICES[name]
    family = [key for key in MODEL_PRICES if name.startswith(key + "-")]
    return MODEL_PRICES[max(family, key=len)] if family else None


def resolve_prices(
    model: str,
    backend: str,
    *,
    price_in: float | None = None,
    price_out: float | None = None,
    budget_usd: float | None = None,
) -> Prices | None:
    """The prices of ``model``: the table's (or zero on a local backend), overridden by
    ``price_in``/``price_out``. ``None`` when unknown; with a budget that is a ``ConfigError``
    (a cap on an unpriced model would never stop anything)."""
    known = _table_price(model)
    if known is None and backend in _LOCAL_BACKENDS:
        known = Prices()
    if price_in is not None or price_out is not None:
        base = known or Prices()
        return Prices(
            input_per_million=base.input_per_million if price_in is None else price_in,
            output_per_million=base.output_per_million if price_out is None else price_out,
        )
    if known is None and budget_usd is not None:
        raise ConfigError(
            f"no price is known for model {model!r}, so --budget-usd cannot be kept; pass "
            "--price-in and --price-out (USD per million tokens; 0 for a server of your own)"
        )
    return known


_refusals: ContextVar[list[BudgetExhaustedError] | None] = ContextVar(
    "medagent_budget_refusals", default=None
)


@contextmanager
def watch_budget() -> Iterator[list[BudgetExhaustedError]]:
    """Collects the budget refusals of model calls made inside (tasks started inside too)."""
    refused: list[BudgetExhaustedError] = []
    token = _refusals.set(refused)
    try:
        yield refused
    finally:
        _refusals.reset(token)


def _usd(amount: float) -> str:
    return f"${amount:.4f}" if amount < 1 else f"${amount:.2f}"


class Spend:
    """What a run may spend and has spent, shared by every call (and item) of the run.

    A call is admitted while what was spent, what calls in flight may still cost and its own
    worst case stay within the budget; a call that fits only once calls in flight have settled
    waits for them. ``budget_usd=None`` only counts.
    """

    def __init__(self, prices: Prices, budget_usd: float | None = None) -> None:
        if budget_usd is not None and budget_usd < 0:
            raise ConfigError(f"--budget-usd must be at least 0, not {budget_usd:g}")
        self.prices = prices
        self.budget_usd = budget_usd
        self.spent_usd = 0.0
        self.calls = 0
        self.refused = 0
        self._in_flight_usd = 0.0
        self._lock = threading.Lock()
        self._settled: tuple[asyncio.AbstractEventLoop, asyncio.Condition] | None = None

    @property
    def exhausted(self) -> bool:
        """True once a call was refused."""
        return self.refused > 0

    def summary(self) -> dict[str, float | int | bool | None]:
        """For manifests and reports."""
        return {
            "budget_usd": self.budget_usd,
            "spent_usd": round(self.spent_usd, 6),
            "calls": self.calls,
            "exhausted": self.exhausted,
            "input_per_million": self.prices.input_per_million,
            "output_per_million": self.prices.output_per_million,
        }

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._settled is None or self._settled[0] is not loop:
                self._settled = (loop, asyncio.Condition())
            return self._settled[1]

    async def admit(self, worst_usd: float) -> None:
        """Reserve ``worst_usd`` for one call, or raise ``BudgetExhaustedError``."""
        if self.budget_usd is None:
            return
        settled = self._condition()
        async with settled:
            while self.spent_usd + worst_usd <= self.budget_usd:
                if self.spent_usd + self._in_flight_usd + worst_usd <= self.budget_usd:
                    self._in_flight_usd += worst_usd
                    return
                await settled.wait()
            self.refused += 1
            error = BudgetExhaustedError(
                f"the spend cap is reached: {_usd(self.spent_usd)} spent of the "
                f"{_usd(self.budget_usd)} budget and the next model call could cost up to "
                f"{_usd(worst_usd)}; rerun with a higher --budget-usd to resume"
            )
        seen = _refusals.get()
        if seen is not None:
            seen.append(error)
        raise error

    async def settle(self, worst_usd: float, usage: Usage | None) -> None:
        """Release a call's reservation and add what it cost (nothing when it failed)."""
        cost = 0.0 if usage is None else self.prices.cost(usage.prompt_tokens, output_tokens(usage))
        if self.budget_usd is None:
            self.spent_usd += cost
            self.calls += 1
            return
        settled = self._condition()
        async with settled:
            self._in_flight_usd = max(0.0, self._in_flight_usd - worst_usd)
            self.spent_usd += cost
            self.calls += 1
            settled.notify_all()


def output_tokens(usage: Usage) -> int:
    """Billed output tokens: the completion, whose count includes the reasoning tokens
    (``Usage.reasoning_tokens``, billed at the output price); never fewer than those."""
    reasoning = getattr(usage, "reasoning_tokens", 0)
    return max(usage.completion_tokens, reasoning if isinstance(reasoning, int) else 0)


#: Rough sizes for a prompt not yet seen: characters per token, tokens per image.
_CHARS_PER_TOKEN = 4
_TOKENS_PER_IMAGE = 800


def _rough_prompt_tokens(messages: Sequence[Message]) -> int:
    text = sum(len(m.text) for m in messages)
    images = sum(len(m.images) for m in messages)
    return text // _CHARS_PER_TOKEN + images * _TOKENS_PER_IMAGE + 4 * len(messages) + 1


class SpendCap:
    """Wraps a ``ChatModel``; every call is admitted by ``spend`` first and charged after.

    A prompt's tokens are estimated from its characters and images, scaled by how the previous
    call's real prompt tokens compared with the same estimate of its prompt.
    """

    def __init__(self, inner: ChatModel, spend: Spend) -> None:
        self.inner = inner
        self.spend = spend
        self.name = inner.name
        self.usage_totals: UsageTotals = inner.usage_totals
        self._tokens_per_estimate = 1.0

    @property
    def image_long_side(self) -> int | None:
        """The wrapped backend's cap on images, so agents render within it."""
        return image_cap(self.inner)

    def worst_case_usd(self, messages: Sequence[Message], params: GenerateParams) -> float:
        """The most the call could cost: its estimated prompt and ``max_tokens`` of output."""
        prompt = round(_rough_prompt_tokens(messages) * self._tokens_per_estimate)
        return self.spend.prices.cost(prompt, params.max_tokens)

    def _learn(self, messages: Sequence[Message], reply: Reply) -> None:
        if reply.usage.prompt_tokens > 0:
            self._tokens_per_estimate = reply.usage.prompt_tokens / _rough_prompt_tokens(messages)

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> Reply:
        params = params or GenerateParams()
        worst = self.worst_case_usd(messages, params)
        await self.spend.admit(worst)
        reply: Reply | None = None
        try:
            reply = await self.inner.generate(
                messages, schema=schema, tools=tools, params=params, artifacts=artifacts
            )
        finally:
            await self.spend.settle(worst, reply.usage if reply is not None else None)
        self._learn(messages, reply)
        return reply

    async def generate_stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> AsyncIterator[str | Reply]:
        """What the wrapped model streams (or its whole reply when it cannot stream)."""
        params = params or GenerateParams()
        if not isinstance(self.inner, StreamingChatModel):
            yield await self.generate(messages, tools=tools, params=params, artifacts=artifacts)
            return
        worst = self.worst_case_usd(messages, params)
        await self.spend.admit(worst)
        reply: Reply | None = None
        try:
            async for piece in self.inner.generate_stream(
                messages, tools=tools, params=params, artifacts=artifacts
            ):
                if isinstance(piece, Reply):
                    reply = piece
                yield piece
        finally:
            await self.spend.settle(worst, reply.usage if reply is not None else None)
        if reply is not None:
            self._learn(messages, reply)

    async def aclose(self) -> None:
        await self.inner.aclose()
