"""Side by side: scorer vs MLflow vs MLServer serving the same models under the same load.

    benchmarks/run [--quick] [--runs N] [--duration S] [--bundle tabular|text|all]   # the entry point
    .venv/bin/python benchmarks/bench_peers.py ...                                    # what it runs

What happens (see benchmarks/README.md, "bench_peers.py"):

1. Setup, each step only when missing: the peers' virtualenvs under ``benchmarks/.peers/``
   (``_peer_setup.py``: MLflow 3.17.2; MLServer 1.7 + mlserver-sklearn + uvloop 0.21.0; the scorer
   venv's scikit-learn/numpy/pandas pinned), the ``tabular`` and ``text`` bundles trained with
   ``bundles/build.py`` at benchmark sizes into ``benchmarks/.work/bundles/``, and each peer's
   native copy of the same model: an MLflow model (``mlflow.sklearn.save_model`` of the bundle's
   pipeline, cloudpickle, ``pyfunc_predict_fn="predict_proba"``) and an MLServer model repository
   (``mlserver_sklearn.SKLearnModel`` on the bundle's ``model.joblib``), default and with adaptive
   batching.
2. In-process limit: the bare ``predict_proba`` (and ``Scorer.score``) in a child pinned to core 1,
   via ``bench_serve.py``'s in-process child.
3. For each run and each server: start it pinned to core 1 (``taskset -c 1``), time the cold start
   to its readiness probe, check its answers for 1 / 100 / 10,000 rows against in-process
   ``predict_proba`` (fail loudly if they differ), then ``wrk -t1`` pinned to core 0 POSTs the
   server's native body at 1 row x 1 / 16 / 64 connections, 100 rows x 4 and 10,000 rows x 4.
   The servers take turns within a run, so slow drifts of the machine hit all of them alike.
4. A markdown report (stdout and ``benchmarks/results/peers.md``) and ``benchmarks/results/peers.json``
   (committed: facts, figures, raw numbers), from which ``benchmarks/render.py`` writes the README
   sections (complete runs only).

Only 127.0.0.1 is ever contacted; MLflow's telemetry is switched off in every MLflow process.
Nothing here asserts on timings: it only reports (it does fail when a server answers wrongly).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _peer_setup
import bench_serve
from _harness import (  # noqa: E402 - scripts run by path
    CLIENT_CPUS, REPO, RESULTS_DIR, SERVER_CPUS, ServerProcess, clean_env, cleanup, code_state, cpu_pinning_available,
    f_ms, f_num, free_port, http_request, idle_load, install_cleanup, load_build_module, log, make_frame, measure,
    sha256_file, wrk_version, write_lua, finish_facts, run_facts, write_results,
)

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"  # benchmark-size bundles and the peers' model copies (gitignored)
README = HERE / "README.md"
README_BEGIN = "<!-- bench_peers:begin (written by benchmarks/run; do not edit by hand) -->"
README_END = "<!-- bench_peers:end -->"

BUNDLES = ("tabular", "text")
TRAIN_ROWS = {"tabular": 200_000, "text": 100_000}  # the sizes of the peers.md models
ROW_COUNTS = (1, 100, 10_000)
SCENARIOS = ((1, 1), (1, 16), (1, 64), (100, 4), (10_000, 4))  # (rows per request, connections)
# 10,000-row requests take ~0.1-0.5 s each and 4 are in flight: give those points enough requests.
MIN_BIG_REQUEST_DURATION = 5
DATA_SEED = 4242  # request rows are a holdout draw, as in bench_serve.py
ADAPTIVE_BATCHING = {"max_batch_size": 64, "max_batch_time": 0.005}  # MLServer model-settings.json
# Never let MLflow phone home (it would otherwise contact its telemetry service).
NO_TELEMETRY = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
ALLCLOSE = {"rtol": 1e-6, "atol": 1e-9}
BUSY_PCT = 25.0  # foreign CPU (% of a core) above which a point is flagged as measured on a busy machine

# For orientation only: served rows/s from /work/shared/design/peers.md (one earlier run on a machine of
# this kind, mean of 2 runs). NOT measured by this script; the measured numbers are in the tables above it.
PEERS_MD_REFERENCE = {
    ("tabular", 1, 1): (120, 166, 65),
    ("tabular", 1, 64): (118, 175, 782),
    ("tabular", 100, 4): (10_300, 12_700, 17_400),
    ("tabular", 10_000, 4): (31_200, 77_200, 48_900),
    ("text", 1, 64): (386, 373, 1_372),
    ("text", 10_000, 4): (61_200, 118_900, 123_800),
}


# ---------------------------------------------------------------------------------------
# setup: bundles at benchmark size, the peers' copies of the models
# ---------------------------------------------------------------------------------------


def _stamp_ok(stamp: Path, want: dict[str, Any]) -> bool:
    try:
        return json.loads(stamp.read_text()) == want
    except (OSError, ValueError):
        return False


def ensure_bundle(name: str, rows: int) -> Path:
    """``benchmarks/.work/bundles/<name>`` trained on ``rows`` rows by bundles/build.py (rebuilt when build.py changes)."""
    out = WORK / "bundles"
    dest = out / name
    want = {"build_py": sha256_file(REPO / "bundles" / "build.py"), "rows": rows,
            "manifest": sha256_file(REPO / "bundles" / name / "manifest.json")}
    stamp = WORK / f"bundle-{name}.json"
    if _stamp_ok(stamp, want) and (dest / "artifacts" / "model.joblib").is_file():
        return dest
    log(f"building bundle {name!r} on {rows:,} rows into {dest} (bundles/build.py) ...")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "bundles" / "build.py"), "--only", name, "--rows", str(rows),
                    "--out", str(out)], check=True, cwd=REPO)
    stamp.write_text(json.dumps(want))
    log(f"built {name} in {time.perf_counter() - t0:.0f}s")
    return dest


_MLFLOW_EXPORT = """
import sys, joblib, mlflow.sklearn
src, dst, sk = sys.argv[1:4]
model = joblib.load(src)
# cloudpickle, not MLflow 3's default skops: skops refuses HistGradientBoosting's tree types.
mlflow.sklearn.save_model(model, dst, serialization_format="cloudpickle", pyfunc_predict_fn="predict_proba",
                          pip_requirements=[f"scikit-learn=={sk}"])
