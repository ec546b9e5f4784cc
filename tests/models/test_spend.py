"""The spend cap: prices, the worst-case check before each call, one spend shared by all."""

from __future__ import annotations

import asyncio

import pytest

from medagent.errors import BudgetExhaustedError, ConfigError
from medagent.models import (
    MODEL_PRICES,
    GenerateParams,
    Message,
    Prices,
    ScriptedModel,
    Spend,
    SpendCap,
    resolve_prices,
    watch_budget,
)

# Scripted replies count words as tokens; $1 per output token, prompts free.
DOLLAR_PER_TOKEN = Prices(input_per_million=0.0, output_per_million=1e6)


def test_the_table_prices_models_and_their_dated_snapshots() -> None:
    assert resolve_prices("gpt-5", "openai") == MODEL_PRICES["gpt-5"]
    assert resolve_prices("gpt-5-mini-2025-08-07", "openai") == MODEL_PRICES["gpt-5-mini"]
    assert resolve_prices("openai/gpt-4o-mini", "openai") == MODEL_PRICES["gpt-4o-mini"]
    assert resolve_prices("o3", "openai") != resolve_prices("o4-mini", "openai")
    assert resolve_prices("Qwen/Qwen2.5-VL-7B-Instruct", "vllm") == Prices()


def test_flags_override_the_table() -> None:
    prices = resolve_prices("gpt-5", "openai", price_in=3.0)
    assert prices == Prices(input_per_million=3.0, output_per_million=10.0)
    both = resolve_prices("my-served-model", "openai", price_in=0.5, price_out=1.5)
    assert both == Prices(input_per_million=0.5, output_per_million=1.5)


def test_an_unpriced_model_with_a_budget_is_one_line_naming_the_flags() -> None:
    assert resolve_prices("my-served-model", "openai") is None
    with pytest.raises(ConfigError) as caught:
        resolve_prices("my-served-model", "openai", budget_usd=5.0)
    assert "--price-in" in str(caught.value) and "\n" not in str(caught.value)


async def test_the_call_that_could_exceed_the_budget_is_never_made() -> None:
    inner = ScriptedModel([{"text": "a b c"}] * 20)  # 3 output tokens: $3 a call
    spend = Spend(DOLLAR_PER_TOKEN, budget_usd=25.0)
    model = SpendCap(inner, spend)
    params = GenerateParams(max_tokens=10)  # worst case $10 a call
    with watch_budget() as refused, pytest.raises(BudgetExhaustedError) as caught:
        for _ in range(20):
            await model.generate([Message.user("hello")], params=params)
    # Calls 1..6 fit (18 + 10 > 25 only before the 7th): six made, none after.
    assert len(inner.requests) == 6 and spend.spent_usd == pytest.approx(18.0)
    assert spend.spent_usd <= 25.0 and spend.exhausted and refused == [caught.value]
    message = str(caught.value)
    assert "$18.00 spent" in message and "rerun with a higher --budget-usd" in message
    assert "\n" not in message


async def test_concurrent_calls_share_one_spend_and_never_pass_it() -> None:
    inner = ScriptedModel([{"text": "a b"}] * 40)  # $2 a call, worst case $10
    spend = Spend(DOLLAR_PER_TOKEN, budget_usd=21.0)
    model = SpendCap(inner, spend)
    params = GenerateParams(max_tokens=10)

    async def call() -> bool:
        try:
            await model.generate([Message.user("hi")], params=params)
        except BudgetExhaustedError:
            return False
        return True

    made = await asyncio.gather(*(call() for _ in range(12)))
    # One budget for all: calls stop once spent + $10 > $21, i.e. after 6 calls ($12).
    assert sum(made) == len(inner.requests) == 6
    assert spend.spent_usd == pytest.approx(12.0)


async def test_without_a_budget_it_only_counts_and_passes_the_cap_on() -> None:
    inner = ScriptedModel([{"text": "a b"}] * 3)
    spend = Spend(DOLLAR_PER_TOKEN)
    model = SpendCap(inner, spend)
    for _ in range(3):
        await model.generate([Message.user("hi")])
    assert spend.spent_usd == pytest.approx(6.0) and not spend.exhausted
    assert model.name == inner.name and model.usage_totals is inner.usage_totals
