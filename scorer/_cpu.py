"""CPU counting and sharing: how many cores this process may use, and each worker process's share.

Every place that sizes itself by cores asks :func:`cores` (batch workers, Spark's ``local[N]``, the
OpenMP share of serve and batch workers). It is the smaller of

* the CPUs this process may run on (its affinity: ``taskset``, cpusets), and
* its cgroup CPU quota, rounded up: cgroup v2 ``cpu.max`` (``"200000 100000"`` = 2 cores, ``"max ..."``
  = no limit) or cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (a quota of -1 = no limit).
  This is what ``docker run --cpus 2`` and a Kubernetes ``resources.limits.cpu: 2`` set. The quota
  throttles and leaves the affinity alone: a pod limited to 2 CPUs on a 64-core node sees 64 CPUs, and
  64 processes (or OpenMP threads) would then share 2 cores' worth of time slices.

The quota is read from the process's own cgroup (``/proc/self/cgroup``) where its hierarchy is mounted
(``/proc/self/mountinfo``, so a container that sees its cgroup at the mount's root is read right), and
from each ancestor up to the mount: a limit set on a parent (a Kubernetes pod, a systemd slice) counts.
When both hierarchies are mounted (a hybrid host) the lowest limit wins. The file tree is a parameter
(``root``): the tests write cgroup-like trees and read them with the same code.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class _Mount:
    root: PurePosixPath  # the cgroup the mount shows at its mount point
    point: PurePosixPath  # where it is mounted


def affinity() -> int:
    """CPUs this process may run on: respects taskset and cpusets, unlike os.cpu_count()."""
    return len(os.sched_getaffinity(0))


def cores(root: Path = Path("/")) -> int:
    """Cores this process may use: its affinity, capped by its cgroup CPU quota rounded up (at least 1)."""
    quota = cpu_quota(root)
    count = affinity()
    return count if quota is None else max(1, min(count, math.ceil(quota)))


def cpu_quota(root: Path = Path("/")) -> float | None:
    """The cgroup CPU quota of this process in cores (``1.5`` for 150 ms per 100 ms), or None when no
    hierarchy this process can read sets one. ``root``: where ``proc/`` and the cgroup mounts are."""
    try:
        membership = (root / "proc/self/cgroup").read_text()
        mountinfo = (root / "proc/self/mountinfo").read_text()
    except OSError:
        return None
    v2, v1 = _mounts(mountinfo)
    limits = []
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "" and v2 is not None:
            limits.append(_lowest(root, v2, path, _v2_limit))
        elif "cpu" in controllers.split(",") and v1 is not None:
            limits.append(_lowest(root, v1, path, _v1_limit))
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def _mounts(mountinfo: str) -> tuple[_Mount | None, _Mount | None]:
    """The cgroup v2 mount and the cgroup v1 mount of the ``cpu`` controller, from ``/proc/self/mountinfo``
    (fields: id, parent, device, root, mount point, options, optional fields, ``-``, type, source, super
    options)."""
    v2 = v1 = None
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(after) < 3:
            continue
        mount = _Mount(PurePosixPath(_unescape(fields[3])), PurePosixPath(_unescape(fields[4])))
        if after[0] == "cgroup2" and v2 is None:
            v2 = mount
        elif after[0] == "cgroup" and "cpu" in after[2].split(",") and v1 is None:
            v1 = mount
    return v2, v1


def _unescape(field: str) -> str:
    """mountinfo writes a space, tab, newline or backslash in a path as an octal escape (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def _lowest(root: Path, mount: _Mount, path: str, read: Callable[[Path], float | None]) -> float | None:
    """The lowest limit ``read`` finds in the cgroup ``path`` and its ancestors, up to the mount point."""
    cgroup = PurePosixPath(path)
    # The mount shows the cgroup ``mount.root`` at its mount point. A cgroup outside it (another
    # namespace's view) is read from the mount point itself: the closest this process can see.
    rel = cgroup.relative_to(mount.root) if cgroup.is_relative_to(mount.root) else PurePosixPath()
    top = root / str(mount.point).lstrip("/")
    here = top / str(rel).lstrip("/") if str(rel) != "." else top
    found: list[float] = []
    while True:
        if here.is_dir():
            limit = read(here)
            if limit is not None:
                found.append(limit)
        if here == top or top not in here.parents:
            break
        here = here.parent
    return min(found) if found else None


def _v2_limit(directory: Path) -> float | None:
    """``cpu.max``: ``"$MAX $PERIOD"``, ``max`` for no limit."""
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return _ratio(quota, period)


def _v1_limit(directory: Path) -> float | None:
    """``cpu.cfs_quota_us`` (-1 for no limit) over ``cpu.cfs_period_us``."""
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    if quota == "max":
        return None
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def share_openmp(workers: int) -> None:
    """Give each of ``workers`` processes its share of the cores for OpenMP models (HistGradientBoosting,
    LightGBM, ...), unless the operator set OMP_NUM_THREADS. N workers each running an OpenMP pool of one
    thread per core oversubscribe the CPU: measured here, 2 serve workers halved 1-connection throughput.
    One process gets :func:`cores`: the OpenMP runtime itself counts the affinity, not the CPU quota.
    Call before the worker processes start (they inherit the environment) and before this process loads
    an OpenMP runtime (it reads the variable when loaded)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores() // max(1, workers))))


def openmp_threads() -> int | None:
    """The threads an OpenMP parallel region of this process would start (the runtime's own answer, through
    threadpoolctl), or None when no OpenMP runtime is loaded (the bundle needs none)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - comes with scikit-learn
        return None
    counts = [int(pool["num_threads"]) for pool in threadpool_info() if pool.get("user_api") == "openmp"]
    return max(counts) if counts else None
