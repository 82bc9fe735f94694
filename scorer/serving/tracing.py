"""Tracing: OpenTelemetry spans for scoring requests, exported over OTLP/HTTP (optional).

Off by default, and then free: no layer is added, no OpenTelemetry module is imported (this module
imports it only inside :func:`require` and :class:`Tracing`), and the scoring path's cost is one
context-variable read and a few ``None`` checks. On with ``--tracing otlp`` (``SCORER_TRACING=otlp``),
which needs the extra ``pip install 'scorer[tracing]'`` (opentelemetry-sdk and the OTLP/HTTP exporter:
HTTP with protobuf bodies, the OTLP default, rather than gRPC, whose exporter pulls in grpcio, a large
native wheel, for no gain here). Where spans go and how is OpenTelemetry's own configuration, read by
the SDK from the standard variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``),
``..._HEADERS``, ``..._TIMEOUT``, ``OTEL_SERVICE_NAME`` (default here: ``scorer``),
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_PROPAGATORS`` and ``OTEL_BSP_*``.

What a scoring request records (every time from the request's own trace, one trace per request):

- a server span ``POST /predict`` (kind SERVER), the child of the incoming W3C ``traceparent`` (a new
  trace without one), with ``http.request.method``, ``url.path``, ``http.route``,
  ``http.response.status_code``, ``scorer.request_id``, ``scorer.rows``, ``scorer.model.version`` and
  ``scorer.model.digest``; ERROR status on a 5xx answer, ``error.type`` its status code;
- its children, which tile it: ``decode`` (body to table, schema check), ``queue`` (from the end of
  the decode until the request's first model call started), ``model`` (one per model call its rows
  were in) and ``encode``.

A model call scores the rows of every request in its batch, and each of those requests gets its own
``model`` span with the call's start and end, so each trace shows where its time went. The spans of
one call share ``scorer.batch.id`` (unique per process start and call) and say how many requests
(``scorer.batch.requests``) and rows (``scorer.batch.rows``) it had: a query on the id finds the whole
batch. A failed batch is split in halves and retried (:mod:`scorer.serving.coalescer`): a request
then has one ``model`` span per call it was part of, the failed ones with ERROR status and
``error.type`` the exception's class, each call with its own id. (Count model calls with the
``scorer_batch_*`` metrics, not with ``model`` spans: a call of N requests records N spans.)

Spans are built after the fact from timestamps (the ``model`` spans in the model thread, after the
call), so nothing is held open across threads. They are exported by a BatchSpanProcessor: a bounded
queue (spans beyond it are dropped) drained by its own thread, so a slow or dead collector never
slows scoring; at shutdown what is queued is flushed for at most :data:`SHUTDOWN_FLUSH_S` seconds.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scorer._version import __version__
from scorer.errors import UsageError
from scorer.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

#: At shutdown, how long the spans still queued may take to reach the collector.
SHUTDOWN_FLUSH_S = 5.0

_current: ContextVar[RequestTrace | None] = ContextVar("scorer_request_trace", default=None)
_BATCH_PREFIX = uuid.uuid4().hex[:12]
_BATCH_COUNTER = itertools.count(1)


def current() -> RequestTrace | None:
    """The trace of the scoring request being served, or None (tracing off, or not a scoring request)."""
    return _current.get()


def require(settings: Settings) -> None:
    """At start-up: raise :class:`~scorer.errors.UsageError` (exit 2) if tracing is on but its extra is
    not installed."""
    if settings.tracing == "off":
        return
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"--tracing {settings.tracing} needs the tracing extra (pip install 'scorer[tracing]'); "
                         f"missing: {exc.name}") from None


class RequestTrace:
    """One scoring request's server span, and the marks its child spans are cut from."""

    __slots__ = ("_tracer", "span", "_parent", "_mark", "_called")

    def __init__(self, tracer: Tracer, span: Span, parent: Context) -> None:
        self._tracer = tracer
        self.span = span
        self._parent = parent  # the context whose span is ``span``: its children's parent
        self._mark = time.time_ns()
        self._called = False  # a model call has had this request's rows: its queue span is recorded

    def start(self, version_headers: Sequence[tuple[bytes, bytes]]) -> None:
        """Scoring starts now (the ``decode`` span starts here), with the version these response headers name
        (an error answer does not carry them)."""
        for key, value in version_headers:
            if key in _RESPONSE_ATTRIBUTES:
                self.span.set_attribute(_RESPONSE_ATTRIBUTES[key], value.decode("latin-1"))
        self._mark = time.time_ns()

    def done(self, name: str, rows: int | None = None) -> None:
        """Record span ``name`` from the last mark (:meth:`start`, the previous span's end) until now.
        ``rows``: the request's row count."""
        now = time.time_ns()
        self._tracer.start_span(name, self._parent, start_time=self._mark).end(now)
        self._mark = now
        if rows is not None:
            self.span.set_attribute("scorer.rows", rows)

    def model_call(self, members: Sequence[Any], started_ns: int, rows: int, error: BaseException | None) -> None:
        """In the model thread, after a model call that started at ``started_ns`` with ``rows`` rows of
        the requests ``members`` (their RequestTraces, this one among them): each member's ``queue`` span
        (from its last mark, the end of its decode), if this is its first call, and its ``model`` span."""
        ended = time.time_ns()
        attributes = {"scorer.batch.id": f"{_BATCH_PREFIX}-{next(_BATCH_COUNTER)}",
                      "scorer.batch.requests": len(members), "scorer.batch.rows": rows}
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
        for member in members:
            if member is None:
                continue
            if not member._called:
                member._called = True
                member._tracer.start_span("queue", member._parent, start_time=member._mark).end(started_ns)
            span = member._tracer.start_span("model", member._parent, start_time=started_ns, attributes=attributes)
            if error is not None:
                span.set_status(_error_status())
            span.end(ended)
            member._mark = ended


