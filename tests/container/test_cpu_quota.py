"""``docker run --cpus``: the image's ``scorer batch`` sizes itself by the container's CPU quota.

The quota throttles and leaves the CPU affinity alone: before the fix, a container limited to 1 CPU on
this 2-CPU machine forked 2 batch processes and gave each an OpenMP pool of 2 threads. The batch log line
names the processes, what ``scorer._cpu`` read (affinity, quota), ``OMP_NUM_THREADS`` and the threads the
OpenMP runtime itself reports (threadpoolctl: the embedded example bundle is scikit-learn's, which loads
libgomp). The same test runs the baselines on the same image: ``--cpus 2`` gives 2 processes, and
``--cpus 2 --workers 1`` one process whose OpenMP pool has 2 threads.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from .conftest import DOCKER

LINE = re.compile(r"scoring with (\d+) process(?:es)?: (\d+) core\(s\) to use \(CPU affinity (\d+), CPU quota ([^)]+)\); "
                  r"OMP_NUM_THREADS=(\S+), OpenMP threads here: (\S+)")


def batch_in_container(image: str, inp: Path, out: Path, cpus: str, *args: str) -> subprocess.Popen[str]:
    """Start ``docker run --cpus CPUS IMAGE batch --input /in --output /out ARGS`` (the embedded example
    bundle)."""
    out.mkdir()
    out.chmod(0o777)
    name = f"i16-shard-cpus-{os.getpid()}-{out.name}"
    return subprocess.Popen([DOCKER, "run", "--rm", "--name", name, "--network", "none", "--cpus", cpus,
                             "-e", "SCORER_LOG_FORMAT=text", "-v", f"{inp}:/in:ro", "-v", f"{out}:/out:rw",
                             image, "batch", "--input", "/in", "--output", "/out", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def figures(proc: subprocess.Popen[str], out: Path) -> dict[str, str]:
    """The figures of a finished run's log line."""
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, text
    assert (out / "_SUCCESS").exists(), text
    found = LINE.search(text)
    assert found, f"no 'scoring with N processes' line:\n{text}"
    keys = ("processes", "cores", "affinity", "quota", "omp_num_threads", "openmp_threads")
    return dict(zip(keys, found.groups(), strict=True))


def test_batch_processes_and_openmp_threads_follow_the_cpu_quota(image: dict[str, object], public_dir: Path) -> None:
    """--cpus 1: one batch process and one OpenMP thread, although the container may run on every CPU;
    --cpus 2 (the baseline, same image, same input): two processes; --cpus 2 --workers 1: two OpenMP threads."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a machine with 2 CPUs or more: the baseline is 2")
    inp = public_dir / "in"
    inp.mkdir()
    rows = [{"feature1": float(i), "feature2": "this is spam" if i % 2 else "hello there", "feature3": 2.0}
            for i in range(200)]
    pd.DataFrame(rows).to_csv(inp / "rows.csv", index=False)
    inp.chmod(0o755)
    (inp / "rows.csv").chmod(0o644)
    tag = str(image["name"])

    # at once: what is read and decided does not depend on how busy the host is
    runs = {name: (batch_in_container(tag, inp, public_dir / name, cpus, *args), public_dir / name)
            for name, cpus, args in (("cpus1", "1", ()), ("cpus2", "2", ()), ("cpus2w1", "2", ("--workers", "1")))}
    one, two, two_one = (figures(proc, out) for proc, out in runs.values())

    for run in (one, two, two_one):  # the quota throttles; the affinity is the host's
        assert int(run["affinity"]) >= 2, run
    assert one == {**one, "processes": "1", "cores": "1", "quota": "1", "omp_num_threads": "1", "openmp_threads": "1"}
    assert two == {**two, "processes": "2", "cores": "2", "quota": "2", "omp_num_threads": "1", "openmp_threads": "1"}
    assert two_one == {**two_one, "processes": "1", "cores": "2", "quota": "2", "omp_num_threads": "2",
                       "openmp_threads": "2"}
    assert (public_dir / "cpus1" / "rows.csv").read_bytes() == (public_dir / "cpus2" / "rows.csv").read_bytes()
