"""A real ``scorer serve`` process on 127.0.0.1: the vendor's own client snippets, concurrent
batching, lifecycle (readiness, load failure, SIGTERM) and the multi-worker path."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import requests

from scorer import codecs
from scorer.core import Scorer


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")


def test_vendor_python_snippets_work_unchanged(example_bundles: dict[str, Path], live_server) -> None:  # type: ignore[no-untyped-def]
    """The vendor's Python examples (to_json(orient='split') posted as json= and as data= with a token
    header and no Content-Type) score the vendor's test.csv."""
    bundle = example_bundles["spam"]
    test_data = pd.read_csv(bundle / "sample.csv")
    expected = json.loads(codecs.json_predictions(Scorer.load(bundle).score(test_data)))
    with live_server(bundle) as server:
        # "Score via Python"
        http_data = test_data.to_json(orient="split")
        json_data = json.loads(http_data)
        response = requests.post(server.url + "/predict", json=json_data)
        assert response.status_code == 200, response.text
        assert response.json() == expected
        # the mlops-monitoring snippet: data=<str>, a token header, no Content-Type
        response = requests.post(server.url + "/predict", data=http_data, headers={"token": "xxxxxxxxx"})
        assert response.status_code == 200, response.text
        assert response.json() == expected


def test_vendor_curl_examples(example_bundles: dict[str, Path], live_server) -> None:  # type: ignore[no-untyped-def]
    """The vendor's curl line as printed (its shell quoting strips the JSON quotes) gets a 400 that says why;
    with JSON quoting it scores 'this is spam' as spam."""
    with live_server(example_bundles["spam"]) as server:
        broken = subprocess.run(
            ["curl", "-s", "-X", "POST", "-H", "Content-Type: application/json", "-d",
             "{feature1: 1.0,feature2: this is spam,feature3: 2.0}", server.url + "/predict", "-w", "\n%{http_code}"],
            capture_output=True, text=True, check=True).stdout
        body, status = broken.rsplit("\n", 1)
        assert status == "400"
        assert "not valid JSON" in json.loads(body)["message"]
        fixed = subprocess.run(
            ["curl", "-s", "-X", "POST", "-H", "Content-Type: application/json", "-d",
             '{"feature1": 1.0, "feature2": "this is spam", "feature3": 2.0}', server.url + "/predict"],
            capture_output=True, text=True, check=True).stdout
        assert json.loads(fixed)["predictions"][0]["prediction"] == "spam"


