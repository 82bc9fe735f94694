"""The HTTP transport: Starlette routes over the scoring core and the batcher.

Routes: ``POST /predict`` and ``POST /invocations`` (same handler), ``GET /health``
(process alive), ``GET /ready`` and ``GET /ping`` (200 once the bundle is loaded, else
503, and 503 again from SIGTERM on), ``GET /metadata``, ``GET /metrics``. Every error body is
``{"error", "message", "request_id"}``; its status comes from :func:`scorer.errors.http_status`
and nowhere else.

The bundle loads in a background thread after start-up, so the port answers (and
``/health`` is 200) while a slow bundle loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scorer import codecs
from scorer._logging import request_id
from scorer.batching import Batcher, BatchPolicy
from scorer.core import Scorer
from scorer.errors import (
    BodyTimeout,
    ClientDisconnected,
    MalformedBody,
    NotReady,
    PayloadTooLarge,
    RequestTimeout,
    ScorerError,
    Unauthorized,
    UnsupportedMediaType,
    http_status,
)
from scorer.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from scorer.metrics import Metrics
from scorer.openapi import document as openapi_document
from scorer.settings import Settings
from scorer.table import Table

log = logging.getLogger("scorer.server")

# Bodies bigger than this, and every Parquet or Arrow body (whose decoded size its bytes do not tell), are
# decoded in the model thread, as responses this big are encoded, so the event loop stays responsive.
_OFFLOAD_BYTES = 256 * 1024


@dataclass
class State:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    scorer: Scorer | None = None
    batcher: Batcher | None = None
    load_error: BaseException | None = None
    # From SIGTERM on: readiness is 503 and responses close their connection, but scoring goes on
    # (the drain window, then in-flight requests) until the batcher is stopped.
    shutting_down: bool = False
    shutdown_started: float = 0.0  # when the server stopped accepting connections: the grace period starts


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=codecs.JSON, headers=headers)


def error_response(exc: BaseException, *, echo: bool = False) -> Response:
    """The one place an exception becomes an HTTP response."""
    status, body, headers = _error_parts(exc, echo=echo)
    return Response(body, status_code=status, media_type=codecs.JSON, headers=headers)


def _error_parts(exc: BaseException, *, echo: bool = False) -> tuple[int, bytes, dict[str, str] | None]:
    """Status, body and extra headers for ``exc``. ``echo`` (``--echo-bad-values``) adds the error's
    data-bearing detail (an offending value, a model exception's text) to the body and the log line."""
    status = http_status(exc)
    if isinstance(exc, ScorerError):
        code, message = exc.code, exc.describe(echo)
        if status >= 500:  # not loaded yet is what readiness probes are for: not worth a warning each time
            (log.debug if type(exc) is NotReady else log.warning)("%s: %s", code, message)
    else:
        _log_unexpected(exc, echo)
        code, message = "internal_error", f"internal error: {type(exc).__name__}"
    body: dict[str, Any] = {"error": code, "message": message, "request_id": request_id.get()}
    columns = getattr(exc, "columns", None)
    if columns:
        body["columns"] = columns
    extra = {"Retry-After": "1"} if status == 503 else {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status in (408, 413):  # the body may be unread (or still trickling in): do not keep the connection
        extra = {"Connection": "close"}
    return status, orjson.dumps(body), extra


def _log_unexpected(exc: BaseException, echo: bool) -> None:
    """A bug of ours: its traceback is logged, but an exception's text can quote the request's data, so
    without the opt-in the log gets the class and the frames only."""
    if echo:
        log.exception("unexpected error")
        return
    frames = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-5:]))
    log.error("unexpected error %s at %s", type(exc).__name__, where or "?")


def _loaded(state: State) -> tuple[Scorer, Batcher]:
    """The loaded scorer and its batcher. Scoring does not stop at SIGTERM: a request that reached
    the app (during the drain window, or in flight) is served; the batcher refuses once stopped."""
    if state.scorer is None or state.batcher is None:
        raise NotReady("the bundle is not loaded yet" if state.load_error is None else "the bundle failed to load")
    return state.scorer, state.batcher


