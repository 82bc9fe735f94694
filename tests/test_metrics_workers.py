"""``/metrics`` with ``scorer serve --workers N``: whichever worker answers a scrape reports the
counts of every worker (the workers write their metrics to files in a private directory of the
supervisor's, removed when it exits)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from scorer.serving import metrics
from scorer.serving.metrics import Metrics

REQUESTS = 1000
SCRAPES = 12


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` in a Prometheus text, by its sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def predict_200(found: dict[tuple[tuple[str, str], ...], float]) -> float:
    return found.get((("path", "/predict"), ("status", "200")), 0.0)


def metrics_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("scorer-metrics-*"))


def test_every_scrape_counts_every_worker(sum_bundle, live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """1,000 requests (each on its own connection, from 8 threads) to 4 workers: on every one of 12
    scrapes (each on its own connection too, so they reach different workers) the requests and rows
    counters are exactly the totals sent; the per-worker files show that several workers answered."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    rows_per_request = [1 + i % 7 for i in range(REQUESTS)]

    def post(i: int) -> int:
        n = rows_per_request[i]
        body = {"a": [i + 0.5] * n, "b": [1.0] * n}  # never 666, the model's poison value
        # no session: a new connection each time, so the kernel hands them to different workers
        response = requests.post(server.url + "/predict", json=body, timeout=30)
        assert [p["sum"] for p in response.json()["predictions"]] == [i + 1.5] * n
        return response.status_code

    with live_server(sum_bundle(), "--workers", "4", env={"TMPDIR": str(tmp)}) as server:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(post, range(REQUESTS)))
        assert statuses == [200] * REQUESTS
        seen = []
        for _ in range(SCRAPES):
            text = requests.get(server.url + "/metrics", headers={"Connection": "close"}, timeout=10).text
            seen.append((predict_200(samples(text, "scorer_requests_total")),
                         samples(text, "scorer_rows_scored_total").get((), 0.0),
                         samples(text, "scorer_ready").get((), 0.0)))
        print(f"scrapes (requests, rows, ready): {seen}")
        assert seen == [(REQUESTS, sum(rows_per_request), 1.0)] * SCRAPES

        # the evidence that the load was spread: each worker's own counter file
        (directory,) = metrics_dirs(tmp)
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        per_worker = {f.name: predict_200(_file_samples(f)) for f in directory.glob("counter_*.db")}
        print(f"/predict 200 per worker file: {per_worker}")
        assert len(per_worker) == 4
        assert sum(per_worker.values()) == REQUESTS
        assert sum(1 for count in per_worker.values() if count > 0) > 1


def _file_samples(path: Path) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for metric in MultiProcessCollector.merge([str(path)]):
        for sample in metric.samples:
            if sample.name == "scorer_requests_total":
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_directory_is_private_and_removed_at_shutdown(sum_bundle, live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each multi-worker server makes its own 0700 directory under the temp dir (two servers never share
    one) and removes it when it exits; a one-worker server makes none."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    with live_server(sum_bundle(), "--workers", "1", env=env) as single:
        assert requests.post(single.url + "/predict", json={"a": [1.0], "b": [2.0]}, timeout=10).status_code == 200
        assert metrics_dirs(tmp) == []
    with live_server(sum_bundle(name="one"), "--workers", "2", env=env) as first, \
            live_server(sum_bundle(name="two"), "--workers", "2", env=env) as second:
        dirs = metrics_dirs(tmp)
        assert len(dirs) == 2
        assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in dirs)
        for server in (first, second):
            assert requests.post(server.url + "/predict", json={"a": [1.0], "b": [2.0]}, timeout=10).status_code == 200
        text = requests.get(first.url + "/metrics", timeout=10).text
        assert predict_200(samples(text, "scorer_requests_total")) == 1  # the other server's request is not counted
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=30) == 0
        assert metrics_dirs(tmp) == [d for d in dirs if d.exists()] and len(metrics_dirs(tmp)) == 1
    assert metrics_dirs(tmp) == []
    assert os.listdir(tmp) == []


def _count(requests_done: int, ready: float, stop: Any) -> None:
    """A forked worker: ``requests_done`` /predict 200s, then scorer_ready set to ``ready``; waits for ``stop``."""
    worker = Metrics()
    worker.ready.set(ready)
    for _ in range(requests_done):
        worker.observe_request("/predict", 200, 0.001)
    worker.observe_batch(requests_done, 1, 0.001)
    stop.wait(30)


def _scrape(out: Any) -> None:
    """A forked worker that serves (ready) and answers one scrape."""
    worker = Metrics()
    worker.ready.set(1)
    out.put(worker.render().decode())


@pytest.mark.fast
def test_exited_workers_counters_stay_and_their_gauges_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forked like the server's workers: a worker that exits (as one that dies and is replaced would)
    leaves its counts in every later scrape, so counters never go back; scorer_ready is the minimum
    over the live workers only (0 while one of them is not ready)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    ctx = multiprocessing.get_context("fork")

    def scrape() -> str:
        out = ctx.Queue()
        scraper = ctx.Process(target=_scrape, args=(out,))
        scraper.start()
        text = out.get(timeout=30)
        scraper.join(30)
        metrics.worker_exited(scraper.pid)  # its own (empty) gauges go too
        return text

    def wait_for(check: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + 30
        while True:
            text = scrape()
            if check(text) or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    with metrics.shared_between_workers() as directory:
        assert directory is not None and Path(directory).parent == tmp_path
        stop_first, stop_second = ctx.Event(), ctx.Event()
        first = ctx.Process(target=_count, args=(300, 1.0, stop_first))
        second = ctx.Process(target=_count, args=(200, 0.0, stop_second))
        first.start()
        second.start()
        text = wait_for(lambda t: predict_200(samples(t, "scorer_requests_total")) == 500)
        assert predict_200(samples(text, "scorer_requests_total")) == 500
        assert samples(text, "scorer_rows_scored_total") == {(): 500}
        assert samples(text, "scorer_ready") == {(): 0.0}  # the second worker is not ready

        stop_second.set()
        second.join(30)
        metrics.worker_exited(second.pid)
        text = scrape()
        assert predict_200(samples(text, "scorer_requests_total")) == 500  # its 200 requests still count
        assert samples(text, "scorer_rows_scored_total") == {(): 500}
        assert samples(text, "scorer_ready") == {(): 1.0}  # the one live worker is ready
        stop_first.set()
        first.join(30)
    assert not Path(directory).exists()


@pytest.mark.fast
def test_without_a_writable_temp_dir_workers_keep_their_own_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """No temp directory to write to: the server still starts (a warning says scrapes show one worker),
    no variable is set, and metrics stay in memory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with metrics.shared_between_workers() as directory:
        assert directory is None
        assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
        worker = Metrics()
        worker.observe_request("/predict", 200, 0.001)
        assert predict_200(samples(worker.render().decode(), "scorer_requests_total")) == 1
    assert "only the counts of the worker that answers it" in caplog.text
    assert not (tmp_path / "missing").exists()
