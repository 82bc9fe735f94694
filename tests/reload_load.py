"""Continuous load against a real server while its model is swapped.

:class:`Load` runs N closed-loop clients (each a keep-alive ``requests.Session`` POSTing a few random
rows to ``/predict`` as a split-orient JSON table, over and over) and records every answer: when it was
sent and received, its status, and the ``X-Model-Version``/``X-Model-Digest`` headers naming the
version that scored it. :func:`mismatches` then checks every answer against the in-process predictions
of the version it names: a request scored by one version but labelled with another, a micro-batch
mixing versions, or a lost request shows up as a failure.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd
import requests

COLUMNS = ["a", "b"]


@dataclass
class Answer:
    sent: float  # time.monotonic()
    received: float
    status: int | str  # the HTTP status, or the name of the exception the client got
    version: str | None
    digest: str | None
    rows: list[list[float]]
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return isinstance(self.status, int) and 200 <= self.status < 300


def _trickle(body: bytes) -> Iterator[bytes]:
    """A body sent in two parts 50 ms apart: the request holds its version while it arrives."""
    yield body[: len(body) // 2]
    time.sleep(0.05)
    yield body[len(body) // 2 :]


@dataclass
class Load:
    """``with Load(url, clients=50) as load: ...`` — clients run until the block ends (or ``max_seconds``).

    ``rows``: every request sends these rows (default: 1 to 3 random rows each); ``slow``: every other
    client sends its body in two parts; ``probe_ready``: a readiness probe on a new connection every
    20 ms as well (a kubelet's), whose statuses go to ``probes``; ``linger``: :meth:`wait_for` waits that
    much longer once it has seen its version (answers from both sides of a swap)."""

    url: str
    clients: int = 50
    max_seconds: float = 180.0
    seed: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    rows: list[list[float]] | None = None
    slow: bool = False
    probe_ready: bool = False
    linger: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    probes: list[int | str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        if self.probe_ready:
            self._threads.append(threading.Thread(target=self._probe, daemon=True))

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        deadline = time.monotonic() + self.max_seconds
        slow = self.slow and index % 2 == 1
        headers = {"Content-Type": "application/json", **self.headers}
        with requests.Session() as session:
            while not self._stop.is_set() and time.monotonic() < deadline:
                rows = self.rows or [[float(rng.randint(-50, 50)), round(rng.uniform(-10, 10), 3)]
                                     for _ in range(rng.randint(1, 3))]
                body = orjson.dumps({"columns": COLUMNS, "data": rows})
                sent = time.monotonic()
                try:
                    r = session.post(self.url + "/predict", data=_trickle(body) if slow else body, timeout=30,
                                     headers=headers)
                except requests.RequestException as exc:
                    self.answers.append(Answer(sent, time.monotonic(), type(exc).__name__, None, None, rows))
                    continue
                self.answers.append(Answer(sent, time.monotonic(), r.status_code, r.headers.get("x-model-version"),
                                           r.headers.get("x-model-digest"), rows, r.content))

    def _probe(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status: int | str = requests.get(self.url + "/ready", timeout=10,
                                                 headers={"Connection": "close"}).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            self.probes.append(status)
            time.sleep(0.02)

    def digests(self) -> set[str | None]:
        return {a.digest for a in list(self.answers)}

    def check(self, oracles: dict[str, Oracle]) -> None:
        """Answers came, none failed, each equals its version's in-process predictions; /ready always 200."""
        assert self.answers, "no answers"
        problems = mismatches(self.answers, oracles)
        assert not problems, f"{len(problems)} problems, e.g. {problems}"
        if self.probe_ready:
            assert self.probes and set(self.probes) == {200}, f"/ready answered {sorted(map(str, set(self.probes)))}"

    def first_from(self, digest: str, after: float = 0.0) -> Answer | None:
        """The earliest-received answer scored by ``digest`` among those sent after ``after``."""
        found = [a for a in list(self.answers) if a.digest == digest and a.sent >= after]
        return min(found, key=lambda a: a.received) if found else None

    def wait_for(self, digest: str, after: float = 0.0, timeout: float = 60.0) -> Answer:
        """Block until an answer scored by ``digest`` (sent after ``after``) has arrived, then ``linger``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.first_from(digest, after)
            if found is not None:
                time.sleep(self.linger)
                return found
            time.sleep(0.02)
        seen = sorted({a.digest or "-" for a in list(self.answers)[-200:]})
        raise AssertionError(f"no answer from {digest} within {timeout}s; recent versions: {seen}")

    def wait_only(self, digest: str, timeout: float, window: float = 0.5) -> float:
        """Block until every answer to a request sent in the last ``window`` seconds came from ``digest``
        (the old version has stopped answering: with several workers, it drains after the new one
        serves); returns when that window began."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mark = time.monotonic()
            time.sleep(window)
            recent = [a for a in list(self.answers) if a.sent >= mark]
            if recent and all(a.digest == digest for a in recent):
                return mark
        raise AssertionError(f"answers still come from other versions than {digest} after {timeout}s")


Oracle = Callable[[pd.DataFrame], pd.DataFrame]


def mismatches(answers: list[Answer], oracles: dict[str, Oracle], limit: int = 5) -> list[str]:
    """Every problem with ``answers``: a non-2xx answer or a client error, an unknown version, or
    predictions that differ from the in-process predictions of the version the answer names."""
    problems: list[str] = []
    for a in answers:
        if not a.ok:
            problems.append(f"status {a.status}: {a.body[:200]!r}")
            continue
        oracle = oracles.get(a.digest or "")
        if oracle is None:
            problems.append(f"answer from an unknown version {a.version} {a.digest}")
            continue
        frame = oracle(pd.DataFrame(a.rows, columns=COLUMNS))
        # The JSON answer of a one-column output is a list of values, else a list of records.
        expected = frame.iloc[:, 0].tolist() if len(frame.columns) == 1 else frame.to_dict(orient="records")
        got = orjson.loads(a.body)["predictions"]
        if got != expected:
            problems.append(f"{a.digest}: {a.rows} -> {got}, expected {expected}")
    return problems[:limit] + ([f"... {len(problems) - limit} more"] if len(problems) > limit else [])


def p99_ms(answers: list[Answer], start: float, end: float) -> float | None:
    """The 99th percentile latency (ms) of the answers sent in [start, end)."""
    lat = sorted((a.received - a.sent) * 1000 for a in answers if start <= a.sent < end)
    if not lat:
        return None
    return lat[min(len(lat) - 1, int(0.99 * len(lat)))]


def summary(answers: list[Answer]) -> dict[str, Any]:
    return {"answers": len(answers), "failed": sum(not a.ok for a in answers)}