def _ready_scorer(state: State) -> tuple[Scorer, Batcher]:
    """Readiness: loaded and not shutting down (from SIGTERM on, load balancers must stop sending)."""
    if state.shutting_down:
        raise NotReady("the server is shutting down")
    return _loaded(state)


def check_token(state: State, authorization: str | None, token: str | None) -> None:
    """With ``auth_token`` set, ``Authorization: Bearer <t>`` or the vendor's ``token: <t>`` header
    must carry it (compared in constant time)."""
    expected = state.settings.auth_token
    if not expected:
        return
    given = token
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
    if given is None or not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode()):
        raise Unauthorized("missing or wrong token: send Authorization: Bearer <token> or a token header")


def _table(body: bytes, content_type: str | None, scorer: Scorer, settings: Settings) -> Table:
    """Decode a request body and check it against the input schema."""
    columns = list(scorer.schema.columns) if scorer.schema else None
    if content_type is not None and content_type.startswith("text/csv"):
        if body.count(b"\n") > settings.max_request_rows + 1:
            raise PayloadTooLarge(f"more than {settings.max_request_rows} rows per request (counted before parsing)")
        if body.count(b",", 0, body.find(b"\n")) >= settings.max_columns:
            raise PayloadTooLarge(f"more than {settings.max_columns} columns per request (counted before parsing)")
    frame = codecs.decode(body, content_type, columns, limits=codecs.Limits.of(settings))
    if len(frame.columns) > settings.max_columns:
        raise PayloadTooLarge(f"{len(frame.columns)} columns exceed the limit of {settings.max_columns} per request")
    if len(frame) > settings.max_request_rows:
        raise PayloadTooLarge(f"{len(frame)} rows exceed the limit of {settings.max_request_rows} per request")
    return scorer.prepare(frame)


