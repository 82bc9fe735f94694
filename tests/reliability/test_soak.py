"""Soak: a server under continuous mixed traffic (good rows, batches, malformed bodies, schema errors,
timeouts by disconnecting clients) for SOAK_SECONDS (20 s in the suite; run it for an hour with
`SOAK_SECONDS=3600 pytest tests/reliability/test_soak.py -s`) keeps its RSS and open file
descriptors flat."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import requests

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def traffic(url: str, stop: threading.Event, counts: dict[str, int], lock: threading.Lock) -> None:
    session = requests.Session()
    bodies = [
        ("json", {"json": {"a": 1.0, "b": 2.0}}),
        ("batch", {"json": {"a": list(range(200)), "b": list(range(200))}}),
        ("csv", {"data": "a,b\n1,2\n3,4\n", "headers": {"Content-Type": "text/csv"}}),
        ("malformed", {"data": "{not json", "headers": {"Content-Type": "application/json"}}),
        ("schema", {"json": {"a": "x", "b": 1}}),
        ("missing", {"json": {"zzz": 1}}),
    ]
    i = 0
    while not stop.is_set():
        name, kwargs = bodies[i % len(bodies)]
        i += 1
        try:
            if i % 50 == 0:  # a client that gives up early (its connection is dropped)
                requests.post(url + "/predict", timeout=0.0005, **kwargs)
            else:
                session.post(url + "/predict", timeout=10, **kwargs)
        except requests.RequestException:
            name = "gave up"
        with lock:
            counts[name] = counts.get(name, 0) + 1


def test_rss_and_fds_stay_flat_under_mixed_traffic(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    with live_server(sum_bundle()) as server:
        pid = server.proc.pid
        stop, lock, counts = threading.Event(), threading.Lock(), {}  # type: ignore[var-annotated]
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
    total = sum(counts.values())
    print(f"soak {SOAK_SECONDS:.0f}s: {total} requests {counts}; RSS {rss_start:.1f} -> {rss_end:.1f} MiB, "
          f"fds {fds_start} -> {fds_end}; samples {samples}")
    assert total > 100 and counts.get("json", 0) > 10
    assert rss_end - rss_start < 15, (rss_start, rss_end, samples)
    assert fds_end <= fds_start + 2, (fds_start, fds_end, samples)
