"""OpenTelemetry traces of agent runs, steps, model calls and tool calls, off by default.

One ``Tracing`` holds a tracer and whether prompt content may be recorded; ``Tracing.active()``
makes it current for the code inside (a context variable, so asyncio tasks and
``asyncio.to_thread`` workers started inside see it too). Every instrumented place asks
``span(...)``: with no active ``Tracing`` it returns one shared do-nothing context, so tracing
off costs a context-variable read per span and never imports OpenTelemetry. The SDK and the
OTLP exporter (the ``trace`` extra) are imported only by ``Tracing.otlp`` / ``Tracing.to``.

What goes where: model calls are spanned by ``medagent.models.TracedModel`` (GenAI semantic
conventions), tool calls by ``medagent.tools.Tool``, runs and graph steps by the agents
(``agent_run``, ``traced_step``), eval items by the runner (``trace_labels``). Labels set by
``agent_run`` and ``trace_labels`` (the run id, the item id) are copied onto every span opened
inside them, so a backend can filter a whole run or item by one attribute.

A run that streams (a chat turn, an async generator) cannot keep its span current: whatever a
generator makes current while it is suspended at a ``yield`` leaks into its consumer. Such a run
holds its span (``held_span``, ``agent_turn``) and makes it current only while its own work
steps (``HeldSpan.current``, ``stream_within``), so the consumer's work never nests under it.

Prompts, replies and tool arguments are recorded only with ``content=True`` (``--trace-content``,
``MEDAGENT_TRACE_CONTENT``); images are recorded as artifact ids, never as pixels.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, aclosing, contextmanager
from contextvars import Context, ContextVar, copy_context
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

from medagent._version import __version__
from medagent.errors import ConfigError, DependencyMissingError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

    from medagent.settings import Settings

__all__ = [
    "ITEM_ID",
    "RUN_ID",
    "SESSION_ID",
    "AttributeValue",
    "HeldSpan",
    "SpanKind",
    "TraceSpan",
    "Tracing",
    "agent_run",
    "agent_turn",
    "content_enabled",
    "held_span",
    "span",
    "stream_within",
    "to_json",
    "trace_labels",
    "traced",
    "traced_step",
    "tracing_active",
]

#: The attributes every span inside a run, an eval item or a chat session carries.
RUN_ID = "medagent.run.id"
ITEM_ID = "medagent.item.id"
SESSION_ID = "medagent.session.id"

AttributeValue = str | bool | int | float | list[str] | list[int] | list[float] | list[bool]
SpanKind = Literal["internal", "client"]

#: Longest text recorded in one content attribute; backends truncate or refuse larger ones.
_CONTENT_LIMIT = 64_000

T = TypeVar("T")


class TraceSpan(Protocol):
    """What instrumented code may do with the span it is in (an OpenTelemetry ``Span``)."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None: ...

    def is_recording(self) -> bool: ...


class _NoSpan:
    """The span of tracing off: takes attributes and drops them."""

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        pass

    def is_recording(self) -> bool:
        return False


class _NoSpanContext(AbstractContextManager[TraceSpan]):
    """One reusable context for every span while tracing is off (no allocation per span)."""

    def __enter__(self) -> TraceSpan:
        return _NO_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()
_NO_SPAN_CONTEXT = _NoSpanContext()


class Tracing:
    """A tracer to send spans to, and whether prompts and replies may be recorded.

    Build it with ``Tracing.otlp()`` (the standard ``OTEL_EXPORTER_OTLP_*`` variables say where
    spans go) or ``Tracing.to(exporter)``; make it current with ``active()``; ``shutdown()``
    sends what is still buffered.
    """

    def __init__(self, provider: TracerProvider, *, content: bool = False) -> None:
        self.provider = provider
        self.content = content
        self.tracer: Tracer = provider.get_tracer("medagent", __version__)

    @classmethod
    def to(cls, exporter: SpanExporter, *, content: bool = False, batch: bool = True) -> Tracing:
        """Spans to ``exporter``: batched in a background thread (``batch=False``: exported as
        each span ends, for tests)."""
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        except ImportError:
            raise DependencyMissingError("opentelemetry-sdk", "trace", "--trace") from None
        # Resource.create lets OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES override these.
        resource = Resource.create({"service.name": "medagent", "service.version": __version__})
        provider = TracerProvider(resource=resource)
        processor = BatchSpanProcessor if batch else SimpleSpanProcessor
        provider.add_span_processor(processor(exporter))
        return cls(provider, content=content)

    @classmethod
    def otlp(cls, *, content: bool = False) -> Tracing:
        """Spans over OTLP to where ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_...``)
        points; protocol, headers, timeout and certificates from the other standard variables
        (read by the exporter itself)."""
        protocol = _otlp_protocol()
        package = f"opentelemetry-exporter-otlp-proto-{'grpc' if protocol == 'grpc' else 'http'}"
        exporter: SpanExporter
        try:
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcExporter,
                )

                exporter = GrpcExporter()
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                exporter = OTLPSpanExporter()
        except ImportError:
            raise DependencyMissingError(package, "trace", "--trace (OTLP export)") from None
        return cls.to(exporter, content=content)

    @contextmanager
    def active(self) -> Iterator[Tracing]:
        """Spans opened inside go to this tracer."""
        token = _active.set(self)
        try:
            yield self
        finally:
            _active.reset(token)

    def context(self) -> Context:
        """A copy of the current context with this tracer active, for work that runs apart
        from the code that set tracing up (``asyncio.create_task(..., context=...)``: a
        server's turns, started by requests that never saw ``active()``)."""
        context = copy_context()
        context.run(_active.set, self)
        return context

    def shutdown(self) -> None:
        """Send the spans still buffered and stop the exporter."""
        self.provider.shutdown()