async def _receive_body(receive: Receive, declared: bytes | None, limit: int, timeout: float) -> bytes:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks = []
    size = 0
    task = asyncio.current_task()
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        if task is not None:
            task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, expire)  # cheaper than wait_for per receive
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected("the client went away while sending the body")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if not expired or task is None:
            raise
        task.uncancel()
        raise BodyTimeout(f"the request body did not arrive within {timeout:g} s") from None
    finally:
        timer.cancel()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``Content-Encoding`` gzip/deflate, never inflating past ``limit`` bytes (a gzip bomb is 413
    after at most ``limit`` bytes of work)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    d = zlib.decompressobj(wbits=47 if encoding != "deflate" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedBody(f"the {encoding} body could not be decompressed: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body exceeds the limit of {limit} bytes")
    # A cut-off stream must not be scored on the rows that survived, nor bytes after its end ignored
    # (a second gzip member, or anything else appended).
    if not d.eof:
        raise MalformedBody(f"the {encoding} body is truncated (its compressed stream does not end)")
    if d.unused_data:
        raise MalformedBody(f"the {encoding} body has {len(d.unused_data)} bytes after the end of its compressed stream")
    return out


async def _score_request(state: State, receive: Receive, headers: _Headers) -> tuple[bytes, str]:
    scorer, batcher = _loaded(state)
    check_token(state, headers.authorization, headers.token)
    media = codecs.negotiate(headers.accept)
    limit = state.settings.max_body_bytes
    body = await _receive_body(receive, headers.content_length, limit, state.settings.client_timeout_s)
    if headers.content_encoding is not None:
        body = _decompress(body, headers.content_encoding, limit)
    if len(body) > _OFFLOAD_BYTES or codecs.is_columnar(body, headers.content_type):  # in turn with model calls
        prepared = await batcher.offload(_table, body, headers.content_type, scorer, state.settings)
    else:
        prepared = _table(body, headers.content_type, scorer, state.settings)
    result = await _until_scored(batcher.enqueue(prepared), receive, headers.deadline)
    if len(result) > 2000:
        return await batcher.offload(codecs.encode, result, media), media
    return codecs.encode(result, media), media


async def _until_scored(future: asyncio.Future[Table], receive: Receive, deadline: float) -> Table:
    """Wait for a queued request's result. When the request times out, or its client disconnects,
    the future is cancelled: if its batch has not started, it is never scored."""
    loop = asyncio.get_running_loop()
    why: list[ScorerError] = []

    def give_up(reason: ScorerError) -> None:
        if not future.done():
            why.append(reason)
            future.cancel()

    timer = loop.call_at(deadline, give_up, RequestTimeout("the request was not answered within the request timeout"))

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        give_up(ClientDisconnected("the client disconnected before its result was ready"))

    watcher = loop.create_task(watch())
    try:
        return await future
    except asyncio.CancelledError:
        if why:
            raise why[0] from None
        raise
    finally:
        timer.cancel()
        watcher.cancel()


@dataclass(slots=True)
class _Headers:
    content_type: str | None = None
    accept: str | None = None
    content_length: bytes | None = None
    authorization: str | None = None
    token: str | None = None
    content_encoding: str | None = None
    deadline: float = 0.0


async def predict_asgi(state: State, scope: Scope, receive: Receive, send: Send) -> None:
    """POST /predict and /invocations as a bare ASGI handler: the hot path skips Starlette's
    request objects and middleware stack (about half of the per-request cost for one-row requests);
    it does the same request-id and metrics work as :class:`RequestContext`."""
    rid = None
    request = _Headers(deadline=asyncio.get_running_loop().time() + state.settings.request_timeout_s)
    for key, value in scope["headers"]:
        if key == b"content-type":
            request.content_type = value.decode("latin-1")
        elif key == b"accept":
            request.accept = value.decode("latin-1")
        elif key == b"content-length":
            request.content_length = value
        elif key == b"x-request-id":
            rid = value.decode("latin-1")[:128]
        elif key == b"authorization":
            request.authorization = value.decode("latin-1")
        elif key == b"token":
            request.token = value.decode("latin-1")
        elif key == b"content-encoding":
            request.content_encoding = value.decode("latin-1")
    rid = rid or new_request_id()
    token = request_id.set(rid)
    started = time.perf_counter()
    headers: dict[str, str] | None = None
    try:
        payload, media = await _score_request(state, receive, request)
        status = 200
    except Exception as exc:
        status, payload, headers = _error_parts(exc, echo=state.settings.echo_bad_values)
        media = codecs.JSON
    response_headers = [(b"content-type", media.encode()), (b"content-length", str(len(payload)).encode()),
                        (b"x-request-id", rid.encode("latin-1"))]
    if headers:
        response_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if state.shutting_down and not (headers and "Connection" in headers):
        # draining: a keep-alive client's next request opens a new connection, which the load
        # balancer sends elsewhere, instead of racing the close of this one
        response_headers.append((b"connection", b"close"))
    try:
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})
    finally:
        state.metrics.observe_request(scope["path"], status, time.perf_counter() - started)
        request_id.reset(token)


