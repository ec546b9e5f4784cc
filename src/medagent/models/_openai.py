"""Any OpenAI-compatible chat-completions server over httpx: vLLM, SGLang, Ollama, OpenAI.

Replies come whole (``generate``) or streamed as server-sent events (``generate_stream``); both
send the same request body and end in the same ``Reply``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import random
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel

from medagent.artifacts import ArtifactStore
from medagent.errors import (
    ModelError,
    ModelResponseError,
    ModelTimeoutError,
    ModelUnavailableError,
)
from medagent.models._endpoints import (
    RETRYABLE_STATUS,
    Endpoint,
    EndpointPool,
    Retryable,
    RetryPolicy,
    affinity_key,
    parse_retry_after,
)
from medagent.models._messages import Message, ToolSpec
from medagent.models._params import SHARED_PARAMETER_MEMORY, ParameterMemory, learn_from_refusal
from medagent.models._reasoning import split_reasoning
from medagent.models._sse import StreamAssembly, read_chunk, sse_data
from medagent.models._structured import parse_structured
from medagent.models._wire import (
    forced_tool_call_schema,
    json_schema_of,
    parse_tool_calls,
    response_format,
    sampling_fields,
    split_tool_calls,
    to_openai_messages,
    to_openai_tool_choice,
    to_openai_tools,
)
from medagent.models.base import GenerateParams, ReasoningEffort, Reply, Usage, UsageTotals

_LOG = logging.getLogger("medagent.models")

__all__ = ["OpenAIBackend", "StructuredOutputField", "ToolMode"]

StructuredOutputField = Literal["response_format", "structured_outputs"]
"""How a schema is sent: OpenAI's ``response_format`` (works on vLLM too) or vLLM's own field."""

ToolMode = Literal["auto", "native", "schema"]
"""How a forced tool call is made: the server's native tool calling (``native``), JSON-schema
decoding of ``{"name", "arguments"}`` (``schema``), or native with a schema retry when the
server ignored the forced choice (``auto``)."""

_CONNECTIONS_PER_CLIENT = 8
_MODELS_BODY_LIMIT = 1_000_000
"""Bytes of a ``GET /models`` answer read at most (a real one lists a few models)."""

_PARAMETER_LESSONS = 5
"""The most times one attempt is sent again after a 400 that taught a lesson (max_tokens,
temperature and top_p are seen refused together; an image limit and a system turn add two)."""


@dataclass(frozen=True)
class _Completion:
    """A chat completion received; ``shown``: its text was already yielded piece by piece."""

    data: dict[str, Any]
    shown: bool = False


@dataclass(frozen=True)
class _Answered:
    """The completion that ended a request, with where and after how many attempts."""

    completion: _Completion
    endpoint: Endpoint
    attempts: int
    latency_s: float


_Attempt = Callable[[Endpoint], AsyncGenerator[str | _Completion, None]]
"""One try of a request on one endpoint: text pieces to show (streaming only), then one
``_Completion``; raises ``Retryable`` when another try may succeed."""


class OpenAIBackend:
    """Chat completions over HTTP with retries, several endpoints and per-endpoint limits.

    ``concurrency`` is the requests in flight on each endpoint, held only while a request is
    open; with several endpoints a request goes to the least-loaded one and a conversation
    stays on one (``EndpointPool``).

    Retries (with exponential backoff and jitter) cover connection errors, timeouts, 429 (its
    ``Retry-After`` honoured), 5xx and unreadable bodies. Other 4xx answers are the caller's
    mistake and are reported at once with the server's message. ``generate_stream`` retries the
    same failures until the first chunk of a stream arrives, never after. ``image_long_side``
    caps the images sent (``None``: no cap; see ``sent_long_side``).

    Sampling fields are sent as each model accepts them (``ParameterRules``: GPT-5 and o-series
    get ``max_completion_tokens`` and no temperature). A 400 that refuses one of them is
    answered by sending the request again without it (or renamed), once per field, and the
    lesson is kept in ``parameter_memory`` for that endpoint and model. ``reasoning_effort`` is
    sent with every request whose params do not set their own.
    """

    def __init__(
        self,
        model: str,
        base_urls: Sequence[str] = ("http://127.0.0.1:8000/v1",),
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        concurrency: int = 8,
        image_long_side: int | None = None,
        structured_field: StructuredOutputField = "response_format",
        tool_mode: ToolMode = "auto",
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        seed: int | None = None,
        reasoning_effort: ReasoningEffort | None = None,
        parameter_memory: ParameterMemory | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = model
        self.reasoning_effort = reasoning_effort
        self.parameter_memory = parameter_memory or SHARED_PARAMETER_MEMORY
        self.usage_totals = UsageTotals()
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.image_long_side = image_long_side
        self.structured_field = structured_field
        self.tool_mode = tool_mode
        self.pool = EndpointPool(
            [u.rstrip("/") for u in base_urls],
            concurrency=concurrency,
            failure_threshold=failure_threshold,
            cooldown_s=cooldown_s,
        )
        key = api_key or os.environ.get("OPENAI_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._rng = random.Random(seed)
        self._transport = transport
        total_slots = concurrency * len(self.pool.endpoints)
        self._shards = max(1, -(-total_slots // _CONNECTIONS_PER_CLIENT))
        self._clients: list[httpx.AsyncClient] = []
        self._next_client = 0
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        # httpcore's pool scans all its connections for every request, which costs O(n²) at
        # high concurrency (1.7 ms/request at 64 in flight instead of 0.6); several small
        # clients keep each pool short. Clients are bound to the event loop they were first
        # used in, and the sync wrapper or pytest may run us in another loop later.
        loop = asyncio.get_running_loop()
        if not self._clients or self._client_loop is not loop:
            self._clients = [
                httpx.AsyncClient(
                    headers=self._headers,
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
                    transport=self._transport,
                )
                for _ in range(self._shards)
            ]
            self._client_loop = loop
        self._next_client = (self._next_client + 1) % len(self._clients)
        return self._clients[self._next_client]

    async def aclose(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()

    def build_request(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
        tool_mode: Literal["native", "schema"] = "native",
        stream: bool = False,
    ) -> dict[str, Any]:
        """The JSON body of a chat-completions request.

        ``tool_mode="schema"`` turns a forced tool call (``tool_choice`` "required" or a name)
        into a structured-output request for ``{"name", "arguments"}``: the tools stay in the
        prompt with ``tool_choice`` "none", and the server's JSON-schema decoding enforces the
        call. It is how tool calls work on servers whose tool parser does not constrain them.
        ``stream`` asks for server-sent events, with a last chunk that carries the usage.
        Sampling fields have their classic names here; each attempt sends them as its endpoint's
        model accepts them (``sent_body``).
        """
        params = params or GenerateParams()
        if params.reasoning_effort is None and self.reasoning_effort is not None:
            params = params.model_copy(update={"reasoning_effort": self.reasoning_effort})
        body: dict[str, Any] = {
            "model": self.name,
            "messages": to_openai_messages(messages, artifacts, self.image_long_side),
            **sampling_fields(params),
        }
        forced = forced_tool_call_schema(tools, params.tool_choice) if tools else None
        if tools:
            body["tools"] = to_openai_tools(tools)
            body["tool_choice"] = to_openai_tool_choice(params.tool_choice, tools)
        if tool_mode == "schema" and forced is not None:
            body["tool_choice"] = "none"
            self._constrain(body, "tool_call", forced)
        elif schema is not None:
            self._constrain(body, schema.__name__, json_schema_of(schema))
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def sent_body(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with its sampling fields as the model at ``endpoint`` accepts them."""
        return self.parameter_memory.rules(endpoint, self.name).apply(body)

    def _learned_from(
        self, endpoint: Endpoint, sent: dict[str, Any], response: httpx.Response
    ) -> bool:
        """Whether a 400 refused a parameter of ``sent`` and the lesson was kept: send again."""
        if response.status_code != 400:
            return False
        message, param = _refusal(response)
        rules = self.parameter_memory.rules(endpoint.url, self.name)
        learned = learn_from_refusal(rules, sent, message, param)
        if learned is None:
            return False
        self.parameter_memory.learn(endpoint.url, self.name, learned)
        self.usage_totals.parameter_refusals += 1
        if learned.max_images != rules.max_images:
            _LOG.warning(
                "%s at %s takes at most %d image(s) per request: older images are left out "
                "(start vLLM with a larger --limit-mm-per-prompt to send them)",
                self.name,
                endpoint.url,
                learned.max_images,
            )
        if learned.fold_system and not rules.fold_system:
            _LOG.warning(
                "%s's chat template refuses a system turn: it now opens the first user turn",
                self.name,
            )
        return True

    async def served_models(self) -> list[dict[str, Any]]:
        """What the first endpoint's ``GET /models`` lists; ``[]`` when it cannot say.

        vLLM adds ``root`` (the folder or hub id it loaded) and ``max_model_len`` to each entry,
        which ``medagent model check`` reports. A body over 1 MB is not read.
        """
        url = f"{self.pool.endpoints[0].url}/models"
        try:
            response = await self._http().get(url, timeout=min(self.timeout_s, 10.0))
            if response.status_code != 200 or len(response.content) > _MODELS_BODY_LIMIT:
                return []
            data = response.json()
        except (httpx.HTTPError, ValueError):
            return []
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return []
        return [item for item in items if isinstance(item, dict)][:100]

    def _constrain(self, body: dict[str, Any], name: str, json_schema: dict[str, Any]) -> None:
        if self.structured_field == "structured_outputs":
            body["structured_outputs"] = {"json": json_schema}
        else:
            body["response_format"] = response_format(name, json_schema)

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
        forced = bool(tools) and params.tool_choice not in ("auto", "none")
        first_mode: Literal["native", "schema"] = (
            "schema" if forced and self.tool_mode == "schema" else "native"
        )
        reply = await self._complete(messages, schema, tools, params, artifacts, first_mode)
        if forced and self.tool_mode == "auto" and not _has_call(reply, tools or []):
            # The server ignored the forced choice (seen with vLLM's Hermes parser on small
            # models): ask again with the call enforced by JSON-schema decoding.
            retry = await self._complete(messages, schema, tools, params, artifacts, "schema")
            raw = {**(retry.raw or {}), "medagent_native_response": reply.raw}
            usage = retry.usage.model_copy(
                update={
                    "attempts": retry.usage.attempts + reply.usage.attempts,
                    "latency_s": retry.usage.latency_s + reply.usage.latency_s,
                }
            )
            reply = retry.model_copy(update={"raw": raw, "usage": usage})
        return reply

    async def generate_stream(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> AsyncGenerator[str | Reply, None]:
        """``generate``, yielding the text as the server writes it, then the ``Reply``.

        The ``Reply`` is the one ``generate`` would give: the chunks' text and tool-call
        fragments (joined by their index) are put back together into a completion and read the
        same way. With tools offered, text from a ``<tool_call>`` block on (a server without a
        tool parser) is not yielded; the ``Reply`` holds the call.

        Not streamed, the ``Reply`` alone is yielded: requests with a ``schema`` (their text is
        JSON, not for display) and forced tool calls (``tool_choice`` "required" or a name: the
        call may need ``generate``'s schema retry).

        Failures before the first chunk are retried as in ``generate``. A stream that breaks
        off after it raises ``ModelUnavailableError`` (connection lost), ``ModelTimeoutError``
        (stalled past the timeout) or ``ModelResponseError`` (ended unfinished, unreadable
        chunk, error event), and is not retried: the text yielded cannot be taken back.
        """
        params = params or GenerateParams()
        forced = bool(tools) and params.tool_choice not in ("auto", "none")
        if schema is not None or forced:
            yield await self.generate(
                messages, schema=schema, tools=tools, params=params, artifacts=artifacts
            )
            return
        body = self.build_request(
            messages, tools=tools, params=params, artifacts=artifacts, stream=True
        )
        hide_tool_blocks = bool(tools)
        answered: _Answered | None = None
        attempts = self._attempts(
            lambda endpoint: self._stream(endpoint, body, hide_tool_blocks), body
        )
        async with contextlib.aclosing(attempts) as items:
            async for item in items:
                if isinstance(item, str):
                    yield item
                else:
                    answered = item
        assert answered is not None
        reply = self._reply(answered.completion.data, None, bool(tools), False, answered)
        self.usage_totals.add(reply.usage)
        if not answered.completion.shown and reply.text:
            yield reply.text  # the server ignored "stream": its text comes in one piece
        yield reply

    async def _complete(
        self,
        messages: Sequence[Message],
        schema: type[BaseModel] | None,
        tools: Sequence[ToolSpec] | None,
        params: GenerateParams,
        artifacts: ArtifactStore | None,
        tool_mode: Literal["native", "schema"],
    ) -> Reply:
        body = self.build_request(
            messages,
            schema=schema,
            tools=tools,
            params=params,
            artifacts=artifacts,
            tool_mode=tool_mode,
        )
        answered: _Answered | None = None
        async for item in self._attempts(lambda endpoint: self._post(endpoint, body), body):
            if isinstance(item, _Answered):
                answered = item
        assert answered is not None
        schema_call = (
            tool_mode == "schema"
            and forced_tool_call_schema(tools or [], params.tool_choice) is not None
        )
        reply = self._reply(answered.completion.data, schema, bool(tools), schema_call, answered)
        self.usage_totals.add(reply.usage)
        return reply

    async def _attempts(
        self, attempt: _Attempt, body: dict[str, Any]
    ) -> AsyncGenerator[str | _Answered, None]:
        """The retry loop of every request: ``attempt`` on one endpoint after another.

        Yields the text pieces an attempt yields as they come, then one ``_Answered``. An
        attempt raising ``Retryable`` (only before any piece) is tried again after a backoff,
        on another endpoint where there is one; any other ``ModelError`` ends the request at
        once, and so does the last retry's failure. ``body``'s opening keeps a conversation on
        one endpoint, where its prefix is cached.
        """
        started = time.perf_counter()
        key = affinity_key(body["messages"])
        last: Retryable | None = None
        failed: Endpoint | None = None
        for number in range(1, self.retry.max_retries + 2):
            if last is not None:
                await asyncio.sleep(self.retry.delay(number - 1, last.retry_after, self._rng))
            completion: _Completion | None = None
            with self.pool.lease(key, avoid=failed) as endpoint:
                try:
                    # Closed at once if our caller stops early: it holds a connection, a slot.
                    async with contextlib.aclosing(attempt(endpoint)) as items:
                        async for item in items:
                            if isinstance(item, str):
                                yield item
                            else:
                                completion = item
                except Retryable as failure:
                    self.pool.record_failure(endpoint)
                    last, failed = failure, endpoint
                    continue
                except ModelError:
                    self.usage_totals.failures += 1
                    raise
            assert completion is not None
            self.pool.record_success(endpoint)
            yield _Answered(completion, endpoint, number, time.perf_counter() - started)
            return
        assert last is not None
        raise self._gave_up(last)

    def _gave_up(self, last: Retryable) -> ModelError:
        """The last attempt's error, counted, as a new error saying how many attempts were made."""
        self.usage_totals.failures += 1
        self.usage_totals.retries += self.retry.max_retries
        error = copy.copy(last.error)  # same class and fields; the original stays as raised
        error.args = (f"{last.error} (gave up after {self.retry.max_retries + 1} attempts)",)
        return error

    async def _post(
        self, endpoint: Endpoint, body: dict[str, Any]
    ) -> AsyncGenerator[str | _Completion, None]:
        """One whole (not streamed) attempt: yields the completion only."""
        url = f"{endpoint.url}/chat/completions"
        async with endpoint.slots:
            for _ in range(_PARAMETER_LESSONS + 1):
                sent = self.sent_body(endpoint.url, body)
                try:
                    response = await self._http().post(url, json=sent, timeout=self.timeout_s)
                except httpx.TimeoutException:
                    raise self._no_answer(endpoint) from None
                except httpx.TransportError as exc:
                    raise Retryable(_unreachable(endpoint.url, exc)) from None
                if not self._learned_from(endpoint, sent, response):
                    break
        if response.status_code != 200:
            raise _status_error(endpoint, response)
        yield _Completion(_completion_json(endpoint, response))

    def _no_answer(self, endpoint: Endpoint) -> Retryable:
        return Retryable(
            ModelTimeoutError(
                f"the model server at {endpoint.url} did not answer within "
                f"{self.timeout_s:g} s; raise --timeout or check the server's load",
                endpoint=endpoint.url,
            )
        )

    async def _stream(
        self, endpoint: Endpoint, body: dict[str, Any], hide_tool_blocks: bool
    ) -> AsyncGenerator[str | _Completion, None]:
        """One streamed attempt: yields the text to show as chunks arrive, then the completion.

        Raises ``Retryable`` only while no chunk has arrived; after that, failures are final.
        """
        url = f"{endpoint.url}/chat/completions"
        assembly = StreamAssembly(hide_tool_blocks=hide_tool_blocks)
        async with endpoint.slots:
            try:
                for lesson in range(_PARAMETER_LESSONS + 1):
                    sent = self.sent_body(endpoint.url, body)
                    async with self._http().stream(
                        "POST", url, json=sent, timeout=self.timeout_s
                    ) as response:
                        if response.status_code != 200:
                            await response.aread()
                            if lesson < _PARAMETER_LESSONS and self._learned_from(
                                endpoint, sent, response
                            ):
                                continue
                            raise _status_error(endpoint, response)
                        if "text/event-stream" not in response.headers.get("content-type", ""):
                            await response.aread()  # the server ignored "stream": a whole answer
                            yield _Completion(_completion_json(endpoint, response))
                            return
                        async for data in sse_data(response):
                            if data.strip() == "[DONE]":
                                assembly.done = True
                                break
                            piece = assembly.add(read_chunk(endpoint, data, assembly.chunks))
                            if piece:
                                yield piece
                        break
            except httpx.TimeoutException:
                if not assembly.chunks:
                    raise self._no_answer(endpoint) from None
                self.pool.record_failure(endpoint)
                raise ModelTimeoutError(
                    f"the stream from {endpoint.url} stalled for over {self.timeout_s:g} s after "
                    f"{assembly.chunks} chunks; the partial reply was dropped",
                    endpoint=endpoint.url,
                ) from None
            except httpx.TransportError as exc:
                if not assembly.chunks:
                    raise Retryable(_unreachable(endpoint.url, exc)) from None
                self.pool.record_failure(endpoint)
                raise ModelUnavailableError(
                    f"the stream from {endpoint.url} broke off after {assembly.chunks} chunks "
                    f"({type(exc).__name__}); the partial reply was dropped",
                    endpoint=endpoint.url,
                ) from None
        if not assembly.chunks:
            raise Retryable(
                ModelResponseError(
                    f"the server at {endpoint.url} sent an empty stream",
                    endpoint=endpoint.url,
                    status_code=200,
                )
            )
        if not assembly.done and assembly.finish_reason is None:
            self.pool.record_failure(endpoint)
            raise ModelResponseError(
                f"the stream from {endpoint.url} ended after {assembly.chunks} chunks without "
                "finishing (no finish_reason, no [DONE]); the partial reply was dropped",
                endpoint=endpoint.url,
            )
        tail = assembly.flush()
        if tail:
            yield tail
        yield _Completion(assembly.completion(), shown=True)

    def _reply(
        self,
        data: dict[str, Any],
        schema: type[BaseModel] | None,
        tools_given: bool,
        schema_call: bool,
        answered: _Answered,
    ) -> Reply:
        choice = data["choices"][0]
        message = choice.get("message") or {}
        text, reasoning = split_reasoning(message)
        usage = data.get("usage") or {}
        details = usage.get("completion_tokens_details") or {}
        calls = parse_tool_calls(message.get("tool_calls"))
        if schema_call:
            text, calls = split_tool_calls(text, forced=True)
        elif tools_given and not calls:
            # Servers without a tool parser return the model's <tool_call> blocks as text.
            text, calls = split_tool_calls(text, forced=False)
        parsed, parse_error = (
            parse_structured(text, schema) if schema and not calls else (None, None)
        )
        return Reply(
            text=text,
            reasoning=reasoning,
            parsed=parsed,
            parse_error=parse_error,
            tool_calls=calls,
            finish_reason=choice.get("finish_reason"),
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                reasoning_tokens=int(details.get("reasoning_tokens") or 0),
                latency_s=answered.latency_s,
                attempts=answered.attempts,
            ),
            model=str(data.get("model") or self.name),
            endpoint=answered.endpoint.url,
            raw=data,
        )


