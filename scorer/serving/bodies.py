"""A request body off the wire: received within the client timeout and the size limit, then
inflated (``Content-Encoding``) without ever inflating past that limit."""

from __future__ import annotations

import asyncio
import zlib

from starlette.types import Receive

from scorer.errors import BodyTimeout, ClientDisconnected, MalformedBody, PayloadTooLarge, UnsupportedMediaType


async def receive_body(receive: Receive, declared: bytes | None, limit: int, timeout: float) -> bytes:
    """The whole body: 413 past ``limit`` bytes (at once if ``Content-Length`` declares more), 408 if
    it has not arrived within ``timeout`` seconds, 499 if the client goes away meanwhile."""
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


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
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
