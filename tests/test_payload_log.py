"""Payload logging (``--payload-log``) against real processes: a real ``scorer serve`` and a real HTTP sink
(a small Python HTTP server started by the test, recording every event it receives to a file), or JSON
Lines written to a file. Request data leaves the process only when payload logging is on; when it is on,
each sampled scoring request is one request and one response event with the request's id and payloads,
and a sink that is down or hangs never changes a scoring answer."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port
from scorer.cli import main as cli_main
from scorer.serving.payload_log import SEND_TIMEOUT_S

SINK = """
    import base64, json, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    record, mode, port_file = sys.argv[1], sys.argv[2], sys.argv[3]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real collector

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if mode == "hang":  # accepts and reads, never answers
                time.sleep(3600)
            if mode.startswith("slow:"):
                time.sleep(float(mode[5:]))
            entry = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                     "body": base64.b64encode(body).decode()}
            with lock, open(record, "a") as fh:
                fh.write(json.dumps(entry) + "\\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(port_file + ".tmp", "w") as fh:
        fh.write(str(server.server_address[1]))
    import os
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()
"""


class Sink:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, record: Path) -> None:
        self.proc, self.url, self.record = proc, url, record

    def events(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def wait_for(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(found := self.events()) < count:
            assert time.monotonic() < deadline, f"{len(found)} events of {count}"
            time.sleep(0.05)
        return found


@contextlib.contextmanager
def run_sink(tmp_path: Path, mode: str = "ok") -> Iterator[Sink]:
    """The HTTP sink as its own process; ``mode``: ok, hang (reads each request, never answers), slow:<s>."""
    script = tmp_path / "sink.py"
    script.write_text(textwrap.dedent(SINK))
    record, port_file = tmp_path / f"sink-{mode}.jsonl", tmp_path / f"sink-{mode}.port"
    proc = subprocess.Popen([sys.executable, str(script), str(record), mode, str(port_file)])
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the sink did not start"
            time.sleep(0.02)
        yield Sink(proc, f"http://127.0.0.1:{port_file.read_text()}/events", record)
    finally:
        proc.kill()
        proc.wait()


def metric(server_url: str, name: str, **labels: str) -> float:
    text = requests.get(server_url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def wait_metric(server_url: str, name: str, at_least: float, timeout: float = 30, **labels: str) -> float:
    deadline = time.monotonic() + timeout
    while (value := metric(server_url, name, **labels)) < at_least:
        assert time.monotonic() < deadline, f"{name}{labels} = {value}, expected >= {at_least}"
        time.sleep(0.05)
    return value


def body_of(i: int) -> bytes:
    """Request i's body, as exact bytes (the request event must carry these very bytes)."""
    n = 1 + i % 3
    return json.dumps({"a": [i + 0.25] * n, "b": [2.0] * n}).encode()


def expected_sums(i: int) -> list[float]:
    return [i + 2.25] * (1 + i % 3)


def score(url: str, i: int, rid: str | None = None, session: requests.Session | None = None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if rid is not None:
        headers["X-Request-ID"] = rid
    response = (session or requests).post(url + "/predict", data=body_of(i), headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert [p["sum"] for p in response.json()["predictions"]] == expected_sums(i)
    return response


def by_type(events: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    found = [e for e in events if e["headers"]["ce-type"] == f"org.kubeflow.serving.inference.{kind}"]
    by_id = {e["headers"]["ce-id"]: e for e in found}
    assert len(by_id) == len(found), "an id was logged twice"
    return by_id


def raw(event: dict[str, Any]) -> bytes:
    return base64.b64decode(event["body"])


N = 24


def test_each_scoring_request_is_one_request_and_one_response_cloudevent(sum_bundle, live_server,
                                                                         tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """N scoring requests with distinct X-Request-IDs (one as CSV, answered as CSV) to a server logging to a
    real HTTP sink: exactly N request and N response events, in KServe's binary CloudEvents form; their ids
    are the request ids, request payloads are the bytes sent and response payloads the bytes answered (the
    predictions); /health, /metadata and /metrics are not logged; the sent counter says 2N."""
    with run_sink(tmp_path) as sink, live_server(
            sum_bundle(), "--payload-log", sink.url, "--payload-log-service", "sum-isvc",
            "--payload-log-namespace", "models") as server:
        session = requests.Session()
        answers = {f"req-{i:03d}": score(server.url, i, f"req-{i:03d}", session) for i in range(N - 1)}
        csv = requests.post(server.url + "/predict", data=b"a,b\n1.5,2\n", timeout=30,
                            headers={"Content-Type": "text/csv", "Accept": "text/csv", "X-Request-ID": "req-csv"})
        assert csv.status_code == 200 and csv.text.splitlines()[1].split(",")[0] == "3.5", csv.text
        for path in ("/health", "/metadata", "/metrics"):
            assert requests.get(server.url + path, timeout=10).status_code == 200
        events = sink.wait_for(2 * N)
        assert wait_metric(server.url, "scorer_payload_log_sent_total", 2 * N) == 2 * N
        port = server.url.rsplit(":", 1)[1]
    events = sink.events()  # the server has stopped: nothing more came
    assert len(events) == 2 * N
    requests_logged, responses_logged = by_type(events, "request"), by_type(events, "response")
    assert set(requests_logged) == set(responses_logged) == {*answers, "req-csv"}
    for rid, answer in answers.items():
        i = int(rid[4:])
        request_event, response_event = requests_logged[rid], responses_logged[rid]
        assert raw(request_event) == body_of(i)
        assert raw(response_event) == answer.content
        assert [p["sum"] for p in json.loads(raw(response_event))["predictions"]] == expected_sums(i)
        for event, content_type in ((request_event, "application/json"), (response_event, "application/json")):
            headers = event["headers"]
            assert event["path"] == "/events"
            assert headers["ce-specversion"] == "1.0"
            assert headers["ce-source"] == f"http://localhost:{port}/"
            assert headers["ce-inferenceservicename"] == "sum-isvc"
            assert headers["ce-namespace"] == "models"
            assert headers["ce-component"] == "predictor" and headers["ce-endpoint"] == "default"
            assert headers["content-type"] == content_type
            assert datetime.fromisoformat(headers["ce-time"].replace("Z", "+00:00")).year >= 2024
    assert raw(requests_logged["req-csv"]) == b"a,b\n1.5,2\n"
    assert requests_logged["req-csv"]["headers"]["content-type"] == "text/csv"
    assert raw(responses_logged["req-csv"]) == csv.content
    assert responses_logged["req-csv"]["headers"]["content-type"].startswith("text/csv")


def test_off_by_default_nothing_leaves_the_process(sum_bundle, live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without --payload-log no event is sent anywhere (the sink runs and hears nothing) and nothing is counted."""
    with run_sink(tmp_path) as sink, live_server(sum_bundle()) as server:
        for i in range(10):
            score(server.url, i, f"off-{i}")
        assert metric(server.url, "scorer_payload_log_sent_total") == 0
        assert metric(server.url, "scorer_payload_log_dropped_total") == 0
    time.sleep(0.5)
    assert sink.events() == []


def test_sampling_keeps_a_request_with_its_response(sum_bundle, live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--payload-log-sample 0 logs nothing; 0.5 logs some requests but not all, each with its response."""
    bundle = sum_bundle()
    with run_sink(tmp_path) as sink:
        with live_server(bundle, "--payload-log", sink.url, "--payload-log-sample", "0") as server:
            for i in range(20):
                score(server.url, i, f"none-{i}")
        time.sleep(0.5)
        assert sink.events() == []
        with live_server(bundle, "--payload-log", sink.url, "--payload-log-sample", "0.5") as server:
            for i in range(60):
                score(server.url, i, f"half-{i}")
            wait_metric(server.url, "scorer_payload_log_sent_total", 2)
            time.sleep(0.5)
            sent = metric(server.url, "scorer_payload_log_sent_total")
        events = sink.events()
    logged_requests, logged_responses = by_type(events, "request"), by_type(events, "response")
    assert set(logged_requests) == set(logged_responses)
    assert 0 < len(logged_requests) < 60 and len(events) == sent


def test_json_lines_to_a_file_with_two_workers(sum_bundle, live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--payload-log FILE with --workers 2: each worker appends its own requests' events to the one file
    (mode 0600), one JSON object a line; JSON payloads are their text in "data", a gzip-encoded body is
    "data_base64" of the bytes received."""
    target = tmp_path / "payloads.jsonl"
    zipped = gzip.compress(body_of(7))
    with live_server(sum_bundle(), "--workers", "2", "--payload-log", str(target),
                     "--payload-log-service", "sum") as server:
        answers = {}
        for i in range(N):  # a new connection each time: both workers get some
            answers[f"line-{i}"] = score(server.url, i, f"line-{i}")
        gz = requests.post(server.url + "/predict", data=zipped, timeout=30, headers={
            "Content-Type": "application/json", "Content-Encoding": "gzip", "X-Request-ID": "line-gz"})
        assert gz.status_code == 200 and [p["sum"] for p in gz.json()["predictions"]] == expected_sums(7)
        wait_metric(server.url, "scorer_payload_log_sent_total", 2 * N + 2)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(lines) == 2 * N + 2
    for line in lines:
        assert line["specversion"] == "1.0" and line["inferenceservicename"] == "sum"
        assert line["datacontenttype"] == "application/json"
    kinds = {(line["type"].rsplit(".", 1)[1], line["id"]): line for line in lines}
    assert len(kinds) == len(lines)
    for rid, answer in answers.items():
        i = int(rid[5:])
        assert kinds[("request", rid)]["data"] == body_of(i).decode()
        assert kinds[("response", rid)]["data"] == answer.text
    assert "data" not in kinds[("request", "line-gz")]
    assert base64.b64decode(kinds[("request", "line-gz")]["data_base64"]) == zipped
    assert kinds[("response", "line-gz")]["data"] == gz.text


def test_a_dead_sink_never_changes_an_answer(sum_bundle, live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A sink port nothing listens on: every scoring request is answered as without payload logging, and
    every event is counted as dropped (sink_error); none as sent."""
    port = free_port()
    with live_server(sum_bundle(), "--payload-log", f"http://127.0.0.1:{port}/") as server:
        for i in range(N):
            score(server.url, i, f"dead-{i}")
        assert wait_metric(server.url, "scorer_payload_log_dropped_total", 2 * N, reason="sink_error") == 2 * N
        assert metric(server.url, "scorer_payload_log_sent_total") == 0
        assert "payload log" in server.log() and "failed" in server.log()


def test_a_hung_sink_neither_slows_nor_changes_scoring(sum_bundle, live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A sink that accepts and never answers, with a queue of 4 events: N requests are answered correctly
    in about the time the same N take on a server without payload logging (measured first, here), far less
    than one send timeout per request; the events that found the queue full are counted (queue_full), and
    the ones sent time out (sink_error)."""
    bundle = sum_bundle()
    session = requests.Session()
    with live_server(bundle) as server:
        score(server.url, 0, session=session)  # warm
        started = time.perf_counter()
        for i in range(N):
            score(server.url, i, session=session)
        baseline = time.perf_counter() - started
    session = requests.Session()
    with run_sink(tmp_path, "hang") as sink, live_server(bundle, "--payload-log", sink.url,
                                                         "--payload-log-queue", "4") as server:
        score(server.url, 0, session=session)
        started = time.perf_counter()
        for i in range(N):
            score(server.url, i, f"hang-{i}", session=session)
        elapsed = time.perf_counter() - started
        dropped = wait_metric(server.url, "scorer_payload_log_dropped_total", 1, reason="queue_full")
        wait_metric(server.url, "scorer_payload_log_dropped_total", 1, reason="sink_error", timeout=3 * SEND_TIMEOUT_S + 10)
        assert metric(server.url, "scorer_payload_log_sent_total") == 0
    print(f"{N} requests: {baseline:.3f} s without payload logging, {elapsed:.3f} s with a hung sink; "
          f"{dropped:.0f} events dropped with the queue full")
    # Waiting on the sink would cost at least SEND_TIMEOUT_S per request (N * 2 s): far above this bound.
    assert elapsed < baseline + N * SEND_TIMEOUT_S / 4


def test_shutdown_sends_what_is_queued_to_a_slow_sink(sum_bundle, live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM right after N requests whose events a slow sink (0.1 s each) has not all taken yet: the server
    sends every queued event before it exits (0), within the grace period."""
    with run_sink(tmp_path, "slow:0.1") as sink, live_server(sum_bundle(), "--payload-log", sink.url) as server:
        for i in range(N):
            score(server.url, i, f"flush-{i}")
        before = len(sink.events())
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
    assert before < 2 * N, "the sink took every event before the shutdown: nothing was left to flush"
    events = sink.events()
    assert len(events) == 2 * N
    assert set(by_type(events, "request")) == set(by_type(events, "response")) == {f"flush-{i}" for i in range(N)}


def test_shutdown_with_a_hung_sink_ends_within_the_grace_period(sum_bundle, live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM with events queued for a sink that never answers: the server exits 0 once the grace period is
    over, saying how many events it dropped."""
    with run_sink(tmp_path, "hang") as sink, live_server(sum_bundle(), "--payload-log", sink.url,
                                                         "--shutdown-grace-s", "2") as server:
        for i in range(N):
            score(server.url, i, f"stuck-{i}")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
        log = server.log()
    assert "not sent to" in log and "dropped" in log, log


def test_stdout_lines(sum_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--payload-log - writes the JSON Lines to stdout (the server's own logs are on stderr)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    proc = subprocess.Popen([sys.executable, "-m", "scorer.cli", "serve", str(sum_bundle()), "--port", str(port),
                             "--drain-s", "0", "--payload-log", "-"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(url + "/ready", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        answer = score(url, 3, "stdout-1")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [(line["type"].rsplit(".", 1)[1], line["id"]) for line in lines] == [
        ("request", "stdout-1"), ("response", "stdout-1")]
    assert lines[0]["data"] == body_of(3).decode() and lines[1]["data"] == answer.text


@pytest.mark.fast
@pytest.mark.parametrize(("args", "message"), [
    (["--payload-log", "ftp://127.0.0.1/x"], "payload_log: a URL must be http:// or https://, not ftp://"),
    (["--payload-log", "http://:80/"], "payload_log: the URL names no host"),
    (["--payload-log", "http://127.0.0.1:99999/"], "payload_log: the URL's port is not a number"),
    (["--payload-log", "http://user:secret@127.0.0.1/"], "payload_log: the URL must not carry credentials"),
    (["--payload-log", "/nonexistent-dir/payloads.jsonl"], "payload_log: the directory of"),
    (["--payload-log", "-", "--payload-log-sample", "1.5"], "payload_log_sample must be between 0 and 1"),
    (["--payload-log", "-", "--payload-log-queue", "0"], "payload_log_queue must be positive"),
])
def test_bad_settings_exit_2_naming_the_cause(args: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A payload-log setting that cannot work is a usage error at start (exit 2), one line naming it (and
    never the credentials of a URL)."""
    with pytest.raises(SystemExit) as exited:
        cli_main(["serve", str(tmp_path), *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "secret" not in err
