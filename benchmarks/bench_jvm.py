"""Spark ML and H2O MOJO bundles, native (numpy, no JVM) vs the JVM path: latency, throughput, cold start, memory.

    .venv/bin/python benchmarks/bench_jvm.py [--quick] [--no-images] [--jvm-unpinned]

Cases (``--spark-scoring`` set explicitly: the default, auto, picks native when it can):

* ``spark native`` / ``spark jvm``: bundles/spark natively, and in a local SparkSession;
* ``h2o native`` / ``h2o jvm genmodel`` / ``h2o jvm spark``: bundles/h2o natively, and on the JVM
  with each ``--mojo-backend``.

For each case, in the same run:

* in-process, in a child process of its own (so each starts cold and alone; a JVM case runs its own JVM):
  load time, ``Scorer.score`` on 1, 100 and 10,000 rows (median after a warm-up: the JVM's JIT keeps
  making Spark's per-call work faster for the first few dozen calls), the in-process limit every
  benchmark uses (benchmarks/_harness.py) and the in-process predictions;
* served (``scorer serve``): cold start (process start to the first 200 on /ready), sequential
  request latency p50 for 1 / 100 / 10,000-row JSON bodies, ``wrk`` with 64 connections each
  sending one row (rows/s, p50, p99, rows per model call from /metrics), the peak RSS of the
  server's process tree (Python and, on the JVM path, the Java child; sampled every 50 ms from
  start to stop) and the path /metadata reports (it must be the one asked for).

Pinning: every server and in-process child runs on core 1 (``taskset``), wrk on core 0: "64
connections on one core". ``--jvm-unpinned`` gives the JVM cases both cores (Spark's own
threads, the JIT and GC then run beside wrk).

Answers: every served answer must equal that case's in-process predictions (numbers within 1e-9
relative), and the native answers must equal the JVM answers on the same rows: predictions equal,
probabilities within 1e-9 relative (the issue's exactness contract; the largest relative
difference is reported). Any mismatch stops the run.

Images (skipped with ``--no-images``): both images are built from this checkout (``Dockerfile``,
the main image, without Java or pyspark; ``Dockerfile.spark``), then for each bundle ``docker run``
is timed to the first 200 on /ready: the main image serving it natively (pinned to core 1 with
``--cpuset-cpus``) and the Spark image on the JVM, with the peak RSS of the container's process
tree, the path /metadata reports, and the sample's answers checked against the in-process ones.

Results: printed as markdown and written to benchmarks/results/jvm.md and jvm.json (committed; the
README's figures are rendered from it by benchmarks/render.py). Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402
import _images  # noqa: E402

SIZES = (1, 100, 10_000)
RTOL = 1e-9  # native vs JVM: the exactness contract (scorer.native_scoring.RTOL)


@dataclass(frozen=True)
class Case:
    label: str
    bundle: str  # the folder under bundles/
    scoring: str  # --spark-scoring: native or spark (the JVM)
    backend: str = "genmodel"  # --mojo-backend (H2O on the JVM)

    @property
    def native(self) -> bool:
        return self.scoring == "native"

    @property
    def path(self) -> str:
        """What /metadata's ``scoring.path`` must say."""
        return "native" if self.native else "jvm"


# JVM cases first: a native case's answers are checked against them.
CASES = (Case("spark jvm", "spark", "spark"), Case("spark native", "spark", "native"),
         Case("h2o jvm genmodel", "h2o", "spark", "genmodel"), Case("h2o jvm spark", "h2o", "spark", "spark"),
         Case("h2o native", "h2o", "native"))
MAIN_IMAGE, SPARK_IMAGE = "scorer-bench:jvm", "scorer-spark-bench:jvm"


def rows_frame(build: Any, bundle: Path, n: int) -> Any:
    columns = [c["name"] for c in json.loads((bundle / "manifest.json").read_text())["input_schema"]]
    return build.make_tabular_frame(n, seed=99)[columns]


