"""Tracing (``--tracing otlp``, scorer/serving/tracing.py), checked end to end: a real ``scorer serve``
process exports its spans over OTLP/HTTP to a real receiver process (tests/otlp_receiver.py, which
decodes them with opentelemetry-proto as a collector does), and the tests read what arrived."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import BundleFactory, LiveServer, free_port

HERE = Path(__file__).resolve().parent
SERVER_KIND, INTERNAL_KIND = 2, 1  # OTLP's SpanKind values
STATUS_ERROR = 2

# A sum model that also answers whether any OpenTelemetry module is loaded in the server process.
PROBE_MODEL = """
    import sys
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "float"}

        def predict(self, df):
            loaded = any(m == "opentelemetry" or m.startswith("opentelemetry.") for m in sys.modules)
            return pd.DataFrame({"sum": df["a"] + df["b"], "otel_loaded": int(loaded)})
"""


class Receiver:
    def __init__(self, port: int, out: Path) -> None:
        self.endpoint = f"http://127.0.0.1:{port}"
        self.out = out

    def spans(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def wait_for(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if done(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.1)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """The OTLP/HTTP receiver, its own process on 127.0.0.1."""
    port = free_port()
    out = tmp_path / "spans.jsonl"
    proc = subprocess.Popen([sys.executable, str(HERE / "otlp_receiver.py"), str(port), str(out)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the OTLP receiver did not start"
                time.sleep(0.05)
        yield Receiver(port, out)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def otel_env(endpoint: str) -> dict[str, str]:
    """The standard OpenTelemetry variables: where to export, and a short batch delay (not 5 s)."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def post(url: str, rows: list[dict[str, float]], headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(url + "/predict", json=rows, headers=headers or {}, timeout=60)


def concurrently(url: str, first: list[dict[str, float]], then: list[list[dict[str, float]]],
                 ) -> list[tuple[str, str, requests.Response]]:
    """``first`` (which keeps the slow model busy), then, while it runs, the ``then`` requests at once: they
    queue together and share the next model call. Each with a traceparent of its own: (trace id, parent
    span id, response) per request, ``first``'s first."""
    bodies = [first, *then]
    parents = [traceparent() for _ in bodies]
    with ThreadPoolExecutor(len(bodies)) as pool:
        futures = [pool.submit(post, url, first, {"traceparent": parents[0][0]})]
        time.sleep(0.2)
        futures += [pool.submit(post, url, body, {"traceparent": p[0]}) for body, p in zip(then, parents[1:])]
        return [(p[1], p[2], f.result()) for p, f in zip(parents, futures)]


def servers_of(trace_ids: set[str]) -> Callable[[list[dict[str, Any]]], bool]:
    """Whether the server spans of all these traces arrived (a server span ends after its children)."""
    return lambda spans: trace_ids <= {s["trace_id"] for s in spans if s["kind"] == SERVER_KIND}


