"""Serving benchmark: in-process limit vs. `scorer serve` under wrk, per example bundle.

    python benchmarks/bench_serve.py [--bundle tabular|spam|text|all] [--duration 10] [--quick]

See benchmarks/README.md for what is measured and how to read it. In short, per bundle:

1. In-process (a child process pinned to core 1, like the server): ``Scorer.score(df)`` for
   1 / 100 / 10,000 rows, the bare model call on the same rows, and the JSON decode/encode
   the server does around it. Medians of many repeats.
2. Served: ``scorer serve BUNDLE`` pinned to core 1, ``wrk`` (one thread) pinned to core 0
   POSTing pandas ``to_json(orient="split")`` bodies. /metrics is scraped around the
   64-connection run to show how many requests each model call served.
3. ``--workers 2`` (server on both cores, wrk still on core 0): 1 and 64 connections, 1 row,
   to look for the ~40 ms delayed-ACK trap.

Peer columns (MLflow, MLServer) are the measurements of the last ``benchmarks/run``
(``benchmarks/results/peers.json``, same machine, same models), when there is one.

Only 127.0.0.1 is ever contacted. Nothing here asserts on timings: it only reports.
Results: ``benchmarks/results/serve-<bundle>.json`` and ``benchmarks/results/serve.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from _harness import (  # noqa: E402 - scripts run by path
    baseline, check_answers, expected_predictions, finish_facts, repeat_policy, run_facts, write_results,
    BUNDLES_DIR, CLIENT_CPUS, FOREGROUND, REPO, RESULTS_DIR, SERVER_CPUS, CpuWatch, ServerProcess, clean_env, cleanup,
    code_state, free_port, cpu_pinning_available, f_ms, f_num, http_request, idle_load, install_cleanup,
    is_built, load_build_module, log, make_frame, measure, pinned, write_lua,
)
from _harness import time_call as harness_time_call  # noqa: E402

HERE = Path(__file__).resolve().parent

MULTI_SERVER_CPUS = "0,1"  # --workers 2 server
ROW_COUNTS = (1, 100, 10_000)
DATA_SEED = 4242  # rows scored here are a holdout draw, not training rows
BUNDLE_NAMES = ("tabular", "spam", "text")

# (rows per request, connections) for the single-worker runs, in this order.
SCENARIOS = ((1, 1), (1, 64), (100, 4), (10_000, 4))
MULTI_SCENARIOS = ((1, 1), (1, 64))
BATCHING_SCENARIO = (1, 64)

# ---------------------------------------------------------------------------------------
# Peers: the last side-by-side run of benchmarks/run (bench_peers.py) on this machine, if any.
# They serve the same tabular and text models; our spam bundle (custom code) has no peer.
# ---------------------------------------------------------------------------------------
PEERS_FILE = RESULTS_DIR / "peers.json"


def measured_peers(name: str) -> dict[str, Any]:
    """{"source": str, "labels": [...], "rows_s": {"ROWSxCONNS": {label: rows/s}}, "p50_ms": {...}} or {}."""
    try:
        data = json.loads(PEERS_FILE.read_text())["raw"]
    except (OSError, ValueError, KeyError):
        return {}
    b = data.get("bundles", {}).get(name)
    if not b:
        return {}
    labels = [s["label"] for s in data.get("servers", []) if s["kind"] != "scorer"]
    rows_s: dict[str, dict[str, float]] = {}
    p50: dict[str, dict[str, float]] = {}
    for point in b["points"]:
        key = f"{point['rows_per_request']}x{point['connections']}"
        for label in labels:
            agg = point["servers"].get(label)
            if agg:
                rows_s.setdefault(key, {})[label] = agg["rows_s"]["mean"]
                p50.setdefault(key, {})[label] = agg["p50_ms"]["mean"]
    return {"source": f"{PEERS_FILE.relative_to(REPO)} ({data['meta']['started']}, "
                      f"{'quick' if data['meta']['quick'] else 'full'} run)",
            "labels": labels, "rows_s": rows_s, "p50_ms": p50}


def prepare_bundle(build, name: str, tmp: Path, rebuild: bool) -> tuple[Path, str]:
    if not rebuild and is_built(name, BUNDLES_DIR):
        return BUNDLES_DIR / name, "bundles/ (prebuilt)"
    log(f"building bundle {name!r} into {tmp} via bundles/build.py ...")
    t0 = time.perf_counter()
    build.build(name, tmp)
    log(f"built {name} in {time.perf_counter() - t0:.1f}s")
    return tmp / name, f"temp build via bundles/build.py ({time.perf_counter() - t0:.0f}s)"


# Shared-machine protection (``--wait-quiet S``): until QUIET["deadline"] (a time.time() value, also
# handed to the in-process child), each measurement first waits for the machine to be quiet and
# is repeated (up to MAX_ATTEMPTS, best kept) if other processes used > ACCEPT_FOREIGN_PCT of a
# core while it ran. After the deadline, measurements are taken once, as they come.
QUIET = {"deadline": 0.0}
QUIET_THRESHOLD_PCT = 15.0
ACCEPT_FOREIGN_PCT = 25.0
MAX_ATTEMPTS = 3


def wait_quiet() -> float | None:
    """Wait (until the deadline) for background load <= threshold. Returns the last sample."""
    if time.time() >= QUIET["deadline"]:
        return None
    load = idle_load(1.0)
    warned = False
    while load > QUIET_THRESHOLD_PCT and time.time() < QUIET["deadline"]:
        if not warned:
            log(f"machine busy ({load:.0f}% of a core used by other processes); waiting for it to calm down ...")
            warned = True
        time.sleep(3)
        load = idle_load(1.0)
    if load > QUIET_THRESHOLD_PCT:
        log(f"WARNING: --wait-quiet deadline passed with background load {load:.0f}% of a core; measuring anyway")
    return load


def foreign_pct(res: dict[str, Any]) -> float:
    return (res.get("cpu") or {}).get("foreign_cpu_pct", 0.0)


def with_retries(run, label: str) -> dict[str, Any]:
    """``run()`` -> result with ``cpu.foreign_cpu_pct``; repeated while contaminated (see QUIET)."""
    best: dict[str, Any] | None = None
    seen: list[float] = []
    for _ in range(MAX_ATTEMPTS):
        wait_quiet()
        res = run()
        seen.append(round(foreign_pct(res), 1))
        if best is None or foreign_pct(res) < foreign_pct(best):
            best = res
        if foreign_pct(res) <= ACCEPT_FOREIGN_PCT or time.time() >= QUIET["deadline"]:
            break
        log(f"{label}: other processes used {foreign_pct(res):.0f}% of a core during the measurement; repeating it")
    assert best is not None
    best["foreign_cpu_pct_per_attempt"] = seen
    return best


# ---------------------------------------------------------------------------------------
# 1. in-process (runs in a child process pinned like the server)
# ---------------------------------------------------------------------------------------


def time_call(fn, *, min_repeats: int, budget_s: float, max_repeats: int = 20_000) -> dict[str, Any]:
    return with_retries(lambda: _time_call(fn, min_repeats=min_repeats, budget_s=budget_s, max_repeats=max_repeats), "in-process timing")


def _time_call(fn, *, min_repeats: int, budget_s: float, max_repeats: int) -> dict[str, Any]:
    return harness_time_call(fn, min_repeats=min_repeats, budget_s=budget_s, max_repeats=max_repeats)


def inprocess_main(name: str, bundle: Path, bodies: Path, out: Path, quick: bool, deadline: float) -> int:
    """Child entry point: time the scoring core without HTTP and write JSON to ``out``."""
    from scorer import codecs
    from scorer.core import Scorer

    QUIET["deadline"] = deadline
    build = load_build_module()
    t0 = time.perf_counter()
    scorer = Scorer.load(bundle)
    load_s = time.perf_counter() - t0
    # The same bundle on scikit-learn (no scoring plan), for the in-process comparison of the two model calls.
    from scorer.load_options import LoadOptions

    plain = Scorer.load(bundle, LoadOptions(scoring_plan="off"))

    frame = make_frame(build, name, max(ROW_COUNTS), DATA_SEED)
    columns = list(scorer.schema.columns) if scorer.schema else None
    results: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    for n in ROW_COUNTS:
        df = frame.head(n).copy()
        body = (bodies / f"{n}.json").read_bytes()
        reps, budget = repeat_policy(n, quick)
        side_budget = budget / 2
        out_frame = scorer.score(df)
        assert len(out_frame) == n
        expected[str(n)] = expected_predictions(scorer, df)
        row = {
            "rows": n,
            "body_bytes": len(body),
            "score": time_call(lambda: scorer.score(df), min_repeats=reps, budget_s=budget),
            # The in-process limit every benchmark uses (benchmarks/_harness.py).
            "limit": baseline(scorer, df, quick, timer=time_call),
            "sklearn_limit": baseline(plain, df, quick, timer=time_call),
            "decode": time_call(lambda: codecs.decode(body, "application/json", columns), min_repeats=reps, budget_s=side_budget),
            "encode": time_call(lambda: codecs.encode(out_frame, codecs.JSON), min_repeats=reps, budget_s=side_budget),
            # The server's whole per-request path minus HTTP: decode -> prepare -> predict -> encode.
            "pipeline": time_call(
                lambda: codecs.encode(scorer.score(codecs.decode(body, "application/json", columns)), codecs.JSON),
                min_repeats=reps,
                budget_s=side_budget,
            ),
        }
        for key in ("score", "pipeline"):
            row[key]["rows_s"] = n / (row[key]["median_ms"] / 1e3)
        results[str(n)] = row
        print(
            f"[inproc {name}] {n:>6} rows: score {row['score']['median_ms']:.3f} ms, limit {row['limit']['median_ms']:.3f} ms, "
            f"decode {row['decode']['median_ms']:.3f} ms, encode {row['encode']['median_ms']:.3f} ms",
            file=sys.stderr,
            flush=True,
        )
    threads = None
    try:
        from threadpoolctl import threadpool_info

        threads = [{k: i.get(k) for k in ("user_api", "internal_api", "num_threads")} for i in threadpool_info()]
    except Exception:  # noqa: BLE001 - informational only
        pass
    payload = {
        "load_seconds": load_s,
        "scoring": scorer.metadata()["scoring"],
        "limit_call": "benchmarks/_harness.py model_call: " + "Scorer.model.predict(Scorer.model.preprocess(Scorer.prepare(rows)))",
        "expected": expected,
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threadpools": threads,
        "by_rows": results,
    }
    out.write_text(json.dumps(payload, indent=2))
    return 0


def run_inprocess(name: str, bundle: Path, bodies: Path, tmp: Path, quick: bool, pin: bool) -> dict[str, Any]:
    out = tmp / f"inproc-{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_inproc", name, str(bundle), str(bodies), str(out),
           "--_quiet-deadline", repr(QUIET["deadline"])]
    if quick:
        cmd.append("--quick")
    watch = CpuWatch()
    proc = subprocess.Popen(pinned(SERVER_CPUS, cmd, pin), cwd=REPO)
    FOREGROUND.append(proc)
    code = proc.wait()
    FOREGROUND.remove(proc)
    if code != 0:
        raise RuntimeError(f"in-process benchmark of {name} failed (exit {code})")
    res = json.loads(out.read_text())
    res["cpu"] = watch.stop()
    return res



# ---------------------------------------------------------------------------------------
# 2. served
# ---------------------------------------------------------------------------------------

METRIC_KEYS = {
    "scorer_batch_requests_sum", "scorer_batch_requests_count", "scorer_batch_rows_sum", "scorer_batch_rows_count",
    "scorer_model_call_seconds_sum", "scorer_model_call_seconds_count",
}
LABELLED_METRIC_KEYS = {
    'scorer_request_duration_seconds_sum{path="/predict"}': "predict_seconds_sum",
    'scorer_request_duration_seconds_count{path="/predict"}': "predict_seconds_count",
}



class Server(ServerProcess):
    """``scorer serve BUNDLE`` (pinned with taskset), ready when ``GET /ready`` is 200."""

    def __init__(self, bundle: Path, workers: int, cpus: str | None, logs: Path, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        port = port or free_port()
        self.workers = workers
        scorer_bin = Path(sys.executable).with_name("scorer")
        cmd = [str(scorer_bin), "serve", str(bundle), "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--log-level", "warning"]
        super().__init__(f"scorer-{workers}w", cmd, port, "/ready", logs, cpus=cpus, pin=cpus is not None,
                         env={**clean_env(), **(env or {})})

    def wait_all_ready(self, timeout: float = 120.0) -> float:
        """With several workers /ready is answered by whichever accepts: wait for 20 200s in a row."""
        deadline = time.perf_counter() + timeout
        streak = 0
        while time.perf_counter() < deadline and streak < 20:
            try:
                status, _ = http_request(self.port, "GET", "/ready", timeout=2)
            except OSError:
                status = 0
            streak = streak + 1 if status == 200 else 0
            if streak == 0:
                time.sleep(0.05)
        return time.perf_counter() - self.started

    def _scrape(self) -> dict[str, float] | None:
        status, body = http_request(self.port, "GET", "/metrics")
        if status != 200:
            return None
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            key, _, value = line.rpartition(" ")
            if key in METRIC_KEYS or key in LABELLED_METRIC_KEYS:
                out[LABELLED_METRIC_KEYS.get(key, key)] = float(value)
        return out

    def metrics(self) -> dict[str, Any]:
        """Batching/latency counters summed over all workers.

        Each worker has its own registry and a scrape reaches whichever worker accepts the
        connection, so with N workers we scrape (fresh connection each time) until N distinct
        snapshots were seen. Call it only while the server is idle, so snapshots are stable.
        """
        seen: list[dict[str, float]] = []
        for _ in range(1 if self.workers == 1 else 60):
            snap = self._scrape()
            if snap is None:
                continue
            # Our own /metrics scrapes bump the request counters of /metrics only, not these.
            if snap not in seen:
                seen.append(snap)
            if len(seen) >= self.workers:
                break
        total: dict[str, Any] = {}
        for snap in seen:
            for k, v in snap.items():
                total[k] = total.get(k, 0.0) + v
        total["_workers_seen"] = len(seen)
        return total


def preflight(server: Server, bodies: Path, rows_list: list[int], expected: dict[str, Any]) -> dict[str, float]:
    """Every body once through the server: 200 and the in-process predictions of the same rows, else stop."""
    diffs = {}
    for n in rows_list:
        status, body = http_request(server.port, "POST", "/predict", (bodies / f"{n}.json").read_bytes())
        if status != 200:
            raise RuntimeError(f"POST /predict with {n} rows -> {status}: {body[:500]!r}")
        diffs[str(n)] = check_answers(json.loads(body)["predictions"], expected[str(n)],
                                      f"{server.label}: POST /predict with {n} rows")
    return diffs


def server_side(server: Server, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Batching and latency over a measured run, from /metrics deltas."""
    complete = before.get("_workers_seen") == server.workers == after.get("_workers_seen")
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if not k.startswith("_")}
    calls = d.get("scorer_batch_requests_count", 0.0)
    served = d.get("predict_seconds_count", 0.0)
    return {
        # Includes the requests still in flight when wrk stopped (scored while draining).
        "model_calls": calls,
        "requests_per_call": d.get("scorer_batch_requests_sum", 0.0) / calls if calls else None,
        "rows_per_call": d.get("scorer_batch_rows_sum", 0.0) / calls if calls else None,
        "model_call_ms": 1e3 * d.get("scorer_model_call_seconds_sum", 0.0) / calls if calls else None,
        "request_mean_ms": 1e3 * d.get("predict_seconds_sum", 0.0) / served if served else None,
        "complete": complete,
        "note": "deltas of /metrics over the measured run (+ drain), summed over "
        + (f"all {server.workers} workers" if complete
           else f"the workers seen ({before.get('_workers_seen')}/{after.get('_workers_seen')} of {server.workers}): INCOMPLETE"),
    }


