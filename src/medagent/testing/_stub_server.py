"""``StubOpenAIServer``: a TEST DOUBLE that speaks the chat-completions API over real HTTP.

It lets tests and benchmarks exercise the HTTP backend's real transport (sockets, keep-alive,
timeouts, retries) with scripted replies and injected faults. It is not a model.

Each request takes the next entry of the script; when the script is used up, the default reply
is sent. Entries are replies (``{"text": ...}``, ``{"json": {...}}``, ``{"tool_calls": [...]}``)
or faults::

    {"fault": "drop"}                      close the connection without answering
    {"fault": "500"}                       HTTP 500 with an OpenAI-style error body
    {"fault": "429", "retry_after": 1}     HTTP 429 with a Retry-After header
    {"fault": "slow", "delay_s": 5}        answer only after delay_s (past a client timeout)
    {"fault": "malformed"}                 HTTP 200 whose body is not JSON
    {"fault": "cut", "after_chunks": 2}    send part of the default reply, then close the
                                           connection (a streamed reply: after_chunks events)

A request with ``"stream": true`` gets its reply as server-sent events, the way OpenAI and vLLM
send them: a role chunk, content deltas, tool-call deltas (the first with id and name, then
argument fragments, keyed by ``index``), a chunk with the finish reason, a usage chunk with no
choices when ``stream_options.include_usage`` is set, and ``data: [DONE]``. ``stream_chunk_chars``
splits text and arguments into deltas of that many characters (default: one delta each), and
``stream_interval_s`` waits between events, so a test can see pieces arrive one by one.

Reasoning models: ``refuses`` names request fields the server answers 400 for, with OpenAI's
own messages (``OPENAI_REASONING_REFUSES``: ``max_tokens``, ``temperature`` and ``top_p`` but
their defaults, as GPT-5 and o-series do); a refused request uses up no script entry. An entry
with ``reasoning`` sends it in the message's ``reasoning_field`` (``reasoning_content`` as
vLLM's reasoning parsers, or ``reasoning``), streamed as deltas before the content, and counts
it in ``usage.completion_tokens_details.reasoning_tokens``.

Open-model quirks, with vLLM's own 400 messages: ``max_images`` refuses a request holding more
images than a server started with ``--limit-mm-per-prompt`` takes, and ``system_role=False`` a
system turn, as chat templates without one do. ``GET /v1/models`` lists the model with vLLM's
``root`` and, when given, ``max_model_len``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medagent.models import ScriptedReply

__all__ = ["OPENAI_REASONING_REFUSES", "StubFault", "StubOpenAIServer"]

OPENAI_REASONING_REFUSES = ("max_tokens", "temperature", "top_p")
"""What OpenAI's reasoning models (GPT-5, o1/o3/o4) refuse in a chat-completions request."""


