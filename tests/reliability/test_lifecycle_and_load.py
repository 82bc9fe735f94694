"""Reliability against real server processes: SIGTERM drains, hung model calls are abandoned,
request timeouts, bounded queues, disconnected clients, and health under a saturated model."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

# A model that records every row it scores (to prove what was never scored), sleeps per call, and
# hangs on a == 999.
RECORDING = """
    import json, os, time, scorer
    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float"}
        def load(self, artifacts_dir):
            self.log = artifacts_dir / "scored.jsonl"
        def predict(self, df):
            with open(self.log, "a") as f:
                f.write(json.dumps(df["a"].tolist()) + "\\n")
            if (df["a"] == 999).any():
                time.sleep(120)
            time.sleep(float(os.environ.get("MODEL_SLEEP", "0.5")))
            return (df["a"] * 2).rename("double")
"""

SPINNING = """
    import time, scorer
    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float"}
        def predict(self, df):
            end = time.perf_counter() + 1.0
            while time.perf_counter() < end:  # holds the GIL: pure-Python CPU work
                pass
            return df["a"].rename("a")
"""


def scored(bundle: Path) -> list[float]:
    path = bundle / "artifacts" / "scored.jsonl"
    if not path.exists():
        return []
    return [v for line in path.read_text().splitlines() for v in json.loads(line)]


def post(url: str, a: float, **kwargs):  # type: ignore[no-untyped-def]
    return requests.post(url + "/predict", json={"a": a}, **kwargs)


def test_sigterm_drains_every_accepted_request(bundle_factory, live_server) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM with 32 requests in flight (one batch in the model, the rest waiting in the batcher):
    every one is answered correctly, readiness is 503 from the signal on, and the process exits 0
    within the grace period. Requests lost: 0."""
    bundle = bundle_factory("rec", code=RECORDING)
    with live_server(bundle, "--shutdown-grace-s", "20") as server:
        with ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(post, server.url, float(i), timeout=60) for i in range(32)]
            time.sleep(0.3)  # all accepted; the first batch is in the model
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            ready_answers = []
            while time.monotonic() - signalled < 1.0:
                try:
                    ready_answers.append(requests.get(server.url + "/ready", timeout=1).status_code)
                except requests.ConnectionError:
                    break  # the listening socket is closed: no new connections
            responses = [f.result() for f in futures]
        code = server.proc.wait(timeout=30)
        exited_after = time.monotonic() - signalled
    assert [r.status_code for r in responses] == [200] * 32, [r.text for r in responses if r.status_code != 200]
    assert [r.json()["predictions"][0] for r in responses] == [2.0 * i for i in range(32)]
    assert 200 not in ready_answers, ready_answers
    assert code == 0, server.log()
    assert exited_after < 20, exited_after
    print(f"SIGTERM with 32 in flight: lost 0, exit 0 after {exited_after:.2f}s, /ready after signal: {ready_answers}")


def test_hung_model_call_is_abandoned_after_grace(bundle_factory, live_server) -> None:  # type: ignore[no-untyped-def]
    """A model call that hangs past the shutdown grace period is abandoned and logged; the process
    still exits promptly."""
    bundle = bundle_factory("rec", code=RECORDING)
    with live_server(bundle, "--shutdown-grace-s", "2") as server:
        with ThreadPoolExecutor(1) as pool:
            hung = pool.submit(post, server.url, 999.0, timeout=60)
            time.sleep(0.5)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            code = server.proc.wait(timeout=30)
            exited_after = time.monotonic() - signalled
            try:
                status = hung.result().status_code
            except requests.ConnectionError:
                status = None
    log = server.log()
    assert code == 0, log
    assert exited_after < 8, exited_after
    assert "abandoned" in log, log
    assert status != 200
    print(f"hung model call: exit {code} after {exited_after:.2f}s (grace 2 s)")


def test_request_timeout_is_504_and_never_scored(bundle_factory, live_server) -> None:  # type: ignore[no-untyped-def]
    """A request still waiting when its timeout passes gets 504; it is never scored afterwards."""
    bundle = bundle_factory("rec", code=RECORDING)
    with live_server(bundle, "--request-timeout-s", "1", env={"MODEL_SLEEP": "2"}) as server:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, server.url, 1.0, timeout=30)
            time.sleep(0.2)
            started = time.monotonic()
            late = post(server.url, 2.0, timeout=30)
            waited = time.monotonic() - started
            first_result = first.result()
        time.sleep(2.5)  # the model is free again: a leaked request would be scored now
        rows = scored(bundle)
    assert late.status_code == 504 and late.json()["error"] == "timeout", late.text
    assert 0.5 < waited < 1.8, waited
    assert first_result.status_code == 504  # it took 2 s in the model: over its own 1 s timeout
    assert 2.0 not in rows, rows
    print(f"request timeout 1 s: 504 after {waited:.2f}s, never scored")


