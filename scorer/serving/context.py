"""The request-context layer, outermost in the stack: what every HTTP request gets, on every route.

- a request id: the client's ``X-Request-ID`` (first 128 characters) or a new one, set for the
  request's log lines (:data:`scorer._logging.request_id`) and sent back in the ``X-Request-ID``
  response header;
- the error response: an exception from anything inside becomes its HTTP answer here, through
  :func:`scorer.serving.http_errors.error_parts` (the one place that maps exceptions to statuses);
- one observation in the metrics (``scorer_requests_total`` by path and status, and the latency);
- while draining (from SIGTERM on), or while a supervisor retires this worker (a reload), ``Connection:
  close`` on scoring responses, so that a keep-alive
  client's next request opens a new connection, which the load balancer sends elsewhere, instead of
  racing the close of this one;
- with payload logging on (:mod:`scorer.serving.payload_log`), a sampled scoring request's body and
  response body kept and handed to the payload log once the response is sent.

Authentication is not here: see :mod:`scorer.serving.auth` for why it belongs to the routes it guards.
"""

from __future__ import annotations

import itertools
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scorer import codecs
from scorer._logging import request_id
from scorer.serving.http_errors import error_parts, is_protocol_path
from scorer.serving.payload_log import PayloadLog
from scorer.serving.routes import is_scoring_path, path_label
from scorer.serving.state import ServerState

_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)
_JSON = codecs.JSON.encode()


def new_request_id() -> str:
    """Unique per process start and request (a random prefix and a counter: no syscall per request)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


class RequestContext:
    """Pure ASGI middleware around the router; see the module's docstring."""

    def __init__(self, app: ASGIApp, state: ServerState, payload_log: PayloadLog | None = None) -> None:
        self.app = app
        self.state = state
        self.payload_log = payload_log  # None: off (the default), and this layer's only cost is this check

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
        path = scope["path"]
        status = 500
        responded = False
        state = self.state
        capture = None
        if self.payload_log is not None and is_scoring_path(path):
            capture = self.payload_log.capture(rid, scope)  # None when not sampled
            if capture is not None:
                receive, send = capture.receive(receive), capture.send(send)

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                headers = [*message.get("headers", ()), (b"x-request-id", rid.encode("latin-1"))]
                if (state.shutting_down or state.retiring) and is_scoring_path(path) and not any(k == b"connection" for k, _ in headers):
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                if responded:  # too late for an error response: the connection is cut
                    raise
                code, body, extra = error_parts(exc, echo=state.settings.echo_bad_values,
                                                 protocol=is_protocol_path(path))
                headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
                if extra:
                    headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
                await send_with_id({"type": "http.response.start", "status": code, "headers": headers})
                await send_with_id({"type": "http.response.body", "body": body})
        finally:
            state.metrics.observe_request(path_label(path), status, time.perf_counter() - started)
            request_id.reset(token)
            if capture is not None:  # the response is sent: its events go to the payload log's queue
                capture.done()
