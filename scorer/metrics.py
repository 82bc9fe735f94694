"""Prometheus metrics of one server process (its own registry, so apps never share state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROW_BUCKETS = tuple(float(2**i) for i in range(0, 17))
_REQUEST_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
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
        self.load_seconds = Gauge("scorer_model_load_seconds", "Time taken to load the bundle.", registry=r)
        self.ready = Gauge("scorer_ready", "1 once the bundle is loaded and serving.", registry=r)

        self._request_children: dict[tuple[str, int], tuple[object, object]] = {}

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """One HTTP request (label children cached: ``labels()`` costs more than the update)."""
        children = self._request_children.get((path, status))
        if children is None:
            children = (self.requests.labels(path, str(status)), self.latency.labels(path))
            self._request_children[(path, status)] = children
        children[0].inc()  # type: ignore[attr-defined]
        children[1].observe(seconds)  # type: ignore[attr-defined]

    def observe_batch(self, rows: int, requests: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)
        self.model_seconds.observe(seconds)
        self.rows.inc(rows)

    def observe_retries(self, calls: int) -> None:
        self.retry_calls.inc(calls)

    def render(self) -> bytes:
        return generate_latest(self.registry)