_active: ContextVar[Tracing | None] = ContextVar("medagent_tracing", default=None)
_labels: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("medagent_trace_labels", default=())


def _otlp_protocol() -> str:
    """The standard protocol variables: http/protobuf (the default) or grpc."""
    import os

    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol not in ("http/protobuf", "grpc"):
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use http/protobuf "
            "(the trace extra's exporter) or grpc (with opentelemetry-exporter-otlp-proto-grpc)"
        )
    return protocol


@contextmanager
def traced(settings: Settings) -> Iterator[Tracing | None]:
    """What a command runs inside: with ``settings.trace``, an OTLP ``Tracing`` made current
    and flushed at the end; otherwise nothing at all (``None``)."""
    if not settings.trace:
        yield None
        return
    tracing = Tracing.otlp(content=settings.trace_content)
    try:
        with tracing.active():
            yield tracing
    finally:
        tracing.shutdown()


def tracing_active() -> bool:
    """Whether spans opened here would be recorded."""
    return _active.get() is not None


def content_enabled() -> bool:
    """Whether prompts, replies and tool arguments may be put on spans (the user opted in)."""
    tracing = _active.get()
    return tracing is not None and tracing.content


def span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    kind: SpanKind = "internal",
    current: bool = True,
) -> AbstractContextManager[TraceSpan]:
    """A span named ``name``, carrying the labels in force, and made the parent of spans
    opened inside (``current=False``: not, for a span held across an async generator's
    yields, whose consumer's work is not part of it).

    An exception leaving it marks the span failed (status ERROR, ``error.type`` its class).
    """
    tracing = _active.get()
    if tracing is None:
        return _NO_SPAN_CONTEXT
    return _live_span(tracing, name, attributes, kind, current)


@contextmanager
def _live_span(
    tracing: Tracing,
    name: str,
    attributes: Mapping[str, AttributeValue] | None,
    kind: SpanKind,
    current: bool,
) -> Iterator[TraceSpan]:
    from opentelemetry.trace import SpanKind as OtelKind
    from opentelemetry.trace import Status, StatusCode

    merged: dict[str, AttributeValue] = dict(_labels.get())
    if attributes:
        merged.update(attributes)
    otel_kind = OtelKind.CLIENT if kind == "client" else OtelKind.INTERNAL
    if current:
        with tracing.tracer.start_as_current_span(name, kind=otel_kind, attributes=merged) as live:
            try:
                yield live
            except BaseException as exc:
                live.set_attribute("error.type", type(exc).__qualname__)
                raise
        return
    live = tracing.tracer.start_span(name, kind=otel_kind, attributes=merged)
    try:
        yield live
    except BaseException as exc:
        live.set_attribute("error.type", type(exc).__qualname__)
        live.record_exception(exc)
        live.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
        raise
    finally:
        live.end()


@contextmanager
def trace_labels(**labels: str) -> Iterator[None]:
    """Put ``labels`` (``item_id=...``) on every span opened inside, as ``medagent.<name>``
    with ``_`` read as ``.`` (``item_id`` -> ``medagent.item.id``)."""
    if _active.get() is None:
        yield
        return
    token = _labels.set(_labels.get() + _label_items(labels))
    try:
        yield
    finally:
        _labels.reset(token)