class ScorerApp(Starlette):
    """Starlette for everything but the scoring routes, which go straight to :func:`predict_asgi`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in _PREDICT_PATHS:
            await predict_asgi(self.state.scorer, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _post_only(request: Request) -> Response:  # reached only by methods other than POST
    raise HTTPException(405)


async def health(request: Request) -> Response:
    return _json(200, {"status": "ok"})


async def ready(request: Request) -> Response:
    try:
        _ready_scorer(request.app.state.scorer)
    except NotReady as exc:
        return error_response(exc)
    return _json(200, {"status": "ready"})


def _authorize(request: Request) -> None:
    check_token(request.app.state.scorer, request.headers.get("authorization"), request.headers.get("token"))


async def metadata(request: Request) -> Response:
    try:
        _authorize(request)
        scorer, _ = _loaded(request.app.state.scorer)
    except (NotReady, Unauthorized) as exc:
        return error_response(exc)
    return _json(200, scorer.metadata())


async def openapi(request: Request) -> Response:
    try:
        _authorize(request)  # it names the input columns and their types, as /metadata does
    except Unauthorized as exc:
        return error_response(exc)
    state: State = request.app.state.scorer
    columns = state.scorer.schema.columns if state.scorer is not None and state.scorer.schema else None
    return _json(200, openapi_document(request.app.routes, columns, auth=bool(state.settings.auth_token)))


async def metrics(request: Request) -> Response:
    state: State = request.app.state.scorer
    try:
        _authorize(request)
    except Unauthorized as exc:
        return error_response(exc)
    return Response(state.metrics.render(), media_type=METRICS_CONTENT_TYPE)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _json(exc.status_code, {"error": code, "message": exc.detail, "request_id": request_id.get()}, exc.headers)


class RequestContext:
    """Pure ASGI middleware: request id (``X-Request-ID`` in or generated, echoed back), metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = value.decode("latin-1")[:128]
                break
        rid = rid or new_request_id()
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
            self.metrics.observe_request(path, status, time.perf_counter() - started)
            request_id.reset(token)


_ROUTES = [
    Route("/predict", _post_only, methods=["POST"]),
    Route("/invocations", _post_only, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/ping", ready, methods=["GET"]),
    Route("/metadata", metadata, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
_KNOWN_PATHS = {r.path for r in _ROUTES}
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique per process start and request (a random prefix and a counter: no syscall per request)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"
_PREDICT_PATHS = frozenset({"/predict", "/invocations"})


async def _in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a daemon thread: unlike ``asyncio.to_thread``, shutting down does not wait
    for it, so a stop during a long bundle load is prompt (the load is abandoned)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if not future.done():
            future.set_exception(exc) if exc is not None else future.set_result(result)

    def work() -> None:
        try:
            result, exc = fn(*args), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            result, exc = None, e
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, exc)

    threading.Thread(target=work, name="scorer-load", daemon=True).start()
    return await future


def create_app(
    settings: Settings,
    *,
    scorer: Scorer | None = None,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> Starlette:
    """The ASGI app. Without ``scorer``, the bundle at ``settings.bundle`` loads in the background."""
    state = State(settings=settings)
    policy = BatchPolicy(max_rows=settings.max_batch_rows, max_wait=settings.max_batch_wait_ms / 1000,
                         max_queue_rows=settings.max_queue_rows)

    def activate(loaded: Scorer) -> None:
        batcher = Batcher(loaded.predict, policy, state.metrics.observe_batch, state.metrics.observe_retries)
        batcher.start()
        state.scorer, state.batcher = loaded, batcher
        state.metrics.load_seconds.set(loaded.load_seconds)
        state.metrics.ready.set(1)

    async def load_in_background() -> None:
        try:
            loaded = await _in_daemon_thread(Scorer.load, settings.bundle, settings)
        except Exception as exc:
            state.load_error = exc
            message = exc.message if isinstance(exc, ScorerError) else f"{type(exc).__name__}: {exc}"
            log.error("bundle failed to load: %s", message, exc_info=not isinstance(exc, ScorerError))
            if on_load_error is not None:
                on_load_error(exc)
            return
        activate(loaded)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        loader = None
        if scorer is not None:
            activate(scorer)
        else:
            loader = asyncio.create_task(load_in_background())
        try:
            yield
        finally:
            state.metrics.ready.set(0)
            if loader is not None and not loader.done():
                log.warning("shutting down while the bundle is still loading: the load is abandoned")
                loader.cancel()
            left = settings.shutdown_grace_s - (time.monotonic() - state.shutdown_started if state.shutdown_started else 0)
            if state.batcher is not None and not await state.batcher.stop(timeout=max(left, 0.5)):
                log.error("a model call was still running %.0f s after shutdown began: abandoned, its requests "
                          "failed", settings.shutdown_grace_s)

    app = ScorerApp(
        routes=_ROUTES,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_exception},
    )
    app.state.scorer = state
    app.add_middleware(RequestContext, metrics=state.metrics)
    return app