def _error_status() -> Any:
    from opentelemetry.trace import Status, StatusCode

    return Status(StatusCode.ERROR)


class Tracing:
    """The spans of one server process: its tracer provider and exporter. Made in each process that
    serves (a forked worker makes its own: the exporter's thread does not survive a fork)."""

    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.propagate import get_global_textmap
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # The SDK's and exporter's own warnings (a collector that cannot be reached) as our log lines.
        sdk_log = logging.getLogger("opentelemetry")
        sdk_log.handlers[:] = logging.getLogger("scorer").handlers
        sdk_log.propagate = not sdk_log.handlers
        resource = Resource.create({SERVICE_VERSION: __version__})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "scorer"}))  # OTEL_SERVICE_NAME unset
        # Not shut down at exit by the SDK (unbounded with a dead collector): by shutdown(), within its bound.
        self._provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self._provider.get_tracer("scorer", __version__)
        self.propagator = get_global_textmap()  # OTEL_PROPAGATORS; W3C trace context and baggage by default

    def layer(self, app: ASGIApp, traced: Callable[[str], bool], route: Callable[[str], str]) -> ASGIApp:
        """``app`` with a server span around each request whose path is ``traced`` (the others pass
        untouched); ``route``: a path's route template (the span's ``http.route``), "other" for none."""
        return _TracingLayer(app, self, traced, route)

    def shutdown(self) -> None:
        """Flush what is queued (for at most :data:`SHUTDOWN_FLUSH_S`) and stop the exporter."""
        def stop() -> None:
            try:
                self._provider.shutdown()  # the processor's thread sends what is queued, then stops
            except Exception:  # noqa: BLE001 - spans lost at exit must not fail the shutdown
                log.warning("tracing: the span exporter failed to shut down", exc_info=True)

        # The SDK's own wait is 30 s: bounded here by a daemon thread, which the process's exit abandons.
        stopping = threading.Thread(target=stop, name="scorer-tracing-shutdown", daemon=True)
        stopping.start()
        stopping.join(SHUTDOWN_FLUSH_S)
        if stopping.is_alive():
            log.warning("tracing: spans not sent within %.0f s of shutdown were dropped", SHUTDOWN_FLUSH_S)


class _TracingLayer:
    """The outermost ASGI layer when tracing is on: the server span sees the final answer (the request
    context layer's error responses, request id and the version's headers included)."""

    def __init__(self, app: ASGIApp, tracing: Tracing, traced: Callable[[str], bool], route: Callable[[str], str]) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        self.app = app
        self._traced = traced
        self._route = route
        self._tracer = tracing.tracer
        self._propagator = tracing.propagator
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)
        self._in_context = set_span_in_context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._traced(scope["path"]):
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        attributes: dict[str, str | int] = {"http.request.method": method, "url.path": path}
        name = method
        route = self._route(path)
        if route != "other":  # the template: the protocols' routes carry a model name
            attributes["http.route"] = route
            name = f"{method} {route}"
        span = self._tracer.start_span(name, self._propagator.extract(carrier), kind=self._server,
                                       attributes=attributes)
        token = _current.set(RequestTrace(self._tracer, span, self._in_context(span)))

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                span.set_attribute("http.response.status_code", status)
                for key, value in message.get("headers", ()):
                    if key == b"x-request-id":  # the request context layer's, the client's or a new one
                        span.set_attribute("scorer.request_id", value.decode("latin-1"))
                if status >= 500:
                    span.set_status(self._error)
                    span.set_attribute("error.type", str(status))
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        except BaseException as exc:  # the connection is cut: no answer was sent
            span.set_status(self._error)
            span.set_attribute("error.type", type(exc).__qualname__)
            raise
        finally:
            _current.reset(token)
            span.end()


_RESPONSE_ATTRIBUTES = {b"x-model-version": "scorer.model.version", b"x-model-digest": "scorer.model.digest"}
