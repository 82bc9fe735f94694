"""``scorer batch --engine spark`` vs ``--engine local``: rows/s on a few million tabular rows.

    python benchmarks/bench_spark_engine.py [--rows 2000000] [--files 8] [--runs 1]
                                            [--engines local,local2,cluster] [--data-dir DIR]

1. Data: ``make_tabular_frame`` rows (seed 4242 + block, not the training draw) plus an int64 ``id``,
   written once as ``--files`` Parquet files (reused while rows and files are unchanged).
2. The ``tabular`` example bundle (built by ``bundles/build.py`` if missing) scores them, Parquet
   to Parquet, default settings otherwise, each run a fresh ``python -m scorer batch`` process:
   - ``local``: the local engine (a worker process per core);
   - ``local2``: ``--engine spark --spark-master local[2]`` (one JVM, two task threads);
   - ``cluster``: ``--engine spark`` on a standalone cluster started here from the pyspark
     distribution (a master and two 1-core, 1 GiB workers on 127.0.0.1, tests/spark_cluster.py).
3. Reported per run: wall time (process start to exit: bundle load, JVM and executors included)
   and, for Spark, the scoring job alone (the ``spark: N rows scored in Xs`` log line); rows/s of
   both; the output's row count is checked. Before each run the machine's background load is
   sampled (other work on the machine slows every engine; the numbers say how much there was).

Every output's predictions for the first 10,000 ids are checked against in-process predictions (a
mismatch stops the run). Nothing asserts on timings. Results: ``benchmarks/results/spark_engine.json``
(committed; benchmarks/render.py renders the README's figures from it) and ``spark_engine.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import _harness as h  # noqa: E402
from _harness import RESULTS_DIR, code_state, idle_load, install_cleanup, is_built, load_build_module, log

REPO = Path(__file__).resolve().parent.parent
DATA_SEED = 4242
BLOCK_ROWS = 250_000
SCORED = re.compile(r"spark: (\d+) rows scored in ([\d.]+)s")


def load_cluster_module() -> Any:
    spec = importlib.util.spec_from_file_location("spark_cluster", REPO / "tests" / "spark_cluster.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["spark_cluster"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def make_data(root: Path, rows: int, files: int) -> Path:
    data = root / f"tabular-{rows}-{files}"
    marker = data / ".complete"
    if marker.exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    build = load_build_module()
    features = list(build.TABULAR_FEATURES)
    bounds = np.linspace(0, rows, files + 1).astype(int)
    for i in range(files):
        writer, start = None, int(bounds[i])
        while start < bounds[i + 1]:
            n = min(BLOCK_ROWS, int(bounds[i + 1]) - start)
            df = build.make_tabular_frame(n, seed=DATA_SEED + start // BLOCK_ROWS + 1000 * i)[features]
            df.insert(0, "id", np.arange(start, start + n, dtype=np.int64))
            table = pa.Table.from_pandas(df, preserve_index=False)
            writer = writer or pq.ParquetWriter(data / f"part-{i:03d}.parquet", table.schema)
            writer.write_table(table)
            start += n
        assert writer is not None
        writer.close()
    marker.touch()
    log(f"wrote {rows:,} rows in {files} Parquet files to {data}")
    return data


def output_rows(out: Path) -> int:
    files = [p for p in out.rglob("*.parquet") if not any(s.startswith(("_", ".")) for s in p.relative_to(out).parts)]
    return sum(pq.ParquetFile(p).metadata.num_rows for p in files)


CHECKED_IDS = 10_000  # the first ids of part-000: each output's predictions for them are checked


def check_output(out: Path, expected: dict[str, Any], label: str) -> float:
    """Fail loudly unless the output's predictions for ids < CHECKED_IDS are the in-process ones."""
    files = [p for p in out.rglob("*.parquet") if not any(s.startswith(("_", ".")) for s in p.relative_to(out).parts)]
    cols = ["id", *expected["columns"]]
    parts = [pq.read_table(p, columns=cols, filters=[("id", "<", CHECKED_IDS)]).to_pandas() for p in files]
    got = __import__("pandas").concat(parts).sort_values("id")
    return h.check_answers(got, expected, label)