"""


def peer_env(peer: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A peer's environment: its venv's bin first on PATH (MLflow shells out to ``uvicorn``), no telemetry."""
    env = {k: v for k, v in clean_env().items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{_peer_setup.venv_dir(peer) / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return {**env, **NO_TELEMETRY, **(extra or {})}


def ensure_mlflow_model(name: str, bundle: Path, versions: dict[str, Any]) -> Path:
    dest = WORK / "mlflow" / name
    model = bundle / "artifacts" / "model.joblib"
    want = {"model_sha256": sha256_file(model), "mlflow": versions["mlflow"]}
    stamp = WORK / "mlflow" / f"{name}.json"
    if _stamp_ok(stamp, want) and (dest / "MLmodel").is_file():
        return dest
    log(f"exporting {name} as an MLflow model to {dest} ...")
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(_peer_setup.venv_python("mlflow")), "-c", _MLFLOW_EXPORT, str(model), str(dest),
                    versions["scikit-learn"]], check=True, env=peer_env("mlflow"), cwd=WORK)
    stamp.write_text(json.dumps(want))
    return dest


def ensure_mlserver_repo(name: str, bundle: Path, adaptive: bool) -> Path:
    """An MLServer model repository: ``<root>/<name>/model-settings.json`` + a copy of the bundle's model.joblib.

    ``settings.json`` (host and ports) is written by :class:`MLServer` at each start."""
    root = WORK / "mlserver" / f"{name}-{'adaptive' if adaptive else 'default'}"
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    src = bundle / "artifacts" / "model.joblib"
    dst = model_dir / "model.joblib"
    if not dst.is_file() or sha256_file(dst) != sha256_file(src):
        dst.write_bytes(src.read_bytes())
    settings: dict[str, Any] = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }
    if adaptive:
        settings.update(ADAPTIVE_BATCHING)
    (model_dir / "model-settings.json").write_text(json.dumps(settings, indent=2))
    return root


# ---------------------------------------------------------------------------------------
# request bodies and answers
# ---------------------------------------------------------------------------------------


def v2_body(df: Any) -> bytes:
    """Open Inference Protocol (V2) request built by hand, as MLServer's pandas codec expects it:
    one input per column, shape [n, 1], FP64 or BYTES, request-level content_type "pd", and
    ``predict_proba`` asked for as the output. (MLServer's own PandasCodec.encode_request fails on
    pandas 3's string dtype.)"""
    import pandas as pd

    inputs = []
    for col in df.columns:
        numeric = pd.api.types.is_numeric_dtype(df[col])
        values = df[col].astype("float64").tolist() if numeric else [str(v) for v in df[col]]
        inputs.append({"name": col, "shape": [len(df), 1], "datatype": "FP64" if numeric else "BYTES", "data": values})
    return json.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs,
                       "outputs": [{"name": "predict_proba"}]}).encode()


def scorer_probabilities(body: bytes, classes: list[str]) -> Any:
    import numpy as np

    preds = json.loads(body)["predictions"]
    return np.asarray([[row[f"probability_{c}"] for c in classes] for row in preds], dtype=float)


def mlflow_probabilities(body: bytes, classes: list[str]) -> Any:
    import numpy as np

    return np.asarray(json.loads(body)["predictions"], dtype=float)


def v2_probabilities(body: bytes, classes: list[str]) -> Any:
    import numpy as np

    out = next(o for o in json.loads(body)["outputs"] if o["name"] == "predict_proba")
    return np.asarray(out["data"], dtype=float).reshape(out["shape"])


BODY_FORMATS: dict[str, Callable[[Any], bytes]] = {
    # pandas split orient, what bench_serve.py sends
    "scorer": lambda df: df.to_json(orient="split").encode(),
    # MLflow's scoring protocol
    "mlflow": lambda df: ('{"dataframe_split": ' + df.to_json(orient="split", index=False) + "}").encode(),
    "v2": v2_body,
}


# ---------------------------------------------------------------------------------------
# the servers
# ---------------------------------------------------------------------------------------


