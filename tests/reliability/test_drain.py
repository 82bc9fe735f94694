"""SIGTERM drain against real server processes: requests that already arrived (or arrive while the
load balancer is still removing the endpoint) are served, readiness fails at once, then the port
closes, in-flight work finishes and the process exits 0.

Every request here goes over a raw socket: the bytes of all 64 requests are on the wire before the
signal, which is the rollout race the drain window exists for.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

# Each call holds the GIL for ~0.2 s in one C call (big-integer power), as models computing in
# extensions that do not release it do: the event loop falls behind reading newly arrived requests,
# so some are still unread in their sockets when the signal comes. a == -1 holds its call for 3 s
# more (in-flight work that outlasts the drain window).
SLOW = """
    import time, scorer
    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float"}
        def predict(self, df):
            7 ** 600_000
            if (df["a"] == -1).any():
                time.sleep(3.0)
            return (df["a"] * 2).rename("double")
"""

SLOW_LOAD = """
    import time, scorer
    class CustomPreprocessor(scorer.CustomPreprocessor):
        def load(self, artifacts_dir):
            time.sleep(30)
        def predict(self, df):
            return df
"""

DRAIN_S = 3.0


def _request(path: str, body: bytes | None = None) -> bytes:
    if body is None:
        return f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _send(port: int, payload: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(payload)
    return sock


def _answer(sock: socket.socket) -> tuple[int | str, bytes]:
    """(status, body) of the one response on ``sock``, or ("reset"/"eof", b"") if none came."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        return ("reset", b"") if not data else (int(data.split()[1]), data.partition(b"\r\n\r\n")[2])
    finally:
        sock.close()
    if not data:
        return "eof", b""
    return int(data.split()[1]), data.partition(b"\r\n\r\n")[2]


def _call(port: int, path: str, body: bytes | None = None) -> tuple[int | str, bytes]:
    try:
        return _answer(_send(port, _request(path, body)))
    except ConnectionRefusedError:
        return "refused", b""


def _predict(a: float) -> bytes:
    return json.dumps({"a": a}).encode()


def _double(body: bytes) -> float:
    return json.loads(body)["predictions"][0]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_serves_every_request_already_sent(bundle_factory, live_server, workers: str) -> None:  # type: ignore[no-untyped-def]
    """64 one-row requests fully sent on open connections, SIGTERM 50 ms later: all 64 are answered
    200 with their values; /ready is 503 right after the signal; a request on a new connection during
    the drain window is served; once the window is over the port refuses connections while a long
    call still finishes (200); the process exits 0."""
    bundle = bundle_factory("slow", code=SLOW)
    with live_server(bundle, "--drain-s", str(DRAIN_S), "--workers", workers, "--shutdown-grace-s", "20") as server:
        port = int(server.url.rsplit(":", 1)[1])
        socks = [_send(port, _request("/predict", _predict(float(i)))) for i in range(64)]
        time.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        ready = _call(port, "/ready")[0]
        # With workers the signal reaches the supervisor, which forwards it: the kernel may hand a probe sent at
        # that instant to a worker the forwarded signal has not reached yet (seen once in CI). Within 0.2 s it has.
        while ready == 200 and workers == "2" and time.monotonic() < signalled + 0.2:
            ready = _call(port, "/ready")[0]
        with ThreadPoolExecutor(65) as pool:
            answers = pool.map(_answer, socks)
            time.sleep(max(0.0, signalled + DRAIN_S / 2 - time.monotonic()))
            during = _call(port, "/predict", _predict(21.0))
            held = pool.submit(_call, port, "/predict", _predict(-1.0))  # in the model past the window's end
            time.sleep(max(0.0, signalled + DRAIN_S + 0.5 - time.monotonic()))
            after: list[int | str] = []
            while server.proc.poll() is None and time.monotonic() < signalled + DRAIN_S + 2.5:
                after.append(_call(port, "/health")[0])
                if after[-1] == "refused":
                    break
                time.sleep(0.1)
            still_running = server.proc.poll() is None
            answered = list(answers)
            held_answer = held.result()
        code = server.proc.wait(timeout=30)
        exited_after = time.monotonic() - signalled
    statuses = [status for status, _ in answered]
    lost = {s: statuses.count(s) for s in set(statuses) if s != 200}
    print(f"workers={workers}: 64 sent before SIGTERM: {statuses.count(200)} x 200, not served {lost}; /ready after "
          f"signal {ready}; new request during drain {during[0]}; after the window {after} (process running: "
          f"{still_running}); held call {held_answer[0]}; exit {code} after {exited_after:.2f}s (drain {DRAIN_S} s)")
    assert not lost, lost
    assert [_double(body) for _, body in answered] == [2.0 * i for i in range(64)]
    assert ready == 503
    assert during[0] == 200 and _double(during[1]) == 42.0
    assert after and after[-1] == "refused" and still_running, after
    assert held_answer[0] == 200 and _double(held_answer[1]) == -2.0
    assert code == 0, server.log()
    assert DRAIN_S <= exited_after < DRAIN_S + 20, exited_after


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_or_sigint_skips_the_drain(bundle_factory, live_server, second: signal.Signals) -> None:  # type: ignore[no-untyped-def]
    """During a 60 s drain window /ready is 503, /predict is served (telling keep-alive clients
    ``Connection: close``); a second SIGTERM (or a SIGINT, Ctrl-C) ends the window: the process exits
    0 within seconds, not after 60 s."""
    bundle = bundle_factory("slow", code=SLOW)
    with live_server(bundle, "--drain-s", "60") as server:
        port = int(server.url.rsplit(":", 1)[1])
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.proc.poll() is None, "exited before the drain window was over"
        assert _call(port, "/ready")[0] == 503
        status, body = _call(port, "/predict", _predict(4.0))
        assert status == 200 and _double(body) == 8.0
        kept_alive = requests.post(server.url + "/predict", json={"a": 5.0}, timeout=30)
        assert kept_alive.json()["predictions"] == [10.0]
        assert kept_alive.headers["connection"] == "close"  # the client's next request goes elsewhere
        signalled = time.monotonic()
        server.proc.send_signal(second)
        code = server.proc.wait(timeout=30)
        exited_after = time.monotonic() - signalled
    print(f"second signal {second.name}: exit {code} after {exited_after:.2f}s (drain window 60 s)")
    assert code == 0, server.log()
    assert exited_after < 15, exited_after


def test_sigterm_while_loading_exits_at_once(bundle_factory, live_server) -> None:  # type: ignore[no-untyped-def]
    """Not ready yet (the bundle still loads): nothing is routed here, so SIGTERM skips the drain."""
    bundle = bundle_factory("slowload", code=SLOW_LOAD)
    with live_server(bundle, "--drain-s", "60", wait=False) as server:
        port = int(server.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 20
        while _call(port, "/health")[0] != 200:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=30)
        exited_after = time.monotonic() - signalled
    print(f"SIGTERM while loading: exit {code} after {exited_after:.2f}s (drain window 60 s, load 30 s)")
    assert code == 0, server.log()
    assert exited_after < 15, exited_after
