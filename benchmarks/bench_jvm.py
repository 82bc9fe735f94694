"""Spark ML and H2O MOJO bundles: in-process and served latency, throughput, cold start.

    .venv/bin/python benchmarks/bench_jvm.py [--quick]

For each JVM bundle (bundles/spark; bundles/h2o with both MOJO backends):

* in-process: ``Scorer.score`` on 1, 100 and 10,000 rows (median of 15 calls after 30 warm-up calls:
  the JVM's JIT keeps making Spark's per-call work faster for the first few dozen calls);
* served (``scorer serve``, the Spark session pinned to nothing: Spark runs its own threads):
  cold start (process start to the first 200 on /ready), sequential request latency p50 for
  1 / 100 / 10,000-row JSON bodies, and ``wrk`` with 64 connections each sending one row
  (rows/s, p50, p99, rows per model call from /metrics).

Results: printed as markdown and written to benchmarks/results/jvm.md and jvm.json (committed; the
README's figures are rendered from it by benchmarks/render.py). Answers are checked against in-process
predictions. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

CASES = [("spark", "bundles/spark", "genmodel"), ("h2o genmodel", "bundles/h2o", "genmodel"),
         ("h2o spark", "bundles/h2o", "spark")]
SIZES = (1, 100, 10_000)


def rows_frame(build: Any, bundle: Path, n: int) -> Any:
    columns = [c["name"] for c in json.loads((bundle / "manifest.json").read_text())["input_schema"]]
    return build.make_tabular_frame(n, seed=99)[columns]


def inprocess(bundle: Path, backend: str, quick: bool) -> dict[str, Any]:
    """Run in a child process (its own JVM) so each case starts cold and alone."""
    code = f"""
import json, statistics, sys, time
sys.path.insert(0, {str(h.REPO / 'benchmarks')!r})
import _harness as h
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from bench_jvm import rows_frame
from pathlib import Path
build = h.load_build_module()
t0 = time.perf_counter()
scorer = Scorer.load({str(bundle)!r}, LoadOptions(mojo_backend={backend!r}))
out = {{"load_s": time.perf_counter() - t0}}
for n in {SIZES!r}:
    df = rows_frame(build, Path({str(bundle)!r}), n)
    for _ in range({5 if quick else 30}):  # the JVM keeps getting faster for the first few dozen calls
        scorer.score(df)
    times = []
    for _ in range({3 if quick else 15}):
        t = time.perf_counter(); scorer.score(df); times.append(time.perf_counter() - t)
    out[str(n)] = statistics.median(times) * 1e3
    # The in-process limit every benchmark uses (benchmarks/_harness.py), after the JVM warm-up above.
    out["limit_" + str(n)] = h.baseline(scorer, df, {quick!r})
    out["expected_" + str(n)] = h.expected_predictions(scorer, df)
print("RESULT " + json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=h.REPO, env=h.clean_env())
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(line[len("RESULT "):])