def test_concurrent_requests_coalesce_and_match_unbatched(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """64 parallel one-row requests against a model that takes 50 ms per call: with default settings
    (no batch wait) they are coalesced into few model calls, and every answer is its own a + b."""
    with live_server(sum_bundle(delay=0.05)) as server:
        def call(i: int) -> dict[str, float]:
            r = requests.post(server.url + "/predict", json={"a": i, "b": 0.5}, timeout=30)
            assert r.status_code == 200, r.text
            return r.json()["predictions"][0]

        with ThreadPoolExecutor(64) as pool:
            results = list(pool.map(call, range(64)))
        metrics = requests.get(server.url + "/metrics").text
    assert [r["sum"] for r in results] == [i + 0.5 for i in range(64)]
    assert max(r["rows_in_call"] for r in results) > 1
    calls = metric(metrics, "scorer_batch_requests_count")
    assert metric(metrics, "scorer_batch_requests_sum") == 64
    assert calls < 64, f"no batching: {calls} model calls for 64 requests"


@pytest.mark.parametrize("bundle", ["spam", "tabular"])
def test_batched_results_equal_unbatched_on_real_models(bundle: str, example_bundles: dict[str, Path], build_module,  # type: ignore[no-untyped-def]
                                                        live_server) -> None:
    """64 different rows sent concurrently (coalesced, proven by metrics) get exactly the predictions each
    row gets when scored alone in-process."""
    path = example_bundles[bundle]
    scorer = Scorer.load(path)
    maker = build_module.make_spam_frame if bundle == "spam" else build_module.make_tabular_frame
    rows = maker(64, 7)[list(scorer.schema.columns)].reset_index(drop=True)
    alone = [json.loads(codecs.json_predictions(scorer.score(rows.iloc[[i]])))["predictions"][0] for i in range(64)]
    with live_server(path, "--max-batch-wait-ms", "20") as server:
        def call(i: int) -> object:
            r = requests.post(server.url + "/predict", data=rows.iloc[[i]].to_json(orient="records"),
                              headers={"Content-Type": "application/json"}, timeout=30)
            assert r.status_code == 200, r.text
            return r.json()["predictions"][0]

        with ThreadPoolExecutor(64) as pool:
            served = list(pool.map(call, range(64)))
        metrics = requests.get(server.url + "/metrics").text
    assert served == alone
    assert metric(metrics, "scorer_batch_requests_count") < 64


def test_one_poison_request_fails_alone(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """Among 64 concurrent requests one raises inside the model: it alone gets 500, the 63 others are right."""
    with live_server(sum_bundle(delay=0.05)) as server:
        def call(i: int) -> requests.Response:
            return requests.post(server.url + "/predict", json={"a": 666 if i == 17 else i, "b": 1}, timeout=30)

        with ThreadPoolExecutor(64) as pool:
            responses = list(pool.map(call, range(64)))
        metrics = requests.get(server.url + "/metrics").text
    assert responses[17].status_code == 500
    assert responses[17].json()["message"] == "model raised ValueError in predict"
    for i, r in enumerate(responses):
        if i != 17:
            assert r.status_code == 200, r.text
            assert r.json()["predictions"][0]["sum"] == i + 1
    assert metric(metrics, "scorer_batch_requests_count") < 64


RECORDING_POISON = """
    import time, scorer
    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float"}
        def load(self, artifacts_dir):
            self.calls = artifacts_dir / "calls.txt"
        def predict(self, df):
            with open(self.calls, "a") as f:
                f.write(f"{len(df)}\\n")
            if (df["a"] == -1).any():
                time.sleep(1.5)  # holds the model while the others queue up into one batch
            if (df["a"] == 666).any():
                raise ValueError("poison row")
            return (df["a"] * 2).rename("double")
"""


def test_poison_request_in_a_batch_of_64_costs_log_calls(bundle_factory, live_server) -> None:  # type: ignore[no-untyped-def]
    """64 requests queued into one batch behind a slow call, one of them poison: isolating it costs
    at most 2*log2(64) = 12 more model calls (not 64), counted in scorer_batch_retry_calls_total; the
    poison request gets 500 model_error, the 63 others their own values."""
    bundle = bundle_factory("rec", code=RECORDING_POISON)
    calls = bundle / "artifacts" / "calls.txt"
    with live_server(bundle) as server:
        def call(a: float) -> requests.Response:
            return requests.post(server.url + "/predict", json={"a": a}, timeout=60)

        with ThreadPoolExecutor(65) as pool:
            hold = pool.submit(call, -1.0)
            time.sleep(0.3)
            responses = list(pool.map(call, [666.0 if i == 17 else float(i) for i in range(64)]))
            assert hold.result().status_code == 200
        metrics = requests.get(server.url + "/metrics").text
    rows = [int(line) for line in calls.read_text().split()]
    print(f"model calls (rows each): {rows}")
    print(f"retry calls metric: {metric(metrics, 'scorer_batch_retry_calls_total')}")
    assert rows[:2] == [1, 64], rows  # the held call, then all 64 in one batch
    assert len(rows) - 1 <= 2 * 6 + 1, rows
    assert metric(metrics, "scorer_batch_retry_calls_total") == len(rows) - 2
    assert responses[17].status_code == 500 and responses[17].json()["error"] == "model_error"
    for i, r in enumerate(responses):
        if i != 17:
            assert r.status_code == 200 and r.json()["predictions"] == [2.0 * i], (i, r.text)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_answers_while_loading_and_ready_only_after(bundle_factory, live_server, workers: str) -> None:  # type: ignore[no-untyped-def]
    """While a slow bundle loads, /health is 200 and /ready, /ping, /predict are 503; once loaded they
    are 200. With 2 workers the supervisor answers while it loads the bundle before forking them."""
    slow = bundle_factory("slow", code="""
        import time, scorer
        class CustomPreprocessor(scorer.CustomPreprocessor):
            def load(self, artifacts_dir):
                time.sleep(4)
            def predict(self, df):
                return [1] * len(df)
    """)
    with live_server(slow, "--workers", workers, wait=False) as server:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = requests.get(server.url + "/health", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
        assert health.status_code == 200
        assert requests.get(server.url + "/ready").status_code == 503
        assert requests.get(server.url + "/ping").status_code == 503
        early = requests.post(server.url + "/predict", json={"x": 1})
        assert early.status_code == 503 and early.headers["Retry-After"] == "1", early.text
        server.wait_ready()
        assert requests.get(server.url + "/ping").status_code == 200
        assert requests.post(server.url + "/predict", json={"x": 1}).json() == {"predictions": [1]}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_load_failure_exits_nonzero_naming_the_file(bundle_factory, live_server, workers: str) -> None:  # type: ignore[no-untyped-def]
    """A bundle whose load() raises: the server exits 3 (within the 60 s wait), and its log names
    custom_preprocess.py and the error."""
    broken = bundle_factory("broken", code="""
        import scorer
        class CustomPreprocessor(scorer.CustomPreprocessor):
            def load(self, artifacts_dir):
                raise FileNotFoundError("weights.bin is missing")
            def predict(self, df):
                return [0] * len(df)
    """)
    with live_server(broken, "--workers", workers, wait=False) as server:
        code = server.proc.wait(timeout=60)
        log = server.log()
    assert code == 3, log
    assert "custom_preprocess.py" in log and "weights.bin is missing" in log


def test_two_workers_serve_and_stop_cleanly(example_bundles: dict[str, Path], live_server) -> None:  # type: ignore[no-untyped-def]
    """--workers 2 serves the same correct prediction to 32 concurrent requests and exits 0 on SIGTERM
    (that both processes answer is test_multi_worker_loads_once_then_forks)."""
    with live_server(example_bundles["spam"], "--workers", "2") as server:
        row = {"feature1": 1.0, "feature2": "this is spam", "feature3": 2.0}
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: requests.post(server.url + "/predict", json=row).text, range(32)))
        assert set(results) == {results[0]} and '"prediction":"spam"' in results[0], set(results)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0, server.log()


def test_sigterm_exits_zero(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM stops a single-process server with exit code 0."""
    with live_server(sum_bundle()) as server:
        assert requests.post(server.url + "/predict", json={"a": 1, "b": 2}).json()["predictions"][0]["sum"] == 3
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0, server.log()


def test_chunked_body_over_limit_is_413(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """A chunked upload (no Content-Length) is cut off with 413 once it passes the limit."""
    with live_server(sum_bundle(), "--max-body-bytes", "10000") as server:
        def chunks():  # type: ignore[no-untyped-def]
            yield b'[{"a": 1, "b": 2}'
            for _ in range(2000):
                yield b', {"a": 1, "b": 2}'
            yield b"]"

        response = requests.post(server.url + "/predict", data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert response.json()["message"].startswith("request body exceeds the limit of 10000 bytes"), response.text


def test_env_settings_apply(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """SCORER_* variables configure the server like flags (here the body limit: a 44-byte body is 413
    under SCORER_MAX_BODY_BYTES=20)."""
    bundle = sum_bundle()
    with live_server(bundle, env={"SCORER_MAX_BODY_BYTES": "20"}) as server:
        response = requests.post(server.url + "/predict", json={"a": 1.0, "b": 2.0, "c": "padding-padding"})
    assert response.status_code == 413 and "limit of 20 bytes" in response.json()["message"], response.text


def test_multi_worker_loads_once_then_forks(bundle_factory, live_server) -> None:  # type: ignore[no-untyped-def]
    """With 2 workers the bundle is loaded once, before forking (the workers share the model's pages):
    load() runs in one process, two different worker processes answer, and once /ready is 200 no
    request gets anything but a correct 200."""
    bundle = bundle_factory("counted", code="""
        import os, scorer
        class CustomPreprocessor(scorer.CustomPreprocessor):
            def load(self, artifacts_dir):
                with open(artifacts_dir / "loads.txt", "a") as f:
                    f.write(f"{os.getpid()}\\n")
            def predict(self, df):
                return [os.getpid()] * len(df)
    """)
    with live_server(bundle, "--workers", "2") as server:
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda i: requests.post(server.url + "/predict", json={"x": i}), range(400)))
        assert [r.status_code for r in responses] == [200] * 400, {r.text for r in responses if r.status_code != 200}
        pids = {r.json()["predictions"][0] for r in responses}
    loads = (bundle / "artifacts" / "loads.txt").read_text().split()
    assert len(loads) == 1, loads
    assert len(pids) == 2 and int(loads[0]) not in pids, (pids, loads)
