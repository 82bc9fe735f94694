"""The scoring endpoint: ``POST /predict`` and ``POST /invocations``, a bare ASGI callable.

It reads the few headers it needs from the scope, receives and decodes the body, queues the rows
with the coalescer of the serving version (held until the response is sent: a reload never moves a
request to another version) and encodes the answer in the format ``Accept`` asked for; the response
names that version (``X-Model-Version``, ``X-Model-Digest``). It skips Starlette's
request objects (about half of the per-request cost of a one-row request); request id, metrics and
error responses are the request-context layer's (:mod:`scorer.serving.context`): this endpoint
only raises. A plain ``text/csv`` ``Accept`` is answered with a header line on ``/predict`` and without
one on the paths of :data:`scorer.serving.sagemaker.CSV_LINES_PATHS` (``/invocations``).

The endpoint is the same for every protocol: what differs is its :class:`Wire`, how a body becomes
prepared rows and how the result becomes the answer (``/predict`` and ``/invocations``: the codecs
of :mod:`scorer.codecs`, by ``Content-Type`` and ``Accept``; the Open Inference Protocol and KServe V1:
:mod:`scorer.serving.inference`). Requests of every protocol queue with the same coalescer, so they are
micro-batched together.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send

from scorer import codecs
from scorer._columnar_limits import Limits
from scorer.core import Scorer
from scorer.errors import ClientDisconnected, PayloadTooLarge, RequestTimeout, ScorerError
from scorer.serving.auth import check_token
from scorer.serving.bodies import decompress, receive_body
from scorer.serving.sagemaker import CSV_LINES_PATHS
from scorer.serving.state import ServerState, Version, state_of
from scorer.serving import tracing
from scorer.settings import Settings
from scorer.table import Table

#: Request bodies bigger than this many bytes, and every Parquet or Arrow body (whose decoded size
#: its bytes do not tell), are decoded in the model thread, in turn with model calls, so the event
#: loop stays responsive (and the decode does not fight a model call for the GIL).
DECODE_OFFLOAD_BYTES = 256 * 1024

#: Results of more than this many rows are encoded in the model thread too, for the same reasons;
#: smaller ones are encoded on the event loop, where they do not wait behind a running model call.
#: A row count, not bytes, because the size is not known before encoding: 2,000 rows of a classifier's
#: three output columns are about 180 KiB of JSON (80 KiB of CSV), the order of DECODE_OFFLOAD_BYTES.
ENCODE_OFFLOAD_ROWS = 2000


#: Content-Types of one row per line: their rows are counted before the body is parsed.
_LINE_FORMATS = ("text/csv", codecs.JSONL, *(alias for alias, mt in codecs.ALIASES.items() if mt == codecs.JSONL))


@dataclass(slots=True)
class Head:
    """What a scoring request says besides its body: the headers the endpoints read, and the route's
    path parameters (a protocol's model name and version)."""

    content_type: str | None = None
    accept: str | None = None
    content_length: bytes | None = None
    authorization: str | None = None
    token: str | None = None
    content_encoding: str | None = None
    header_length: bytes | None = None  # Inference-Header-Content-Length (the binary tensor extension)
    deadline: float = 0.0
    path: str = ""
    path_params: dict[str, str] | None = None


#: A response: body, media type, extra headers.
Reply = tuple[bytes, str, list[tuple[bytes, bytes]]]


@dataclass(frozen=True, slots=True)
class Decoded:
    """A request's prepared rows and how its result is answered."""

    rows: Table
    reply: Callable[[Table], Reply]


@dataclass(frozen=True, slots=True)
class Wire:
    """One protocol's request and response bodies.

    ``check``: before the body is read (the model name, ``Accept``); returns what ``read`` gets.
    ``read``: body to prepared rows and the reply function; runs in the model thread when ``heavy``.
    """

    check: Callable[[Head, Scorer, ServerState], Any]
    read: Callable[[bytes, Head, Any, Scorer, Settings], Decoded]
    heavy: Callable[[bytes, Head], bool]


def _head(scope: Scope, deadline: float) -> Head:
    request = Head(deadline=deadline, path=scope["path"], path_params=scope.get("path_params"))
    for key, value in scope["headers"]:
        if key == b"content-type":
            request.content_type = value.decode("latin-1")
        elif key == b"accept":
            request.accept = value.decode("latin-1")
        elif key == b"content-length":
            request.content_length = value
        elif key == b"authorization":
            request.authorization = value.decode("latin-1")
        elif key == b"token":
            request.token = value.decode("latin-1")
        elif key == b"content-encoding":
            request.content_encoding = value.decode("latin-1")
        elif key == b"inference-header-content-length":
            request.header_length = value
    return request


class ScoringEndpoint:
    """An ASGI app (a class, so that Starlette's route table takes it as one, not as a
    request-to-response function) scoring the requests of one :class:`Wire`."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = state_of(scope)
        head = _head(scope, asyncio.get_running_loop().time() + state.settings.request_timeout_s)
        version = state.hold()  # this request is scored, and answered, by the version serving now
        try:
            payload, media, extra = await _score(self.wire, state, version, receive, head)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", media.encode()), (b"content-length", str(len(payload)).encode()),
                                    *version.headers, *extra]})
            await send({"type": "http.response.body", "body": payload})
        finally:
            version.release()


async def _score(wire: Wire, state: ServerState, version: Version, receive: Receive, head: Head) -> Reply:
    scorer, coalescer = version.scorer, version.coalescer
    trace = tracing.current()  # None unless tracing is on
    check_token(state.settings.auth_token, head.authorization, head.token)
    checked = wire.check(head, scorer, state)
    limit = state.settings.max_body_bytes
    body = await receive_body(receive, head.content_length, limit, state.settings.client_timeout_s)
    if head.content_encoding is not None:
        body = decompress(body, head.content_encoding, limit)
    if trace is not None:
        trace.start(version.headers)
    if len(body) > DECODE_OFFLOAD_BYTES or wire.heavy(body, head):
        decoded = await coalescer.offload(wire.read, body, head, checked, scorer, state.settings)
    else:
        decoded = wire.read(body, head, checked, scorer, state.settings)
    if trace is not None:
        trace.done("decode", len(decoded.rows))
    result = await _until_scored(coalescer.enqueue(decoded.rows, trace), receive, head.deadline)
    if len(result) > ENCODE_OFFLOAD_ROWS:
        reply = await coalescer.offload(decoded.reply, result)
    else:
        reply = decoded.reply(result)
    if trace is not None:
        trace.done("encode")
    return reply


def check_size(frame: Table, settings: Settings) -> None:
    """A decoded request within the per-request limits of rows and columns."""
    if len(frame.columns) > settings.max_columns:
        raise PayloadTooLarge(f"{len(frame.columns)} columns exceed the limit of {settings.max_columns} per request")
    if len(frame) > settings.max_request_rows:
        raise PayloadTooLarge(f"{len(frame)} rows exceed the limit of {settings.max_request_rows} per request")


def _table(body: bytes, content_type: str | None, scorer: Scorer, settings: Settings) -> Table:
    """Decode a request body and check it against the input schema."""
    columns = list(scorer.schema.columns) if scorer.schema else None
    if content_type is not None and content_type.startswith(_LINE_FORMATS):
        if body.count(b"\n") > settings.max_request_rows + 1:
            raise PayloadTooLarge(f"more than {settings.max_request_rows} rows per request (counted before parsing)")
        if content_type.startswith("text/csv") and body.count(b",", 0, body.find(b"\n")) >= settings.max_columns:
            raise PayloadTooLarge(f"more than {settings.max_columns} columns per request (counted before parsing)")
    frame = codecs.decode(body, content_type, columns, limits=Limits.of(settings))
    check_size(frame, settings)
    return scorer.prepare(frame)


#: The response header that says a request's params were ignored (RFC 9110's Warning, code 299: miscellaneous).
IGNORED_PARAMS = (b"warning", b'299 scorer "params ignored: this model takes none (its predict has no params argument)"')


def with_params(rows: Table, params: Mapping[str, Any] | None, scorer: Scorer) -> tuple[Table, list[tuple[bytes, bytes]]]:
    """A request's rows with its params, for a model that takes them; without them, and the warning
    header that says so, for one that does not (rows without params batch with any other request's)."""
    if not params:
        return rows, []
    if scorer.takes_params:
        return dataclasses.replace(rows, params=params), []
    return dataclasses.replace(rows, params=None), [IGNORED_PARAMS]


def _read_table(body: bytes, head: Head, media: str, scorer: Scorer, settings: Settings) -> Decoded:
    table = _table(body, head.content_type, scorer, settings)
    rows, extra = with_params(table, table.params, scorer)
    return Decoded(rows, lambda result: (codecs.encode(result, media), media, extra))


def _accept(head: Head, scorer: Scorer, state: ServerState) -> str:
    """The answer's media type; a plain ``text/csv`` is headerless on SageMaker's path."""
    return codecs.negotiate(head.accept, csv=codecs.CSV_LINES if head.path in CSV_LINES_PATHS else codecs.CSV)


#: ``/predict`` and ``/invocations``: every codec of :mod:`scorer.codecs`.
TABLES = Wire(check=_accept, read=_read_table,
              heavy=lambda body, head: codecs.is_columnar(body, head.content_type))
score = ScoringEndpoint(TABLES)


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
