"""Batch benchmark: the in-process limit vs. ``scorer batch`` on a large tabular dataset.

    python benchmarks/bench_batch.py [--rows 2000000] [--quick] [--workers 1,2] [--data-dir DIR]

See benchmarks/README.md ("bench_batch.py") for what is measured and how to read it. In short:

1. Data: ``make_tabular_frame`` rows (seed 4242 + block, a holdout draw) written once as CSV and as
   Parquet, in blocks, so generating them needs little memory.
2. In-process limit (a child process): pyarrow reads the file in chunks of ``--chunk-rows`` rows,
   ``Scorer.score`` each chunk, the input columns + predictions are written back with pyarrow
   (Parquet -> Parquet, CSV -> CSV). Nothing else: no commit protocol, no bad-row handling.
3. ``scorer batch`` on the same files, ``--workers 1`` and ``--workers 2`` (default settings otherwise),
   plus ``--workers 1`` on a file 1/8 the size to show that peak memory does not grow with the input.

Every run is a child process; a sampler polls /proc every 50 ms for all its descendants and records the
peak of the summed RSS (and of the summed PSS, which does not double-count pages that forked workers
share). Wall time includes process start and bundle load. Output row counts are checked. Nothing here
asserts on timings; it only reports. Only local files are touched, no network.
Results: ``benchmarks/results/batch.md`` and ``benchmarks/results/batch.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
import _harness as h  # noqa: E402 - scripts run by path
from _harness import code_state, load_build_module  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BUNDLES_DIR = REPO / "bundles"
RESULTS_DIR = HERE / "results"
DATA_SEED = 4242
BLOCK_ROWS = 250_000  # rows generated and written per block
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- helpers ---------------------------------------------------------------------------------------


def busy_seconds() -> float:
    """Machine-wide busy CPU seconds (user+nice+system+irq+softirq) from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_pss(pid: int) -> tuple[int, int]:
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
        pss = 0
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
        return rss, pss
    except (OSError, ValueError, IndexError):
        return 0, 0


class TreeSampler(threading.Thread):
    """Peak summed RSS / PSS and peak process count of a process tree, polled every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            pids = descendants(self.pid)
            rss = pss = 0
            for pid in pids:
                r, p = rss_pss(pid)
                rss, pss = rss + r, pss + p
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_procs = max(self.peak_procs, len(pids))
            self.stop.wait(self.interval)


def wait_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (up to ``max_wait`` s) until the machine used less than ``threshold`` of a core for a whole second.
    Returns the seconds waited (a shared machine: other people's tests and benchmarks)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        b0 = busy_seconds()
        time.sleep(1.0)
        if busy_seconds() - b0 < threshold:
            break
    return time.perf_counter() - t0


def measure(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` to completion; wall time, exit code, peak tree RSS/PSS, CPU seconds, foreign CPU."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    full_env.update(env or {})
    cpu0, busy0, t0 = children_cpu(), busy_seconds(), time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            code = proc.wait()
        except BaseException:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise
        finally:
            sampler.stop.set()
            sampler.join()
    wall = time.perf_counter() - t0
    cpu, busy = children_cpu() - cpu0, busy_seconds() - busy0
    return {"cmd": cmd, "exit": code, "wall_s": wall, "cpu_s": cpu, "cpu_pct": 100 * cpu / wall,
            "foreign_cpu_pct": max(0.0, 100 * (busy - cpu) / wall), "peak_rss": sampler.peak_rss,
            "peak_pss": sampler.peak_pss, "peak_procs": sampler.peak_procs,
            "log_tail": log_path.read_text(errors="replace").splitlines()[-8:]}


def count_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:  # no quoted newlines in this data
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 22), b""))
    return lines - 1


def prediction_columns(path: Path) -> list[str]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    names = (pq.ParquetFile(path).schema_arrow.names if path.suffix == ".parquet"
             else pacsv.open_csv(path).schema.names)
    return [c for c in names if c == "prediction" or c.startswith("probability_")]


def read_columns(path: Path, columns: list[str]) -> Any:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        return pq.read_table(path, columns=columns).to_pandas()
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=columns)).to_pandas()


def check_against(got_path: Path, want_path: Path, label: str) -> float:
    """Fail loudly unless ``got_path`` holds the same predictions, row for row, as the in-process output."""
    cols = prediction_columns(want_path)
    if not cols:
        raise h.AnswerMismatch(f"{label}: the in-process output {want_path} has no prediction columns")
    want = read_columns(want_path, cols)
    expected = {"columns": cols, "data": want.astype(object).values.tolist()}
    return h.check_answers(read_columns(got_path, cols), expected, label)


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f}"


# --- data -------------------------------------------------------------------------------------------


def make_data(build: Any, rows: int, data_dir: Path) -> dict[str, Path]:
    """``tabular-<rows>.csv`` and ``.parquet`` (reused when present with the right row count)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    data_dir.mkdir(parents=True, exist_ok=True)
    csv_path, pq_path = data_dir / f"tabular-{rows}.csv", data_dir / f"tabular-{rows}.parquet"
    if csv_path.exists() and pq_path.exists() and count_rows(pq_path) == rows:
        return {"csv": csv_path, "parquet": pq_path}
    t0 = time.perf_counter()
    csv_writer = pq_writer = None
    try:
        for i, start in enumerate(range(0, rows, BLOCK_ROWS)):
            frame = build.make_tabular_frame(min(BLOCK_ROWS, rows - start), seed=DATA_SEED + i)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if csv_writer is None:
                csv_writer = pacsv.CSVWriter(str(csv_path), table.schema)
                pq_writer = pq.ParquetWriter(str(pq_path), table.schema)
            csv_writer.write_table(table)
            pq_writer.write_table(table)
    finally:
        if csv_writer is not None:
            csv_writer.close()
        if pq_writer is not None:
            pq_writer.close()
    print(f"# generated {rows:,} rows in {time.perf_counter() - t0:.1f}s: {csv_path.name} {mb(csv_path.stat().st_size)} MB, "
          f"{pq_path.name} {mb(pq_path.stat().st_size)} MB", flush=True)
    return {"csv": csv_path, "parquet": pq_path}


