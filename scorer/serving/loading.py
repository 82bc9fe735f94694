"""Answering on the listening socket while a multi-worker supervisor loads the bundle.

With ``--workers N`` the bundle is loaded once, before the workers are forked. Until then a tiny
HTTP responder in a thread of the supervisor keeps the contract of the one-worker server:
``/health`` answers 200 (liveness probes do not kill a slow load) and every other path answers
503 with ``Retry-After`` (readiness stays false, nothing is accepted for scoring). It is stopped
and its thread joined before the fork, so the workers inherit no thread and no event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType

import orjson

_MAX_HEAD = 64 * 1024
_MAX_DRAIN = 1024 * 1024  # read (and drop) a body up to this size before answering, so no reset loses the answer


def _response(status: int, body: dict[str, str], extra: bytes = b"") -> bytes:
    payload = orjson.dumps(body)
    reason = {200: b"OK", 400: b"Bad Request", 503: b"Service Unavailable"}[status]
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%sconnection: close\r\n\r\n"
            % (status, reason, len(payload), extra)) + payload


_HEALTH = _response(200, {"status": "ok"})
_NOT_READY = _response(503, {"error": "not_ready", "message": "the bundle is not loaded yet"}, b"retry-after: 1\r\n")
_BAD = _response(400, {"error": "bad_request", "message": "malformed HTTP request"})


class _Protocol(asyncio.Protocol):
    def __init__(self, connections: set[asyncio.Transport]) -> None:
        self.connections = connections
        self.buffer = b""
        self.answer: bytes | None = None
        self.remaining = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.answer is not None:  # draining the body
            self.remaining -= len(data)
            if self.remaining <= 0:
                self._reply()
            return
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            if len(self.buffer) > _MAX_HEAD:
                self.answer = _BAD
                self._reply()
            return
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        path = parts[1].split(b"?", 1)[0] if len(parts) == 3 else None
        self.answer = _BAD if path is None else _HEALTH if path == b"/health" else _NOT_READY
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
        self.remaining = min(length, _MAX_DRAIN) - len(rest)
        if self.remaining <= 0:
            self._reply()

    def _reply(self) -> None:
        assert self.answer is not None
        self.transport.write(self.answer)
        self.transport.close()


class LoadingResponder:
    """``with LoadingResponder(sock): load()`` — answers on ``sock`` for as long as the block runs."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock.dup()  # the server closes its socket when it stops; the original stays open
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="scorer-loading-responder", daemon=True)

    def __enter__(self) -> LoadingResponder:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        connections: set[asyncio.Transport] = set()
        try:
            server = await self._loop.create_server(lambda: _Protocol(connections), sock=self._sock)
        finally:
            self._started.set()
        await self._stop.wait()
        server.close()
        for transport in list(connections):
            transport.abort()
        await server.wait_closed()
