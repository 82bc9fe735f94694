"""A real Spark standalone cluster for tests: one master and two workers, started from the pyspark
distribution (``$SPARK_HOME/bin/spark-class``) as processes on 127.0.0.1, torn down at the end.

Use the session fixture ``spark_cluster`` (one cluster per test run: it takes ~10-20 s to start on
2 cores). Register it where tests need it, e.g. ``from spark_cluster import spark_cluster`` in a
test module, or ``pytest_plugins = ("spark_cluster",)`` in ``tests/conftest.py`` to share it.

Without Java or pyspark the fixture skips, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MASTER_UP = re.compile(r"Starting Spark master at (spark://\S+)")
WORKER_REGISTERED = "Successfully registered with master"


def spark_home() -> Path | None:
    try:
        import pyspark
    except ImportError:
        return None
    return Path(pyspark.__file__).parent


def spark_env(conf_dir: Path | None = None) -> dict[str, str]:
    """The environment every Spark process of the tests gets: loopback only, the venv's python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCORER_", "SPARK_", "PYSPARK_"))}
    home = spark_home()
    if home is not None:
        env["SPARK_HOME"] = str(home)
    env.update(SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    if conf_dir is not None:
        env["SPARK_CONF_DIR"] = str(conf_dir)
    return env


def require_spark() -> Path:
    """pyspark's SPARK_HOME, or skip (fail under CI=true) when Spark cannot run here."""
    home = spark_home()
    java = shutil.which("java") or (os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"], "bin", "java"))
    missing = "pyspark is not installed" if home is None else "no Java (java on PATH or JAVA_HOME)" if not java else None
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"Spark tests cannot run: {missing}")
        pytest.skip(f"Spark tests need Java 17 and pyspark: {missing}")
    assert home is not None
    return home


@dataclass
class StandaloneCluster:
    url: str  # spark://127.0.0.1:<port>
    workdir: Path
    conf_dir: Path  # SPARK_CONF_DIR for drivers (spark-defaults.conf)
    startup_seconds: float = 0.0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return spark_env(self.conf_dir)

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in self.logs:
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def executor_dirs(self) -> list[Path]:
        """One directory per executor a worker launched (``<work-dir>/<app-id>/<executor-id>``)."""
        return sorted(p for p in self.workdir.glob("worker*/work/app-*/*") if p.is_dir())


def _wait_for(cluster: StandaloneCluster, what: str, done: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        for proc in cluster.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a Spark process exited ({proc.returncode}) while waiting for {what}:\n"
                                   + cluster.log_tail())
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}:\n" + cluster.log_tail())
        time.sleep(0.1)


def _start(cluster: StandaloneCluster, name: str, cls: str, *args: str) -> Path:
    home = spark_home()
    assert home is not None
    log = cluster.workdir / f"{name}.log"
    env = spark_env()
    env["SPARK_DAEMON_MEMORY"] = "256m"  # the master and worker daemons themselves; executors get their own
    env["SPARK_CONF_DIR"] = str(cluster.workdir / "daemon-conf")  # empty: no user config leaks in
    with open(log, "wb") as out:
        # its own process group: teardown kills the daemon and everything it started (executors, Python workers)
        proc = subprocess.Popen([str(home / "bin" / "spark-class"), cls, *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=cluster.workdir, start_new_session=True)
    cluster.procs.append(proc)
    cluster.logs.append(log)
    return log


@contextlib.contextmanager
def standalone_cluster(workdir: Path, *, workers: int = 2, defaults: dict[str, str] | None = None,
                       timeout: float = 180.0) -> Iterator[StandaloneCluster]:
    """Start a master and ``workers`` workers (1 core, 1 GiB each) on 127.0.0.1; stop them on exit.

    ``defaults`` go to ``spark-defaults.conf`` in :attr:`StandaloneCluster.conf_dir`, for drivers
    started with :meth:`StandaloneCluster.env`.
    """
    (workdir / "daemon-conf").mkdir(parents=True, exist_ok=True)
    conf_dir = workdir / "driver-conf"
    conf_dir.mkdir(exist_ok=True)
    (conf_dir / "spark-defaults.conf").write_text("".join(f"{k} {v}\n" for k, v in (defaults or {}).items()))
    cluster = StandaloneCluster(url="", workdir=workdir, conf_dir=conf_dir)
    started = time.monotonic()
    try:
        master_log = _start(cluster, "master", "org.apache.spark.deploy.master.Master",
                            "--host", "127.0.0.1", "--port", "0", "--webui-port", "0")
        _wait_for(cluster, "the master", lambda: MASTER_UP.search(master_log.read_text(errors="replace")), timeout)
        found = MASTER_UP.search(master_log.read_text(errors="replace"))
        assert found is not None
        cluster.url = found.group(1)
        worker_logs = []
        for i in range(1, workers + 1):
            work = workdir / f"worker{i}" / "work"
            work.mkdir(parents=True)
            worker_logs.append(_start(cluster, f"worker{i}", "org.apache.spark.deploy.worker.Worker", cluster.url,
                                      "--host", "127.0.0.1", "--port", "0", "--webui-port", "0",
                                      "--cores", "1", "--memory", "1g", "--work-dir", str(work)))
        _wait_for(cluster, f"{workers} workers to register",
                  lambda: all(WORKER_REGISTERED in p.read_text(errors="replace") for p in worker_logs), timeout)
        cluster.startup_seconds = time.monotonic() - started
        yield cluster
    finally:
        _stop(cluster.procs)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in reversed(procs):  # workers (and their executors) before the master
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + 15
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        if all(p.poll() is not None for p in procs):
            return


# Drivers of the tests: both executors registered before the first task (so the work is spread),
# every input file its own partition, small executors.
TEST_DEFAULTS = {
    "spark.scheduler.minRegisteredResourcesRatio": "1.0",
    "spark.scheduler.maxRegisteredResourcesWaitingTime": "60s",
    "spark.sql.files.openCostInBytes": "1",
    "spark.sql.files.maxPartitionBytes": "1m",
    "spark.executor.memory": "512m",
    "spark.task.maxFailures": "2",  # a failing task is retried once (default 4): failures stay quick
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """A running 2-worker standalone cluster, shared by the whole test session."""
    require_spark()
    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster"), defaults=TEST_DEFAULTS) as cluster:
        sys.stderr.write(f"\nSpark standalone cluster {cluster.url} up in {cluster.startup_seconds:.1f}s\n")
        yield cluster