def served(bundle: Path, backend: str, build: Any, tmp: Path, quick: bool, expected: dict[str, Any]) -> dict[str, Any]:
    port = h.free_port()
    cmd = [str(h.REPO / ".venv/bin/scorer"), "serve", str(bundle), "--port", str(port), "--log-level", "warning",
           "--mojo-backend", backend]
    server = h.ServerProcess(f"jvm-{bundle.name}-{backend}", cmd, port, "/ready", tmp / "logs", pin=False, cpus=None)
    try:
        out: dict[str, Any] = {"cold_start_s": server.wait_ready(timeout=300)}
        out["rss_mib"] = server.rss_mib()
        for n in SIZES:
            body = rows_frame(build, bundle, n).to_json(orient="split", index=False).encode()
            status, answer = h.http_request(port, "POST", "/predict", body)
            if status != 200:
                raise h.AnswerMismatch(f"{server.label}: POST /predict with {n} rows -> {status}")
            out[f"answers_max_abs_diff_{n}"] = h.check_answers(json.loads(answer)["predictions"], expected[str(n)],
                                                               f"{server.label}: {n} rows")
            for _ in range(5 if quick else 30):
                h.http_request(port, "POST", "/predict", body)
            times = []
            for _ in range(3 if quick else 15):
                t = time.perf_counter()
                status, _ = h.http_request(port, "POST", "/predict", body)
                times.append(time.perf_counter() - t)
                assert status == 200
            out[f"http_{n}_ms"] = statistics.median(times) * 1e3
        one = tmp / f"one-{bundle.name}.json"
        one.write_bytes(rows_frame(build, bundle, 1).to_json(orient="split", index=False).encode())
        lua = h.write_lua(tmp / f"one-{bundle.name}.lua", one)
        _, before = h.http_request(port, "GET", "/metrics")
        w = h.measure(server, "/predict", lua, 1, 64, 5 if quick else 15, 2 if quick else 5, pin=False)
        _, after = h.http_request(port, "GET", "/metrics")
        calls = _metric(after, "scorer_batch_requests_count") - _metric(before, "scorer_batch_requests_count")
        reqs = _metric(after, "scorer_batch_requests_sum") - _metric(before, "scorer_batch_requests_sum")
        out["c64"] = {k: w[k] for k in ("rows_s", "p50_ms", "p99_ms", "non_2xx", "socket_errors")}
        out["c64"]["requests_per_call"] = reqs / calls if calls else None
        return out
    finally:
        server.stop()


def _metric(text: bytes | str, name: str) -> float:
    text = text.decode() if isinstance(text, bytes) else text
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.split("{")[0].split(" ")[0] == name)


def render(results: dict[str, Any]) -> str:
    lines = [
        "| bundle | load in-process | in-process 1 / 100 / 10k rows (ms) | served cold start | "
        "HTTP 1 / 100 / 10k rows p50 (ms) | 64 conns × 1 row: rows/s | p50 / p99 (ms) | requests per call |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        i, s = r["inprocess"], r["served"]
        c = s["c64"]
        lines.append(
            f"| {label} | {i['load_s']:.1f} s | {i['1']:.1f} / {i['100']:.1f} / {i['10000']:.1f} | "
            f"{s['cold_start_s']:.1f} s | {s['http_1_ms']:.1f} / {s['http_100_ms']:.1f} / {s['http_10000_ms']:.1f} | "
            f"{c['rows_s']:,.0f} | {c['p50_ms']:.0f} / {c['p99_ms']:.0f} | {c['requests_per_call'] or 0:.1f} |"
        )
    return "\n".join(lines) + "\n"


def figures(results: dict[str, Any]) -> dict[str, Any]:
    """Flat figures (benchmarks/render.py shows them as a table): limit and served, per bundle and size."""
    out: dict[str, Any] = {}
    for label, r in results.items():
        i, s = r["inprocess"], r["served"]
        for n in SIZES:
            out[f"{label}: in-process limit {n} rows, ms"] = round(i[f"limit_{n}"]["median_ms"], 1)
            out[f"{label}: HTTP {n} rows p50, ms"] = round(s[f"http_{n}_ms"], 1)
        out[f"{label}: 64 conns x 1 row, rows/s"] = round(s["c64"]["rows_s"])
        out[f"{label}: cold start, s"] = round(s["cold_start_s"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and shorter wrk runs")
    args = parser.parse_args(argv)
    h.install_cleanup()
    build = h.load_build_module()
    started = time.perf_counter()
    facts = h.run_facts(False)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-jvm-") as tmp:
        for label, rel, backend in CASES:
            bundle = h.REPO / rel
            h.log(f"{label}: in-process")
            inproc = inprocess(bundle, backend, args.quick)
            h.log(f"{label}: served")
            expected = {str(n): inproc.pop(f"expected_{n}") for n in SIZES}
            results[label] = {"inprocess": inproc,
                              "served": served(bundle, backend, build, Path(tmp), args.quick, expected)}
    table = render(results)
    print(table)
    h.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    facts = h.finish_facts(facts, started)
    facts["mode"] = "quick" if args.quick else "full"
    h.write_results("jvm", facts, figures(results), results)
    (h.RESULTS_DIR / "jvm.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
