"""Retry timing, retryable failures and a pool of endpoints for the HTTP backend.

Batch evaluations spread requests over several vLLM servers; one that keeps failing is set
aside for a cool-down instead of eating every retry.
"""

from __future__ import annotations

import asyncio
import random
import time
from email.utils import parsedate_to_datetime

from pydantic import BaseModel, ConfigDict, Field

from medagent.errors import ModelError

__all__ = [
    "Endpoint",
    "EndpointPool",
    "RETRYABLE_STATUS",
    "RetryPolicy",
    "Retryable",
    "parse_retry_after",
]

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth another try: timeouts, conflicts, rate limits, server errors."""


class Retryable(Exception):
    """One failed attempt that may succeed if tried again; ``error`` is what to report if not."""

    def __init__(self, error: ModelError, retry_after: float | None = None) -> None:
        self.error = error
        self.retry_after = retry_after


class RetryPolicy(BaseModel):
    """Exponential backoff with full jitter, capped; ``Retry-After`` wins when a server sends it."""

    model_config = ConfigDict(frozen=True)

    max_retries: int = Field(4, ge=0)
    base_delay_s: float = Field(0.5, ge=0)
    max_delay_s: float = Field(20.0, ge=0)
    max_retry_after_s: float = Field(60.0, ge=0)

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        return rng.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Endpoint:
    """One base URL with its own concurrency limit and failure record."""

    def __init__(self, url: str, concurrency: int) -> None:
        self.url = url
        self.slots = asyncio.Semaphore(concurrency)
        self.consecutive_failures = 0
        self.skip_until = 0.0

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r}, failures={self.consecutive_failures})"


class EndpointPool:
    """Round-robin over endpoints, skipping any that failed ``failure_threshold`` times in a row.

    A skipped endpoint gets another chance after ``cooldown_s``; when every endpoint is cooling
    down, the one that comes back soonest is used rather than failing outright.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        concurrency: int = 8,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
    ) -> None:
        if not urls:
            raise ValueError("at least one endpoint URL is needed")
        self.endpoints = [Endpoint(url, concurrency) for url in urls]
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._next = 0

    def pick(self) -> Endpoint:
        now = time.monotonic()
        count = len(self.endpoints)
        for offset in range(count):
            endpoint = self.endpoints[(self._next + offset) % count]
            if endpoint.skip_until <= now:
                self._next = (self._next + offset + 1) % count
                return endpoint
        return min(self.endpoints, key=lambda e: e.skip_until)

    def record_success(self, endpoint: Endpoint) -> None:
        endpoint.consecutive_failures = 0
        endpoint.skip_until = 0.0

    def record_failure(self, endpoint: Endpoint) -> None:
        endpoint.consecutive_failures += 1
        if endpoint.consecutive_failures >= self.failure_threshold:
            endpoint.skip_until = time.monotonic() + self.cooldown_s