def scenario(server: Server, lua: Path, rows: int, conns: int, duration: float, warmup: float, pin: bool) -> dict[str, Any]:
    res = measure(server, "/predict", lua, rows, conns, duration, warmup, pin, probe=server.metrics)
    res["workers"] = server.workers
    res["server_side"] = server_side(server, res.pop("probe_before"), res.pop("probe_after"))
    cpu = res["cpu"]
    errs = sum(res["errors"].values())
    log(
        f"  workers={server.workers} rows={rows:>5} conns={conns:>2}: {res['req_s']:9.1f} req/s {res['rows_s']:10.0f} rows/s "
        f"p50 {f_ms(res['p50_ms']):>7} ms p99 {f_ms(res['p99_ms']):>7} ms server cpu {cpu.get('server_cpu_pct', 0):3.0f}% "
        f"foreign cpu {cpu.get('foreign_cpu_pct', 0):3.0f}%" + (f"  ERRORS {res['errors']}" if errs else "")
        + (f"  req/call {res['server_side']['requests_per_call']:.2f}" if res["server_side"].get("requests_per_call") else "")
    )
    return res


# The multi-worker variants: (key, label, extra environment). The OMP_NUM_THREADS=1 variant is a
# diagnostic: with 2 workers on 2 cores, each worker's OpenMP pool (HistGradientBoosting) still
# starts one thread per core, so worker threads + wrk oversubscribe the cores.
MULTI_VARIANTS = (
    ("two_workers", "--workers 2", {}),
    ("two_workers_omp1", "--workers 2, OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}),
)


def run_served(name: str, bundle: Path, bodies: Path, tmp: Path, duration: int, warmup: int, pin: bool,
               expected: dict[str, Any]) -> dict[str, Any]:
    luas = {}
    for n in ROW_COUNTS:
        luas[n] = write_lua(tmp / f"{name}-{n}.lua", bodies / f"{n}.json")
    out: dict[str, Any] = {}

    log(f"{name}: starting 1-worker server" + (f" pinned to core {SERVER_CPUS}" if pin else ""))
    server = Server(bundle, 1, SERVER_CPUS if pin else None, tmp)
    try:
        out["ready_seconds_1w"] = server.wait_ready()
        out["rss_mib_1w_after_load"] = server.rss_mib()
        out["answers_max_abs_diff_1w"] = preflight(server, bodies, list(ROW_COUNTS), expected)
        runs = []
        for rows, conns in SCENARIOS:
            runs.append(with_retries(
                lambda: scenario(server, luas[rows], rows, conns, duration, warmup, pin),
                f"{name} {rows} rows x {conns} conns"))
        out["single_worker"] = runs
        out["rss_mib_1w_after_load_test"] = server.rss_mib()
        out["server_log_tail_1w"] = server.log_tail(10)
    finally:
        server.stop()

    for key, label, env in MULTI_VARIANTS:
        log(f"{name}: starting server {label}" + (f" on cores {MULTI_SERVER_CPUS}" if pin else ""))
        server = Server(bundle, 2, MULTI_SERVER_CPUS if pin else None, tmp, env=env)
        try:
            ready = server.wait_ready()
            out[f"ready_seconds_{key}"] = server.wait_all_ready()
            out[f"first_ready_seconds_{key}"] = ready
            out[f"answers_max_abs_diff_{key}"] = preflight(server, bodies, [1], expected)
            runs = []
            for rows, conns in MULTI_SCENARIOS:
                runs.append(with_retries(
                    lambda: scenario(server, luas[rows], rows, conns, duration, warmup, pin),
                    f"{name} {label} {rows} rows x {conns} conns"))
            out[key] = runs
            out[f"rss_mib_{key}"] = server.rss_mib()
            out[f"server_log_tail_{key}"] = server.log_tail(10)
        finally:
            server.stop()
    return out


# ---------------------------------------------------------------------------------------
# 3. derived numbers and reports
# ---------------------------------------------------------------------------------------


def derive(name: str, inproc: dict[str, Any], served: dict[str, Any]) -> dict[str, Any]:
    by = inproc["by_rows"]
    ratios = []
    for s in served["single_worker"]:
        n = s["rows_per_request"]
        ip = by[str(n)]
        ratios.append({
            "rows_per_request": n,
            "connections": s["connections"],
            "served_rows_s": s["rows_s"],
            "inproc_score_rows_s": ip["score"]["rows_s"],
            "served_over_inproc": s["rows_s"] / ip["score"]["rows_s"],
            "served_over_inproc_pipeline": s["rows_s"] / ip["pipeline"]["rows_s"],
            "limit_rows_s": ip["limit"]["rows_s"],
            "served_over_limit": s["rows_s"] / ip["limit"]["rows_s"],
        })
    one = next(s for s in served["single_worker"] if (s["rows_per_request"], s["connections"]) == (1, 1))
    return {
        "served_over_inproc": ratios,
        "http_overhead_ms": None if one["p50_ms"] is None else one["p50_ms"] - by["1"]["score"]["median_ms"],
        "http_overhead_beyond_codec_ms": None if one["p50_ms"] is None else one["p50_ms"] - by["1"]["pipeline"]["median_ms"],
    }


def figures(r: dict[str, Any]) -> dict[str, Any]:
    """What the READMEs quote from a bundle's run: the in-process limit and the served rows per scenario."""
    ip = r["inprocess"]["by_rows"]
    served = {(x["rows_per_request"], x["connections"]): x for x in r["served"]["single_worker"]}
    rows = []
    for d in r["derived"]["served_over_inproc"]:
        x = served[(d["rows_per_request"], d["connections"])]
        rows.append({
            "rows_per_request": d["rows_per_request"],
            "connections": d["connections"],
            "limit_rows_s": round(d["limit_rows_s"]),
            "score_rows_s": round(ip[str(d["rows_per_request"])]["score"]["rows_s"]),
            "served_rows_s": round(d["served_rows_s"]),
            "served_over_limit": round(d["served_over_limit"], 2),
            "p50_ms": round(x["p50_ms"], 1) if x["p50_ms"] is not None else None,
            "requests_per_model_call": round(x["server_side"]["requests_per_call"], 1)
            if (x.get("server_side") or {}).get("requests_per_call") else None,
        })
    return {"bundle": r["bundle"], "scenarios": rows,
            "cold_start_s": round(r["served"]["ready_seconds_1w"], 1),
            "rss_mib_after_load": round(r["served"]["rss_mib_1w_after_load"] or 0)}


def pct(run: dict[str, Any], key: str) -> str:
    v = (run.get("cpu") or {}).get(key)
    return "–" if v is None else f"{v:.0f}"


def render_bundle(r: dict[str, Any]) -> str:
    name = r["bundle"]
    peers = r.get("peers_measured") or {}
    labels = peers.get("labels", [])
    ip = r["inprocess"]["by_rows"]
    L: list[str] = [f"## {name}", ""]
    L.append(f"Bundle: `{r['bundle_path']}` ({r['bundle_source']}). In-process limit: {r['inprocess']['limit_call']}.")
    cs = r.get("code_state") or {}
    if cs:
        st = cs["start"]
        L.append(
            f"Code measured: git {st['git_head']}, scorer/*.py digest {st['scorer_py_sha256']}, uncommitted: "
            f"{', '.join(x.strip() for x in st['uncommitted']) or 'none'}."
            + (" **WARNING: scorer/ or bundles/ changed during this bundle's measurements.**" if cs.get("changed_during_run") else "")
        )
    if peers:
        L.append(f"Peer columns: the same model served by {', '.join(labels)}, measured on this machine by "
                 f"`benchmarks/run` ({peers['source']}); rows/s (p50 ms), mean over its runs.")
    elif name == "spam":
        L.append("No peer columns: no peer serves this bundle (custom code); `text` is the peers' nearest model.")
    else:
        L.append("No peer columns: run `benchmarks/run` to measure MLflow and MLServer on this machine.")
    L.append("")
    L.append("### In-process (one process, no HTTP, pinned to core 1; medians)")
    L.append("")
    icpu = r["inprocess"].get("cpu") or {}
    L.append(
        f"Background load before this bundle: {r.get('background_load_pct', 0):.0f}% of a core; over the whole in-process run "
        f"(including any waiting for quiet) {icpu.get('foreign_cpu_pct', 0):.0f}%. "
        f"OpenMP/BLAS threads in the pinned child: {', '.join(str(t.get('internal_api')) + '=' + str(t.get('num_threads')) for t in (r['inprocess'].get('threadpools') or [])) or 'n/a'}."
    )
    L.append("")
    L.append("| rows | score() ms | score() rows/s | in-process limit ms | limit rows/s | core overhead ms (score−limit) | decode split JSON ms | encode ms | decode→score→encode ms | foreign CPU % (max) |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in ROW_COUNTS:
        x = ip[str(n)]
        L.append(
            f"| {n:,} | {f_ms(x['score']['median_ms'])} | {f_num(x['score']['rows_s'])} | {f_ms(x['limit']['median_ms'])} | "
            f"{f_num(x['limit']['rows_s'])} | {f_ms(x['score']['median_ms'] - x['limit']['median_ms'])} | "
            f"{f_ms(x['decode']['median_ms'])} | {f_ms(x['encode']['median_ms'])} | {f_ms(x['pipeline']['median_ms'])} | "
            f"{max(foreign_pct(x[k]) for k in ('score', 'limit', 'decode', 'encode', 'pipeline')):.0f} |"
        )
    L.append("")
    s = r["served"]
    L.append(
        f"### Served, 1 worker pinned to core 1, wrk (1 thread) on core 0, {r['config']['duration']} s per scenario "
        f"after {r['config']['warmup']} s warm-up"
    )
    L.append("")
    L.append("| rows/req | conns | req/s | rows/s | p50 ms | p99 ms | errors | served ÷ in-process rows/s | requests per model call | "
             "model call ms | server-side request ms | server CPU % | foreign CPU % | "
             + "".join(f" {p} rows/s (p50 ms) |" for p in labels))
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(labels))
    ratio = {(x["rows_per_request"], x["connections"]): x for x in r["derived"]["served_over_inproc"]}
    for x in s["single_worker"]:
        key = (x["rows_per_request"], x["connections"])
        pr = (peers.get("rows_s") or {}).get(f"{key[0]}x{key[1]}", {})
        pp = (peers.get("p50_ms") or {}).get(f"{key[0]}x{key[1]}", {})
        peer_cells = [f"{f_num(pr[p])} ({f_ms(pp.get(p))})" if p in pr else "–" for p in labels]
        ss = x.get("server_side") or {}
        L.append(
            f"| {x['rows_per_request']:,} | {x['connections']} | {f_num(x['req_s'])} | {f_num(x['rows_s'])} | "
            f"{f_ms(x['p50_ms'])} | {f_ms(x['p99_ms'])} | {sum(x['errors'].values())} | "
            f"{ratio[key]['served_over_inproc']:.2f} | {f_num(ss.get('requests_per_call'))} | {f_ms(ss.get('model_call_ms'))} | "
            f"{f_ms(ss.get('request_mean_ms'))} | {pct(x, 'server_cpu_pct')} | {pct(x, 'foreign_cpu_pct')} |" + "".join(f" {c} |" for c in peer_cells)
        )
    L.append("")
    L.append("Model call ms and server-side request ms are means from /metrics (`scorer_model_call_seconds`, "
             "`scorer_request_duration_seconds{path=\"/predict\"}`); p50/p99 are wrk's, client-side.")
    L.append("")
    d = r["derived"]
    one_ip = ip["1"]["score"]["median_ms"]
    L.append(
        f"- HTTP overhead (served 1-row p50 at 1 conn − in-process 1-row score()): **{f_ms(d['http_overhead_ms'])} ms** "
        f"({f_ms(d['http_overhead_beyond_codec_ms'])} ms beyond in-process decode→score→encode). "
        + (
            "Peers' 1-row p50 at 1 conn (measured): "
            + ", ".join(f"{p} {f_ms(v)} ms" for p, v in (peers.get("p50_ms") or {}).get("1x1", {}).items()) + "."
            if peers else ""
        )
    )
    L.append(f"- In-process 1-row score(): {f_ms(one_ip)} ms (= {f_num(1e3 / one_ip)} rows/s).")
    b = next((x.get("server_side") for x in s["single_worker"] if (x["rows_per_request"], x["connections"]) == BATCHING_SCENARIO), None)
    if b and b.get("model_calls"):
        L.append(
            f"- Batching during the 64-connection 1-row run (from /metrics deltas): **{b['requests_per_call']:.2f} requests per model call** "
            f"(mean {b['rows_per_call']:.1f} rows/call, mean model call {f_ms(b['model_call_ms'])} ms, {b['model_calls']:,.0f} calls)."
        )
    multi = "; ".join(
        f"{label}: {s.get(f'ready_seconds_{key}', 0):.2f} s (first worker {s.get(f'first_ready_seconds_{key}', 0):.2f} s), RSS {s.get(f'rss_mib_{key}')} MiB"
        for key, label, _ in MULTI_VARIANTS if key in s
    )
    L.append(
        f"- Cold start to /ready: {s['ready_seconds_1w']:.2f} s (1 worker). RSS process tree: {s['rss_mib_1w_after_load']} MiB after load, "
        f"{s['rss_mib_1w_after_load_test']} MiB after the runs (1 worker). All workers ready / RSS: {multi}."
    )
    L.append("")
    L.append("### Multiple workers (server on cores 0,1 — it shares core 0 with wrk; 1 row/request)")
    L.append("")
    L.append("| server | conns | req/s | p50 ms | p99 ms | errors | requests per model call | model call ms | server-side request ms | server CPU % | foreign CPU % | 1-worker p50 ms | delayed-ACK trap? |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    single = {(x["rows_per_request"], x["connections"]): x for x in s["single_worker"]}
    for key_, label, _ in MULTI_VARIANTS:
        for x in s.get(key_, []):
            key = (x["rows_per_request"], x["connections"])
            ss = x.get("server_side") or {}
            if x["connections"] == 1 and x["p50_ms"] is not None:
                trap = "**looks like it (p50 ≥ 35 ms)**" if x["p50_ms"] >= 35 else "no (p50 < 35 ms)"
            else:
                trap = "n/a (queueing dominates; see the 1-conn row)"
            L.append(
                f"| {label} | {x['connections']} | {f_num(x['req_s'])} | {f_ms(x['p50_ms'])} | {f_ms(x['p99_ms'])} | {sum(x['errors'].values())} | "
                f"{f_num(ss.get('requests_per_call'))}{'' if ss.get('complete', True) else ' (incomplete)'} | {f_ms(ss.get('model_call_ms'))} | "
                f"{f_ms(ss.get('request_mean_ms'))} | {pct(x, 'server_cpu_pct')} | {pct(x, 'foreign_cpu_pct')} | {f_ms(single[key]['p50_ms'])} | {trap} |"
            )
    L.append("")
    return "\n".join(L)


def render_summary(results: list[dict[str, Any]]) -> str:
    names = [r["bundle"] for r in results]

    def served(r, rows, conns, key="single_worker"):
        runs = r["served"][key]
        return next(x for x in runs if (x["rows_per_request"], x["connections"]) == (rows, conns))

    rows: list[tuple[str, list[str]]] = []
    for n in ROW_COUNTS:
        rows.append((f"in-process score() {n:,} row{'s' if n > 1 else ''}: ms (rows/s)",
                     [f"{f_ms(r['inprocess']['by_rows'][str(n)]['score']['median_ms'])} ({f_num(r['inprocess']['by_rows'][str(n)]['score']['rows_s'])})" for r in results]))
        rows.append((f"in-process limit (model call) {n:,} row{'s' if n > 1 else ''}: ms",
                     [f_ms(r["inprocess"]["by_rows"][str(n)]["limit"]["median_ms"]) for r in results]))
    rows.append(("served 1 row × 1 conn: req/s, p50 / p99 ms",
                 [f"{f_num(served(r, 1, 1)['req_s'])}, {f_ms(served(r, 1, 1)['p50_ms'])} / {f_ms(served(r, 1, 1)['p99_ms'])}" for r in results]))
    rows.append(("served 1 row × 64 conns: rows/s, p50 / p99 ms",
                 [f"{f_num(served(r, 1, 64)['rows_s'])}, {f_ms(served(r, 1, 64)['p50_ms'])} / {f_ms(served(r, 1, 64)['p99_ms'])}" for r in results]))
    rows.append(("  requests per model call (64 conns)",
                 [f"{(served(r, 1, 64).get('server_side') or {}).get('requests_per_call') or 0:.2f}" for r in results]))
    rows.append(("served 100 rows × 4 conns: rows/s (p50 ms)",
                 [f"{f_num(served(r, 100, 4)['rows_s'])} ({f_ms(served(r, 100, 4)['p50_ms'])})" for r in results]))
    rows.append(("served 10,000 rows × 4 conns: rows/s (p50 ms)",
                 [f"{f_num(served(r, 10_000, 4)['rows_s'])} ({f_ms(served(r, 10_000, 4)['p50_ms'])})" for r in results]))
    for x in ((1, 1), (1, 64), (100, 4), (10_000, 4)):
        rows.append((f"served ÷ in-process rows/s, {x[0]:,} row{'s' if x[0] > 1 else ''} × {x[1]} conn{'s' if x[1] > 1 else ''}",
                     [f"{next(d for d in r['derived']['served_over_inproc'] if (d['rows_per_request'], d['connections']) == x)['served_over_inproc']:.2f}" for r in results]))
    rows.append(("HTTP overhead ms (1-row p50 − in-process 1-row score)", [f_ms(r["derived"]["http_overhead_ms"]) for r in results]))
    for key, label, _ in MULTI_VARIANTS:
        rows.append((f"{label}, 1 row × 1 conn: req/s, p50 / p99 ms",
                     [f"{f_num(served(r, 1, 1, key)['req_s'])}, {f_ms(served(r, 1, 1, key)['p50_ms'])} / {f_ms(served(r, 1, 1, key)['p99_ms'])}" for r in results]))
        rows.append((f"{label}, 1 row × 64 conns: rows/s, p50 / p99 ms",
                     [f"{f_num(served(r, 1, 64, key)['rows_s'])}, {f_ms(served(r, 1, 64, key)['p50_ms'])} / {f_ms(served(r, 1, 64, key)['p99_ms'])}" for r in results]))
    rows.append(("foreign CPU % of a core: background / in-process run / max over served runs",
                 [f"{r.get('background_load_pct', 0):.0f} / {(r['inprocess'].get('cpu') or {}).get('foreign_cpu_pct', 0):.0f} / "
                  f"{max((x.get('cpu') or {}).get('foreign_cpu_pct', 0) for k in ['single_worker'] + [v[0] for v in MULTI_VARIANTS] for x in r['served'].get(k, [])):.0f}"
                  for r in results]))
    rows.append(("hypervisor steal % (max over served runs)",
                 [f"{max((x.get('cpu') or {}).get('steal_pct', 0) for k in ['single_worker'] + [v[0] for v in MULTI_VARIANTS] for x in r['served'].get(k, [])):.0f}"
                  for r in results]))
    rows.append(("cold start to /ready, s (1 worker)", [f"{r['served']['ready_seconds_1w']:.2f}" for r in results]))
    rows.append(("RSS after load, MiB (1 worker)", [f"{r['served']['rss_mib_1w_after_load']}" for r in results]))

    L = ["## Summary (side by side)", "", "| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    L += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    L.append("")
    measured = [r for r in results if r.get("peers_measured")]
    if measured:
        labels = measured[0]["peers_measured"]["labels"]
        L.append(f"Peers, same models, measured by `benchmarks/run` ({measured[0]['peers_measured']['source']}); "
                 "rows/s (p50 ms); the full comparison is in `benchmarks/results/peers.md`:")
        L.append("")
        L.append("| model | rows/req | conns | " + " | ".join(labels) + " |")
        L.append("|---|---:|---:|" + "---:|" * len(labels))
        for r in measured:
            pm = r["peers_measured"]
            for key, vals in pm["rows_s"].items():
                rr, cc = key.split("x")
                L.append(f"| {r['bundle']} | {int(rr):,} | {cc} | "
                         + " | ".join(f"{f_num(vals.get(p))} ({f_ms(pm['p50_ms'][key].get(p))})" for p in labels) + " |")
    else:
        L.append("No peer measurements yet: `benchmarks/run` measures MLflow and MLServer on the same models.")
    L.append("")
    return "\n".join(L)


def render(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = [
        "# scorer serving benchmark",
        "",
        f"Run {meta['started']} on {meta['machine']}; Python {meta['python']}; total {meta['elapsed_s']:.0f} s; "
        f"mode: {'QUICK (smoke test, numbers are noisy)' if meta['quick'] else 'full'}; "
        f"{meta['duration']} s per wrk scenario after {meta['warmup']} s warm-up; CPU pinning: {'yes' if meta['pinned'] else 'NO (taskset or 2 cores unavailable)'}.",
        "",
        "\"foreign CPU %\": CPU time used on the machine during a measurement that is not charged to the benchmark's own "
        "processes (other processes + some un-attributed kernel network work), in % of one core. Near 0 = clean run; "
        "tens of % = the numbers are pessimistic. Peer columns come from the last `benchmarks/run` on this machine, if any.",
        "",
    ]
    return "\n".join(head + [render_summary(results)] + [render_bundle(r) for r in results])


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="In-process vs served throughput/latency of the example bundles.")
    parser.add_argument("--bundle", choices=(*BUNDLE_NAMES, "all"), default="all")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk scenario (default 10)")
    parser.add_argument("--quick", action="store_true", help="a couple of seconds per step: smoke test only")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="shared machine: for the first S seconds of the run, wait for other processes to go quiet "
                             f"before each measurement and repeat (up to {MAX_ATTEMPTS}x) measurements during which they "
                             f"used > {ACCEPT_FOREIGN_PCT:.0f}%% of a core (default 0: measure once, just report the load)")
    parser.add_argument("--rebuild", action="store_true", help="always build the bundles into a temp dir, even if bundles/ has them")
    parser.add_argument("--_inproc", nargs=4, metavar=("NAME", "BUNDLE", "BODIES", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--_quiet-deadline", dest="quiet_deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._inproc:
        name, bundle, bodies, out = args._inproc
        return inprocess_main(name, Path(bundle), Path(bodies), Path(out), args.quick, args.quiet_deadline)

    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    duration = 3 if args.quick else max(1, args.duration)
    warmup = 1 if args.quick else 2
    pin = cpu_pinning_available()
    if pin:
        os.sched_setaffinity(0, {int(CLIENT_CPUS)})  # keep this orchestrator off the server's core
    else:
        log("WARNING: cannot pin to cores 0/1 (need taskset and >= 2 cores): results are not comparable")

    install_cleanup()

    started = time.time()
    QUIET["deadline"] = started + args.wait_quiet if args.wait_quiet > 0 else 0.0
    t0 = time.perf_counter()
    build = load_build_module()
    names = list(BUNDLE_NAMES) if args.bundle == "all" else [args.bundle]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results = []
    meta = {
        "started": _dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs ({platform.processor() or platform.platform()})",
        "python": platform.python_version(),
        "quick": args.quick,
        "duration": duration,
        "warmup": warmup,
        "pinned": pin,
    }
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            for name in names:
                bt0 = time.perf_counter()
                facts = run_facts(pin)
                state0 = code_state()
                bundle, source = prepare_bundle(build, name, tmp / "bundles", args.rebuild)
                background = idle_load()
                log(f"{name}: background load {background:.0f}% of a core")
                bodies = tmp / f"bodies-{name}"
                bodies.mkdir()
                frame = make_frame(build, name, max(ROW_COUNTS), DATA_SEED)
                for n in ROW_COUNTS:
                    (bodies / f"{n}.json").write_text(frame.head(n).to_json(orient="split"))
                log(f"{name}: in-process timings (child pinned to core {SERVER_CPUS}) ...")
                inproc = run_inprocess(name, bundle, bodies, tmp, args.quick, pin)
                served = run_served(name, bundle, bodies, tmp, duration, warmup, pin, inproc["expected"])
                r = {
                    "bundle": name,
                    "bundle_path": str(bundle),
                    "bundle_source": source,
                    "background_load_pct": background,
                    "config": {"duration": duration, "warmup": warmup, "quick": args.quick, "pinned": pin,
                               "server_cpus": SERVER_CPUS, "client_cpus": CLIENT_CPUS,
                               "multi_worker_server_cpus": MULTI_SERVER_CPUS, "data_seed": DATA_SEED,
                               "body_format": "pandas DataFrame.to_json(orient='split'), Content-Type application/json"},
                    "inprocess": inproc,
                    "served": served,
                    "peers_measured": measured_peers(name),
                    "elapsed_s": time.perf_counter() - bt0,
                }
                r["derived"] = derive(name, inproc, served)
                state1 = code_state()
                r["code_state"] = {"start": state0, "end": state1, "changed_during_run": state0 != state1}
                if state0 != state1:
                    log(f"WARNING: scorer/ or bundles/ changed while {name} was measured: {state0} -> {state1}")
                inproc.pop("expected")  # checked against every server's answers; too big to keep
                facts = finish_facts(facts, bt0)
                facts["mode"] = "quick" if args.quick else "full"
                facts["foreign_cpu_pct_max"] = round(max(
                    [foreign_pct(x) for k in ["single_worker"] + [v[0] for v in MULTI_VARIANTS] for x in served.get(k, [])]
                    + [foreign_pct(x) for row in inproc["by_rows"].values() for x in row.values() if isinstance(x, dict)]), 1)
                write_results(f"serve-{name}", facts, figures(r), r)
                results.append(r)
                log(f"{name}: done in {r['elapsed_s']:.0f}s -> {RESULTS_DIR / f'serve-{name}.json'}")
        finally:
            cleanup()
    meta["elapsed_s"] = time.perf_counter() - t0
    md = render(results, meta)
    (RESULTS_DIR / "serve.md").write_text(md + "\n")
    print(md)
    log(f"total {meta['elapsed_s']:.0f}s; wrote {RESULTS_DIR / 'serve.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
