"""Prometheus metrics of the server.

One process (``--workers 1``): its own in-process registry, so apps never share state. Several
workers: the supervisor opens :func:`shared_between_workers` before forking them; each worker's
:class:`Metrics` then keeps its values in files of its own in that directory (prometheus_client's
multiprocess mode) and :meth:`Metrics.render`, in whichever worker a scrape reaches, adds up the
files of every worker, including those of workers that have exited, so counters never go back.
Gauges are combined over the live workers: ``scorer_ready`` is their minimum (1 only while every
worker serves), ``scorer_model_load_seconds`` their maximum (they all serve the one model the
supervisor loaded).

Reloads (:class:`ReloadMetrics`) are counted by the process that reloads: the server itself with one
process, the supervisor with several (its values are files in the same directory, so whichever worker
answers a scrape shows them). ``scorer_model_info{version,digest}`` is 1 for the serving version; a
version swapped out is set to 0 and left out of the exposition.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST
# prometheus_client's own variable: its file-backed values name their files from it.
_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROW_BUCKETS = tuple(float(2**i) for i in range(0, 17))
_REQUEST_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

log = logging.getLogger("scorer.serving.metrics")

# Set in the supervisor by shared_between_workers; the forked workers inherit it.
_shared_dir: str | None = None
_file_values: type | None = None


@contextlib.contextmanager
def shared_between_workers() -> Iterator[str | None]:
    """In the supervisor, around the workers' lives: a fresh directory (mode 0700, in the temp dir,
    never another server's) for their metric files, removed on exit. Yields its path, or None if no
    temp directory is writable (then each worker reports only its own counts, as a warning says)."""
    global _shared_dir, _file_values
    try:
        directory = tempfile.mkdtemp(prefix="scorer-metrics-")
    except OSError as exc:
        log.warning("no temp directory for the workers' metrics (%s): each /metrics scrape shows only the "
                    "counts of the worker that answers it", exc)
        yield None
        return
    previous = os.environ.get(_DIR_VARIABLE)
    os.environ[_DIR_VARIABLE] = directory
    _shared_dir, _file_values = directory, values.MultiProcessValue()
    try:
        yield directory
    finally:
        _shared_dir, _file_values = None, None
        if previous is None:
            os.environ.pop(_DIR_VARIABLE, None)
        else:
            os.environ[_DIR_VARIABLE] = previous
        shutil.rmtree(directory, ignore_errors=True)


def worker_exited(pid: int | None) -> None:
    """In the supervisor: a worker has exited; its gauges stop counting (its counters stay)."""
    if _shared_dir is not None and pid is not None:
        mark_process_dead(pid, _shared_dir)


def shared_dir() -> str | None:
    """The workers' shared metrics directory (set in the supervisor, inherited by its workers), or None."""
    return _shared_dir


_MODEL_INFO = "scorer_model_info"


class ReloadMetrics:
    """The serving version and the reload attempts, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        values.ValueClass = _file_values or values.MutexValue
        r = registry
        self.model_info = Gauge(_MODEL_INFO, "1 for the model version being served (labels: its version and content "
                                "digest).", ["version", "digest"], registry=r, multiprocess_mode="livemax")
        self.reloads = Counter("scorer_reloads", "Reload attempts by result: loaded, rejected, unchanged, unavailable.",
                               ["result"], registry=r)
        self.last_attempt = Gauge("scorer_reload_last_attempt_timestamp_seconds",
                                  "Unix time of the last reload attempt.", registry=r, multiprocess_mode="max")
        self.last_success = Gauge("scorer_reload_last_success_timestamp_seconds",
                                  "Unix time the serving version was loaded (at start, or by the last reload).",
                                  registry=r, multiprocess_mode="max")
        self.stale = Gauge("scorer_source_stale_seconds", "Seconds since the model source (registry) last answered, "
                           "while it cannot be reached; 0 while it answers.", registry=r, multiprocess_mode="livemax")
        self._serving: tuple[str, str] | None = None

    def serving(self, version: str, digest: str, at: float) -> None:
        if self._serving is not None and self._serving != (version, digest):
            self.model_info.labels(*self._serving).set(0)
        self._serving = (version, digest)
        self.model_info.labels(version, digest).set(1)
        self.last_success.set(at)

    def attempt(self, result: str, at: float) -> None:
        self.reloads.labels(result).inc()
        self.last_attempt.set(at)


class _ServingOnly(Collector):
    """Another collector's metrics, without the 0 samples of ``scorer_model_info`` (versions swapped out)."""

    def __init__(self, source: Collector) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        for metric in self._source.collect():
            if metric.name == _MODEL_INFO:
                metric.samples = [s for s in metric.samples if s.value != 0]
            yield metric