def run(label: str, bundle: Path, data: Path, out: Path, args: list[str], env: dict[str, str], rows: int,
        expected: dict[str, Any]) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    background = idle_load(2.0)
    cmd = [sys.executable, "-m", "scorer", "batch", str(bundle), "--input", str(data), "--output", str(out),
           "--log-format", "text", *args]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{label}: exit {proc.returncode}\n{proc.stderr[-4000:]}")
    written = output_rows(out)
    if written != rows:
        raise SystemExit(f"{label}: {written} rows written, expected {rows}")
    answers_diff = check_output(out, expected, label)
    found = SCORED.search(proc.stderr + proc.stdout)
    job = float(found.group(2)) if found else None
    result = {"engine": label, "rows": rows, "wall_s": round(wall, 2), "rows_per_s_wall": round(rows / wall),
              "job_s": job, "rows_per_s_job": round(rows / job) if job else None,
              "background_cpu_pct": round(background, 1), "loadavg_1m": round(os.getloadavg()[0], 2),
              "answers_max_abs_diff": answers_diff}
    log(f"{label}: {json.dumps(result)}")
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--engines", default="local,local2,cluster")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "scorer-bench-spark")
    parser.add_argument("--quick", action="store_true", help="smoke test: 200,000 rows, no standalone cluster")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.engines = 200_000, "local,local2"
    install_cleanup()
    engines = args.engines.split(",")
    bundles = REPO / "bundles"
    if not is_built("tabular", bundles):
        subprocess.run([sys.executable, str(bundles / "build.py"), "--only", "tabular"], check=True)
    data = make_data(args.data_dir, args.rows, args.files)
    started = time.perf_counter()
    facts = h.run_facts(False)
    # The in-process limit (benchmarks/_harness.py) on one chunk's worth of rows, and the in-process
    # predictions of the first CHECKED_IDS rows that every engine's output must hold.
    first = pq.read_table(data / "part-000.parquet").slice(0, 65536).to_pandas()
    base = h.run_baseline(bundles / "tabular", {65536: first.drop(columns="id")}, args.data_dir / "baseline",
                          pin=h.cpu_pinning_available())
    limit = base["by_rows"]["65536"]
    expected_all = base["expected"]["65536"]
    expected = {"columns": expected_all["columns"], "data": expected_all["data"][:CHECKED_IDS]}
    cluster_mod = load_cluster_module()
    env = cluster_mod.spark_env()
    out = args.data_dir / "out"
    results: list[dict[str, Any]] = []
    cluster_info: dict[str, Any] = {}
    for _ in range(args.runs):
        if "local" in engines:
            results.append(run("local", bundles / "tabular", data, out, [], env, args.rows, expected))
        if "local2" in engines:
            results.append(run("spark local[2]", bundles / "tabular", data, out,
                               ["--engine", "spark", "--spark-master", "local[2]"], env, args.rows, expected))
    if "cluster" in engines:
        work = Path(tempfile.mkdtemp(prefix="scorer-bench-cluster-"))
        try:
            with cluster_mod.standalone_cluster(work, defaults={"spark.ui.showConsoleProgress": "false"}) as cluster:
                cluster_info = {"url": cluster.url, "startup_s": round(cluster.startup_seconds, 1)}
                log(f"standalone cluster {cluster.url} up in {cluster.startup_seconds:.1f}s")
                for _ in range(args.runs):
                    results.append(run("spark standalone (2 workers x 1 core)", bundles / "tabular", data, out,
                                       ["--engine", "spark", "--spark-master", cluster.url], cluster.env(), args.rows, expected))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    report = {"date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "rows": args.rows, "files": args.files, "cluster": cluster_info, "code": code_state(), "results": results, "limit": limit}
    facts = h.finish_facts(facts, started)
    facts["mode"] = "quick" if args.quick else "full"
    figures = {"in-process limit (model call, 65,536 rows), rows/s": round(limit["rows_s"])}
    for r in results:
        figures[f"{r['engine']}: rows/s (wall)"] = r["rows_per_s_wall"]
        figures[f"{r['engine']}: ÷ in-process limit"] = round(r["rows_per_s_wall"] / limit["rows_s"], 2)
    h.write_results("spark_engine", facts, figures, report)
    title = (f"# scorer batch: engine spark vs local ({args.rows:,} tabular rows, {args.files} Parquet files, "
             f"{os.cpu_count()} cores)")
    lines = [title, "",
             "| engine | wall s | rows/s (wall) | job s | rows/s (job) | background CPU % |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['engine']} | {r['wall_s']} | {r['rows_per_s_wall']:,} | {r['job_s'] or '–'} | "
                     f"{format(r['rows_per_s_job'], ',') if r['rows_per_s_job'] else '–'} | {r['background_cpu_pct']} |")
    if cluster_info:
        lines += ["", f"Standalone cluster start (master + 2 workers registered): {cluster_info['startup_s']} s."]
    (RESULTS_DIR / "spark_engine.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
