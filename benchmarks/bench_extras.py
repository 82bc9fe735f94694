"""scorer-only points the peer comparison does not cover: large requests as JSON vs Arrow against the
in-process limits, and 1 vs 2 workers on the whole machine (memory per extra worker included).

    .venv/bin/python benchmarks/bench_extras.py            # (benchmarks/run calls it after the peers)
    .venv/bin/python benchmarks/bench_extras.py --quick

Writes benchmarks/results/extras.md (+ .json) and, unless --quick, the extras section of
benchmarks/README.md. Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402
from bench_peers import DATA_SEED, TRAIN_ROWS, ensure_bundle  # noqa: E402

README_BEGIN = "<!-- bench_extras:begin (written by benchmarks/run; do not edit by hand) -->"
README_END = "<!-- bench_extras:end -->"
ARROW = "application/vnd.apache.arrow.stream"

LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "@CT@"
wrk.headers["Accept"] = "@ACCEPT@"
local f = assert(io.open("@BODY@", "rb"))
wrk.body = f:read("*a")
f:close()
""" + h.LUA_TEMPLATE.split("f:close()", 1)[1]

IN_PROCESS = r"""
import json, sys, time
from scorer import codecs
from scorer.core import Scorer
scorer = Scorer.load(sys.argv[1])
estimator = scorer.model.estimator
json_body, arrow_body = open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
columns = list(scorer.schema.columns)
def full(body, media):
    table = scorer.prepare(codecs.decode(body, media, columns))
    return codecs.encode(scorer.predict(table), media)
frame = scorer.prepare(codecs.decode(json_body, codecs.JSON, columns)).to_frame()
def best(fn, n=5):
    fn(); out = []
    for _ in range(n):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return min(out)
print(json.dumps({
    "json_full_s": best(lambda: full(json_body, codecs.JSON)),
    "arrow_full_s": best(lambda: full(arrow_body, codecs.ARROW_STREAM)),
    "predict_proba_s": best(lambda: estimator.predict_proba(frame)),
}))
"""


def _pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _server(bundle: Path, logs: Path, workers: int, pin: bool) -> h.ServerProcess:
    port = h.free_port()
    cmd = [str(h.REPO / ".venv/bin/scorer"), "serve", str(bundle), "--port", str(port), "--workers", str(workers),
           "--log-level", "warning"]
    server = h.ServerProcess(f"scorer-w{workers}", cmd, port, "/ready", logs, pin=pin,
                             cpus=h.SERVER_CPUS if pin else None)
    server.wait_ready()
    return server


def _points(server: h.ServerProcess, luas: dict[str, Path], rows: dict[str, int], conns: dict[str, int],
            runs: int, duration: float, warmup: float, pin: bool) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for key, lua in luas.items():
        out[key] = [h.measure(server, "/predict", lua, rows[key], conns[key], duration, warmup, pin) for _ in range(runs)]
    return out