def inprocess(case: Case, bundle: Path, quick: bool, cpus: str | None) -> dict[str, Any]:
    """Run in a child process (its own JVM, pinned like the server) so each case starts cold and alone."""
    code = f"""
import json, statistics, sys, time
import pandas as pd
sys.path.insert(0, {str(h.REPO / 'benchmarks')!r})
import _harness as h
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from bench_jvm import rows_frame
from pathlib import Path
build = h.load_build_module()
t0 = time.perf_counter()
scorer = Scorer.load({str(bundle)!r}, LoadOptions(spark_scoring={case.scoring!r}, mojo_backend={case.backend!r}))
out = {{"load_s": time.perf_counter() - t0, "scoring": getattr(scorer.model, "scoring", None),
        "pyspark_imported": "pyspark" in sys.modules}}
for n in {SIZES!r}:
    df = rows_frame(build, Path({str(bundle)!r}), n)
    for _ in range({5 if quick else 30}):  # the JVM keeps getting faster for the first few dozen calls
        scorer.score(df)
    times = []
    for _ in range({5 if quick else 15}):
        t = time.perf_counter(); scorer.score(df); times.append(time.perf_counter() - t)
    out[str(n)] = statistics.median(times) * 1e3
    # The in-process limit every benchmark uses (benchmarks/_harness.py), after the JVM warm-up above.
    out["limit_" + str(n)] = h.baseline(scorer, df, {quick!r})
    out["expected_" + str(n)] = h.expected_predictions(scorer, df)
sample = scorer.bundle.manifest.sample_input
out["expected_sample"] = h.expected_predictions(scorer, pd.DataFrame(sample["data"], columns=sample["columns"]))
print("RESULT " + json.dumps(out))
"""
    cmd = h.pinned(cpus, [sys.executable, "-c", code], cpus is not None)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=h.REPO, env=h.clean_env())
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{case.label}: in-process child failed:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(line[len("RESULT "):])
    if (out["scoring"] or {}).get("path") != case.path:
        raise h.AnswerMismatch(f"{case.label}: in-process scoring path {out['scoring']}, expected {case.path}")
    if case.native and out["pyspark_imported"]:
        raise h.AnswerMismatch(f"{case.label}: native scoring imported pyspark")
    return out


def sequential_p50(port: int, body: bytes, quick: bool, rows: int, warmup: int) -> float:
    """Median latency (ms) of one POST /predict at a time, after ``warmup`` untimed requests."""
    for _ in range(warmup):
        h.http_request(port, "POST", "/predict", body)

    def call() -> None:
        status, _ = h.http_request(port, "POST", "/predict", body)
        if status != 200:
            raise h.AnswerMismatch(f"POST /predict -> {status}")

    reps, budget = h.repeat_policy(rows, quick)
    res: float = h.time_call(call, min_repeats=reps, budget_s=budget)["median_ms"]
    return res


def served(case: Case, bundle: Path, build: Any, tmp: Path, quick: bool, expected: dict[str, Any],
           cpus: str | None) -> dict[str, Any]:
    port = h.free_port()
    cmd = [str(h.REPO / ".venv/bin/scorer"), "serve", str(bundle), "--port", str(port), "--log-level", "warning",
           "--spark-scoring", case.scoring, "--mojo-backend", case.backend]
    server = h.ServerProcess(case.label.replace(" ", "-"), cmd, port, "/ready", tmp / "logs", pin=cpus is not None,
                             cpus=cpus)
    peak = _images.PeakRss(server.pid)
    try:
        out: dict[str, Any] = {"cold_start_s": server.wait_ready(timeout=300), "pinned_cpus": cpus}
        out["rss_mib_ready"] = server.rss_mib()
        status, meta = h.http_request(port, "GET", "/metadata")
        out["scoring"] = json.loads(meta)["scoring"] if status == 200 else None
        if (out["scoring"] or {}).get("path") != case.path:
            raise h.AnswerMismatch(f"{case.label}: /metadata scoring {out['scoring']}, expected path {case.path}")
        for n in SIZES:
            body = rows_frame(build, bundle, n).to_json(orient="split", index=False).encode()
            status, answer = h.http_request(port, "POST", "/predict", body)
            if status != 200:
                raise h.AnswerMismatch(f"{case.label}: POST /predict with {n} rows -> {status}")
            out[f"answers_max_abs_diff_{n}"] = h.check_answers(json.loads(answer)["predictions"], expected[str(n)],
                                                               f"{case.label}: {n} rows", rtol=RTOL, atol=0.0)
            out[f"http_{n}_ms"] = sequential_p50(port, body, quick, n, warmup=5 if quick else 30)
        one = tmp / f"one-{bundle.name}.json"
        one.write_bytes(rows_frame(build, bundle, 1).to_json(orient="split", index=False).encode())
        lua = h.write_lua(tmp / f"one-{bundle.name}.lua", one)
        _, before = h.http_request(port, "GET", "/metrics")
        w = h.measure(server, "/predict", lua, 1, 64, 5 if quick else 15, 2 if quick else 5,
                      pin=h.cpu_pinning_available())
        _, after = h.http_request(port, "GET", "/metrics")
        calls = _metric(after, "scorer_batch_requests_count") - _metric(before, "scorer_batch_requests_count")
        reqs = _metric(after, "scorer_batch_requests_sum") - _metric(before, "scorer_batch_requests_sum")
        out["c64"] = {k: w[k] for k in ("rows_s", "ok_rows_s", "p50_ms", "p99_ms", "non_2xx", "socket_errors", "cpu")}
        out["c64"]["requests_per_call"] = reqs / calls if calls else None
        if w["non_2xx"] or w["socket_errors"]:
            raise h.AnswerMismatch(f"{case.label}: wrk saw {w['non_2xx']} non-2xx answers, {w['socket_errors']} socket errors")
        out["peak_rss_mib"] = peak.stop()
        return out
    finally:
        peak.stop()
        server.stop()