class MLflowServer(ServerProcess):
    def __init__(self, model_dir: Path, logs: Path, pin: bool) -> None:
        port = free_port()
        cmd = [str(_peer_setup.venv_dir("mlflow") / "bin" / "mlflow"), "models", "serve", "-m", str(model_dir),
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
        super().__init__("mlflow", cmd, port, "/ping", logs, cpus=SERVER_CPUS, pin=pin, env=peer_env("mlflow"),
                         cwd=WORK)


class MLServer(ServerProcess):
    def __init__(self, repo: Path, logs: Path, pin: bool, label: str) -> None:
        port = free_port()
        settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port()}
        (repo / "settings.json").write_text(json.dumps(settings, indent=2))
        cmd = [str(_peer_setup.venv_dir("mlserver") / "bin" / "mlserver"), "start", str(repo)]
        # cwd = the repository: MLServer keeps its .metrics/ and .envs/ folders in the working directory.
        super().__init__(label, cmd, port, "/v2/health/ready", logs, cpus=SERVER_CPUS, pin=pin,
                         env=peer_env("mlserver"), cwd=repo)


@dataclass(frozen=True)
class Contender:
    key: str  # scorer | mlflow | mlserver | mlserver-adaptive
    label: str
    kind: str  # scorer | mlflow | mlserver
    body_format: str
    path: Callable[[str], str]
    probabilities: Callable[[bytes, list[str]], Any]


def contenders(versions: dict[str, dict[str, Any]]) -> list[Contender]:
    sc, mf, ms = versions["scorer"], versions["mlflow"], versions["mlserver"]
    return [
        Contender("scorer", f"scorer {sc['scorer']}", "scorer", "scorer", lambda n: "/predict", scorer_probabilities),
        Contender("scorer-sklearn", f"scorer {sc['scorer']} without plans", "scorer", "scorer", lambda n: "/predict",
                  scorer_probabilities),
        Contender("mlflow", f"MLflow {mf['mlflow']}", "mlflow", "mlflow", lambda n: "/invocations", mlflow_probabilities),
        Contender("mlserver", f"MLServer {ms['mlserver']}", "mlserver", "v2", lambda n: f"/v2/models/{n}/infer",
                  v2_probabilities),
        Contender("mlserver-adaptive", f"MLServer {ms['mlserver']} adaptive batching", "mlserver", "v2",
                  lambda n: f"/v2/models/{n}/infer", v2_probabilities),
    ]


# scorer's stored scoring plans (--plan-cache): emptied before each run's first start of scorer, so that start
# compiles (cold start without a stored plan) and the measured one loads the stored plan.
PLAN_CACHE = WORK / "plans"


def start(c: Contender, name: str, models: dict[str, Path], logs: Path, pin: bool) -> ServerProcess:
    if c.kind == "scorer":
        env = {"SCORER_SCORING_PLAN": "off"} if c.key == "scorer-sklearn" else {"SCORER_PLAN_CACHE": str(PLAN_CACHE)}
        return bench_serve.Server(models["scorer"], 1, SERVER_CPUS if pin else None, logs, env=env)
    if c.key == "mlflow":
        return MLflowServer(models["mlflow"], logs, pin)
    return MLServer(models[c.key], logs, pin, c.key)


def check_answers(c: Contender, server: ServerProcess, name: str, bodies: dict[int, Path],
                  expected: dict[int, Any], classes: list[str]) -> float:
    """Every body once: 200 and probabilities allclose to in-process predict_proba, else raise. Returns max |diff|."""
    import numpy as np

    worst = 0.0
    for n in ROW_COUNTS:
        status, body = http_request(server.port, "POST", c.path(name), bodies[n].read_bytes(), timeout=120)
        if status != 200:
            raise RuntimeError(f"{c.label} {name}: POST {c.path(name)} with {n} rows -> {status}: {body[:500]!r}")
        got = c.probabilities(body, classes)
        want = expected[n]
        if got.shape != want.shape or not np.allclose(got, want, **ALLCLOSE):
            diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
            raise RuntimeError(
                f"{c.label} answered {name} x {n} rows WRONGLY: shape {got.shape} vs {want.shape}, max |diff| {diff}; "
                f"first row {got[:1].tolist()} vs in-process predict_proba {want[:1].tolist()}")
        worst = max(worst, float(np.max(np.abs(got - want))))
    return worst


# ---------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------

WAITED = {"s": 0.0}  # time spent in --wait-quiet waits (before server starts and points)


def wait_quiet() -> None:
    t = time.perf_counter()
    bench_serve.wait_quiet()  # returns at once unless --wait-quiet is in force
    WAITED["s"] += time.perf_counter() - t



