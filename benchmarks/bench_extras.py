"""scorer-only points the peer comparison does not cover: large requests as JSON vs Arrow against the
in-process limits, and 1 vs 2 workers on the whole machine (memory per extra worker included).

    .venv/bin/python benchmarks/bench_extras.py            # (benchmarks/run calls it after the peers)
    .venv/bin/python benchmarks/bench_extras.py --quick

Writes benchmarks/results/extras.json (committed; benchmarks/render turns it into the extras section of
benchmarks/README.md) and extras.md. Talks to 127.0.0.1 only.
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
import json, sys
sys.path.insert(0, sys.argv[4])
import _harness as h
from scorer import codecs
from scorer.core import Scorer
scorer = Scorer.load(sys.argv[1])
json_body, arrow_body = open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
columns = list(scorer.schema.columns)
def full(body, media):
    table = scorer.prepare(codecs.decode(body, media, columns))
    return codecs.encode(scorer.predict(table), media)
frame = codecs.decode(json_body, codecs.JSON, columns).to_frame()
reps, budget = h.repeat_policy(len(frame), "--quick" in sys.argv)
print(json.dumps({
    "json_full": h.time_call(lambda: full(json_body, codecs.JSON), min_repeats=reps, budget_s=budget),
    "arrow_full": h.time_call(lambda: full(arrow_body, codecs.ARROW_STREAM), min_repeats=reps, budget_s=budget),
    "limit": h.baseline(scorer, frame, "--quick" in sys.argv),
    "expected": h.expected_predictions(scorer, frame),
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


def _check(server: h.ServerProcess, media: str, body_file: Path, expected: dict[str, Any], label: str) -> float:
    """One request with the benchmark's body: the answer must be the in-process predictions, else stop."""
    import http.client

    import pyarrow as pa

    conn = http.client.HTTPConnection(h.HOST, server.port, timeout=120)
    try:
        conn.request("POST", "/predict", body=body_file.read_bytes(), headers={"Content-Type": media, "Accept": media})
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
    finally:
        conn.close()
    if status != 200:
        raise h.AnswerMismatch(f"{label}: POST /predict -> {status}: {body[:300]!r}")
    got = (pa.ipc.open_stream(body).read_all().to_pandas() if media == ARROW
           else json.loads(body)["predictions"])
    return h.check_answers(got, expected, label)


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
    parser.add_argument("--no-readme", action="store_true", help="(kept for old scripts: the READMEs are written by benchmarks/render.py)")
    args = parser.parse_args(argv)
    runs, duration, warmup = (1, 3, 1) if args.quick else (2, 8, 2)
    h.install_cleanup()
    build = h.load_build_module()
    work = HERE / ".work" / "extras"
    work.mkdir(parents=True, exist_ok=True)
    logs = HERE / "results" / "logs"
    pin = h.cpu_pinning_available()
    started = time.perf_counter()
    facts = h.run_facts(pin)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "quick": args.quick,
                              "code": h.code_state(), "machine": platform.platform(), "large": {}, "workers": {}}
    import pyarrow as pa

    JSON = "application/json"

    for name in ("tabular", "text"):
        bundle = ensure_bundle(name, TRAIN_ROWS[name])
        frame = h.make_frame(build, name, 10_000, DATA_SEED)
        json_body, arrow_body = work / f"{name}-10000.json", work / f"{name}-10000.arrows"
        json_body.write_text(frame.to_json(orient="split"))
        table = pa.Table.from_pandas(frame, preserve_index=False)
        with pa.ipc.new_stream(str(arrow_body), table.schema) as writer:
            writer.write_table(table)
        one = work / f"{name}-1.json"
        one.write_text(frame.head(1).to_json(orient="split"))
        code, out = h.run_foreground(h.pinned(h.SERVER_CPUS, [sys.executable, "-c", IN_PROCESS, str(bundle),
                                                              str(json_body), str(arrow_body), str(HERE)]
                                              + (["--quick"] if args.quick else []), pin))
        if code != 0:
            raise RuntimeError(out)
        inproc = json.loads(out.strip().splitlines()[-1])
        expected = inproc.pop("expected")
        luas = {}
        for key, media, body_file in (("json", JSON, json_body), ("arrow", ARROW, arrow_body)):
            luas[key] = work / f"{name}-{key}.lua"
            luas[key].write_text(LUA.replace("@CT@", media).replace("@ACCEPT@", media).replace("@BODY@", str(body_file)))
        h.log(f"{name}: 10,000-row requests, JSON vs Arrow (1 worker pinned)")
        server = _server(bundle, logs, 1, pin)
        try:
            answers = {key: _check(server, media, body_file, expected, f"{name} {key}")
                       for key, media, body_file in (("json", JSON, json_body), ("arrow", ARROW, arrow_body))}
            served = _points(server, luas, {"json": 10_000, "arrow": 10_000}, {"json": 4, "arrow": 4},
                             runs, max(duration, 5), warmup, pin)
        finally:
            server.stop()
        report["large"][name] = {
            "in_process": {"json_full_rows_s": 10_000 / (inproc["json_full"]["median_ms"] / 1e3),
                           "arrow_full_rows_s": 10_000 / (inproc["arrow_full"]["median_ms"] / 1e3),
                           "limit_rows_s": inproc["limit"]["rows_s"], "timings": inproc},
            "answers_max_abs_diff": answers,
            "served": {k: {"rows_s": _mean(v, "ok_rows_s"), "p50_ms": _mean(v, "p50_ms"),
                           "errors": sum(r["non_2xx"] + r["socket_errors"] for r in v)} for k, v in served.items()},
        }

        h.log(f"{name}: 1 vs 2 workers, unpinned")
        one_lua = work / f"{name}-1.lua"
        one_lua.write_text(LUA.replace("@CT@", JSON).replace("@ACCEPT@", JSON).replace("@BODY@", str(one)))
        big_lua = luas["json"]
        for workers in (1, 2):
            server = _server(bundle, logs, workers, pin=False)
            try:
                pids = h.tree_pids(server.pid)
                memory = {"rss_mib": [round(_rss_mib(p), 1) for p in pids], "pss_mib": [round(_pss_mib(p), 1) for p in pids]}
                _check(server, JSON, one, {"columns": expected["columns"], "data": expected["data"][:1]},
                       f"{name} 1 row, {workers} worker(s)")
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
    facts = h.finish_facts(facts, started)
    facts["mode"] = "quick" if args.quick else "full"
    h.write_results("extras", facts, figures(report), report)
    (HERE / "results" / "extras.md").write_text(text)
    print(text)
    return 0