def _metric(text: bytes | str, name: str) -> float:
    text = text.decode() if isinstance(text, bytes) else text
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.split("{")[0].split(" ")[0] == name)


def native_vs_jvm(native: dict[str, Any], jvm: dict[str, Any], label: str) -> float:
    """Largest relative difference of the numbers of two split-dict answers; labels must be equal."""
    import numpy as np
    import pandas as pd

    a = pd.DataFrame(native["data"], columns=native["columns"])
    b = pd.DataFrame(jvm["data"], columns=jvm["columns"])
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        raise h.AnswerMismatch(f"{label}: columns {list(a.columns)} x {len(a)} vs {list(b.columns)} x {len(b)}")
    worst = 0.0
    for c in a.columns:
        try:
            x, y = a[c].to_numpy(dtype=float), b[c].to_numpy(dtype=float)
        except (TypeError, ValueError):
            bad = np.flatnonzero(a[c].astype(str).to_numpy() != b[c].astype(str).to_numpy())
            if len(bad):
                raise h.AnswerMismatch(f"{label}: column {c!r} row {bad[0]}: native {a[c][bad[0]]!r}, JVM {b[c][bad[0]]!r}")
            continue
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            raise h.AnswerMismatch(f"{label}: column {c!r}: NaN in one answer and not the other")
        ok = ~np.isnan(y)
        rel = np.abs(x[ok] - y[ok]) / np.maximum(np.abs(y[ok]), np.finfo(float).tiny)
        if len(rel) and rel.max() > RTOL:
            row = int(np.flatnonzero(ok)[int(rel.argmax())])
            raise h.AnswerMismatch(f"{label}: column {c!r} row {row}: native {x[row]!r}, JVM {y[row]!r} "
                                   f"(relative difference {rel.max():.3g} > {RTOL})")
        worst = max(worst, float(rel.max()) if len(rel) else 0.0)
    return worst


