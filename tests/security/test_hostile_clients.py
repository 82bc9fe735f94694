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


def _closed_after(sock: socket.socket, trickle: bytes, every: float, limit: float) -> tuple[float, float, bytes]:
    """Send ``trickle`` one byte at a time; return when the server closes (seconds taken, the
    monotonic time it closed, what it sent)."""
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
    ended = time.monotonic()
    return ended - started, ended, received


def _until_closed(sock: socket.socket) -> tuple[float, bytes]:
    """Wait, sending nothing, until the server closes: (the monotonic time it closed, what it sent)."""
    sock.settimeout(15)
    received = sock.recv(1024)
    return time.monotonic(), received


def _timed_sums(url: str, n: int, pause: float) -> list[tuple[float, float]]:
    """``n`` one-row requests in turn (``pause`` apart), each checked for its right answer:
    (latency in seconds, monotonic time it was answered) for each."""
    out = []
    for i in range(n):
        started = time.monotonic()
        r = requests.post(url + "/predict", json={"a": float(i), "b": 1.0}, timeout=30)
        ended = time.monotonic()
        assert r.status_code == 200 and r.json()["predictions"][0]["sum"] == i + 1.0, r.text
        out.append((ended - started, ended))
        time.sleep(pause)
    return out


def test_trickled_headers_and_body_are_cut_off(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """--client-timeout-s 2: a client trickling its headers, one that connects and sends nothing, and
    one trickling its body are each disconnected (the body one with 408, the others with nothing sent)
    no earlier than the timeout and within a margin after it, while normal requests sent meanwhile are
    answered correctly with latencies within 4 x the baseline measured before the attack + 0.5 s, and
    at least 5 of them are answered before the first slow client is cut off (served, not queued behind
    the attackers)."""
    timeout = 2.0
    with live_server(sum_bundle(), "--client-timeout-s", str(timeout)) as server:
        baseline = max(latency for latency, _ in _timed_sums(server.url, 10, 0.05))
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + b"X-Pad: " + b"a" * 200
        body_head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        attack_started = time.monotonic()
        slow_head, idle, slow_body = (_connect(server.url) for _ in range(3))
        slow_body.sendall(body_head)
        with ThreadPoolExecutor(3) as pool:
            head_result = pool.submit(_closed_after, slow_head, head, 0.25, 15)
            body_result = pool.submit(_closed_after, slow_body, b'{"a": 1, "b": ' + b" " * 180, 0.25, 15)
            idle_result = pool.submit(_until_closed, idle)
            others = _timed_sums(server.url, 20, 0.1)
            head_seconds, head_ended, head_bytes = head_result.result()
            body_seconds, body_ended, body_bytes = body_result.result()
            idle_ended, idle_bytes = idle_result.result()
    idle_seconds = idle_ended - attack_started
    latencies = [latency for latency, _ in others]
    first_cut = min(head_ended, body_ended, idle_ended)
    served_before_cut = sum(1 for _, ended in others if ended < first_cut)
    margin = 3.0 + 10 * baseline
    print(f"client timeout {timeout:g}s: cut off after head {head_seconds:.2f}s, idle {idle_seconds:.2f}s, "
          f"body {body_seconds:.2f}s (allowed {timeout - 0.5:g}..{timeout + margin:.2f}s); others' latency "
          f"baseline max {baseline * 1000:.0f} ms, during the attack max {max(latencies) * 1000:.0f} ms "
          f"(allowed {(4 * baseline + 0.5) * 1000:.0f} ms); {served_before_cut}/20 answered before the first cut-off")
    assert head_bytes == b"" and idle_bytes == b"", (head_bytes, idle_bytes)
    assert b" 408 " in body_bytes.split(b"\r\n")[0], body_bytes[:200]
    for seconds in (head_seconds, idle_seconds, body_seconds):
        assert timeout - 0.5 <= seconds <= timeout + margin, (head_seconds, idle_seconds, body_seconds, margin)
    assert max(latencies) <= 4 * baseline + 0.5, (baseline, latencies)
    assert served_before_cut >= 5, (served_before_cut, others, first_cut)


def test_gzip_bodies_and_bombs(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """gzip and deflate bodies are scored correctly; a ~200 KB gzip bomb that inflates past
    --max-body-bytes is 413 within 4 x the latency of a normal gzip request + 0.5 s (it is never
    inflated to its 200 MB); an unknown Content-Encoding is 415; a corrupt gzip body is 400."""
    csv = b"a,b\n" + b"1,2\n" * 10
    gz = {"Content-Type": "text/csv", "Content-Encoding": "gzip"}
    with live_server(sum_bundle(), "--max-body-bytes", "1000000") as server:
        url = server.url + "/predict"
        baseline = 0.0
        for _ in range(3):
            started = time.monotonic()
            ok = requests.post(url, data=gzip.compress(csv), headers=gz)
            baseline = max(baseline, time.monotonic() - started)
            assert ok.status_code == 200 and [p["sum"] for p in ok.json()["predictions"]] == [3.0] * 10, ok.text
        ok = requests.post(url, data=zlib.compress(csv), headers={"Content-Type": "text/csv", "Content-Encoding": "deflate"})
        assert ok.status_code == 200 and [p["sum"] for p in ok.json()["predictions"]] == [3.0] * 10, ok.text
        bomb = gzip.compress(b"0" * 200_000_000)  # ~200 KB on the wire, 200 MB inflated
        started = time.monotonic()
        big = requests.post(url, data=bomb, headers=gz)
        seconds = time.monotonic() - started
        assert big.status_code == 413 and big.json()["error"] == "payload_too_large", big.text
        assert requests.post(url, data=csv, headers={"Content-Type": "text/csv", "Content-Encoding": "br"}).status_code == 415
        assert requests.post(url, data=b"\x1f\x8bnot gzip", headers=gz).status_code == 400
        assert requests.get(server.url + "/health").status_code == 200
    print(f"gzip bomb ({len(bomb)} bytes -> 200 MB): 413 in {seconds * 1000:.0f} ms; a normal gzip request "
          f"{baseline * 1000:.0f} ms (allowed {(4 * baseline + 0.5) * 1000:.0f} ms)")
    assert seconds <= 4 * baseline + 0.5, (seconds, baseline)


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
