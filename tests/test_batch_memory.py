"""``scorer batch`` keeps memory bounded with its default settings (every core) on a multi-GB file.

A real >= 1.4 GiB CSV (an id, two floats and a text column passed through) goes through the default
command as a real process; a sampler sums VmRSS over the process and all its descendants from /proc
every 0.1 s. The peak must stay under 1 GiB and must not climb as the file goes by (the second half of
the run peaks no higher than the first, with a margin); every row comes out, in order, with the
prediction of the linear model. Big files live in ``tmp_path`` and are deleted at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
from sklearn.linear_model import LinearRegression

from proc_tree import Sampler  # type: ignore[import-not-found]

GIB = 1 << 30
MIB = 1 << 20
TARGET_BYTES = int(1.42 * GIB)
PATTERN_ROWS = 200_000  # a, b and note repeat with this period; ids never repeat
NOTE = "memory-bound test row passed through as written " + "x" * 50


def _write_csv(path: Path, a: np.ndarray, b: np.ndarray) -> int:
    """id,a,b,note rows until ``path`` holds TARGET_BYTES; the float text is formatted once (fast)."""
    pattern = {"a": pc.cast(pa.array(a), pa.string()), "b": pc.cast(pa.array(b), pa.string()),
               "note": pa.array([NOTE] * len(a))}
    options = pacsv.WriteOptions(quoting_style="none")
    rows = 0
    with pa.OSFile(str(path), "wb") as sink:
        writer = None
        while sink.tell() < TARGET_BYTES:
            table = pa.table({"id": pa.array(np.arange(rows, rows + len(a), dtype=np.int64)), **pattern})
            if writer is None:
                writer = pacsv.CSVWriter(sink, table.schema, write_options=options)
            writer.write_table(table)
            rows += len(a)
        assert writer is not None
        writer.close()
    return rows


def _run_sampled(cmd: list[str], log_path: Path, *, interval: float, timeout: float) -> tuple[int, list[tuple[float, int]]]:
    """Run ``cmd`` to completion (no SCORER_* variables) sampling its tree RSS: (exit code, samples)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(proc.pid, interval=interval)
        sampler.start()
        try:
            code = proc.wait(timeout=timeout)
        finally:
            sampler.halt.set()
            sampler.join()
            if proc.poll() is None:
                proc.kill()
    return code, sampler.samples


def _peak_tree_rss(cmd: list[str], log_path: Path) -> tuple[int, int]:
    """(exit code, peak tree RSS in bytes) of ``cmd`` run to completion."""
    code, samples = _run_sampled(cmd, log_path, interval=0.05, timeout=600)
    return code, max(r for _, r in samples)