def run_server(c: Contender, name: str, models: dict[str, Path], bodies: dict[int, Path], luas: dict[int, Path],
               expected: dict[int, Any], classes: list[str], cfg: dict[str, Any], logs: Path) -> dict[str, Any]:
    pin = cfg["pinned"]
    wait_quiet()
    log(f"{name} / {c.label}: starting" + (f" pinned to core {SERVER_CPUS}" if pin else ""))
    first: dict[str, Any] = {}
    if c.key == "scorer":  # a start without a stored plan (it compiles, verifies and stores it), then the measured one
        shutil.rmtree(PLAN_CACHE, ignore_errors=True)
        compiling = start(c, name, models, logs, pin)
        try:
            first = {"cold_start_s": compiling.wait_ready(), "rss_mib_after_load": compiling.rss_mib()}
            status, meta = http_request(compiling.port, "GET", "/metadata")
            first["scoring"] = json.loads(meta).get("scoring") if status == 200 else None
        finally:
            compiling.stop()
        log(f"{name} / {c.label}: first start (no stored plan) ready in {first['cold_start_s']:.2f}s, "
            f"scoring {(first['scoring'] or {}).get('path')}")
        wait_quiet()
    server = start(c, name, models, logs, pin)
    try:
        cold = server.wait_ready()
        rss_load = server.rss_mib()
        max_diff = check_answers(c, server, name, bodies, expected, classes)
        log(f"{name} / {c.label}: ready in {cold:.2f}s, RSS {rss_load} MiB, answers match in-process "
            f"predict_proba (max |diff| {max_diff:.1e})")
        points = []
        for rows, conns in cfg["scenarios"]:
            probe = server.metrics if isinstance(server, bench_serve.Server) else None
            duration = max(cfg["duration"], MIN_BIG_REQUEST_DURATION) if rows >= 10_000 else cfg["duration"]
            wait_quiet()
            res = measure(server, c.path(name), luas[rows], rows, conns, duration, cfg["warmup"], pin, probe=probe)
            if probe:
                res["server_side"] = bench_serve.server_side(server, res.pop("probe_before"), res.pop("probe_after"))
            errs = res["non_2xx"] + res["socket_errors"]
            log(f"  {c.key:<17} rows={rows:>5} conns={conns:>2}: {res['req_s']:8.1f} req/s {res['rows_s']:9.0f} rows/s "
                f"p50 {f_ms(res['p50_ms']):>6} p99 {f_ms(res['p99_ms']):>6} ms cpu {res['cpu'].get('server_cpu_pct', 0):3.0f}% "
                f"foreign {res['cpu'].get('foreign_cpu_pct', 0):3.0f}%" + (f"  ERRORS {res['errors']}" if errs else ""))
            points.append(res)
        return {"first_start": first, "cold_start_s": cold, "rss_mib_after_load": rss_load, "rss_mib_after_runs": server.rss_mib(),
                "processes": server.n_processes(), "max_abs_diff": max_diff, "points": points,
                "log_tail": server.log_tail(5)}
    except Exception:
        log(f"{c.label} log tail:\n{server.log_tail(40)}")
        raise
    finally:
        server.stop()


def stats(values: list[float | None]) -> dict[str, Any]:
    v = [x for x in values if x is not None]
    if not v:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(v), "min": min(v), "max": max(v), "n": len(v)}


def aggregate(runs: list[dict[str, dict[str, Any]]], cs: list[Contender], scenarios: tuple) -> dict[str, Any]:
    """runs[i][contender key] -> one bundle's per-point and per-server summaries over the runs."""
    points = []
    for i, (rows, conns) in enumerate(scenarios):
        per: dict[str, Any] = {}
        for c in cs:
            xs = [run[c.key]["points"][i] for run in runs if c.key in run]
            if not xs:
                continue
            agg = {k: stats([x[k] for x in xs]) for k in ("req_s", "rows_s", "ok_rows_s", "p50_ms", "p90_ms", "p99_ms")}
            agg["server_cpu_pct"] = stats([x["cpu"].get("server_cpu_pct") for x in xs])
            agg["foreign_cpu_pct_max"] = max(x["cpu"].get("foreign_cpu_pct", 0.0) for x in xs)
            agg["non_2xx"] = sum(x["non_2xx"] for x in xs)
            agg["socket_errors"] = sum(x["socket_errors"] for x in xs)
            agg["requests"] = sum(x["requests"] for x in xs)
            rpc = [(x.get("server_side") or {}).get("requests_per_call") for x in xs]
            if any(r is not None for r in rpc):
                agg["requests_per_model_call"] = stats(rpc)
            per[c.label] = agg
        points.append({"rows_per_request": rows, "connections": conns, "servers": per})
    servers = {}
    for c in cs:
        rs = [run[c.key] for run in runs if c.key in run]
        if rs:
            servers[c.label] = {
                "cold_start_s": stats([r["cold_start_s"] for r in rs]),
                "rss_mib_after_load": stats([r["rss_mib_after_load"] for r in rs]),
                "rss_mib_after_runs": stats([r["rss_mib_after_runs"] for r in rs]),
                "processes": max(r["processes"] for r in rs),
                "max_abs_diff": max(r["max_abs_diff"] for r in rs),
            }
            firsts = [r["first_start"] for r in rs if r.get("first_start")]
            if firsts:
                servers[c.label]["first_start"] = {
                    "cold_start_s": stats([f["cold_start_s"] for f in firsts]),
                    "rss_mib_after_load": stats([f["rss_mib_after_load"] for f in firsts]),
                    "scoring_path": sorted({(f.get("scoring") or {}).get("path") or "?" for f in firsts}),
                }
    return {"points": points, "servers": servers}


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------


def f_spread(s: dict[str, Any]) -> str:
    """mean ± half the range, as a % of the mean (omitted with one run)."""
    if s["mean"] is None:
        return "–"
    if s["n"] < 2 or not s["mean"]:
        return f_num(s["mean"])
    return f"{f_num(s['mean'])} ±{50 * (s['max'] - s['min']) / s['mean']:.0f}%"


