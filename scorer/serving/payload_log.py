"""Payload logging (opt-in, ``--payload-log``): scoring requests and their responses sent, off the request
path, to a monitoring sink. It is the only way request data leaves the process, and it is off by default.

What is logged: for a sampled request to a scoring path (:func:`scorer.serving.routes.is_scoring_path`),
a *request* event (the body as received, still compressed if it was sent compressed; when the body was read
in full) and, when the answer is 200, a *response* event (the body sent). Both carry the request id (the
``X-Request-ID`` the client sent, or the one the server made) as their event id. ``--payload-log-sample``
picks requests at random; a request's two events are kept or dropped together.

Where they go (``--payload-log``):

- an ``http://`` or ``https://`` URL: each event is POSTed as a binary-mode CloudEvent exactly as KServe's
  logger sends them (kserve/kserve ``pkg/logger/worker.go`` ``sendHttpCloudEvent`` and ``handler.go``,
  ``cmd/agent/main.go`` for the defaults), so the receivers written for KServe (its message dumper, Alibi
  Detect's servers) take them unchanged: headers ``ce-specversion: 1.0``, ``ce-id``, ``ce-type``
  (``org.kubeflow.serving.inference.request`` / ``.response``), ``ce-source``, ``ce-time``, the extensions
  ``ce-inferenceservicename``, ``ce-namespace``, ``ce-component`` (``predictor``), ``ce-endpoint``
  (``default``, as KServe's controller sets them for a predictor) and ``ce-metadata`` (``{}``: no headers
  are copied), and ``Content-Type``; the body is the payload's bytes. One difference: KServe labels the
  response with the *request's* Content-Type; here each event has its own payload's type (they differ when
  the client asked for another format with ``Accept``). A 2xx answer is delivered; anything else, a refused
  connection or no answer within :data:`SEND_TIMEOUT_S` is a failure: the event is dropped and counted,
  never retried (but for one new connection when a kept-alive one was closed by the sink meanwhile).
- ``-`` (stdout) or a file path (appended, created mode 0600): JSON Lines, one object per event with the
  CloudEvents attributes as keys (``specversion``, ``id``, ``type``, ``source``, ``time``,
  ``datacontenttype``, ``inferenceservicename``, ``namespace``, ``component``, ``endpoint``) and the
  payload as ``data``, its text, when its type is text (``text/*``, JSON, JSON Lines) and it is UTF-8,
  else as ``data_base64`` (Parquet, Arrow, a gzip body). ``data`` is always a string, never the parsed
  JSON, so it is the payload byte for byte. Each line is one ``write``: with ``--workers N`` appending to
  one file, lines never interleave; on a pipe (stdout) lines longer than ``PIPE_BUF`` (4 KiB) can.

Never on the request path: a request only offers its events to a bounded queue (``--payload-log-queue``
events, ``--payload-log-queue-mb`` of payloads); a full queue drops them at once. One daemon thread per
process (each worker logs its own requests) takes them off the queue and sends them, with stdlib
``http.client``: one blocking, kept-alive connection is all a single sender thread needs, it speaks HTTPS,
and it adds nothing to the image (httpx is not a dependency of the server). Metrics:
``scorer_payload_log_sent_total`` and ``scorer_payload_log_dropped_total{reason}``, ``queue_full``,
``sink_error`` or ``shutdown``. A dead or slow sink therefore costs scoring nothing: events are dropped
and counted, and a warning is logged when the sink starts failing (and an info line when it recovers),
not once per event. The sink's answers are never logged (they could echo payloads).

At shutdown (after in-flight requests are answered), what is queued is sent within what is left of
``--shutdown-grace-s``; whatever is still queued then (a sink down or too slow) is dropped and counted
as ``shutdown``, and the process exits.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import logging
import os
import random
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from scorer.serving.metrics import Metrics
from scorer.settings import Settings

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
#: Seconds an HTTP sink has to accept a connection, and then to answer one event.
SEND_TIMEOUT_S = 2.0
COMPONENT = "predictor"
ENDPOINT = "default"
REASONS = ("queue_full", "sink_error", "shutdown")

log = logging.getLogger(__name__)

_TEXT_TYPES = frozenset({"application/json", "application/jsonl", "application/x-ndjson", "application/jsonlines",
                         "application/x-jsonlines"})


@dataclass(frozen=True, kw_only=True)
class PayloadLogOptions:
    """What the payload log needs of the settings (:func:`scorer.settings._check_payload_log` checked them)."""

    sink: str
    sample: float
    queue_events: int
    queue_bytes: int
    source: str
    service: str
    namespace: str

    @classmethod
    def from_settings(cls, settings: Settings) -> PayloadLogOptions | None:
        """The options, or None when payload logging is off."""
        if not settings.payload_log:
            return None
        return cls(sink=settings.payload_log, sample=settings.payload_log_sample,
                   queue_events=settings.payload_log_queue, queue_bytes=settings.payload_log_queue_mb * 1024 * 1024,
                   source=settings.payload_log_source or f"http://localhost:{settings.port}/",
                   service=settings.payload_log_service, namespace=settings.payload_log_namespace)


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    id: str
    time: float  # Unix time: the request's arrival, or the end of its response
    content_type: str | None
    chunks: tuple[bytes, ...]  # the payload as it came; joined by the sender thread, off the event loop

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)


def _timestamp(at: float) -> str:
    """RFC 3339 in UTC, as the CloudEvents SDK writes ``ce-time``."""
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _header(headers: Any, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class Capture:
    """One sampled scoring request: its ASGI ``receive`` and ``send`` wrapped to keep what passes; then
    :meth:`done` (once the response is sent) offers its events to the log."""

    __slots__ = ("_log", "_rid", "_started", "_content_type", "_body", "_body_complete", "_status",
                 "_response_type", "_response", "_response_complete")

    def __init__(self, payload_log: PayloadLog, rid: str, scope: Scope) -> None:
        self._log = payload_log
        self._rid = rid
        self._started = time.time()
        self._content_type = _header(scope["headers"], b"content-type")
        self._body: list[bytes] = []
        self._body_complete = False
        self._status = 0
        self._response_type: str | None = None
        self._response: list[bytes] = []
        self._response_complete = False

    def receive(self, receive: Receive) -> Receive:
        async def receive_kept() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                if body:
                    self._body.append(body)
                if not message.get("more_body", False):
                    self._body_complete = True
            return message

        return receive_kept

    def send(self, send: Send) -> Send:
        async def send_kept(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._status = message["status"]
                self._response_type = _header(message.get("headers", ()), b"content-type")
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if body:
                    self._response.append(body)
                if not message.get("more_body", False):
                    self._response_complete = True
            await send(message)

        return send_kept

    def done(self) -> None:
        events = []
        if self._body_complete:
            events.append(Event(REQUEST, self._rid, self._started, self._content_type, tuple(self._body)))
        if self._status == 200 and self._response_complete:
            events.append(Event(RESPONSE, self._rid, time.time(), self._response_type, tuple(self._response)))
        if events:
            self._log.offer(events)


class _Queue:
    """Bounded in events and in bytes; a request's events enter together or not at all."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events, self.max_bytes = max_events, max_bytes
        self._items: deque[Event] = deque()
        self._bytes = 0
        self._ready = threading.Condition(threading.Lock())
        self.closed = False

    def offer(self, events: list[Event]) -> bool:
        size = sum(e.size for e in events)
        with self._ready:
            if self.closed or len(self._items) + len(events) > self.max_events or self._bytes + size > self.max_bytes:
                return False
            self._items.extend(events)
            self._bytes += size
            self._ready.notify()
        return True

    def take(self) -> Event | None:
        """The next event; None once closed and empty."""
        with self._ready:
            while not self._items:
                if self.closed:
                    return None
                self._ready.wait()
            event = self._items.popleft()
            self._bytes -= event.size
            return event

    def close(self) -> None:
        with self._ready:
            self.closed = True
            self._ready.notify_all()

    def clear(self) -> int:
        with self._ready:
            left = len(self._items)
            self._items.clear()
            self._bytes = 0
            return left


