"""Hostile clients against a real server: trickled headers and bodies are cut off by the client
timeout without slowing anyone else down; compressed bodies are inflated only up to the body limit."""

from __future__ import annotations

import gzip
import socket
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import requests


def _connect(url: str) -> socket.socket:
    u = urlparse(url)
    return socket.create_connection((u.hostname, u.port), timeout=10)


def _closed_after(sock: socket.socket, trickle: bytes, every: float, limit: float) -> tuple[float, bytes]:
    """Send ``trickle`` one byte at a time; return when the server closes (seconds, what it sent)."""
    started = time.monotonic()
    received = b""
    sock.settimeout(every)
    for byte in trickle:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        try:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        except TimeoutError:
            pass
        except OSError:
            break
        if time.monotonic() - started > limit:
            break
    return time.monotonic() - started, received


def test_trickled_headers_and_body_are_cut_off(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """--client-timeout-s 2: a client trickling its headers, one that connects and sends nothing, and
    one trickling its body are all disconnected (the body one with 408) within a few seconds, while
    normal requests at the same time keep being answered quickly."""
    with live_server(sum_bundle(), "--client-timeout-s", "2") as server:
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + b"X-Pad: " + b"a" * 200
        body_head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        slow_head, idle, slow_body = (_connect(server.url) for _ in range(3))
        slow_body.sendall(body_head)
        with ThreadPoolExecutor(3) as pool:
            head_result = pool.submit(_closed_after, slow_head, head, 0.25, 15)
            body_result = pool.submit(_closed_after, slow_body, b'{"a": 1, "b": ' + b" " * 180, 0.25, 15)
            idle.settimeout(15)
            idle_started = time.monotonic()
            idle_bytes = idle.recv(1024)
            idle_seconds = time.monotonic() - idle_started
            latencies = []
            for i in range(20):
                started = time.monotonic()
                r = requests.post(server.url + "/predict", json={"a": float(i), "b": 1.0}, timeout=5)
                latencies.append(time.monotonic() - started)
                assert r.status_code == 200
                time.sleep(0.1)
            head_seconds, head_bytes = head_result.result()
            body_seconds, body_bytes = body_result.result()
    assert head_seconds < 5 and head_bytes == b"", (head_seconds, head_bytes)
    assert idle_seconds < 5 and idle_bytes == b"", (idle_seconds, idle_bytes)
    assert body_seconds < 5 and b" 408 " in body_bytes.split(b"\r\n")[0], (body_seconds, body_bytes[:200])
    assert max(latencies) < 1.0, latencies
    print(f"slow clients cut off after: head {head_seconds:.1f}s, idle {idle_seconds:.1f}s, body {body_seconds:.1f}s; "
          f"others' max latency {max(latencies) * 1000:.0f} ms")


def test_gzip_bodies_and_bombs(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """gzip and deflate bodies are scored; a 1 KB gzip bomb that inflates past --max-body-bytes is 413
    quickly; an unknown Content-Encoding is 415; a corrupt gzip body is 400."""
    csv = b"a,b\n" + b"1,2\n" * 10
    with live_server(sum_bundle(), "--max-body-bytes", "1000000") as server:
        url = server.url + "/predict"
        ok = requests.post(url, data=gzip.compress(csv), headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"})
        assert ok.status_code == 200 and len(ok.json()["predictions"]) == 10, ok.text
        ok = requests.post(url, data=zlib.compress(csv), headers={"Content-Type": "text/csv", "Content-Encoding": "deflate"})
        assert ok.status_code == 200
        bomb = gzip.compress(b"0" * 200_000_000)  # ~200 KB on the wire, 200 MB inflated
        started = time.monotonic()
        big = requests.post(url, data=bomb, headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"})
        seconds = time.monotonic() - started
        assert big.status_code == 413 and big.json()["error"] == "payload_too_large", big.text
        assert seconds < 2, seconds
        assert requests.post(url, data=csv, headers={"Content-Type": "text/csv", "Content-Encoding": "br"}).status_code == 415
        assert requests.post(url, data=b"\x1f\x8bnot gzip", headers={"Content-Type": "text/csv",
                                                                    "Content-Encoding": "gzip"}).status_code == 400
        assert requests.get(server.url + "/health").status_code == 200
    print(f"gzip bomb ({len(bomb)} bytes -> 200 MB): 413 in {seconds * 1000:.0f} ms")


def test_row_cap_on_csv_is_checked_before_parsing(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """--max-request-rows: a CSV body with more lines is refused (413) from a line count, before it is
    parsed; JSON is refused after parsing (its cost is bounded by --max-body-bytes)."""
    with live_server(sum_bundle(), "--max-request-rows", "1000") as server:
        many = "a,b\n" + "1,2\n" * 5000
        r = requests.post(server.url + "/predict", data=many, headers={"Content-Type": "text/csv"})
        assert r.status_code == 413 and "counted before parsing" in r.json()["message"], r.text
        r = requests.post(server.url + "/predict", json={"a": [1.0] * 5000, "b": [2.0] * 5000})
        assert r.status_code == 413, r.text
        r = requests.post(server.url + "/predict", data="a,b\n" + "1,2\n" * 1000, headers={"Content-Type": "text/csv"})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 1000


def test_column_cap(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """--max-columns: a CSV header with more columns is 413 before parsing; JSON after decoding."""
    with live_server(sum_bundle(), "--max-columns", "50") as server:
        header = ",".join(f"c{i}" for i in range(100))
        r = requests.post(server.url + "/predict", data=f"a,b,{header}\n" + "1,2," + ",".join("0" * 100) + "\n",
                          headers={"Content-Type": "text/csv"})
        assert r.status_code == 413 and "counted before parsing" in r.json()["message"], r.text
        r = requests.post(server.url + "/predict", json={"a": 1.0, "b": 2.0, **{f"c{i}": 0 for i in range(100)}})
        assert r.status_code == 413 and "columns" in r.json()["message"], r.text
        r = requests.post(server.url + "/predict", json={"a": 1.0, "b": 2.0, **{f"c{i}": 0 for i in range(40)}})
        assert r.status_code == 200, r.text
