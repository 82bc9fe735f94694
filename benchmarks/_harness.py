"""Helpers shared by the benchmark scripts (run them from the repository root or anywhere).

The one definition of the **in-process limit** every benchmark compares against (``model_call``,
``time_call``, ``baseline``; ``run_baseline`` measures it in a child pinned like the server and also
returns the in-process predictions that every benchmark checks its answers against with
``check_answers``), the facts recorded with every result (``run_facts``) and the committed results
files (``write_results``). Besides:
Process bookkeeping (everything started is killed on exit, error and Ctrl-C), CPU/RSS accounting
of process trees from ``/proc``, a generic HTTP server process with a readiness probe, and the
``wrk`` driver (a generated Lua script POSTs one body; its ``done()`` prints the latency
percentiles as JSON). Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import hashlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUNDLES_DIR = REPO / "bundles"
RESULTS_DIR = REPO / "benchmarks" / "results"
HOST = "127.0.0.1"  # the only address the benchmarks ever talk to

SERVER_CPUS = "1"  # single-worker servers and the in-process child
CLIENT_CPUS = "0"  # wrk and the orchestrating script


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# bundles
# ---------------------------------------------------------------------------------------


def load_build_module() -> Any:
    """bundles/build.py (the example bundles and their data generators), imported by path."""
    if "bundles_build" in sys.modules:
        return sys.modules["bundles_build"]
    path = BUNDLES_DIR / "build.py"
    if not path.is_file():
        raise SystemExit(f"{path} not found: it provides the example bundles and their data generators")
    spec = importlib.util.spec_from_file_location("bundles_build", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bundles_build"] = module  # dataclasses/pickle look modules up by name
    spec.loader.exec_module(module)
    return module


# name -> (frame generator in build.py, feature list in build.py)
BUNDLE_DATA = {
    "tabular": ("make_tabular_frame", "TABULAR_FEATURES"),
    "spam": ("make_spam_frame", "SPAM_FEATURES"),
    "text": ("make_text_frame", "TEXT_FEATURES"),
}


def features(build: Any, name: str) -> list[str]:
    return list(getattr(build, BUNDLE_DATA[name][1]))


def make_frame(build: Any, name: str, n: int, seed: int) -> Any:
    """``n`` request rows (feature columns only) for bundle ``name``; use a seed other than training's."""
    make = getattr(build, BUNDLE_DATA[name][0])
    return make(n, seed=seed)[features(build, name)].reset_index(drop=True)


def is_built(name: str, root: Path) -> bool:
    d = root / name
    if name == "spam":
        return all((d / p).is_file() for p in ("artifacts/first_model.pkl", "artifacts/second_model.pkl",
                                                 "code/custom_preprocess.py"))
    return (d / "artifacts" / "model.joblib").is_file()


def sha256_file(path: Path) -> str:
    return load_build_module().sha256_file(path)  # one implementation, the example builder's


def code_state() -> dict[str, Any]:
    """What was measured: git HEAD, uncommitted changes under scorer/ and bundles/, a digest of scorer/*.py.

    The package is installed editable, so every run uses scorer/ as it is at that moment."""
    h = hashlib.sha256()
    for f in sorted((REPO / "scorer").rglob("*.py")):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "git_head": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git("status", "--porcelain", "--", "scorer", "bundles").splitlines(),
        "scorer_py_sha256": h.hexdigest()[:16],
    }


# ---------------------------------------------------------------------------------------
# process bookkeeping: everything we start is killed on exit / ctrl-c
# ---------------------------------------------------------------------------------------

CHILDREN: list[subprocess.Popen] = []  # servers, started in their own session (killpg on cleanup)
FOREGROUND: list[subprocess.Popen] = []  # wrk, in-process child


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session), SIGKILL after ``grace``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
    # Workers of a multi-process server live in the same process group: make sure none is left.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def cleanup() -> None:
    for proc in list(FOREGROUND):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    FOREGROUND.clear()
    for proc in list(CHILDREN):
        stop_group(proc)
    CHILDREN.clear()


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Kill what we started on exit, SIGTERM and Ctrl-C."""
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def run_foreground(cmd: list[str], **kw: Any) -> tuple[int, str]:
    """Run a short-lived child (killed by cleanup() if we are interrupted); returns (exit code, stdout)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    FOREGROUND.append(proc)
    try:
        out, _ = proc.communicate()
    finally:
        if proc in FOREGROUND:
            FOREGROUND.remove(proc)
    return proc.returncode, out


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 60.0,
                 content_type: str = "application/json") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def cpu_pinning_available() -> bool:
    return shutil.which("taskset") is not None and hasattr(os, "sched_getaffinity") and {0, 1} <= os.sched_getaffinity(0)