def throughput_table(data: dict[str, Any]) -> list[str]:
    labels = [s["label"] for s in data["servers"]]
    peer_labels = [s["label"] for s in data["servers"] if s["kind"] != "scorer"]
    L = ["| model | rows/req | conns | in-process limit | " + " | ".join(labels) + " | scorer ÷ best peer |",
         "|---|---:|---:|---:|" + "---:|" * len(labels) + "---:|"]
    for name, b in data["bundles"].items():
        for p in b["points"]:
            rows = p["rows_per_request"]
            ip = b["inprocess"]["by_rows"].get(str(rows), {}).get("limit")
            cells = []
            for label in labels:
                agg = p["servers"].get(label)
                if not agg:
                    cells.append("–")
                    continue
                cell = f_spread(agg["rows_s"]) + (" †" if agg["foreign_cpu_pct_max"] > BUSY_PCT else "")
                errs = agg["non_2xx"] + agg["socket_errors"]
                if errs:
                    cell += f" ⚠ {agg['non_2xx']} non-2xx, {agg['socket_errors']} socket errors"
                cells.append(cell)
            ours = (p["servers"].get(labels[0]) or {}).get("ok_rows_s", {}).get("mean")
            peers = [(p["servers"].get(lb) or {}).get("ok_rows_s", {}).get("mean") for lb in peer_labels]
            peers = [x for x in peers if x]
            ratio = f"{ours / max(peers):.2f}×" if ours and peers else "–"
            L.append(f"| {name} | {rows:,} | {p['connections']} | {f_num(ip['rows_s']) if ip else '–'} | "
                     + " | ".join(cells) + f" | {ratio} |")
    return L


def latency_table(data: dict[str, Any]) -> list[str]:
    labels = [s["label"] for s in data["servers"]]
    L = ["| model | rows/req | conns | " + " | ".join(labels) + " |", "|---|---:|---:|" + "---:|" * len(labels)]
    for name, b in data["bundles"].items():
        for p in b["points"]:
            cells = []
            for label in labels:
                a = p["servers"].get(label)
                cells.append("–" if not a else
                             f"{f_ms(a['p50_ms']['mean'])} / {f_ms(a['p90_ms']['mean'])} / {f_ms(a['p99_ms']['mean'])} "
                             f"({a['server_cpu_pct']['mean']:.0f}%)")
            L.append(f"| {name} | {p['rows_per_request']:,} | {p['connections']} | " + " | ".join(cells) + " |")
    return L


def server_table(data: dict[str, Any]) -> list[str]:
    L = ["| model | server | cold start s | RSS after load MiB | RSS after load test MiB | processes | "
         "errors (non-2xx / socket) | answers vs in-process predict_proba |",
         "|---|---|---:|---:|---:|---:|---:|---|"]
    for name, b in data["bundles"].items():
        for label, s in b["servers"].items():
            non2xx = sum(p["servers"][label]["non_2xx"] for p in b["points"] if label in p["servers"])
            sock = sum(p["servers"][label]["socket_errors"] for p in b["points"] if label in p["servers"])
            cs = s["cold_start_s"]
            cold = f"{cs['mean']:.2f}" + (f" ({cs['min']:.2f}–{cs['max']:.2f})" if cs["n"] > 1 else "")
            if s.get("first_start"):
                f = s["first_start"]
                L.append(f"| {name} | {label}, first start (no stored plan: compiles, verifies, stores; scoring "
                         f"{'/'.join(f['scoring_path'])}) | {f['cold_start_s']['mean']:.2f} | "
                         f"{f['rss_mib_after_load']['mean']:.0f} | – | – | – | – |")
            L.append(f"| {name} | {label} | {cold} | {s['rss_mib_after_load']['mean']:.0f} | "
                     f"{s['rss_mib_after_runs']['mean']:.0f} | {s['processes']} | {non2xx} / {sock} | "
                     f"allclose, max abs diff {s['max_abs_diff']:.1e} |")
    return L


def versions_lines(data: dict[str, Any]) -> list[str]:
    v = data["versions"]
    sc, mf, ms = v["scorer"], v["mlflow"], v["mlserver"]
    cs = data["meta"]["code_state"]
    dirty = f", uncommitted under scorer/ or bundles/: {len(cs['uncommitted'])} files" if cs["uncommitted"] else ""
    lines = [
        f"- scorer {sc['scorer']} (git {cs['git_head']}{dirty}; scorer/*.py digest {cs['scorer_py_sha256']}; "
        "`scorer serve --workers 1 --log-level warning`, defaults otherwise), "
        f"uvicorn {sc['uvicorn']}, starlette {sc['starlette']}, uvloop {sc['uvloop']}",
        f"- MLflow {mf['mlflow']} (`mlflow models serve --env-manager local`, 1 worker: its default), "
        f"uvicorn {mf['uvicorn']}, fastapi {mf['fastapi']}",
        f"- MLServer {ms['mlserver']} + mlserver-sklearn {ms['mlserver-sklearn']} (`mlserver start`, default settings; "
        f"adaptive batching: max_batch_size {ADAPTIVE_BATCHING['max_batch_size']}, "
        f"max_batch_time {ADAPTIVE_BATCHING['max_batch_time'] * 1e3:g} ms), uvicorn {ms['uvicorn']}, uvloop {ms['uvloop']}",
    ]
    stack = {k: {sc[k], mf[k], ms[k]} for k in ("python", "scikit-learn", "numpy", "pandas", "scipy")}
    lines.append("- " + ", ".join(f"{k} {'/'.join(sorted(x for x in vals if x))}" + (" (differs between venvs!)" if len(vals) > 1 else "")
                                  for k, vals in stack.items()) + " in every venv; " + data["meta"]["wrk"])
    for peer, notes in data["setup_notes"].items():
        lines += [f"- **{peer} setup:** {n}" for n in notes]
    return lines