def images(tmp: Path, quick: bool, expected: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Build both images, then time ``docker run`` to /ready: main image natively vs Spark image on the JVM."""
    _images.ensure_engine()
    out: dict[str, Any] = {"images": {}, "runs": {}}
    for dockerfile, tag in (("Dockerfile", MAIN_IMAGE), ("Dockerfile.spark", SPARK_IMAGE)):
        h.log(f"images: building {dockerfile} as {tag}")
        out["images"][tag] = {**_images.build(dockerfile, tag), **_images.has_jvm(tag)}
    main = out["images"][MAIN_IMAGE]
    if main["java"] or main["pyspark"]:
        raise RuntimeError(f"the main image has java={main['java']} pyspark={main['pyspark']}: it must have neither")
    for name in expected:  # the bundles measured (each with a JVM case: its answers are the reference)
        bundle = _images.publish(h.REPO / "bundles" / name, tmp / "published" / name)
        sample = json.loads((bundle / "manifest.json").read_text())["sample_input"]
        body = json.dumps(sample).encode()
        for tag, scoring, cpus in ((MAIN_IMAGE, "native", h.SERVER_CPUS), (SPARK_IMAGE, "spark", None)):
            label = f"{name} {'native, main image' if scoring == 'native' else 'jvm, Spark image'}"
            runs = []
            for _ in range(1 if quick else 3):
                h.log(f"images: {label}: docker run to /ready")
                container = _images.Container(tag, bundle, {"SCORER_SPARK_SCORING": scoring},
                                              cpus if h.cpu_pinning_available() else None)
                try:
                    run: dict[str, Any] = {"cold_start_s": container.wait_ready(300)}
                    run["scoring"] = container.metadata()["scoring"]
                    want = "native" if scoring == "native" else "jvm"
                    if (run["scoring"] or {}).get("path") != want:
                        raise h.AnswerMismatch(f"{label}: /metadata scoring {run['scoring']}, expected path {want}")
                    status, answer = h.http_request(container.port, "POST", "/predict", body)
                    if status != 200:
                        raise h.AnswerMismatch(f"{label}: POST /predict -> {status}: {answer[:300]!r}")
                    run["sample_rel_diff"] = native_vs_jvm(_split(json.loads(answer)["predictions"]),
                                                           expected[name], f"{label}: sample")
                    for _ in range(50):  # some traffic, so the peak RSS covers serving too
                        h.http_request(container.port, "POST", "/predict", body)
                finally:
                    run_peak = container.stop()
                run["peak_rss_mib"] = run_peak
                runs.append(run)
            out["runs"][label] = {
                "cold_start_s": statistics.median(r["cold_start_s"] for r in runs),
                "peak_rss_mib": max(r["peak_rss_mib"] or 0.0 for r in runs),
                "pinned_cpus": cpus, "image": tag, "runs": runs}
    return out


def _split(records: list[dict[str, Any]]) -> dict[str, Any]:
    columns = list(records[0])
    return {"columns": columns, "data": [[r[c] for c in columns] for r in records]}


def render(results: dict[str, Any]) -> str:
    lines = [
        "| case | load in-process | in-process 1 / 100 / 10k rows (ms) | served cold start | "
        "HTTP 1 / 100 / 10k rows p50 (ms) | 64 conns × 1 row: rows/s | p50 / p99 (ms) | requests per call | "
        "peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results["cases"].items():
        i, s = r["inprocess"], r["served"]
        c = s["c64"]
        lines.append(
            f"| {label} | {i['load_s']:.2f} s | {i['1']:.2f} / {i['100']:.2f} / {i['10000']:.1f} | "
            f"{s['cold_start_s']:.2f} s | {s['http_1_ms']:.2f} / {s['http_100_ms']:.2f} / {s['http_10000_ms']:.1f} | "
            f"{c['rows_s']:,.0f} | {c['p50_ms']:.1f} / {c['p99_ms']:.1f} | {c['requests_per_call'] or 0:.1f} | "
            f"{s['peak_rss_mib']:,.0f} |"
        )
    lines += ["", "| native vs JVM (same rows) | largest relative difference |", "|---|---:|"]
    lines += [f"| {k} | {v:.3g} |" for k, v in results["native_vs_jvm"].items()]
    img = results.get("images")
    if img:
        lines += ["", "| docker run → /ready | cold start (s) | peak RSS (MiB) | image size (MB) |", "|---|---:|---:|---:|"]
        for label, r in img["runs"].items():
            lines.append(f"| {label} | {r['cold_start_s']:.2f} | {r['peak_rss_mib']:,.0f} | "
                         f"{img['images'][r['image']]['size_mb']:,} |")
    return "\n".join(lines) + "\n"


def figures(results: dict[str, Any]) -> dict[str, Any]:
    """What the README quotes (benchmarks/render.py's jvm block), rounded as quoted."""
    cases = []
    for label, r in results["cases"].items():
        i, s = r["inprocess"], r["served"]
        cases.append({
            "case": label, "path": s["scoring"]["path"], "pinned_cpus": s["pinned_cpus"] or "none",
            **{f"http_{n}_ms": round(s[f"http_{n}_ms"], 2) for n in SIZES},
            **{f"limit_{n}_ms": round(i[f"limit_{n}"]["median_ms"], 2) for n in SIZES},
            "c64_rows_s": round(s["c64"]["rows_s"]), "c64_p50_ms": round(s["c64"]["p50_ms"], 1),
            # The server's share of CPU (100 = one core) and everyone else's during that run: on a shared
            # machine, rows/s is only comparable between runs at similar shares.
            "c64_server_cpu_pct": round(s["c64"]["cpu"].get("server_cpu_pct", 0.0)),
            "c64_foreign_cpu_pct": round(s["c64"]["cpu"].get("foreign_cpu_pct", 0.0)),
            "cold_start_s": round(s["cold_start_s"], 2), "peak_rss_mib": round(s["peak_rss_mib"]),
        })
    out: dict[str, Any] = {
        "sizes": list(SIZES), "connections": 64,
        "cases": cases,
        # Strings: how the README writes them (a float like 2.2e-16 would be quoted as two numbers).
        "native_vs_jvm": [{"pair": k, "max_rel_diff": f"{v:.2g}"} for k, v in results["native_vs_jvm"].items()],
        "contract_rtol": f"{RTOL:g}",
    }
    img = results.get("images")
    if img:
        out["docker_run"] = [{"run": label, "cold_start_s": round(r["cold_start_s"], 2),
                              "peak_rss_mib": round(r["peak_rss_mib"]), "image_mb": img["images"][r["image"]]["size_mb"]}
                             for label, r in img["runs"].items()]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and shorter wrk runs")
    parser.add_argument("--no-images", action="store_true", help="skip building and timing the Docker images")
    parser.add_argument("--jvm-unpinned", action="store_true", help="JVM cases on both cores (native: core 1)")
    parser.add_argument("--cases", help="only these cases, comma-separated labels (to try things: the results "
                        "file then lacks the others)")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.cases or c.label in args.cases.split(",")]
    unknown = set(args.cases.split(",")) - {c.label for c in CASES} if args.cases else set()
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}: choose from {[c.label for c in CASES]}")
    h.install_cleanup()
    build = h.load_build_module()
    started = time.perf_counter()
    pin = h.cpu_pinning_available()
    facts = h.run_facts(pin)
    facts["jvm_cases_pinned"] = pin and not args.jvm_unpinned
    results: dict[str, Any] = {"cases": {}, "native_vs_jvm": {}}
    with tempfile.TemporaryDirectory(prefix="bench-jvm-") as tmp:
        for case in cases:
            cpus = h.SERVER_CPUS if pin and (case.native or not args.jvm_unpinned) else None
            bundle = h.REPO / "bundles" / case.bundle
            h.log(f"{case.label}: in-process")
            inproc = inprocess(case, bundle, args.quick, cpus)
            expected = {k: inproc.pop(f"expected_{k}") for k in (*map(str, SIZES), "sample")}
            h.log(f"{case.label}: served")
            results["cases"][case.label] = {"case": case.__dict__, "inprocess": inproc, "expected": expected,
                                            "served": served(case, bundle, build, Path(tmp), args.quick, expected, cpus)}
        for case in cases:
            if not case.native:
                continue
            for other in cases:
                if other.bundle == case.bundle and not other.native:
                    a, b = results["cases"][case.label]["expected"], results["cases"][other.label]["expected"]
                    results["native_vs_jvm"][f"{case.label} vs {other.label}"] = max(
                        native_vs_jvm(a[str(n)], b[str(n)], f"{case.label} vs {other.label}, {n} rows") for n in SIZES)
        if not args.no_images:
            jvm_sample = {c.bundle: results["cases"][c.label]["expected"]["sample"] for c in reversed(cases)
                          if not c.native}  # the first JVM case of each bundle
            results["images"] = images(Path(tmp), args.quick, jvm_sample)
    for r in results["cases"].values():
        r.pop("expected")  # large; the comparisons above are what matters
    table = render(results)
    print(table)
    facts = h.finish_facts(facts, started)
    facts["mode"] = "quick" if args.quick else "full"
    h.write_results("jvm", facts, figures(results), results)
    (h.RESULTS_DIR / "jvm.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