def pinned(cpus: str | None, cmd: list[str], pin: bool = True) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if pin and cpus is not None else cmd


def clean_env() -> dict[str, str]:
    """The environment for servers: no SCORER_* overrides, so defaults are what is measured."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}


def f_ms(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def f_num(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:,.2f}" if x < 10 else f"{x:,.0f}"


# ---------------------------------------------------------------------------------------
# CPU and memory of process trees (Linux /proc)
# ---------------------------------------------------------------------------------------


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants (Linux /proc), each once."""
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        if p in found:
            continue
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return found


def tree_rss_mib(pid: int) -> float | None:
    """RSS of a process and all its descendants, in MiB."""
    total_kib = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total_kib += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return round(total_kib / 1024, 1) if total_kib else None


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_busy_s() -> dict[str, float]:
    """Busy seconds (user+nice+system+irq+softirq) per CPU line of /proc/stat ('cpu' = all)."""
    out: dict[str, float] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu"):
                    break
                name, *vals = line.split()
                v = [int(x) for x in vals]
                out[name] = (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK
                out[name + "_steal"] = (v[7] if len(v) > 7 else 0) / CLK_TCK
    except OSError:
        pass
    return out


def tree_cpu_s(pid: int | None) -> float:
    """utime+stime of a process tree (all threads), in seconds."""
    if pid is None:
        return 0.0
    total = 0.0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            continue
    return total


class CpuWatch:
    """CPU used on the machine during a window that our own processes do not account for.

    ``foreign`` = all busy CPU time − (server tree + this process + children waited for in the
    window, e.g. wrk). It is other processes' load plus some kernel work (loopback softirq) that
    is not charged to any process; a few % is normal, tens of % mean a busy machine.
    """

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self.t0 = time.perf_counter()
        self.busy0 = cpu_busy_s()
        self.srv0 = tree_cpu_s(server_pid)
        self.os0 = os.times()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        busy1, srv1, os1 = cpu_busy_s(), tree_cpu_s(self.server_pid), os.times()
        if not busy1 or not self.busy0 or wall <= 0:
            return {}
        d_busy = {k: busy1[k] - self.busy0.get(k, 0.0) for k in busy1}
        ours = (srv1 - self.srv0) + (os1.user - self.os0.user) + (os1.system - self.os0.system) + (
            os1.children_user - self.os0.children_user) + (os1.children_system - self.os0.children_system)
        res = {
            "wall_s": wall,
            "server_cpu_pct": 100 * (srv1 - self.srv0) / wall,
            "foreign_cpu_pct": max(0.0, 100 * (d_busy.get("cpu", 0.0) - ours) / wall),
            # Time the hypervisor ran something else while this VM wanted the CPU.
            "steal_pct": 100 * d_busy.get("cpu_steal", 0.0) / wall,
        }
        for k in ("cpu0", "cpu1"):
            if k in d_busy:
                res[f"{k}_busy_pct"] = 100 * d_busy[k] / wall
        return res


def idle_load(seconds: float = 2.0) -> float:
    """% of one core busy while this script runs nothing: the machine's background load."""
    w = CpuWatch()
    time.sleep(seconds)
    return w.stop().get("foreign_cpu_pct", 0.0)


# ---------------------------------------------------------------------------------------
# a server process
# ---------------------------------------------------------------------------------------


class ServerProcess:
    """An HTTP server started in its own session (pinned with taskset), polled until ``ready_path`` is 200.

    ``cold_start_s``: process start to the first 200 from the readiness probe.
    """

    def __init__(self, label: str, cmd: list[str], port: int, ready_path: str, logs: Path, *,
                 cpus: str | None = SERVER_CPUS, pin: bool = True, env: dict[str, str] | None = None,
                 cwd: Path = REPO) -> None:
        self.label = label
        self.port = port
        self.ready_path = ready_path
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{label.replace(' ', '_')}-{port}.log"
        self.cmd = pinned(cpus, cmd, pin)
        self._log = open(self.log_path, "wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=env if env is not None else clean_env(), cwd=cwd)
        CHILDREN.append(self.proc)
        self.cold_start_s: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 180.0, path: str | None = None) -> float:
        """Seconds from process start to the first 200 on ``path`` (default: the readiness probe)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, _ = http_request(self.port, "GET", path or self.ready_path, timeout=2)
                if status == 200:
                    elapsed = time.perf_counter() - self.started
                    if path is None and self.cold_start_s is None:
                        self.cold_start_s = elapsed
                    return elapsed
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.label} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def rss_mib(self) -> float | None:
        return tree_rss_mib(self.proc.pid)

    def n_processes(self) -> int:
        return len(tree_pids(self.proc.pid))

    def wait_idle(self, timeout: float = 120.0) -> float:
        """Wait until the server has finished work left over from the last wrk run.

        wrk stops sending when its time is up, but requests already in flight (up to one per
        connection, e.g. 4 x 10,000 rows or 64 queued rows) are still processed after it exits; the
        next run must not start against a busy server. Idle = < 5 % CPU over 0.25 s.
        """
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            c0 = tree_cpu_s(self.proc.pid)
            time.sleep(0.25)
            if tree_cpu_s(self.proc.pid) - c0 < 0.0125:
                break
        return time.perf_counter() - t0

    def stop(self) -> None:
        stop_group(self.proc)
        if self.proc in CHILDREN:
            CHILDREN.remove(self.proc)
        self._log.close()


# ---------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------

LUA_TEMPLATE = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "@CONTENT_TYPE@"
local f = assert(io.open("@BODY@", "rb"))
wrk.body = f:read("*a")
f:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"mean_us":%.1f,"max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


def write_lua(path: Path, body_file: Path, content_type: str = "application/json") -> Path:
    """A wrk script that POSTs the bytes of ``body_file`` on every request."""
    path.write_text(LUA_TEMPLATE.replace("@BODY@", str(body_file)).replace("@CONTENT_TYPE@", content_type))
    return path


def wrk_version() -> str:
    if shutil.which("wrk") is None:
        return "not installed"
    _, out = run_foreground(["wrk", "-v"])
    return out.strip().splitlines()[0].split(" Copyright")[0] if out.strip() else "unknown"


def run_wrk(port: int, path: str, lua: Path, conns: int, seconds: float, pin: bool) -> dict[str, Any]:
    """One wrk run (1 thread, ``conns`` connections, pinned to the client core); its Lua summary as a dict."""
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "30s", "-s", str(lua), f"http://{HOST}:{port}{path}"]
    code, out = run_foreground(pinned(CLIENT_CPUS, cmd, pin))
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if code != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {code}):\n{out}")
    return json.loads(line[len("WRKJSON "):])


def measure(server: ServerProcess, path: str, lua: Path, rows: int, conns: int, duration: float, warmup: float,
            pin: bool, probe: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Wait idle, warm up, wait idle, measured wrk run; ``probe()`` is called just before and after it
    (after the server drained) and its results stored under ``probe_before`` / ``probe_after``."""
    server.wait_idle()
    if warmup > 0:
        run_wrk(server.port, path, lua, conns, warmup, pin)
        server.wait_idle()
    before = probe() if probe else None
    watch = CpuWatch(server.pid)
    w = run_wrk(server.port, path, lua, conns, duration, pin)
    cpu = watch.stop()
    drain_s = server.wait_idle()
    after = probe() if probe else None
    secs = w["duration_us"] / 1e6
    errors = {k: w[k] for k in ("connect", "read", "write", "status", "timeout")}
    res: dict[str, Any] = {
        "rows_per_request": rows,
        "connections": conns,
        "seconds": secs,
        "requests": w["requests"],
        "req_s": w["requests"] / secs,
        "rows_s": w["requests"] * rows / secs,
        # Only 2xx answers count as served: non-2xx (wrk's "status" errors) are excluded here.
        "ok_rows_s": (w["requests"] - w["status"]) * rows / secs,
        "p50_ms": w["p50_us"] / 1e3 if w["requests"] else None,
        "p90_ms": w["p90_us"] / 1e3 if w["requests"] else None,
        "p99_ms": w["p99_us"] / 1e3 if w["requests"] else None,
        "p999_ms": w["p999_us"] / 1e3 if w["requests"] else None,
        "mean_ms": w["mean_us"] / 1e3,
        "max_ms": w["max_us"] / 1e3,
        "errors": errors,
        "non_2xx": w["status"],
        "socket_errors": sum(v for k, v in errors.items() if k != "status"),
        "ok_requests": w["requests"] - w["status"],
        "cpu": cpu,
        "drain_after_s": drain_s,
    }
    if probe:
        res["probe_before"], res["probe_after"] = before, after
    return res


# ---------------------------------------------------------------------------------------
# the in-process limit: ONE definition for every benchmark
# ---------------------------------------------------------------------------------------
#
# The limit is the loaded Scorer's own model call on the same rows: the bundle model's
# ``preprocess`` + ``predict`` (the public ``scorer.CustomPreprocessor`` interface of
# ``Scorer.model``) on rows already checked by the schema (``Scorer.prepare``), timed in a
# process pinned to the server's core (``SERVER_CPUS``), with WARMUP_CALLS untimed calls first and
# the **median** of at least ``min_repeats`` calls over a time budget. Schema coercion, output
# shaping, codecs and HTTP are what a served request adds on top of it.

WARMUP_CALLS = 3


def repeat_policy(rows: int, quick: bool) -> tuple[int, float]:
    """(minimum repeats, time budget in s) for one timing of ``rows`` rows; the same for every benchmark."""
    big = rows >= 10_000
    if quick:
        return (3, 1.0) if big else (20, 0.5)
    return (15, 8.0) if big else (200, 4.0)


def time_call(fn: Callable[[], Any], *, min_repeats: int, budget_s: float, max_repeats: int = 20_000) -> dict[str, Any]:
    """WARMUP_CALLS untimed calls, then at least ``min_repeats`` timed calls and until ``budget_s`` is spent."""
    for _ in range(WARMUP_CALLS):
        fn()
    watch = CpuWatch()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": times[0] * 1e3,
        "p90_ms": times[int(0.9 * (len(times) - 1))] * 1e3,
        "repeats": len(times),
        "warmup_calls": WARMUP_CALLS,
        "cpu": watch.stop(),
    }


