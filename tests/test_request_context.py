"""The request-context layer against a real server process: every request, whether it takes the
scoring fast path or a Starlette route, is counted exactly once in ``scorer_requests_total`` and
carries one request id in its response header, its error body and its log line."""

from __future__ import annotations

import json
import time

import requests

SLOW_LOAD = """
    import time
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "float"}

        def load(self, artifacts_dir):
            time.sleep(5)

        def predict(self, df):
            if (df["a"] == 666).any():
                raise ValueError("poison row")
            return pd.DataFrame({"sum": df["a"] + df["b"]})
"""


def _log_lines(text: str, rid: str) -> list[dict[str, object]]:
    entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [e for e in entries if e.get("request_id") == rid]


def _count(metrics: str, path: str, status: int) -> float:
    prefix = f'scorer_requests_total{{path="{path}",status="{status}"}} '
    lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[1]) if lines else 0.0


def test_each_request_is_counted_once_with_one_request_id_on_every_path(bundle_factory, live_server) -> None:  # type: ignore[no-untyped-def]
    bundle = bundle_factory("slow", code=SLOW_LOAD)
    with live_server(bundle, "--log-format", "json", "--log-level", "debug", wait=False) as server:
        deadline = time.monotonic() + 60
        while True:  # the port answers (/health) while the bundle loads
            try:
                if requests.get(server.url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and server.proc.poll() is None, server.log()
            time.sleep(0.05)
        # While loading: not ready (503, logged at debug level) on the fast path and on a Starlette route.
        loading_predict = requests.post(server.url + "/predict", json={"a": 1.0, "b": 2.0},
                                        headers={"X-Request-ID": "fast-path-loading"}, timeout=10)
        loading_ready = requests.get(server.url + "/ready", timeout=10)  # no X-Request-ID: the server makes one
        assert loading_predict.status_code == 503 and loading_ready.status_code == 503, server.log()
        while requests.get(server.url + "/ping", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        scored = requests.post(server.url + "/predict", json={"a": 1.0, "b": 2.0}, timeout=10)
        poison = requests.post(server.url + "/predict", json={"a": 666.0, "b": 2.0},
                               headers={"X-Request-ID": "fast-path-poison"}, timeout=10)
        metadata = requests.get(server.url + "/metadata", timeout=10)
        wrong_method = requests.get(server.url + "/predict", timeout=10)
        unknown = requests.get(server.url + "/nope", timeout=10)
        metrics = requests.get(server.url + "/metrics", timeout=10).text
        log = server.log()

    assert [scored.status_code, poison.status_code, metadata.status_code, wrong_method.status_code,
            unknown.status_code] == [200, 500, 200, 405, 404]
    assert loading_predict.headers["x-request-id"] == "fast-path-loading"
    assert poison.headers["x-request-id"] == "fast-path-poison"
    ids = [r.headers["x-request-id"] for r in (loading_predict, loading_ready, scored, poison, metadata,
                                               wrong_method, unknown)]
    assert len(set(ids)) == len(ids), ids
    for response in (loading_predict, loading_ready, poison, wrong_method, unknown):  # error bodies
        assert response.json()["request_id"] == response.headers["x-request-id"], response.text
    # Each logged request has its id on exactly one line: the 503s (debug) and the model error (warning).
    for response, level, message in ((loading_predict, "debug", "not_ready"), (loading_ready, "debug", "not_ready"),
                                     (poison, "warning", "model_error")):
        lines = _log_lines(log, response.headers["x-request-id"])
        assert len(lines) == 1 and lines[0]["level"] == level and str(lines[0]["message"]).startswith(message), \
            (response.headers["x-request-id"], lines, log)
    # Each request counted once, under its route (unknown paths as "other"); the /ping polls apart.
    expected = {("/predict", 503): 1, ("/ready", 503): 1, ("/predict", 200): 1, ("/predict", 500): 1,
                ("/metadata", 200): 1, ("/predict", 405): 1, ("other", 404): 1}
    assert {key: _count(metrics, *key) for key in expected} == expected, metrics
    assert _count(metrics, "/ping", 200) == 1