def _mean(results: list[dict[str, Any]], field: str) -> float:
    values = [r[field] for r in results if r.get(field) is not None]
    return sum(values) / len(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    runs, duration, warmup = (1, 3, 1) if args.quick else (2, 8, 2)
    h.install_cleanup()
    build = h.load_build_module()
    work = HERE / ".work" / "extras"
    work.mkdir(parents=True, exist_ok=True)
    logs = HERE / "results" / "logs"
    pin = h.cpu_pinning_available()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "quick": args.quick,
                              "code": h.code_state(), "machine": platform.platform(), "large": {}, "workers": {}}
    from scorer import codecs
    from scorer.table import Table

    for name in ("tabular", "text"):
        bundle = ensure_bundle(name, TRAIN_ROWS[name])
        frame = h.make_frame(build, name, 10_000, DATA_SEED)
        json_body, arrow_body = work / f"{name}-10000.json", work / f"{name}-10000.arrows"
        json_body.write_text(frame.to_json(orient="split"))
        arrow_body.write_bytes(codecs.encode(Table.from_frame(frame), ARROW))
        one = work / f"{name}-1.json"
        one.write_text(frame.head(1).to_json(orient="split"))
        code, out = h.run_foreground(h.pinned(h.SERVER_CPUS, [sys.executable, "-c", IN_PROCESS, str(bundle),
                                                              str(json_body), str(arrow_body)], pin))
        if code != 0:
            raise RuntimeError(out)
        inproc = json.loads(out.strip().splitlines()[-1])
        luas = {}
        for key, media, body_file in (("json", codecs.JSON, json_body), ("arrow", ARROW, arrow_body)):
            luas[key] = work / f"{name}-{key}.lua"
            luas[key].write_text(LUA.replace("@CT@", media).replace("@ACCEPT@", media).replace("@BODY@", str(body_file)))
        h.log(f"{name}: 10,000-row requests, JSON vs Arrow (1 worker pinned)")
        server = _server(bundle, logs, 1, pin)
        try:
            served = _points(server, luas, {"json": 10_000, "arrow": 10_000}, {"json": 4, "arrow": 4},
                             runs, max(duration, 5), warmup, pin)
        finally:
            server.stop()
        report["large"][name] = {
            "in_process": {"json_full_rows_s": 10_000 / inproc["json_full_s"],
                           "arrow_full_rows_s": 10_000 / inproc["arrow_full_s"],
                           "predict_proba_rows_s": 10_000 / inproc["predict_proba_s"]},
            "served": {k: {"rows_s": _mean(v, "ok_rows_s"), "p50_ms": _mean(v, "p50_ms"),
                           "errors": sum(r["non_2xx"] + r["socket_errors"] for r in v)} for k, v in served.items()},
        }

        h.log(f"{name}: 1 vs 2 workers, unpinned")
        one_lua = work / f"{name}-1.lua"
        one_lua.write_text(LUA.replace("@CT@", codecs.JSON).replace("@ACCEPT@", codecs.JSON).replace("@BODY@", str(one)))
        big_lua = luas["json"]
        for workers in (1, 2):
            server = _server(bundle, logs, workers, pin=False)
            try:
                pids = h.tree_pids(server.pid)
                memory = {"rss_mib": [round(_rss_mib(p), 1) for p in pids], "pss_mib": [round(_pss_mib(p), 1) for p in pids]}
                served = _points(server, {"1x64": one_lua, "10000x4": big_lua}, {"1x64": 1, "10000x4": 10_000},
                                 {"1x64": 64, "10000x4": 4}, runs, duration, warmup, pin=False)
            finally:
                server.stop()
            report["workers"].setdefault(name, {})[str(workers)] = {
                "memory": memory, "cold_start_s": server.cold_start_s,
                "served": {k: {"rows_s": _mean(v, "ok_rows_s"), "p50_ms": _mean(v, "p50_ms"), "p99_ms": _mean(v, "p99_ms"),
                               "errors": sum(r["non_2xx"] + r["socket_errors"] for r in v)} for k, v in served.items()},
            }
    text = render(report)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "extras.json").write_text(json.dumps(report, indent=1))
    (results / "extras.md").write_text(text)
    print(text)
    if not args.quick and not args.no_readme:
        readme = (HERE / "README.md").read_text()
        block = f"{README_BEGIN}\n{text}\n{README_END}"
        if README_BEGIN in readme:
            head, rest = readme.split(README_BEGIN, 1)
            readme = head + block + rest.split(README_END, 1)[1]
        else:
            readme = readme.rstrip() + "\n\n" + block + "\n"
        (HERE / "README.md").write_text(readme)
    return 0


def render(r: dict[str, Any]) -> str:
    L = [f"### scorer only: large requests and workers ({r['date']} UTC{', QUICK' if r['quick'] else ''})", ""]
    L.append("10,000-row requests, 4 connections, 1 worker pinned to core 1, wrk on core 0. In-process: the same "
             "process work without HTTP on the same core (best of 5).")
    L.append("")
    L.append("| model | body | served rows/s | in-process decode→predict→encode rows/s | served ÷ that | "
             "in-process predict_proba rows/s | served ÷ that | p50 ms | errors |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, d in r["large"].items():
        ip = d["in_process"]
        for body, key in (("JSON", "json"), ("Arrow stream", "arrow")):
            s = d["served"][key]
            full = ip["json_full_rows_s" if key == "json" else "arrow_full_rows_s"]
            L.append(f"| {name} | {body} | {s['rows_s']:,.0f} | {full:,.0f} | {s['rows_s'] / full:.2f}× | "
                     f"{ip['predict_proba_rows_s']:,.0f} | {s['rows_s'] / ip['predict_proba_rows_s']:.2f}× | "
                     f"{s['p50_ms']:.0f} | {s['errors']} |")
    L.append("")
    L.append("1 vs 2 workers, nothing pinned (server and wrk share the 2 cores). Memory per process right after "
             "start (supervisor first): RSS, and PSS (shared pages split between the processes that map them).")
    L.append("")
    L.append("| model | workers | 1 row × 64 conns rows/s (p99 ms) | 10,000 rows × 4 conns rows/s | RSS MiB per process | "
             "PSS MiB per process | PSS total MiB |")
    L.append("|---|---:|---:|---:|---|---|---:|")
    for name, per in r["workers"].items():
        for workers, d in per.items():
            s = d["served"]
            m = d["memory"]
            L.append(f"| {name} | {workers} | {s['1x64']['rows_s']:,.0f} ({s['1x64']['p99_ms']:.0f}) | "
                     f"{s['10000x4']['rows_s']:,.0f} | {' + '.join(f'{x:.0f}' for x in m['rss_mib'])} | "
                     f"{' + '.join(f'{x:.0f}' for x in m['pss_mib'])} | {sum(m['pss_mib']):.0f} |")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