def _completion_json(endpoint: Endpoint, response: httpx.Response) -> dict[str, Any]:
    """A 200 answer's chat completion; a body that is not one is worth another try."""
    try:
        data = response.json()
        if not isinstance(data, dict) or not data.get("choices"):
            raise ValueError("no choices")
    except (json.JSONDecodeError, ValueError):
        raise Retryable(
            ModelResponseError(
                f"the server at {endpoint.url} sent a reply that is not a chat "
                f"completion: {response.text[:120]!r}",
                endpoint=endpoint.url,
                status_code=200,
                body=response.text[:2000],
            )
        ) from None
    return data


def _status_error(endpoint: Endpoint, response: httpx.Response) -> Exception:
    """The error for an answer other than 200: retryable for 429, 5xx and the like."""
    error = ModelResponseError(
        f"the server at {endpoint.url} answered HTTP {response.status_code}: "
        f"{_server_message(response)}",
        endpoint=endpoint.url,
        status_code=response.status_code,
        body=response.text[:2000],
    )
    if response.status_code in RETRYABLE_STATUS:
        return Retryable(error, parse_retry_after(response.headers.get("retry-after")))
    return error


def _refusal(response: httpx.Response) -> tuple[str, str | None]:
    """A 400's message and, where OpenAI names it, the refused parameter (``error.param``)."""
    try:
        error = response.json().get("error")
    except (json.JSONDecodeError, ValueError, AttributeError):
        return response.text[:500], None
    if not isinstance(error, dict):
        return _server_message(response), None
    param = error.get("param")
    return str(error.get("message") or ""), param if isinstance(param, str) else None


def _has_call(reply: Reply, tools: Sequence[ToolSpec]) -> bool:
    """Whether the reply holds a usable call to one of ``tools``."""
    names = {t.name for t in tools}
    return any(c.name in names and c.arguments is not None for c in reply.tool_calls)


def _unreachable(url: str, exc: Exception) -> ModelUnavailableError:
    reason = type(exc).__name__
    return ModelUnavailableError(
        f"cannot reach the model server at {url} ({reason}); start one with "
        "`vllm serve MODEL` or point --base-url / MEDAGENT_BASE_URL at a running server",
        endpoint=url,
    )


def _server_message(response: httpx.Response) -> str:
    """The human part of an error body (OpenAI and vLLM put it under ``error.message``)."""
    try:
        data = response.json()
    except (json.JSONDecodeError, ValueError):
        return response.text[:200] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])[:300]
        if isinstance(data.get("message"), str):
            return str(data["message"])[:300]
    return response.text[:200]