class Metrics:
    def __init__(self, *, reloads: bool = True) -> None:
        """``reloads``: this process counts reloads (not a supervised worker: its supervisor does)."""
        # prometheus_client reads the kind of value a new metric gets from this module global (it chose
        # one when first imported, before the supervisor made its directory): set it for the metrics below.
        values.ValueClass = _file_values or values.MutexValue
        self._shared_dir = _shared_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("scorer_requests", "HTTP requests by route and status.", ["path", "status"], registry=r)
        self.latency = Histogram(
            "scorer_request_duration_seconds", "HTTP request latency.", ["path"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_rows = Histogram("scorer_batch_rows", "Rows per model call.", buckets=_ROW_BUCKETS, registry=r)
        self.batch_requests = Histogram(
            "scorer_batch_requests", "Requests coalesced into one model call.", buckets=_REQUEST_BUCKETS, registry=r
        )
        self.model_seconds = Histogram(
            "scorer_model_call_seconds", "Duration of one model call.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.rows = Counter("scorer_rows_scored", "Rows scored.", registry=r)
        self.retry_calls = Counter(
            "scorer_batch_retry_calls",
            "Model calls made to isolate a failing request after its batch failed (bisection: at most "
            "2*ceil(log2 N) per failing request in a batch of N).",
            registry=r,
        )
        self.load_seconds = Gauge("scorer_model_load_seconds", "Time taken to load the bundle.", registry=r,
                                  multiprocess_mode="livemax")
        self.ready = Gauge("scorer_ready", "1 once the bundle is loaded and serving.", registry=r,
                           multiprocess_mode="livemin")
        self.heap_frozen = Gauge(
            "scorer_heap_frozen_objects", "Objects moved out of the garbage collector's scans once the model "
            "loaded (gc.freeze): its pauses do not grow with the model.", registry=r, multiprocess_mode="livemin")
        # Payload logging (scorer.serving.payload_log): what became of its events.
        self.payload_log_sent = Counter("scorer_payload_log_sent", "Payload-log events delivered to the sink.",
                                        registry=r)
        self.payload_log_dropped = Counter(
            "scorer_payload_log_dropped", "Payload-log events not delivered, by reason: queue_full, sink_error "
            "(refused, no answer in time, a non-2xx answer), shutdown (still queued when the grace period ended).",
            ["reason"], registry=r)

        self.reload = ReloadMetrics(r) if reloads else None
        self.before_render: list[Callable[[], None]] = []  # refresh values computed at scrape time

        self._request_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """One HTTP request (label children cached: ``labels()`` costs more than the update)."""
        children = self._request_children.get((path, status))
        if children is None:
            children = (self.requests.labels(path, str(status)), self.latency.labels(path))
            self._request_children[(path, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, rows: int, requests: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)
        self.model_seconds.observe(seconds)
        self.rows.inc(rows)

    def observe_retries(self, calls: int) -> None:
        self.retry_calls.inc(calls)

    def render(self) -> bytes:
        for refresh in self.before_render:
            refresh()
        registry = CollectorRegistry()
        if self._shared_dir is None:
            registry.register(_ServingOnly(self.registry))
        else:  # every worker's files (and the supervisor's), read at this scrape
            registry.register(_ServingOnly(MultiProcessCollector(None, path=self._shared_dir)))
        return generate_latest(registry)