def header_lines(data: dict[str, Any]) -> list[str]:
    m = data["meta"]
    models = ", ".join(f"`{n}` (trained on {b['train_rows']:,} rows, model.joblib sha256 {b['model_sha256'][:12]})"
                       for n, b in data["bundles"].items())
    return [
        f"Run {m['started']} ({m['timezone']}) on {m['machine']}; total {m['elapsed_s'] / 60:.1f} min"
        + (f" (of which {m['waited_s'] / 60:.1f} min waiting for other load to stop)" if m.get("waited_s", 0) > 1 else "")
        + "; "
        f"mode: **{'QUICK (smoke test: short runs, noisy numbers)' if m['quick'] else 'full'}**; "
        f"{m['runs']} run(s) per point, {m['duration']} s each (10,000-row points: "
        f"{max(m['duration'], MIN_BIG_REQUEST_DURATION)} s) after a {m['warmup']} s warm-up; "
        f"server pinned to core {SERVER_CPUS}, `wrk -t1` to core {CLIENT_CPUS}"
        + ("" if m["pinned"] else " — **NOT pinned (taskset or 2 cores missing): not comparable**") + ".",
        f"Models: {models}. Request rows: a holdout draw (seed {DATA_SEED}); every server gets the same rows in "
        "its own format (scorer: pandas split JSON; MLflow: `dataframe_split`; MLServer: V2 with one BYTES/FP64 "
        "input per column and content_type `pd`), and answers `predict_proba` "
        "(scorer: prediction + probability_<class>).",
    ]


def render(data: dict[str, Any]) -> str:
    m = data["meta"]
    L = ["# Serving the same models: scorer vs MLflow vs MLServer", ""]
    L += header_lines(data) + [""]
    L += ["Versions:", ""] + versions_lines(data) + [""]
    L += ["## Throughput", "",
          f"Rows/s, mean of {m['runs']} run(s) ± half the range between runs. In-process predict_proba: the bare "
          "`Pipeline.predict_proba` on the same rows, one call at a time on the server's core (no HTTP, no JSON): the "
          "single-core limit without batching. \"scorer ÷ best peer\": 2xx rows/s of scorer over the best peer's. "
          f"†: other processes used more than {BUSY_PCT:.0f}% of a core during a run of this point (busy machine: "
          "the number is pessimistic).", ""]
    L += throughput_table(data) + [""]
    L += ["## Latency and CPU", "",
          "Client-side latency from wrk, p50 / p90 / p99 ms (mean over runs), and the server's CPU use (process tree, "
          "% of one core) in parentheses.", ""]
    L += latency_table(data) + [""]
    L += ["## Start-up, memory, errors, correctness", "",
          f"Cold start: process start → first 200 from the readiness probe (scorer `/ready`, MLflow `/ping`, MLServer "
          "`/v2/health/ready`), mean (min–max) over the starts. RSS: whole process tree (MLServer runs its model in a "
          "separate worker process by default). Errors: summed over all runs and points. Answers: 1, 100 and "
          f"10,000 rows checked with numpy.allclose(rtol={ALLCLOSE['rtol']:g}, atol={ALLCLOSE['atol']:g}) against "
          "in-process predict_proba at every start, before timing.", ""]
    L += server_table(data) + [""]
    L += in_process_section(data)
    L += notes_section(data)
    L += reference_section(data)
    return "\n".join(L)