def figures(r: dict[str, Any]) -> dict[str, Any]:
    """The figures of the tables ``render`` writes, rounded as shown."""
    large = {name: {"limit_rows_s": round(d["in_process"]["limit_rows_s"]),
                    **{f"{k}_served_rows_s": round(v["rows_s"]) for k, v in d["served"].items()},
                    **{f"{k}_served_over_limit": round(v["rows_s"] / d["in_process"]["limit_rows_s"], 2)
                       for k, v in d["served"].items()}}
             for name, d in r["large"].items()}
    return {"large": large}


def render(r: dict[str, Any]) -> str:
    L = [f"### scorer only: large requests and workers ({r['date']} UTC{', QUICK' if r['quick'] else ''})", ""]
    L.append("10,000-row requests, 4 connections, 1 worker pinned to core 1, wrk on core 0. In-process: the same "
             "process work without HTTP on the same core; in-process limit: the model call (benchmarks/_harness.py), medians.")
    L.append("")
    L.append("| model | body | served rows/s | in-process decode→predict→encode rows/s | served ÷ that | "
             "in-process limit rows/s | served ÷ that | p50 ms | errors |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, d in r["large"].items():
        ip = d["in_process"]
        for body, key in (("JSON", "json"), ("Arrow stream", "arrow")):
            s = d["served"][key]
            full = ip["json_full_rows_s" if key == "json" else "arrow_full_rows_s"]
            L.append(f"| {name} | {body} | {s['rows_s']:,.0f} | {full:,.0f} | {s['rows_s'] / full:.2f}× | "
                     f"{ip['limit_rows_s']:,.0f} | {s['rows_s'] / ip['limit_rows_s']:.2f}× | "
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