def _label_items(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((f"medagent.{key.replace('_', '.')}", value) for key, value in labels.items())


@contextmanager
def agent_run(
    agent: str, run_id: str, attributes: Mapping[str, AttributeValue] | None = None
) -> Iterator[TraceSpan]:
    """The span of one agent run (GenAI ``invoke_agent``); its run id labels every span inside."""
    if _active.get() is None:
        yield _NO_SPAN
        return
    with trace_labels(run_id=run_id):
        base: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": run_id,
        }
        with span(f"invoke_agent {agent}", {**base, **(attributes or {})}) as current:
            yield current


class HeldSpan:
    """A span held open across ``yield``s, current only inside ``current()``.

    What an async generator keeps for its run: each stretch of its own work (up to the next
    ``yield``) runs inside ``current()``, so spans opened there (and in tasks and threads
    started there) nest under it, while its consumer's work between items does not.
    """

    def __init__(self, live: Any = None, labels: tuple[tuple[str, str], ...] = ()) -> None:
        self._live = live
        self._labels = labels

    @property
    def span(self) -> TraceSpan:
        """The span itself, for attributes (a do-nothing span while tracing is off)."""
        return _NO_SPAN if self._live is None else cast(TraceSpan, self._live)

    @contextmanager
    def current(self) -> Iterator[None]:
        """This span and its labels made current; both undone on leaving, in the same step,
        so nothing stays current across a ``yield``."""
        if self._live is None:
            yield
            return
        from opentelemetry.trace import use_span

        token = _labels.set(self._labels)
        try:
            # Failures are recorded once, by held_span, when they leave the run.
            with use_span(self._live, record_exception=False, set_status_on_exception=False):
                yield
        finally:
            _labels.reset(token)


_NO_HELD = HeldSpan()


@contextmanager
def held_span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    labels: Mapping[str, str] | None = None,
) -> Iterator[HeldSpan]:
    """A span named ``name`` that is never left current (see ``HeldSpan``); ``labels`` (as in
    ``trace_labels``) go on it and on every span opened inside its ``current()``.

    Nothing here sets a context variable across the ``with`` body, so an async generator may
    hold it over its ``yield``s. An exception leaving it marks the span failed.
    """
    tracing = _active.get()
    if tracing is None:
        yield _NO_HELD
        return
    added = _label_items(labels or {})
    merged: dict[str, AttributeValue] = dict(added)
    merged.update(attributes or {})
    with _live_span(tracing, name, merged, "internal", False) as live:
        yield HeldSpan(live, _labels.get() + added)


def agent_turn(
    agent: str,
    session_id: str,
    turn: int,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> AbstractContextManager[HeldSpan]:
    """The held span of one turn of a conversation (GenAI ``invoke_agent``, the session as
    ``gen_ai.conversation.id``); the session id labels every span of the turn."""
    base: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent,
        "gen_ai.conversation.id": session_id,
        "medagent.turn": turn,
    }
    return held_span(
        f"invoke_agent {agent}", {**base, **(attributes or {})}, labels={"session_id": session_id}
    )


def stream_within(held: HeldSpan, stream: AsyncGenerator[T, None]) -> AsyncIterator[T]:
    """``stream``'s items, each produced with ``held`` current and nothing current while the
    consumer has it; ``stream`` is closed when this is (``stream`` itself while tracing is off)."""
    if held is _NO_HELD:
        return stream
    return _stepped(held, stream)


async def _stepped(held: HeldSpan, stream: AsyncGenerator[T, None]) -> AsyncIterator[T]:
    async with aclosing(stream):
        while True:
            with held.current():
                try:
                    item = await anext(stream)
                except StopAsyncIteration:
                    return
            yield item


def traced_step(
    agent: str, node: str, function: Callable[..., Awaitable[T]]
) -> Callable[..., Awaitable[T]]:
    """A graph node's function, run inside a step span (``medagent.step`` with the node's name
    and the state's ``step`` counter when it has one). The wrapper keeps the node's signature,
    so LangGraph passes it the same arguments."""

    @functools.wraps(function)
    async def node_in_span(state: Any, *args: Any, **kwargs: Any) -> T:
        if _active.get() is None:
            return await function(state, *args, **kwargs)
        attributes: dict[str, AttributeValue] = {
            "medagent.agent": agent,
            "medagent.step.node": node,
        }
        before = state.get("step") if isinstance(state, Mapping) else None
        if isinstance(before, int):
            attributes["medagent.step.index"] = before
        with span(f"step {agent}.{node}", attributes) as current:
            update = await function(state, *args, **kwargs)
            after = update.get("step") if isinstance(update, Mapping) else None
            if isinstance(after, int):
                current.set_attribute("medagent.step.index", after)
            return update

    return node_in_span


def to_json(value: Any) -> str:
    """Content for an attribute: JSON, cut to a size backends accept."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _CONTENT_LIMIT else text[:_CONTENT_LIMIT] + "…[cut]"