def in_process_section(data: dict[str, Any]) -> list[str]:
    L = ["## In-process limit (one process pinned to core 1, no HTTP; medians)", "",
         "The model call is the one the server makes: the scoring plan's when the bundle has one (scoring path "
         "below), and the same bundle's scikit-learn call beside it.", "",
         "| model | scoring | rows | in-process limit (model call) ms | rows/s | scikit-learn model call ms | "
         "scorer `score()` ms | decode split JSON ms | decode → score → encode ms |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, b in data["bundles"].items():
        path = (b["inprocess"].get("scoring") or {}).get("path", "?")
        for n in ROW_COUNTS:
            x = b["inprocess"]["by_rows"][str(n)]
            sk = x.get("sklearn_limit")
            L.append(f"| {name} | {path} | {n:,} | {f_ms(x['limit']['median_ms'])} | {f_num(x['limit']['rows_s'])} | "
                     f"{f_ms(sk['median_ms']) if sk else '–'} | "
                     f"{f_ms(x['score']['median_ms'])} | {f_ms(x['decode']['median_ms'])} | {f_ms(x['pipeline']['median_ms'])} |")
    return L + [""]


def notes_section(data: dict[str, Any]) -> list[str]:
    L = ["## Notes", ""]
    scorer_label = data["servers"][0]["label"]
    for name, b in data["bundles"].items():
        for p in b["points"]:
            rpc = (p["servers"].get(scorer_label) or {}).get("requests_per_model_call")
            if rpc and p["rows_per_request"] == 1 and p["connections"] > 1 and rpc["mean"]:
                L.append(f"- scorer, {name}, 1 row × {p['connections']} connections: {rpc['mean']:.1f} requests per "
                         "model call (its adaptive batching, from /metrics).")
    foreign = max((a["foreign_cpu_pct_max"] for b in data["bundles"].values() for p in b["points"]
                   for a in p["servers"].values()), default=0.0)
    L.append(f"- Foreign CPU (machine CPU not used by the benchmark's processes, % of a core) was at most "
             f"{foreign:.0f}% during a measured run; background load before the run {data['meta']['background_load_pct']:.0f}%"
             + (" — **a busy machine: read the numbers as pessimistic**." if foreign > 25 else "."))
    L.append("- All servers run with their default settings on one core (MLflow's and MLServer's defaults write an "
             "access-log line per request; scorer's do not). wrk is closed-loop: each connection sends its next "
             "request when the previous answer arrived.")
    return L + [""]


def reference_section(data: dict[str, Any]) -> list[str]:
    L = ["## For reference only: peers.md (an earlier run, not this measurement)", "",
         "Served rows/s copied from `/work/shared/design/peers.md` (MLflow 3.17, MLServer 1.7 default / adaptive "
         "batching; 2 runs, same kind of machine). Use it to sanity-check the measured peer columns above.", "",
         "| model | rows/req | conns | MLflow | MLServer | MLServer adaptive |", "|---|---:|---:|---:|---:|---:|"]
    for (name, rows, conns), vals in PEERS_MD_REFERENCE.items():
        if name in data["bundles"]:
            L.append(f"| {name} | {rows:,} | {conns} | " + " | ".join(f"{v:,}" for v in vals) + " |")
    return L + [""]


def readme_section(data: dict[str, Any]) -> str:
    m = data["meta"]
    L = [README_BEGIN, "", f"### Latest results ({m['started'][:10]})", ""]
    L += header_lines(data) + [""] + versions_lines(data) + [""]
    L += [f"Rows/s (mean of {m['runs']} runs ± half the range; †: measured while other processes used > {BUSY_PCT:.0f}% "
          "of a core):", ""] + throughput_table(data) + [""]
    L += ["p50 / p90 / p99 ms (server CPU %):", ""] + latency_table(data) + [""]
    L += server_table(data) + [""]
    L += ["Full report (in-process limit, notes): `benchmarks/results/peers.md`, raw numbers: "
          "`benchmarks/results/peers.json` (committed; this section is generated from it by `benchmarks/render`).", "", README_END]
    return "\n".join(L)


def figures(data: dict[str, Any]) -> dict[str, Any]:
    """Rows/s (mean over the runs) per model, point and server, and the in-process limit, rounded as shown."""
    out: dict[str, Any] = {}
    for name, b in data["bundles"].items():
        for p in b["points"]:
            rows = p["rows_per_request"]
            key = f"{rows}x{p['connections']}"
            limit = b["inprocess"]["by_rows"].get(str(rows), {}).get("limit")
            out.setdefault(name, {})[key] = {
                "limit_rows_s": round(limit["rows_s"]) if limit else None,
                **{label: round(agg["rows_s"]["mean"]) for label, agg in p["servers"].items() if agg},
            }
    return out


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="scorer vs MLflow vs MLServer on the same models, under the same load.")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 run, 2 s per point (noisy numbers; the README shows complete runs only)")
    parser.add_argument("--runs", type=int, help="runs per point (default 2; --quick 1)")
    parser.add_argument("--duration", type=int, help="seconds per measured wrk run (default 8; --quick 2)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per point and run (default 2; --quick 1)")
    parser.add_argument("--bundle", choices=(*BUNDLES, "all"), default="all")
    parser.add_argument("--servers", default="scorer,scorer-sklearn,mlflow,mlserver,mlserver-adaptive",
                        help="comma-separated subset of scorer,scorer-sklearn,mlflow,mlserver,mlserver-adaptive")
    parser.add_argument("--no-readme", action="store_true", help="(kept for old scripts: benchmarks/render.py writes the READMEs)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="shared machine: for the first S seconds, wait for other processes to go quiet before "
                             "each server start and each point (default 0: measure at once, report the load)")
    parser.add_argument("--setup-only", action="store_true", help="install the peers and build the models, then stop")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 2)
    duration = args.duration or (2 if args.quick else 8)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    names = list(BUNDLES) if args.bundle == "all" else [args.bundle]
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]

    install_cleanup()
    started = time.time()
    t0 = time.perf_counter()

    # --- setup (both cores: nothing is measured yet) ---
    markers = _peer_setup.ensure_all()
    versions = {"scorer": _peer_setup.env_versions(sys.executable),
                "mlflow": _peer_setup.env_versions(_peer_setup.venv_python("mlflow")),
                "mlserver": _peer_setup.env_versions(_peer_setup.venv_python("mlserver"))}
    WORK.mkdir(parents=True, exist_ok=True)
    models: dict[str, dict[str, Path]] = {}
    for name in names:
        bundle = ensure_bundle(name, TRAIN_ROWS[name])
        models[name] = {
            "scorer": bundle,
            "mlflow": ensure_mlflow_model(name, bundle, versions["mlflow"]),
            "mlserver": ensure_mlserver_repo(name, bundle, adaptive=False),
            "mlserver-adaptive": ensure_mlserver_repo(name, bundle, adaptive=True),
        }
        models[name]["scorer-sklearn"] = bundle
    log(f"setup done in {time.perf_counter() - t0:.0f}s")
    if args.setup_only:
        return 0

    import joblib

    pin = cpu_pinning_available()
    if pin:
        os.sched_setaffinity(0, {int(CLIENT_CPUS)})  # keep this orchestrator off the server's core
    else:
        log("WARNING: cannot pin to cores 0/1 (need taskset and >= 2 cores): results are not comparable")
    cs = [c for c in contenders(versions) if c.key in wanted]
    if not cs or cs[0].key != "scorer":
        raise SystemExit("--servers must include scorer (the tables compare against it)")
    build = load_build_module()
    bench_serve.QUIET["deadline"] = started + args.wait_quiet if args.wait_quiet > 0 else 0.0
    background = idle_load()
    facts = run_facts(pin)
    state0 = code_state()
    cfg = {"runs": runs, "duration": duration, "warmup": warmup, "pinned": pin, "scenarios": SCENARIOS}
    data: dict[str, Any] = {
        "meta": {"started": _dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
                 "timezone": time.strftime("%Z"),
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
                 "quick": args.quick, "runs": runs, "duration": duration, "warmup": warmup, "pinned": pin,
                 "wrk": wrk_version(), "background_load_pct": background, "code_state": state0},
        "versions": versions,
        "setup_notes": {peer: m.get("notes", []) for peer, m in markers.items() if m.get("notes")},
        "servers": [{"key": c.key, "label": c.label, "kind": c.kind} for c in cs],
        "bundles": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            for name in names:
                pipe = joblib.load(models[name]["scorer"] / "artifacts" / "model.joblib")
                classes = [str(c) for c in pipe.classes_]
                frame = make_frame(build, name, max(ROW_COUNTS), DATA_SEED)
                expected = {n: pipe.predict_proba(frame.head(n)) for n in ROW_COUNTS}
                bodies: dict[str, dict[int, Path]] = {}
                luas: dict[str, dict[int, Path]] = {}
                for fmt, make_body in BODY_FORMATS.items():
                    d = tmp / name / fmt
                    d.mkdir(parents=True)
                    bodies[fmt] = {}
                    luas[fmt] = {}
                    for n in ROW_COUNTS:
                        bodies[fmt][n] = d / f"{n}.json"
                        bodies[fmt][n].write_bytes(make_body(frame.head(n)))
                        luas[fmt][n] = write_lua(d / f"{n}.lua", bodies[fmt][n])
                log(f"{name}: in-process limit (child pinned to core {SERVER_CPUS}) ...")
                inproc = bench_serve.run_inprocess(name, models[name]["scorer"], tmp / name / "scorer", tmp,
                                                   args.quick, pin)
                inproc.pop("expected")  # the servers are checked against predict_proba of the same rows below
                all_runs: list[dict[str, Any]] = []
                for r in range(runs):
                    log(f"{name}: run {r + 1}/{runs}")
                    one: dict[str, Any] = {}
                    for c in cs:
                        one[c.key] = run_server(c, name, models[name], bodies[c.body_format], luas[c.body_format],
                                                expected, classes, cfg, tmp / "logs")
                    all_runs.append(one)
                agg = aggregate(all_runs, cs, SCENARIOS)
                data["bundles"][name] = {
                    "train_rows": TRAIN_ROWS[name],
                    "model_sha256": sha256_file(models[name]["scorer"] / "artifacts" / "model.joblib"),
                    "classes": classes,
                    "inprocess": inproc,
                    **agg,
                    "runs": all_runs,
                }
        finally:
            cleanup()
    state1 = code_state()
    data["meta"]["code_state_end"] = state1
    data["meta"]["elapsed_s"] = time.perf_counter() - t0
    data["meta"]["waited_s"] = WAITED["s"]
    if state0 != state1:
        log("WARNING: scorer/ or bundles/ changed during the run")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    md = render(data)
    if state0 != state1:
        md += "\n**WARNING: scorer/ or bundles/ changed during this run.**\n"
    (RESULTS_DIR / "peers.md").write_text(md + "\n")
    facts = finish_facts(facts, t0)
    facts["mode"] = "quick" if args.quick else "full"
    # benchmarks/render writes the README section only from a complete run (both models, all four servers).
    facts["complete"] = not (args.quick or len(names) < len(BUNDLES) or len(cs) < 5)
    write_results("peers", facts, figures(data), data)
    print(md)
    log(f"total {data['meta']['elapsed_s'] / 60:.1f} min; wrote {RESULTS_DIR / 'peers.md'} and peers.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