def test_default_command_streams_a_big_csv_in_bounded_memory(  # type: ignore[no-untyped-def]
        tmp_path: Path, bundle_factory) -> None:
    """A 1.42 GiB CSV through ``scorer batch BUNDLE --input F --output D`` (every core): tree RSS peak
    < 1 GiB, no growth from the first half of the run to the second, every row scored in order."""
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal(PATTERN_ROWS), rng.standard_normal(PATTERN_ROWS)
    fit_x = pd.DataFrame(rng.standard_normal((50, 2)), columns=["a", "b"])  # the schema: a, b floats
    model = LinearRegression().fit(fit_x, fit_x.to_numpy() @ [1.5, -2.25] + 0.5)
    bundle = bundle_factory("linear", artifacts={"model.pkl": model})
    source, out = tmp_path / "big.csv", tmp_path / "out"
    t0 = time.monotonic()
    rows = _write_csv(source, a, b)
    size = source.stat().st_size
    print(f"\ninput: {size / GIB:.2f} GiB, {rows:,} rows, written in {time.monotonic() - t0:.1f}s")
    assert size >= 1.4 * GIB
    try:
        cmd = [sys.executable, "-m", "scorer.cli", "batch", str(bundle), "--input", str(source),
               "--output", str(out)]
        t0 = time.monotonic()
        code, samples = _run_sampled(cmd, tmp_path / "batch.log", interval=0.1, timeout=1200)
        wall = time.monotonic() - t0
        peak = max(r for _, r in samples)
        half = wall / 2
        first = max((r for t, r in samples if t < half), default=0)
        second = max((r for t, r in samples if t >= half), default=0)
        print(f"scorer batch: exit {code}, {wall:.1f}s, {rows / wall:,.0f} rows/s, {len(samples)} samples; "
              f"peak tree RSS {peak / MIB:,.0f} MiB (first half {first / MIB:,.0f}, "
              f"second half {second / MIB:,.0f})")
        assert code == 0, (tmp_path / "batch.log").read_text()[-2000:]
        assert peak < GIB, f"peak tree RSS {peak / MIB:,.0f} MiB >= 1024 MiB"
        assert second <= first * 1.15 + 64 * MIB, f"grew: {first / MIB:,.0f} -> {second / MIB:,.0f} MiB"

        # every row, in order, with the model's prediction (and the text column as written)
        expected_coef = model.coef_
        reader = pacsv.open_csv(out / "big.csv", convert_options=pacsv.ConvertOptions(
            include_columns=["id", "note", "prediction"],
            column_types={"id": pa.int64(), "note": pa.string(), "prediction": pa.float64()}))
        seen = 0
        for batch in reader:
            ids = batch.column("id").to_numpy()
            np.testing.assert_array_equal(ids, np.arange(seen, seen + batch.num_rows))
            k = ids % PATTERN_ROWS
            want = a[k] * expected_coef[0] + b[k] * expected_coef[1] + model.intercept_
            np.testing.assert_allclose(batch.column("prediction").to_numpy(), want, rtol=1e-12, atol=1e-12)
            assert batch.column("note").unique().to_pylist() == [NOTE]
            seen += batch.num_rows
        assert seen == rows
    finally:
        source.unlink(missing_ok=True)
        shutil.rmtree(out, ignore_errors=True)


def test_max_inflight_mb_bounds_the_window(tmp_path: Path, bundle_factory) -> None:  # type: ignore[no-untyped-def]
    """Wide rows (8 KiB of text each), 32 MiB chunks, 3 workers: with ``--max-inflight-mb 1`` one chunk is in
    flight instead of six, and the tree's peak RSS is lower by at least 64 MiB; the outputs are identical."""
    rng = np.random.default_rng(7)
    fit_x = pd.DataFrame(rng.standard_normal((50, 2)), columns=["a", "b"])
    bundle = bundle_factory("linear", artifacts={"model.pkl": LinearRegression().fit(fit_x, fit_x["a"] - fit_x["b"])})
    rows = 28_000
    source = tmp_path / "wide.csv"
    pacsv.write_csv(pa.table({"id": np.arange(rows), "a": rng.standard_normal(rows), "b": rng.standard_normal(rows),
                              "text": pa.array(["t" * 8192] * rows)}), source)
    peaks, outputs = {}, {}
    for cap in ("256", "1"):
        out = tmp_path / f"out-{cap}"
        cmd = [sys.executable, "-m", "scorer.cli", "batch", str(bundle), "--input", str(source), "--output", str(out),
               "--workers", "3", "--chunk-rows", "4096", "--max-inflight-mb", cap]
        code, peaks[cap] = _peak_tree_rss(cmd, tmp_path / f"log-{cap}")
        assert code == 0, (tmp_path / f"log-{cap}").read_text()[-2000:]
        outputs[cap] = (out / "wide.csv").read_bytes()
        shutil.rmtree(out)
    print(f"\n{source.stat().st_size / MIB:,.0f} MiB input; peak tree RSS: --max-inflight-mb 256: "
          f"{peaks['256'] / MIB:,.0f} MiB, --max-inflight-mb 1: {peaks['1'] / MIB:,.0f} MiB")
    assert outputs["1"] == outputs["256"]
    assert outputs["1"].count(b"\n") == rows + 1
    assert peaks["1"] < peaks["256"] - 64 * MIB


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-s"]))
