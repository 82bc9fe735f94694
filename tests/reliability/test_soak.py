"""Soak: a server under continuous mixed traffic (good rows, batches, CSV, malformed bodies, schema
errors, clients that give up and drop their connection) for SOAK_SECONDS (20 s in the suite; run it
for an hour with `SOAK_SECONDS=3600 pytest tests/reliability/test_soak.py -s`) keeps its RSS and open
file descriptors flat, and answers every request of each kind with that kind's status (good bodies
200 with the right sums, malformed 400, schema errors 422, never a 5xx)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


BATCH = 200
# Each kind of body: how it is sent, the one status it must get, and what a right answer looks like.
KINDS: dict[str, tuple[dict[str, Any], int, Callable[[requests.Response], bool]]] = {
    "json": ({"json": {"a": 1.0, "b": 2.0}}, 200, lambda r: _sums(r) == [3.0]),
    "batch": ({"json": {"a": list(range(BATCH)), "b": list(range(BATCH))}}, 200,
              lambda r: _sums(r) == [2.0 * i for i in range(BATCH)]),
    "csv": ({"data": "a,b\n1,2\n3,4\n", "headers": {"Content-Type": "text/csv"}}, 200, lambda r: _sums(r) == [3.0, 7.0]),
    "malformed": ({"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400,
                  lambda r: r.json()["error"] == "malformed_body"),
    "schema": ({"json": {"a": "x", "b": 1}}, 422, lambda r: r.json()["error"] == "schema_error"),
    "missing": ({"json": {"zzz": 1}}, 422, lambda r: r.json()["error"] == "schema_error" and r.json()["columns"] == ["a", "b"]),
}


def _sums(response: requests.Response) -> list[float]:
    return [p["sum"] for p in response.json()["predictions"]]


def traffic(url: str, stop: threading.Event, counts: Counter[tuple[str, int | str]], lock: threading.Lock) -> None:
    """Send the kinds in turn until ``stop``; count (kind, status) and (kind, "wrong") for a wrong body."""
    session = requests.Session()
    names = list(KINDS)
    i = 0
    while not stop.is_set():
        name = names[i % len(names)]
        kwargs, expected, right = KINDS[name]
        i += 1
        outcome: list[tuple[str, int | str]] = []
        try:
            if i % 50 == 0:  # a client that gives up early (its connection is dropped)
                requests.post(url + "/predict", timeout=0.0005, **kwargs)
                outcome.append(("gave up", "no answer"))
            else:
                r = session.post(url + "/predict", timeout=10, **kwargs)
                outcome.append((name, r.status_code))
                if r.status_code == expected and not right(r):
                    outcome.append((name, "wrong"))
        except requests.RequestException:
            outcome = [("gave up", "no answer")]
        with lock:
            counts.update(outcome)


def test_rss_and_fds_stay_flat_under_mixed_traffic(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    with live_server(sum_bundle()) as server:
        pid = server.proc.pid
        stop, lock, counts = threading.Event(), threading.Lock(), Counter[tuple[str, int | str]]()
        threads = [threading.Thread(target=traffic, args=(server.url, stop, counts, lock)) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(min(5.0, SOAK_SECONDS / 4))  # warm-up: caches, arenas, connection pools
        rss_start, fds_start = rss_mib(pid), open_fds(pid)
        samples = []
        deadline = time.monotonic() + SOAK_SECONDS
        while time.monotonic() < deadline:
            time.sleep(min(5.0, SOAK_SECONDS / 4))
            samples.append((round(rss_mib(pid), 1), open_fds(pid)))
        stop.set()
        for t in threads:
            t.join()
        time.sleep(0.5)
        rss_end, fds_end = rss_mib(pid), open_fds(pid)
        assert requests.get(server.url + "/health").status_code == 200
    total = sum(n for (_, status), n in counts.items() if status != "wrong")
    print(f"soak {SOAK_SECONDS:.0f}s: {total} requests {dict(sorted(counts.items(), key=str))}; "
          f"RSS {rss_start:.1f} -> {rss_end:.1f} MiB, fds {fds_start} -> {fds_end}; samples {samples}")
    for name, (_, expected, _) in KINDS.items():
        statuses = {status: n for (kind, status), n in counts.items() if kind == name}
        assert statuses.get(expected, 0) > 10 and set(statuses) == {expected}, (name, expected, statuses)
    assert not [key for key in counts if isinstance(key[1], int) and key[1] >= 500], counts
    assert rss_end - rss_start < 15, (rss_start, rss_end, samples)
    assert fds_end <= fds_start + 2, (fds_start, fds_end, samples)