# --- the in-process limit (runs in a child: python bench_batch.py --inproc ...) ----------------------


def inproc_main(bundle: str, source: str, dest: str, chunk_rows: int) -> int:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from scorer.core import Scorer

    t0 = time.perf_counter()
    scorer = Scorer.load(bundle)
    t1 = time.perf_counter()
    if source.endswith(".parquet"):
        batches = pq.ParquetFile(source).iter_batches(batch_size=chunk_rows)
    else:
        batches = iter(pacsv.open_csv(source, read_options=pacsv.ReadOptions(block_size=8 << 20)))

    def chunks() -> Any:  # exactly chunk_rows rows per model call, like scorer batch
        pending: list[pa.RecordBatch] = []
        count = 0
        for batch in batches:
            pending.append(batch)
            count += batch.num_rows
            while count >= chunk_rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, chunk_rows)
                rest = table.slice(chunk_rows)
                pending, count = rest.to_batches(), rest.num_rows
        if count:
            yield pa.Table.from_batches(pending)

    writer: Any = None
    rows = 0
    for table in chunks():
        df = table.to_pandas()
        pred = scorer.score(df)
        out = pa.Table.from_pandas(pd.concat([df, pred.set_axis(df.index)], axis=1), preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(dest, out.schema) if dest.endswith(".parquet") else pacsv.CSVWriter(dest, out.schema)
        writer.write_table(out)
        rows += len(df)
    if writer is not None:
        writer.close()
    t2 = time.perf_counter()
    print(json.dumps({"rows": rows, "load_s": t1 - t0, "loop_s": t2 - t1}), flush=True)
    return 0


# --- scenarios -----------------------------------------------------------------------------------------


def run_scenarios(args: argparse.Namespace, bundle: Path, data: dict[str, Path], small: dict[str, Path],
                  work: Path) -> list[dict[str, Any]]:
    results = []
    reference: dict[str, Path] = {}  # format -> the in-process output, what scorer batch must write too
    py = sys.executable
    chunk = str(args.chunk_rows)

    def record(name: str, kind: str, fmt: str, workers: int | None, source: Path, rows: int, cmd: list[str],
               output: Path) -> None:
        log = work / f"{len(results):02d}.log"
        waited = wait_quiet(args.wait_quiet) if args.wait_quiet else 0.0
        print(f"# {name} ..." + (f" (waited {waited:.0f}s for a quiet machine)" if waited >= 2 else ""), flush=True)
        r = measure(cmd, log)
        r["waited_for_quiet_s"] = waited
        r.update(name=name, kind=kind, format=fmt, workers=workers, input=str(source), rows=rows,
                 input_bytes=source.stat().st_size)
        out_file = output if output.suffix else output / source.name
        r["rows_out"] = count_rows(out_file) if out_file.exists() else None
        r["rows_ok"] = r["rows_out"] == rows
        if kind == "in-process":
            reference[fmt] = out_file
        elif r["exit"] == 0 and fmt in reference and source == data[fmt]:
            r["answers_max_abs_diff"] = check_against(out_file, reference[fmt], name)
            print(f"#   answers = in-process predictions (max abs diff {r['answers_max_abs_diff']:.1e})", flush=True)
        r["rows_per_s"] = rows / r["wall_s"]
        if kind == "in-process" and r["exit"] == 0:
            for line in reversed(r["log_tail"]):
                if line.startswith("{"):
                    inner = json.loads(line)
                    r["loop_s"], r["load_s"] = inner["loop_s"], inner["load_s"]
                    r["loop_rows_per_s"] = rows / inner["loop_s"]
                    break
        results.append(r)
        status = "ok" if r["exit"] == 0 and r["rows_ok"] else f"PROBLEM exit={r['exit']} rows_out={r['rows_out']}"
        print(f"#   {r['wall_s']:.1f}s, {r['rows_per_s']:,.0f} rows/s, peak RSS {mb(r['peak_rss'])} MB, {status}", flush=True)
        if status != "ok":
            print("\n".join("#     " + line for line in r["log_tail"]), flush=True)
            raise h.AnswerMismatch(f"{name}: {status}")
        if output.exists() and kind != "in-process":
            shutil.rmtree(output) if output.is_dir() else output.unlink()

    for fmt in ("parquet", "csv"):
        source = data[fmt]
        dest = work / f"inproc-out.{fmt}"
        record(f"in-process {fmt}→{fmt}", "in-process", fmt, None, source, args.rows,
               [py, str(Path(__file__).resolve()), "--inproc", str(bundle), str(source), str(dest), chunk], dest)
        for workers in args.workers:
            out = work / f"batch-{fmt}-{workers}"
            record(f"scorer batch {fmt}→{fmt} --workers {workers}", "batch", fmt, workers, source, args.rows,
                   [py, "-m", "scorer", "batch", str(bundle), "--input", str(source), "--output", str(out),
                    "--workers", str(workers), "--chunk-rows", chunk, "--log-format", "text"], out)
        reference.pop(fmt, Path("/nonexistent")).unlink(missing_ok=True)
    if small:
        source = small["parquet"]
        out = work / "batch-small"
        record(f"scorer batch parquet→parquet --workers 1, {args.rows // 8:,} rows (memory scaling)", "batch-small",
               "parquet", 1, source, args.rows // 8,
               [py, "-m", "scorer", "batch", str(bundle), "--input", str(source), "--output", str(out),
                "--workers", "1", "--chunk-rows", chunk, "--log-format", "text"], out)
    return results


def report(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = [
        "# scorer batch benchmark",
        "",
        f"Run {meta['started']} on {meta['machine']}; Python {meta['python']}; {meta['cpus']} CPUs; total "
        f"{meta['total_s']:.0f} s; mode: {meta['mode']}; --wait-quiet {meta['wait_quiet']:.0f}; bundle `{meta['bundle']}`; {meta['rows']:,} rows; "
        f"--chunk-rows {meta['chunk_rows']:,}.",
        f"Inputs: CSV {mb(meta['csv_bytes'])} MB, Parquet {mb(meta['parquet_bytes'])} MB. "
        f"Code: HEAD {meta['code']['git_head']}, scorer/*.py sha256 {meta['code']['scorer_py_sha256']}, "
        f"uncommitted: {', '.join(meta['code']['uncommitted']) or 'none'}.",
        "",
        "Wall time includes process start and bundle load. Peak RSS / PSS: the peak of the sum over the whole "
        "process tree (PSS counts pages shared by forked workers once). CPU %: CPU time of the tree over wall "
        "time (100 % = one core). Foreign CPU %: CPU used on the machine by anything else during the run.",
        "",
        "| scenario | wall s | rows/s | CPU % | peak RSS MB | peak PSS MB | peak RSS ÷ input size | procs | foreign CPU % | rows out |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        rate = f"{r['rows_per_s']:,.0f}"
        if "loop_rows_per_s" in r:
            rate += f" (loop {r['loop_rows_per_s']:,.0f})"
        rows_out = "ok" if r["rows_ok"] else f"**{r['rows_out']} (exit {r['exit']})**"
        lines.append(
            f"| {r['name']} | {r['wall_s']:.1f} | {rate} | {r['cpu_pct']:.0f} | {mb(r['peak_rss'])} | "
            f"{mb(r['peak_pss'])} | {r['peak_rss'] / r['input_bytes']:.2f} | {r['peak_procs']} | "
            f"{r['foreign_cpu_pct']:.0f} | {rows_out} |")
    by = {(r["kind"], r["format"], r["workers"]): r for r in results}
    lines += ["", "## Ratios", ""]
    for fmt in ("parquet", "csv"):
        base = by.get(("in-process", fmt, None))
        if not base:
            continue
        for workers in meta["workers"]:
            r = by.get(("batch", fmt, workers))
            if r:
                lines.append(f"- {fmt}: scorer batch --workers {workers} ÷ in-process rows/s (wall) = "
                             f"{r['rows_per_s'] / base['rows_per_s']:.2f}")
    small = by.get(("batch-small", "parquet", 1))
    full = by.get(("batch", "parquet", 1))
    if small and full:
        lines.append(f"- memory scaling: peak RSS with {full['rows']:,} rows = {mb(full['peak_rss'])} MB vs "
                     f"{mb(small['peak_rss'])} MB with {small['rows']:,} rows "
                     f"(input {full['input_bytes'] / small['input_bytes']:.1f}× larger)")
    return "\n".join(lines) + "\n"


def figures(meta: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """What the READMEs quote: rows/s and peak memory per scenario, and rows/s ÷ the in-process limit."""
    limit = meta["limit"]["by_rows"][str(meta["chunk_rows"])]["rows_s"]
    return {
        "rows": meta["rows"],
        "chunk_rows": meta["chunk_rows"],
        "limit_rows_s": round(limit),
        "scenarios": [{
            "name": r["name"], "kind": r["kind"], "format": r["format"], "workers": r["workers"], "rows": r["rows"],
            "rows_s": round(r["rows_per_s"]),
            "over_limit": round(r["rows_per_s"] / limit, 2),
            "peak_rss_mb": round(r["peak_rss"] / 1e6),
            "peak_pss_mb": round(r["peak_pss"] / 1e6),
        } for r in results],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows in the dataset (default 2,000,000)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 200,000 rows, noisy numbers")
    parser.add_argument("--workers", default="1,2", help="comma-separated --workers values (default 1,2)")
    parser.add_argument("--chunk-rows", type=int, default=65536, help="rows per model call (default 65536)")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep/reuse generated data here (default: a temp dir)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="before each run, wait up to S seconds for other processes to go quiet (shared machines)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 1/8-size memory-scaling run")
    parser.add_argument("--inproc", nargs=4, metavar=("BUNDLE", "INPUT", "OUTPUT", "CHUNK_ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inproc:
        b, src, dst, chunk = args.inproc
        return inproc_main(b, src, dst, int(chunk))
    if args.quick:
        args.rows = 200_000
    args.workers = [int(w) for w in args.workers.split(",") if w]

    started = time.perf_counter()
    build = load_build_module()
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        bundle = BUNDLES_DIR / "tabular"
        if not (bundle / "artifacts" / "model.joblib").exists():
            print("# building the tabular bundle into a temp dir", flush=True)
            build.build("tabular", tmp / "bundles")
            bundle = tmp / "bundles" / "tabular"
        data_dir = args.data_dir or tmp / "data"
        data = make_data(build, args.rows, data_dir)
        small = {} if args.no_scaling else make_data(build, args.rows // 8, data_dir)
        work = tmp / "work"
        work.mkdir()
        pin = h.cpu_pinning_available()
        facts = h.run_facts(pin)
        code_before = code_state()
        # The in-process limit (benchmarks/_harness.py): the model call on one chunk of --chunk-rows rows.
        import pyarrow.parquet as pq

        first = next(pq.ParquetFile(data["parquet"]).iter_batches(batch_size=args.chunk_rows)).to_pandas()
        limit = h.run_baseline(bundle, {args.chunk_rows: first}, work / "baseline", pin=pin, quick=args.quick)
        limit.pop("expected")
        print(f"# in-process limit: {limit['by_rows'][str(args.chunk_rows)]['rows_s']:,.0f} rows/s "
              f"(model call on {args.chunk_rows:,} rows, pinned to core {h.SERVER_CPUS if pin else '(none)'})", flush=True)
        results = run_scenarios(args, bundle, data, small, work)
        code_after = code_state()
        meta = {
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} ({platform.platform()})", "python": platform.python_version(),
            "cpus": os.cpu_count(), "mode": "quick" if args.quick else "full", "bundle": str(bundle),
            "wait_quiet": args.wait_quiet,
            "rows": args.rows, "chunk_rows": args.chunk_rows, "workers": args.workers,
            "csv_bytes": data["csv"].stat().st_size, "parquet_bytes": data["parquet"].stat().st_size,
            "code": code_before, "code_changed_during_run": code_before != code_after,
            "total_s": time.perf_counter() - started,
            "limit": limit,
        }
        text = report(meta, results)
        if meta["code_changed_during_run"]:
            text += "\n**Warning: scorer/ changed while this ran; the rows above may measure different code.**\n"
        print("\n" + text)
        RESULTS_DIR.mkdir(exist_ok=True)
        (RESULTS_DIR / "batch.md").write_text(text)
        facts = h.finish_facts(facts, started)
        facts["mode"] = meta["mode"]
        facts["foreign_cpu_pct_max"] = round(max(r["foreign_cpu_pct"] for r in results), 1)
        h.write_results("batch", facts, figures(meta, results), {"meta": meta, "results": results})
        print(f"# wrote {RESULTS_DIR / 'batch.md'} and batch.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
