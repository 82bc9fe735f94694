"""The scoring endpoint: ``POST /predict`` and ``POST /invocations``, a bare ASGI callable.

It reads the few headers it needs from the scope, receives and decodes the body, queues the rows
with the coalescer of the serving version (held until the response is sent: a reload never moves a
request to another version) and encodes the answer in the format ``Accept`` asked for; the response
names that version (``X-Model-Version``, ``X-Model-Digest``). It skips Starlette's
request objects (about half of the per-request cost of a one-row request); request id, metrics and
error responses are the request-context layer's (:mod:`scorer.serving.context`): this endpoint
only raises. A plain ``text/csv`` ``Accept`` is answered with a header line on ``/predict`` and without
one on the paths of :data:`scorer.serving.sagemaker.CSV_LINES_PATHS` (``/invocations``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from scorer import codecs
from scorer._columnar_limits import Limits
from scorer.core import Scorer
from scorer.errors import ClientDisconnected, PayloadTooLarge, RequestTimeout, ScorerError
from scorer.serving.auth import check_token
from scorer.serving.bodies import decompress, receive_body
from scorer.serving.sagemaker import CSV_LINES_PATHS
from scorer.serving.state import ServerState, Version, state_of
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
class _Headers:
    content_type: str | None = None
    accept: str | None = None
    content_length: bytes | None = None
    authorization: str | None = None
    token: str | None = None
    content_encoding: str | None = None
    deadline: float = 0.0


def _headers(scope: Scope, deadline: float) -> _Headers:
    request = _Headers(deadline=deadline)
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
    return request


class ScoringEndpoint:
    """An ASGI app (a class, so that Starlette's route table takes it as one, not as a
    request-to-response function)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = state_of(scope)
        headers = _headers(scope, asyncio.get_running_loop().time() + state.settings.request_timeout_s)
        csv = codecs.CSV_LINES if scope["path"] in CSV_LINES_PATHS else codecs.CSV
        version = state.hold()  # this request is scored, and answered, by the version serving now
        try:
            payload, media = await _score(state, version, receive, headers, csv)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", media.encode()), (b"content-length", str(len(payload)).encode()),
                                    *version.headers]})
            await send({"type": "http.response.body", "body": payload})
        finally:
            version.release()


score = ScoringEndpoint()


async def _score(state: ServerState, version: Version, receive: Receive, headers: _Headers,
                 csv: str = codecs.CSV) -> tuple[bytes, str]:
    scorer, coalescer = version.scorer, version.coalescer
    check_token(state.settings.auth_token, headers.authorization, headers.token)
    media = codecs.negotiate(headers.accept, csv=csv)
    limit = state.settings.max_body_bytes
    body = await receive_body(receive, headers.content_length, limit, state.settings.client_timeout_s)
    if headers.content_encoding is not None:
        body = decompress(body, headers.content_encoding, limit)
    if len(body) > DECODE_OFFLOAD_BYTES or codecs.is_columnar(body, headers.content_type):
        prepared = await coalescer.offload(_table, body, headers.content_type, scorer, state.settings)
    else:
        prepared = _table(body, headers.content_type, scorer, state.settings)
    result = await _until_scored(coalescer.enqueue(prepared), receive, headers.deadline)
    if len(result) > ENCODE_OFFLOAD_ROWS:
        return await coalescer.offload(codecs.encode, result, media), media
    return codecs.encode(result, media), media


def _table(body: bytes, content_type: str | None, scorer: Scorer, settings: Settings) -> Table:
    """Decode a request body and check it against the input schema."""
    columns = list(scorer.schema.columns) if scorer.schema else None
    if content_type is not None and content_type.startswith(_LINE_FORMATS):
        if body.count(b"\n") > settings.max_request_rows + 1:
            raise PayloadTooLarge(f"more than {settings.max_request_rows} rows per request (counted before parsing)")
        if content_type.startswith("text/csv") and body.count(b",", 0, body.find(b"\n")) >= settings.max_columns:
            raise PayloadTooLarge(f"more than {settings.max_columns} columns per request (counted before parsing)")
    frame = codecs.decode(body, content_type, columns, limits=Limits.of(settings))
    if len(frame.columns) > settings.max_columns:
        raise PayloadTooLarge(f"{len(frame.columns)} columns exceed the limit of {settings.max_columns} per request")
    if len(frame) > settings.max_request_rows:
        raise PayloadTooLarge(f"{len(frame)} rows exceed the limit of {settings.max_request_rows} per request")
    return scorer.prepare(frame)


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