def by_trace(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        traces[span["trace_id"]].append(span)
    return traces


def check_request_trace(spans: list[dict[str, Any]], parent_span_id: str, response: requests.Response,
                        ) -> dict[str, Any]:
    """One request's spans: a server span under the incoming parent, and decode, queue, model(s), encode (if
    it was answered with predictions) as its children, in that order, each within it. Returns the spans by
    name (``model``: a list)."""
    (server,) = [s for s in spans if s["kind"] == SERVER_KIND]
    assert server["parent_span_id"] == parent_span_id
    assert server["name"] == "POST /predict" and server["service"] == "scorer"
    attrs = server["attributes"]
    assert attrs["http.route"] == "/predict" and attrs["http.request.method"] == "POST"
    assert attrs["http.response.status_code"] == response.status_code
    assert attrs["scorer.request_id"] == response.headers["x-request-id"]
    if response.status_code == 200:  # (an error answer does not name the version)
        assert attrs["scorer.model.version"] == response.headers["x-model-version"]
        assert attrs["scorer.model.digest"] == response.headers["x-model-digest"]
    children = sorted((s for s in spans if s is not server), key=lambda s: (s["start"], s["end"]))
    assert all(s["parent_span_id"] == server["span_id"] and s["kind"] == INTERNAL_KIND for s in children)
    if response.status_code != 200:  # no answer to encode
        children.append({"name": "encode", "start": children[-1]["end"], "end": children[-1]["end"]})
    names = [s["name"] for s in children]
    assert names[:2] == ["decode", "queue"] and names[-1] == "encode" and set(names[2:-1]) == {"model"}, names
    # Each within the server span; each starts where the one before ended (they tile the request's scoring),
    # except a retried call, which starts after the failed one ended (and the other half's calls, if first).
    assert server["start"] <= children[0]["start"] and children[-1]["end"] <= server["end"]
    for before, after in zip(children, children[1:]):
        assert before["start"] <= before["end"] <= after["start"] <= after["end"]
        assert before["end"] == after["start"] or before["name"] == after["name"] == "model"
    return {"server": server, "decode": children[0], "queue": children[1], "model": children[2:-1],
            "encode": children[-1]}


def test_each_request_continues_its_traceparent_and_batched_requests_share_the_model_call(
        live_server: Any, sum_bundle: Callable[..., Path], receiver: Receiver) -> None:
    """Every request's spans are in the trace its ``traceparent`` names, its server span the child of the
    incoming span, with decode, queue, model and encode children in order within it; requests that shared a
    model call (the model saw their rows together) have ``model`` spans with the same batch id, start and
    end, and the batch's request and row counts; a request without ``traceparent`` starts a new trace."""
    with live_server(sum_bundle(delay=0.5), "--tracing", "otlp", env=otel_env(receiver.endpoint)) as server:
        answers = concurrently(server.url, [{"a": 1, "b": 1}],
                               [[{"a": i, "b": 10}] * (i + 1) for i in range(1, 5)])
        alone = post(server.url, [{"a": 5, "b": 5}])
    for _, _, response in answers:
        assert response.status_code == 200
    assert alone.status_code == 200 and alone.json()["predictions"][0]["sum"] == 10
    ours = {trace_id for trace_id, _, _ in answers}
    spans = receiver.wait_for(lambda spans: servers_of(ours)(spans) and len(by_trace(spans)) == 6)
    traces = by_trace(spans)
    batches: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for trace_id, parent, response in answers:
        rows = [{"a": p["sum"] - 10} for p in response.json()["predictions"]]
        named = check_request_trace(traces[trace_id], parent, response)
        assert named["server"]["attributes"]["scorer.rows"] == len(rows)
        (model,) = named["model"]
        assert model["status"] != STATUS_ERROR
        # The model's own count of the rows in its call is the batch's row count in the span.
        assert model["attributes"]["scorer.batch.rows"] == response.json()["predictions"][0]["rows_in_call"]
        batches[model["attributes"]["scorer.batch.id"]].append(model)
    shared = [models for models in batches.values() if len(models) > 1]
    assert shared, "no two requests shared a model call"
    for models in batches.values():
        assert {(m["start"], m["end"]) for m in models} == {(models[0]["start"], models[0]["end"])}
        assert all(m["attributes"]["scorer.batch.requests"] == len(models) for m in models)
    # Without a traceparent: a new trace, its server span a root.
    (new_trace,) = [t for t, s in traces.items() if t not in ours]
    (root,) = [s for s in traces[new_trace] if s["kind"] == SERVER_KIND]
    assert root["parent_span_id"] == "" and root["attributes"]["scorer.request_id"] == alone.headers["x-request-id"]


def test_a_failed_batch_split_in_halves_shows_one_model_span_per_call(
        live_server: Any, sum_bundle: Callable[..., Path], receiver: Receiver) -> None:
    """A batch that fails (one poison request) is retried in halves: each request has a ``model`` span for
    every call its rows were in, the failed calls with ERROR status and the error's class; the poison
    request's calls all failed, down to one of its own; the good requests end with a call that succeeded."""
    with live_server(sum_bundle(delay=0.3), "--tracing", "otlp", env=otel_env(receiver.endpoint)) as server:
        answers = concurrently(server.url, [{"a": 1, "b": 1}],
                               [[{"a": 2, "b": 2}], [{"a": 666, "b": 0}], [{"a": 3, "b": 3}]])
    statuses = [response.status_code for _, _, response in answers]
    assert statuses == [200, 200, 500, 200]
    assert [answers[i][2].json()["predictions"][0]["sum"] for i in (1, 3)] == [4, 6]
    spans = receiver.wait_for(servers_of({trace_id for trace_id, _, _ in answers}))
    traces = by_trace(spans)
    models = {i: check_request_trace(traces[t], p, r)["model"] for i, (t, p, r) in enumerate(answers)}
    first_calls = {models[i][0]["attributes"]["scorer.batch.id"] for i in (1, 2, 3)}
    assert len(first_calls) == 1, "the three requests did not share their first call"
    assert models[1][0]["attributes"]["scorer.batch.requests"] == 3
    for i in (1, 3):  # a failed call (the three), then one or two more until the request's rows are scored
        assert models[i][0]["status"] == STATUS_ERROR and models[i][-1]["status"] != STATUS_ERROR
        assert all(m["status"] == STATUS_ERROR for m in models[i][:-1]) and len(models[i]) in (2, 3)
    assert all(m["status"] == STATUS_ERROR and m["attributes"]["error.type"] == "ModelError" for m in models[2])
    assert models[2][-1]["attributes"]["scorer.batch.requests"] == 1 and len(models[2]) in (2, 3)
    calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i in (1, 2, 3):
        for m in models[i]:
            calls[m["attributes"]["scorer.batch.id"]].append(m)
    for members in calls.values():  # every call's spans agree on its request count, start and end
        assert all(m["attributes"]["scorer.batch.requests"] == len(members) for m in members)
        assert len({(m["start"], m["end"]) for m in members}) == 1
    (server_span,) = [s for s in traces[answers[2][0]] if s["kind"] == SERVER_KIND]
    assert server_span["attributes"]["http.response.status_code"] == 500 and server_span["status"] == STATUS_ERROR
    assert server_span["attributes"]["scorer.model.digest"] == answers[0][2].headers["x-model-digest"]


def test_tracing_off_imports_no_opentelemetry_and_exports_nothing(
        live_server: Any, bundle_factory: BundleFactory, receiver: Receiver) -> None:
    """The default server never imports OpenTelemetry (the model, in the server process, looks at
    ``sys.modules``; with tracing on the same look finds it) and sends no spans even when the standard
    OTEL_* variables name a collector; neither does importing the package and its command line."""
    bundle = bundle_factory("probe", code=PROBE_MODEL)
    parent = traceparent()[0]
    with live_server(bundle, env=otel_env(receiver.endpoint)) as off:
        answer = post(off.url, [{"a": 1, "b": 2}], {"traceparent": parent})
    assert answer.status_code == 200 and answer.json()["predictions"] == [{"sum": 3, "otel_loaded": 0}]
    with live_server(bundle, "--tracing", "otlp", env=otel_env(receiver.endpoint)) as on:
        answer = post(on.url, [{"a": 1, "b": 2}], {"traceparent": parent})
    assert answer.json()["predictions"] == [{"sum": 3, "otel_loaded": 1}]
    spans = receiver.wait_for(lambda spans: len(spans) >= 5)
    assert {s["attributes"].get("scorer.request_id") for s in spans if s["kind"] == SERVER_KIND} == {
        answer.headers["x-request-id"]}, "the server without tracing sent spans"
    code = ("import sys, scorer, scorer.cli, scorer.serving.app, scorer.serving.process, scorer.serving.predict; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"


def test_spans_still_queued_at_shutdown_are_sent(live_server: Any, sum_bundle: Callable[..., Path],
                                                 receiver: Receiver) -> None:
    """With a batch delay longer than the test (nothing is sent on the way), the spans of the requests
    served reach the collector when the server stops (SIGTERM, exit 0)."""
    env = {**otel_env(receiver.endpoint), "OTEL_BSP_SCHEDULE_DELAY": "600000"}
    with live_server(sum_bundle(), "--tracing", "otlp", env=env) as server:
        ids = {post(server.url, [{"a": i, "b": 1}]).headers["x-request-id"] for i in range(3)}
        time.sleep(0.5)
        assert receiver.spans() == []
        server.proc.terminate()
        assert server.proc.wait(timeout=30) == 0
    spans = receiver.spans()
    assert {s["attributes"]["scorer.request_id"] for s in spans if s["kind"] == SERVER_KIND} == ids
    assert len(spans) == 3 * 5


def blackhole() -> socket.socket:
    """A listening socket that never accepts: connections are made, exports are never answered."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def test_a_dead_collector_does_not_change_the_answers(live_server: Any, bundle_factory: BundleFactory) -> None:
    """With tracing on and a collector that takes connections but never answers (or nothing listening), every
    answer is the one the server without tracing gives, and the server still stops with exit 0 on SIGTERM
    (its flush at shutdown is bounded)."""
    bundle = bundle_factory("probe", code=PROBE_MODEL)
    bodies = [[{"a": float(i), "b": 0.5}] * (i % 7 + 1) for i in range(40)]

    def answers(server: LiveServer) -> list[list[float]]:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda body: post(server.url, body), bodies))
        assert all(r.status_code == 200 for r in results)
        return [[p["sum"] for p in r.json()["predictions"]] for r in results]

    with live_server(bundle) as off:
        expected = answers(off)
    hole = blackhole()
    try:
        for endpoint in (f"http://127.0.0.1:{hole.getsockname()[1]}", f"http://127.0.0.1:{free_port()}"):
            with live_server(bundle, "--tracing", "otlp", env=otel_env(endpoint)) as on:
                assert answers(on) == expected
                time.sleep(0.5)  # an export is under way (and hangs on the black hole)
                on.proc.terminate()
                assert on.proc.wait(timeout=30) == 0
    finally:
        hole.close()


def test_tracing_without_its_extra_is_a_usage_error(tmp_path: Path, bundle_factory: BundleFactory) -> None:
    """``--tracing otlp`` where the OpenTelemetry SDK cannot be imported (a plain ``opentelemetry`` package
    shadows the installed one, as in an install without the extra) exits 2 at once with one line naming the
    extra, no traceback."""
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    env["PYTHONPATH"] = str(shadow.parent)
    result = subprocess.run([sys.executable, "-m", "scorer.cli", "serve", str(bundle_factory("probe", code=PROBE_MODEL)),
                             "--port", str(free_port()), "--tracing", "otlp"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "scorer: --tracing otlp needs the tracing extra (pip install 'scorer[tracing]'); missing: opentelemetry.exporter"]