def test_queue_limit_refuses_at_once_with_retry_after(bundle_factory, live_server) -> None:  # type: ignore[no-untyped-def]
    """Past --max-queue-rows, a request gets 503 overloaded immediately (with Retry-After) instead of
    queueing; accepted requests are still answered."""
    bundle = bundle_factory("rec", code=RECORDING)
    with live_server(bundle, "--max-queue-rows", "8", env={"MODEL_SLEEP": "1"}) as server:
        with ThreadPoolExecutor(9) as pool:
            busy = pool.submit(post, server.url, 0.0, timeout=60)
            time.sleep(0.3)  # in the model
            queued = [pool.submit(post, server.url, float(i), timeout=60) for i in range(1, 9)]
            time.sleep(0.3)  # 8 rows waiting: the queue is full
            started = time.monotonic()
            refused = post(server.url, 100.0, timeout=60)
            refused_after = time.monotonic() - started
            accepted = [busy.result(), *(f.result() for f in queued)]
    assert refused.status_code == 503 and refused.json()["error"] == "overloaded", refused.text
    assert refused.headers["Retry-After"] == "1"
    assert refused_after < 0.5, refused_after
    assert [r.status_code for r in accepted] == [200] * 9
    print(f"queue full: 503 in {refused_after * 1000:.0f} ms")


def test_disconnected_client_is_not_scored(bundle_factory, live_server) -> None:  # type: ignore[no-untyped-def]
    """A client that gives up while its request waits for the model: the request is dropped, not scored."""
    bundle = bundle_factory("rec", code=RECORDING)
    with live_server(bundle, env={"MODEL_SLEEP": "1.5"}) as server:
        with ThreadPoolExecutor(2) as pool:
            busy = pool.submit(post, server.url, 1.0, timeout=30)
            time.sleep(0.3)
            try:
                post(server.url, 7.0, timeout=0.4)
            except requests.ReadTimeout:
                pass
            assert busy.result().status_code == 200
        time.sleep(2.0)
        assert post(server.url, 3.0, timeout=30).status_code == 200
        rows = scored(bundle)
    assert 7.0 not in rows and rows == [1.0, 3.0], rows


def test_health_stays_fast_while_the_model_saturates_the_cpu(bundle_factory, live_server) -> None:  # type: ignore[no-untyped-def]
    """While model calls keep the CPU busy in pure Python, /health and /ready still answer quickly."""
    bundle = bundle_factory("spin", code=SPINNING)
    with live_server(bundle) as server:
        with ThreadPoolExecutor(4) as pool:
            load = [pool.submit(post, server.url, float(i), timeout=60) for i in range(4)]
            time.sleep(0.2)
            latencies = []
            for _ in range(20):
                started = time.monotonic()
                assert requests.get(server.url + "/health", timeout=5).status_code == 200
                assert requests.get(server.url + "/ready", timeout=5).status_code == 200
                latencies.append(time.monotonic() - started)
            assert all(f.result().status_code == 200 for f in load)
    print(f"/health+/ready while saturated: max {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 0.5, latencies


import pytest  # noqa: E402


@pytest.mark.parametrize("cause", ["code raises", "missing artifact", "unmet requirement", "wrong digest"])
def test_broken_bundle_exits_3_with_one_line_naming_the_cause(cause: str, bundle_factory, live_server) -> None:  # type: ignore[no-untyped-def]
    """Each way a bundle can fail to load: the server is never ready, exits 3 within seconds, and one
    error line names the cause."""
    args: tuple[str, ...] = ()
    if cause == "code raises":
        bundle = bundle_factory("b", code="""
            import scorer
            class CustomPreprocessor(scorer.CustomPreprocessor):
                def load(self, artifacts_dir):
                    raise RuntimeError("no weights here")
                def predict(self, df):
                    return df
        """)
        expected = "no weights here"
    elif cause == "missing artifact":
        bundle = bundle_factory("b")  # an artifacts/ folder with nothing in it, no custom code
        expected = "artifact"
    elif cause == "unmet requirement":
        bundle = bundle_factory("b", code=RECORDING, requirements="not-a-real-package-xyz>=1\n")
        expected = "not-a-real-package-xyz>=1 (not installed)"
    else:
        bundle = bundle_factory("b", code=RECORDING)
        args = ("--bundle-digest", "sha256:" + "0" * 64)
        expected = "digest"
    with live_server(bundle, *args, wait=False) as server:
        started = time.monotonic()
        ready = []
        while server.proc.poll() is None and time.monotonic() - started < 30:
            try:
                ready.append(requests.get(server.url + "/ready", timeout=1).status_code)
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        code = server.proc.wait(timeout=30)
        seconds = time.monotonic() - started
        log = server.log()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert code == 3, log
    assert 200 not in ready
    assert seconds < 15, seconds
    assert len(errors) == 1 and expected in errors[0], log