def model_call(scorer: Any, frame: Any) -> Callable[[], Any]:
    """The in-process limit's call: ``scorer.model``'s preprocess + predict on ``frame`` after the schema check
    (a columnar model's ``predict_columns`` on the checked columns: the call the server makes)."""
    from scorer.table import ColumnarModel

    table = scorer.prepare(frame)
    model = scorer.model
    if isinstance(model, ColumnarModel):  # what the server calls for it (Scorer.predict_table): no DataFrames
        columns = {name: table[name] for name in table.columns}
        return lambda: model.predict_columns(columns, table.n_rows)
    prepared = table.to_frame()
    return lambda: model.predict(model.preprocess(prepared))


def baseline(scorer: Any, frame: Any, quick: bool = False,
             timer: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """Time ``model_call`` on ``frame`` with the repeat policy; adds ``rows`` and ``rows_s`` (from the median)."""
    reps, budget = repeat_policy(len(frame), quick)
    res = (timer or time_call)(model_call(scorer, frame), min_repeats=reps, budget_s=budget)
    res["rows"] = len(frame)
    res["rows_s"] = len(frame) / (res["median_ms"] / 1e3)
    res["definition"] = ("Scorer.model.predict(Scorer.model.preprocess(Scorer.prepare(rows))), or predict_columns "
                         "for a columnar model, median")
    return res


def expected_predictions(scorer: Any, frame: Any) -> dict[str, Any]:
    """In-process predictions of ``frame`` (``Scorer.score``) as a split dict: what every server must answer."""
    out = scorer.score(frame)
    return {"columns": [str(c) for c in out.columns], "data": out.astype(object).values.tolist()}


class AnswerMismatch(RuntimeError):
    """A benchmark got answers that differ from in-process predictions of the same rows."""


def check_answers(got: Any, expected: dict[str, Any], label: str, rtol: float = 1e-6, atol: float = 1e-9) -> float:
    """Fail loudly unless ``got`` (a DataFrame) has the expected predictions; returns the max abs probability diff.

    Columns named like ``probability_*`` (and any float column) are compared with numpy.allclose, the
    others for equality."""
    import numpy as np
    import pandas as pd

    want = pd.DataFrame(expected["data"], columns=expected["columns"])
    got = pd.DataFrame(got).reset_index(drop=True)
    if len(got) != len(want):
        raise AnswerMismatch(f"{label}: {len(got)} answers for {len(want)} rows")
    missing = [c for c in want.columns if c not in got.columns]
    if missing:
        raise AnswerMismatch(f"{label}: answer columns {list(got.columns)} lack {missing}")
    worst = 0.0
    for c in want.columns:
        w, g = want[c], got[c]
        try:
            wf, gf = w.to_numpy(dtype=float), g.to_numpy(dtype=float)
        except (TypeError, ValueError):
            if not (w.astype(str).to_numpy() == g.astype(str).to_numpy()).all():
                bad = int(np.flatnonzero(w.astype(str).to_numpy() != g.astype(str).to_numpy())[0])
                raise AnswerMismatch(f"{label}: column {c!r} row {bad}: got {g.iloc[bad]!r}, in-process {w.iloc[bad]!r}")
            continue
        if not np.allclose(gf, wf, rtol=rtol, atol=atol, equal_nan=True):
            bad = int(np.flatnonzero(~np.isclose(gf, wf, rtol=rtol, atol=atol, equal_nan=True))[0])
            raise AnswerMismatch(f"{label}: column {c!r} row {bad}: got {gf[bad]!r}, in-process {wf[bad]!r}")
        if len(wf):
            worst = max(worst, float(np.nanmax(np.abs(gf - wf))) if np.isfinite(gf - wf).any() else 0.0)
    return worst


def run_baseline(bundle: Path, frames: dict[int, Any], work: Path, *, pin: bool, quick: bool = False,
                 settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """``baseline`` of each frame (and its ``expected_predictions``) in a child pinned to SERVER_CPUS.

    Returns {"by_rows": {"N": baseline}, "expected": {"N": split dict}, "affinity": [...], "load_seconds": s}."""
    import pickle

    work.mkdir(parents=True, exist_ok=True)
    src, out = work / "baseline-frames.pkl", work / "baseline.json"
    src.write_bytes(pickle.dumps({"frames": frames, "settings": settings or {}}))
    cmd = [sys.executable, str(Path(__file__).resolve()), "baseline", str(bundle), str(src), str(out)]
    if quick:
        cmd.append("--quick")
    code, text = run_foreground(pinned(SERVER_CPUS, cmd, pin), cwd=REPO)
    if code != 0:
        raise RuntimeError(f"in-process baseline of {bundle} failed (exit {code}):\n{text}")
    return json.loads(out.read_text())


def _baseline_child(bundle: str, src: str, out: str, quick: bool) -> int:
    import pickle

    from scorer.core import Scorer
    from scorer.load_options import LoadOptions
    from scorer.settings import Settings

    job = pickle.loads(Path(src).read_bytes())
    t0 = time.perf_counter()
    scorer = Scorer.load(bundle, LoadOptions.from_settings(Settings(**job["settings"])) if job["settings"] else None)
    load_s = time.perf_counter() - t0
    res: dict[str, Any] = {"load_seconds": load_s, "by_rows": {}, "expected": {},
                           "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    for n, frame in job["frames"].items():
        res["expected"][str(n)] = expected_predictions(scorer, frame)
        res["by_rows"][str(n)] = baseline(scorer, frame, quick)
    Path(out).write_text(json.dumps(res))
    return 0


# ---------------------------------------------------------------------------------------
# what every results file records, and the committed results files
# ---------------------------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def run_facts(pin: bool) -> dict[str, Any]:
    """Commit (and whether the tree was dirty), date, machine and load at the start of a run."""
    dirty = [line for line in _git("status", "--porcelain").splitlines() if "benchmarks/results/" not in line]
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(dirty),
        "dirty_files": [line.split(maxsplit=1)[1] for line in dirty],
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "pinning": {"pinned": pin, "server_cpus": SERVER_CPUS if pin else None, "client_cpus": CLIENT_CPUS if pin else None},
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def finish_facts(facts: dict[str, Any], started: float) -> dict[str, Any]:
    """Add the load average at the end, the elapsed time and whether the commit changed during the run."""
    facts["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    facts["elapsed_s"] = round(time.perf_counter() - started, 1)
    facts["commit_changed_during_run"] = _git("rev-parse", "HEAD") != facts["commit"]
    return facts


def write_results(name: str, facts: dict[str, Any], figures: dict[str, Any], raw: Any) -> Path:
    """``benchmarks/results/<name>.json`` (committed): the run's facts, the figures the READMEs quote, all raw numbers."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "run": facts, "figures": figures, "raw": raw}, indent=1,
                               default=str) + "\n")
    log(f"wrote {path.relative_to(REPO)}")
    return path


if __name__ == "__main__" and len(sys.argv) >= 5 and sys.argv[1] == "baseline":
    sys.exit(_baseline_child(sys.argv[2], sys.argv[3], sys.argv[4], "--quick" in sys.argv[5:]))
