"""Retry timing, retryable failures and a pool of endpoints for the HTTP backend.

Batch evaluations spread requests over several vLLM servers. Each request goes to the server
with the fewest requests in flight, except that a conversation stays on the server that holds
its prefix in cache (vLLM's prefix caching is per server); one that keeps failing is set aside
for a cool-down instead of eating every retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from medagent.errors import ModelError

__all__ = [
    "Endpoint",
    "EndpointPool",
    "RETRYABLE_STATUS",
    "RetryPolicy",
    "Retryable",
    "affinity_key",
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


def affinity_key(messages: Sequence[Any]) -> str:
    """A key for a conversation: a hash of its opening, up to and including the first user turn.

    Every request of a conversation repeats its opening, so they share the key; conversations
    that open alike share it too, and with it a cached prefix. ``messages`` are the wire
    messages (dicts of str, lists, numbers). The strings are fed to the hash as they are, not
    serialised to JSON first: a 200 KB base64 image costs about 0.1 ms.
    """
    digest = hashlib.sha1(usedforsecurity=False)
    for message in messages:
        _feed(digest, message)
        if isinstance(message, dict) and message.get("role") == "user":
            break
    return digest.hexdigest()


def _feed(digest: Any, value: object) -> None:
    """``value`` into ``digest``, with markers so that differently nested values differ."""
    if isinstance(value, str):
        digest.update(value.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    elif isinstance(value, dict):
        digest.update(b"\x01")
        for name, item in value.items():
            _feed(digest, name)
            _feed(digest, item)
        digest.update(b"\x02")
    elif isinstance(value, list | tuple):
        digest.update(b"\x03")
        for item in value:
            _feed(digest, item)
        digest.update(b"\x04")
    else:
        digest.update(repr(value).encode())
        digest.update(b"\x05")


class Endpoint:
    """One base URL with its limit of requests in flight, its load and its failure record.

    ``slots`` is held only while an HTTP request is open; ``in_flight`` counts the requests
    routed here and not finished, those still waiting for a slot included.
    """

    def __init__(self, url: str, concurrency: int) -> None:
        self.url = url
        self.limit = concurrency
        self.slots = asyncio.Semaphore(concurrency)
        self.in_flight = 0
        self.consecutive_failures = 0
        self.skip_until = 0.0

    @property
    def saturated(self) -> bool:
        """Whether a new request would wait for a slot."""
        return self.in_flight >= self.limit

    def __repr__(self) -> str:
        return (
            f"Endpoint({self.url!r}, in_flight={self.in_flight}, "
            f"failures={self.consecutive_failures})"
        )


class EndpointPool:
    """Least-loaded routing with conversation affinity, skipping endpoints that keep failing.

    A request goes to the healthy endpoint with the fewest requests in flight (ties taken in
    turn, so equal loads spread). A request with an affinity key goes where that key went last
    (``affinity_size`` keys remembered, least recently used forgotten first), unless that
    endpoint is cooling down, is the one its last attempt failed on, or is saturated while
    another has a free slot: then it is routed as a new one and the key follows it.

    An endpoint that failed ``failure_threshold`` times in a row is skipped for ``cooldown_s``;
    when every endpoint is cooling down, the one that comes back soonest is used rather than
    failing outright.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        concurrency: int = 8,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        affinity_size: int = 4096,
    ) -> None:
        if not urls:
            raise ValueError("at least one endpoint URL is needed")
        self.endpoints = [Endpoint(url, concurrency) for url in urls]
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.affinity_size = affinity_size
        self._pins: OrderedDict[str, Endpoint] = OrderedDict()
        self._next = 0

    def pick(self, key: str | None = None, avoid: Endpoint | None = None) -> Endpoint:
        """The endpoint for the next request; ``avoid``: the one its last attempt failed on."""
        now = time.monotonic()
        healthy = [e for e in self.endpoints if e.skip_until <= now]
        if not healthy:
            return min(self.endpoints, key=lambda e: e.skip_until)
        candidates = [e for e in healthy if e is not avoid] or healthy
        if key is None:
            return self._least_loaded(candidates)
        pinned = self._pins.get(key)
        if pinned is not None and pinned in candidates:
            crowded = pinned.saturated and any(not e.saturated for e in candidates)
            if not crowded:
                self._pins.move_to_end(key)
                return pinned
        chosen = self._least_loaded(candidates)
        self._pins[key] = chosen
        self._pins.move_to_end(key)
        if len(self._pins) > self.affinity_size:
            self._pins.popitem(last=False)
        return chosen

    def _least_loaded(self, candidates: list[Endpoint]) -> Endpoint:
        """The candidate with the fewest requests in flight, the search starting in turn."""
        count = len(self.endpoints)
        best: Endpoint | None = None
        best_index = 0
        for offset in range(count):
            index = (self._next + offset) % count
            endpoint = self.endpoints[index]
            if endpoint in candidates and (best is None or endpoint.in_flight < best.in_flight):
                best, best_index = endpoint, index
        assert best is not None
        self._next = (best_index + 1) % count
        return best

    @contextmanager
    def lease(self, key: str | None = None, avoid: Endpoint | None = None) -> Iterator[Endpoint]:
        """``pick``, counting the request in the endpoint's load until the block ends."""
        endpoint = self.pick(key, avoid)
        endpoint.in_flight += 1
        try:
            yield endpoint
        finally:
            endpoint.in_flight -= 1

    def record_success(self, endpoint: Endpoint) -> None:
        endpoint.consecutive_failures = 0
        endpoint.skip_until = 0.0

    def record_failure(self, endpoint: Endpoint) -> None:
        endpoint.consecutive_failures += 1
        if endpoint.consecutive_failures >= self.failure_threshold:
            endpoint.skip_until = time.monotonic() + self.cooldown_s