class StubFault(BaseModel):
    """A failure to inject into one request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fault: Literal["drop", "500", "429", "slow", "malformed", "cut"]
    retry_after: float = 1.0
    delay_s: float = 5.0
    after_chunks: int = Field(2, ge=0)


ScriptEntry = ScriptedReply | StubFault


def _entry(item: ScriptEntry | dict[str, Any]) -> ScriptEntry:
    if isinstance(item, ScriptedReply | StubFault):
        return item
    return StubFault.model_validate(item) if "fault" in item else ScriptedReply.model_validate(item)


class StubOpenAIServer:
    """A chat-completions server on 127.0.0.1 (ephemeral port), run in a background thread.

    Use as a context manager; ``base_url`` ends in ``/v1``; ``requests`` holds every request
    body received (faulted ones included), in order.
    """

    def __init__(
        self,
        script: Iterable[ScriptEntry | dict[str, Any]] = (),
        *,
        default_text: str = "ok",
        latency_s: float = 0.0,
        model: str = "stub-model",
        port: int = 0,
        record: bool = True,
        stream_chunk_chars: int | None = None,
        stream_interval_s: float = 0.0,
        refuses: Iterable[str] = (),
        reasoning_field: Literal["reasoning_content", "reasoning"] = "reasoning_content",
        max_images: int | None = None,
        system_role: bool = True,
        max_model_len: int | None = None,
    ) -> None:
        self.refuses = tuple(refuses)
        self.max_images = max_images
        self.system_role = system_role
        self.max_model_len = max_model_len
        self.reasoning_field = reasoning_field
        self._script: deque[ScriptEntry] = deque(_entry(item) for item in script)
        self.default_text = default_text
        self.latency_s = latency_s
        self.stream_chunk_chars = stream_chunk_chars
        self.stream_interval_s = stream_interval_s
        self.model = model
        self.record = record
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._port = port
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- control ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def enqueue(self, *items: ScriptEntry | dict[str, Any]) -> None:
        """Add entries to the end of the script."""
        with self._lock:
            self._script.extend(_entry(item) for item in items)

    def start(self) -> StubOpenAIServer:
        self._thread = threading.Thread(target=self._run, name="stub-openai-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the stub server did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        current = asyncio.current_task()
        handlers = [t for t in asyncio.all_tasks() if t is not current]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def __enter__(self) -> StubOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self._port, backlog=1024)
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

    def serve_forever(self) -> None:
        """Serve in the calling thread (``main()`` runs it in its own process for benchmarks)."""
        self._run()

    def _next_entry(self) -> ScriptEntry | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                method, path, _ = request_line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    key, _, value = line.decode("latin-1").partition(":")
                    headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    keep_open = await self._respond(writer, method, path, body, headers)
                finally:
                    self.in_flight -= 1
                if not keep_open:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.close()

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
    ) -> bool:
        path = path.split("?", 1)[0]
        if method == "GET" and path in ("/health", "/v1/health"):
            return await self._send(writer, 200, b"{}")
        if method == "GET" and path == "/v1/models":
            listed: dict[str, Any] = {"id": self.model, "object": "model", "root": self.model}
            if self.max_model_len is not None:
                listed["max_model_len"] = self.max_model_len  # as vLLM lists it
            models = {"object": "list", "data": [listed]}
            return await self._send(writer, 200, json.dumps(models).encode())
        if method != "POST" or path != "/v1/chat/completions":
            return await self._send(writer, 404, _error_body(f"no route {method} {path}", 404))
        try:
            request = json.loads(body)
        except json.JSONDecodeError:
            return await self._send(writer, 400, _error_body("request body is not JSON", 400))
        if self.record:
            with self._lock:
                self.requests.append(request)
                self.request_headers.append(headers)
        refusal = _refusal(request, self.refuses) or _shape_refusal(
            request, self.max_images, self.system_role
        )
        if refusal is not None:
            return await self._send(writer, 400, refusal)
        entry = self._next_entry()
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if isinstance(entry, StubFault):
            return await self._fault(writer, entry, request)
        return await self._answer(writer, request, entry)

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        request: dict[str, Any],
        entry: ScriptedReply | None,
        cut_after: int | None = None,
    ) -> bool:
        """The reply, whole or streamed as the request asks; ``cut_after`` breaks it off."""
        if request.get("stream"):
            return await self._send_events(writer, self._events(request, entry), cut_after)
        payload = self._completion(request, entry)
        if cut_after is None:
            return await self._send(writer, 200, payload)
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + payload[: len(payload) // 2])
        await writer.drain()
        writer.transport.abort()
        return False

    async def _fault(
        self, writer: asyncio.StreamWriter, fault: StubFault, request: dict[str, Any]
    ) -> bool:
        if fault.fault == "drop":
            writer.transport.abort()
            return False
        if fault.fault == "500":
            return await self._send(writer, 500, _error_body("injected server error", 500))
        if fault.fault == "429":
            return await self._send(
                writer,
                429,
                _error_body("injected rate limit", 429),
                extra_headers=f"Retry-After: {fault.retry_after:g}\r\n",
            )
        if fault.fault == "malformed":
            return await self._send(writer, 200, b"<html>upstream proxy error</html>")
        if fault.fault == "cut":
            return await self._answer(writer, request, None, cut_after=fault.after_chunks)
        await asyncio.sleep(fault.delay_s)
        return await self._answer(writer, request, None)

    def _completion(self, request: dict[str, Any], entry: ScriptedReply | None) -> bytes:
        number, message, finish = self._message(entry)
        completion = {
            "id": f"chatcmpl-stub-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", self.model),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": _usage(request, message, self.reasoning_field),
        }
        return json.dumps(completion).encode()

    def _events(self, request: dict[str, Any], entry: ScriptedReply | None) -> list[str]:
        """The reply as the ``data`` of each server-sent event, ending with ``[DONE]``."""
        number, message, finish = self._message(entry)
        head = {
            "id": f"chatcmpl-stub-{number}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.get("model", self.model),
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return {**head, "choices": [choice]}

        chunks = [chunk({"role": "assistant", "content": ""})]
        thought = message.get(self.reasoning_field) or ""
        chunks += [chunk({self.reasoning_field: piece}) for piece in self._pieces(thought)]
        chunks += [chunk({"content": piece}) for piece in self._pieces(message["content"] or "")]
        for index, call in enumerate(message.get("tool_calls") or []):
            function = call["function"]
            opening = {"index": index, "id": call["id"], "type": "function"}
            name = {"name": function["name"], "arguments": ""}
            chunks.append(chunk({"tool_calls": [{**opening, "function": name}]}))
            chunks += [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in self._pieces(function["arguments"])
            ]
        chunks.append(chunk({}, finish))
        if (request.get("stream_options") or {}).get("include_usage"):
            usage = _usage(request, message, self.reasoning_field)
            chunks.append({**head, "choices": [], "usage": usage})
        return [json.dumps(c) for c in chunks] + ["[DONE]"]

    def _pieces(self, text: str) -> list[str]:
        size = self.stream_chunk_chars
        if not text or size is None:
            return [text] if text else []
        return [text[i : i + size] for i in range(0, len(text), size)]

    async def _send_events(
        self, writer: asyncio.StreamWriter, events: list[str], cut_after: int | None
    ) -> bool:
        """Server-sent events in a chunked body, as streaming servers send them."""
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(head.encode("latin-1"))
        for sent, event in enumerate(events):
            if cut_after is not None and sent >= cut_after:
                await writer.drain()
                writer.transport.abort()
                return False
            if sent and self.stream_interval_s:
                await asyncio.sleep(self.stream_interval_s)
            payload = f"data: {event}\n\n".encode()
            writer.write(f"{len(payload):x}\r\n".encode("latin-1") + payload + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    def _message(self, entry: ScriptedReply | None) -> tuple[int, dict[str, Any], str]:
        """The reply's number, its assistant message and its finish reason."""
        number = next(self._ids)
        message: dict[str, Any] = {"role": "assistant", "content": self.default_text}
        finish = "stop"
        if entry is not None and entry.tool_calls is not None:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": call.id or f"call_{number}_{i}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for i, call in enumerate(entry.tool_calls)
            ]
            finish = "tool_calls"
        elif entry is not None and entry.json_ is not None:
            message["content"] = json.dumps(entry.json_)
        elif entry is not None and entry.text is not None:
            message["content"] = entry.text
        if entry is not None and entry.reasoning is not None:
            message[self.reasoning_field] = entry.reasoning
        return number, message, finish

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter, status: int, payload: bytes, extra_headers: str = ""
    ) -> bool:
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            429: "Too Many Requests",
            500: "Internal Server Error",
        }.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n{extra_headers}\r\n"
        )
        writer.write(head.encode("latin-1") + payload)
        await writer.drain()
        return True


