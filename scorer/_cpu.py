"""CPU sharing between worker processes (server workers, batch workers)."""

from __future__ import annotations

import os


def cores() -> int:
    """Cores this process may run on: respects taskset and cpusets, unlike os.cpu_count()."""
    return len(os.sched_getaffinity(0))


def share_openmp(workers: int) -> None:
    """Give each of ``workers`` processes its share of the cores for OpenMP models (HistGradientBoosting,
    LightGBM, ...), unless the operator set OMP_NUM_THREADS. N workers each running an OpenMP pool of one
    thread per core oversubscribe the CPU: measured here, 2 serve workers halved 1-connection throughput.
    Call before the worker processes start (they inherit the environment)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores() // workers)))