class _HttpSink:
    """Binary-mode CloudEvents POSTed on one kept-alive connection (see the module's docstring)."""

    def __init__(self, url: str, options: PayloadLogOptions) -> None:
        parsed = urllib.parse.urlsplit(url)
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname or ""
        self._port = parsed.port
        self._target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        self._static = {"ce-specversion": "1.0", "ce-source": options.source,
                        "ce-inferenceservicename": options.service, "ce-namespace": options.namespace,
                        "ce-component": COMPONENT, "ce-endpoint": ENDPOINT, "ce-metadata": "{}"}
        self._conn: http.client.HTTPConnection | None = None

    def describe(self) -> str:
        return f"{'https' if self._https else 'http'}://{self._host}{f':{self._port}' if self._port else ''}{self._target}"

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=SEND_TIMEOUT_S)
        return http.client.HTTPConnection(self._host, self._port, timeout=SEND_TIMEOUT_S)

    def send(self, event: Event) -> None:
        body = b"".join(event.chunks)
        headers = {**self._static, "ce-id": event.id, "ce-type": event.type, "ce-time": _timestamp(event.time),
                   "Content-Length": str(len(body))}
        if event.content_type is not None:
            headers["Content-Type"] = event.content_type
        for attempt in range(2):
            reused = self._conn is not None
            conn = self._conn or self._connect()
            self._conn = conn
            try:
                conn.request("POST", self._target, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if reused and attempt == 0:  # the sink closed a kept-alive connection: once more, on a new one
                    continue
                raise
            except BaseException:
                self.close()
                raise
            if response.will_close:
                self.close()
            if not 200 <= response.status < 300:
                raise http.client.HTTPException(f"the sink answered {response.status}")
            return

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _LinesSink:
    """JSON Lines on stdout or appended to a file (see the module's docstring)."""

    def __init__(self, target: str, options: PayloadLogOptions) -> None:
        self._target = target
        self._fd: int | None = None
        self._static = {"specversion": "1.0", "source": options.source, "inferenceservicename": options.service,
                        "namespace": options.namespace, "component": COMPONENT, "endpoint": ENDPOINT}

    def describe(self) -> str:
        return "stdout" if self._target == "-" else self._target

    def _open(self) -> int:
        if self._fd is None:
            if self._target == "-":
                self._fd = 1
            else:
                self._fd = os.open(self._target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def send(self, event: Event) -> None:
        body = b"".join(event.chunks)
        entry: dict[str, Any] = {"id": event.id, "type": event.type, "time": _timestamp(event.time),
                                 "datacontenttype": event.content_type, **self._static}
        text = _as_text(body, event.content_type)
        if text is not None:
            entry["data"] = text
        else:
            entry["data_base64"] = base64.b64encode(body).decode("ascii")
        line = orjson.dumps(entry) + b"\n"
        fd = self._open()
        written = os.write(fd, line)
        while written < len(line):  # a pipe may take a long line in parts
            written += os.write(fd, line[written:])

    def close(self) -> None:
        if self._fd is not None and self._fd != 1:
            os.close(self._fd)
        self._fd = None


def _as_text(body: bytes, content_type: str | None) -> str | None:
    media = (content_type or "").split(";")[0].strip().lower()
    if not (media.startswith("text/") or media in _TEXT_TYPES or media.endswith("+json")):
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:  # e.g. a gzip-encoded JSON body
        return None


class PayloadLog:
    """The payload log of one server process: :meth:`capture` on the request path (a random draw), a
    bounded queue, and a sender thread started by :meth:`start` and flushed by :meth:`close`."""

    def __init__(self, options: PayloadLogOptions, metrics: Metrics) -> None:
        self.options = options
        self._sample = options.sample
        self._queue = _Queue(options.queue_events, options.queue_bytes)
        self._sink: _HttpSink | _LinesSink = (
            _HttpSink(options.sink, options) if "://" in options.sink else _LinesSink(options.sink, options))
        self._sent = metrics.payload_log_sent
        self._dropped = {reason: metrics.payload_log_dropped.labels(reason) for reason in REASONS}
        self._thread: threading.Thread | None = None
        self._failing = False

    def capture(self, rid: str, scope: Scope) -> Capture | None:
        """A capture for this request, or None when the sample leaves it out."""
        if self._sample < 1.0 and random.random() >= self._sample:
            return None
        return Capture(self, rid, scope)

    def offer(self, events: list[Event]) -> None:
        if not self._queue.offer(events):
            self._dropped["queue_full"].inc(len(events))

    def start(self) -> None:
        log.warning("payload logging is on: scoring requests and responses (%s of them) are sent to %s",
                    f"{self._sample:.0%}", self._sink.describe())
        self._thread = threading.Thread(target=self._run, name="scorer-payload-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (event := self._queue.take()) is not None:
            try:
                self._sink.send(event)
            except Exception as exc:  # noqa: BLE001 - a sink's failure drops the event, never the sender
                self._dropped["sink_error"].inc()
                if not self._failing:
                    self._failing = True
                    log.warning("payload log: %s failed (%s): events are dropped (counted in "
                                "scorer_payload_log_dropped_total) until it takes them again",
                                self._sink.describe(), _reason(exc))
                continue
            self._sent.inc()
            if self._failing:
                self._failing = False
                log.info("payload log: %s takes events again", self._sink.describe())
        self._sink.close()

    async def close(self, timeout: float) -> None:
        """At shutdown: send what is queued within ``timeout`` seconds; what is left then is dropped and counted."""
        self._queue.close()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, max(timeout, 0.0))
        left = self._queue.clear()
        if left:
            self._dropped["shutdown"].inc(left)
            log.warning("payload log: %d events not sent to %s by the end of the shutdown grace period: dropped",
                        left, self._sink.describe())


def _reason(exc: BaseException) -> str:
    """A failure's class and, for our own HTTP status message and OS errors, its text (never a sink's body)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    if isinstance(exc, http.client.HTTPException) and str(exc).startswith("the sink answered"):
        return str(exc)
    return type(exc).__name__