def _usage(
    request: dict[str, Any], message: dict[str, Any], reasoning_field: str
) -> dict[str, Any]:
    """Words standing in for tokens: enough for tests to see usage carried through.

    Reasoning words count among the completion tokens, as OpenAI and vLLM count them.
    """
    prompt_words = sum(len(str(m.get("content", "")).split()) for m in request["messages"])
    reasoning_words = len(str(message.get(reasoning_field) or "").split())
    completion_words = len(str(message["content"] or "").split()) + reasoning_words
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_words,
        "completion_tokens": completion_words,
        "total_tokens": prompt_words + completion_words,
    }
    if reasoning_words:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_words}
    return usage


_DEFAULT_VALUES = {"temperature": 1.0, "top_p": 1.0}
"""Fields a reasoning model refuses only when set to something other than their default."""


def _refusal(request: dict[str, Any], refuses: Iterable[str]) -> bytes | None:
    """OpenAI's 400 body for the first refused field the request holds; ``None``: accepted."""
    for name in refuses:
        if name not in request:
            continue
        value = request[name]
        if name in _DEFAULT_VALUES:
            if value == _DEFAULT_VALUES[name]:
                continue
            message = (
                f"Unsupported value: '{name}' does not support {value!r} with this model. "
                f"Only the default ({_DEFAULT_VALUES[name]:g}) value is supported."
            )
            code = "unsupported_value"
        else:
            instead = " Use 'max_completion_tokens' instead." if name == "max_tokens" else ""
            message = f"Unsupported parameter: '{name}' is not supported with this model.{instead}"
            code = "unsupported_parameter"
        error = {"message": message, "type": "invalid_request_error", "param": name, "code": code}
        return json.dumps({"error": error}).encode()
    return None


def _shape_refusal(
    request: dict[str, Any], max_images: int | None, system_role: bool
) -> bytes | None:
    """vLLM's 400 body for too many images or a system turn the template refuses."""
    messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
    if not system_role and any(m.get("role") == "system" for m in messages):
        return _error_body("System role not supported", 400)
    images = sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )
    if max_images is not None and images > max_images:
        return _error_body(f"At most {max_images} image(s) may be provided in one prompt.", 400)
    return None


def _error_body(message: str, code: int) -> bytes:
    return json.dumps({"error": {"message": message, "type": "stub_error", "code": code}}).encode()


def main() -> None:
    """Serve until killed; prints the base URL on its first line (for benchmarks)."""
    parser = argparse.ArgumentParser(description="Stub OpenAI-compatible server (test double).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    args = parser.parse_args()
    server = StubOpenAIServer(latency_s=args.latency, port=args.port, record=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server._ready.wait(10)
    print(server.base_url, flush=True)
    thread.join()


if __name__ == "__main__":
    main()
