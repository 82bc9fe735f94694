"""``scorer batch``: files in, scored files out (docs/batch-contract.md).

Every format in and out, read back with pandas/pyarrow and compared exactly with ``Scorer.score``
and with what POST /predict returns; nested directories, the manifest and ``_SUCCESS``; a real
``kill -9`` of the process group mid-run, then resume, byte-identical to a clean run; bad-row
policies; refusals that write nothing; ``SCORER_*`` variables. Runs are real ``python -m scorer.cli
batch`` processes, or ``scorer.cli.main`` in-process where only files and the exit code matter.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from scorer import codecs
from scorer._version import __version__
from scorer.cli import main
from scorer.core import Scorer

# --- formats --------------------------------------------------------------------------------

# input extension -> format name (docs/batch-contract.md "Inputs (by extension)")
INPUT_EXTS = {".csv.gz": "csv.gz", ".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
              ".arrow": "arrow", ".feather": "arrow"}
OUTPUT_EXT = {"csv": ".csv", "csv.gz": ".csv.gz", "parquet": ".parquet", "jsonl": ".jsonl", "arrow": ".arrow"}
OUTPUT_FORMATS = ("same", "csv", "csv.gz", "parquet", "jsonl", "arrow")
SUM_OUTPUTS = ["sum", "rows_in_call"]
BIG_ID = 2**53 + 1  # ids a float64 cannot hold: any lossy conversion of a kept column shows
NOTES = ["plain", "comma, inside", 'quote "q" inside', "ünïcödé ✓", "semi;colon", "  padded  "]


def split_ext(rel: str) -> tuple[str, str]:
    for ext in INPUT_EXTS:  # .csv.gz before .csv
        if rel.endswith(ext):
            return rel[: -len(ext)], ext
    raise AssertionError(f"not an input file name: {rel}")


def acceptable_outputs(rel: str, fmt: str) -> list[str]:
    """Output paths the contract allows for input ``rel``: same stem, the output format's extension.

    For .ndjson/.feather inputs written in their own format the contract does not say whether the extension
    is kept or normalised to .jsonl/.arrow, so both are accepted."""
    stem, ext = split_ext(rel)
    if fmt == "same" or fmt == INPUT_EXTS[ext]:
        return list(dict.fromkeys([stem + ext, stem + OUTPUT_EXT[INPUT_EXTS[ext]]]))
    return [stem + OUTPUT_EXT[fmt]]


def find_output(out: Path, rel: str, fmt: str) -> Path:
    found = [out / p for p in acceptable_outputs(rel, fmt) if (out / p).is_file()]
    assert len(found) == 1, f"output for {rel} ({fmt}): expected one of {acceptable_outputs(rel, fmt)} in {listing(out)}"
    return found[0]


def write_as(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` in the format named by ``path``'s extension, losslessly (floats round-trip exactly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if name.endswith(".csv.gz"):
        df.to_csv(path, index=False, compression="gzip")
    elif name.endswith(".csv"):
        df.to_csv(path, index=False)
    elif name.endswith(".parquet"):
        df.to_parquet(path, index=False)
    elif name.endswith((".jsonl", ".ndjson")):
        path.write_text("".join(json.dumps(rec, allow_nan=False, ensure_ascii=False) + "\n" for rec in records(df)))
    elif name.endswith(".arrow"):
        table = pa.Table.from_pandas(df, preserve_index=False)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    elif name.endswith(".feather"):
        feather.write_feather(df, path)  # Arrow IPC file, lz4-compressed by default
    else:
        raise AssertionError(name)
    return path


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    cols = {c: df[c].tolist() for c in df.columns}
    return [{c: (None if isinstance(v, float) and math.isnan(v) else v) for c, v in zip(cols, row, strict=True)}
            for row in zip(*cols.values(), strict=True)]


def _no_nan_literals(token: str) -> Any:
    raise AssertionError(f"output JSON has a {token} literal (not valid JSON)")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), f"{path}: last line not terminated"
    return [json.loads(line, parse_constant=_no_nan_literals) for line in text.splitlines()]


def read_output(path: Path) -> pd.DataFrame:
    """Read a whole output file back (raises if it is truncated or not the format its name says)."""
    name = path.name
    if name.endswith((".csv", ".csv.gz")):
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    if name.endswith(".parquet"):
        return pq.read_table(path).to_pandas()
    if name.endswith((".jsonl", ".ndjson")):
        rows = read_jsonl(path)
        return pd.DataFrame.from_records(rows) if rows else pd.DataFrame()
    if name.endswith((".arrow", ".feather")):
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all().to_pandas()
    raise AssertionError(f"unexpected output file {path}")


def assert_column_equal(got: Sequence[Any], want: Sequence[Any], what: str) -> None:
    """Exact equality (NaN == NaN/None, ints stay exact), naming the first differing row."""
    got, want = list(got), list(want)
    assert len(got) == len(want), f"{what}: {len(got)} rows, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if isinstance(w, float) and math.isnan(w):
            ok = g is None or (isinstance(g, float) and math.isnan(g))
        else:
            ok = (g == w) and type(g) is not bool and not (isinstance(w, int) and isinstance(g, float) and abs(w) > 2**53)
        assert ok, f"{what}: row {i} is {g!r}, expected {w!r}"


def assert_kept_equal(got: pd.Series, src: pd.DataFrame, col: str, source: Path, what: str) -> None:
    """A kept input column equals the input's values. From a CSV the contract leaves the column's type open:
    values may come back typed, or as the exact text of the CSV field -- but never altered."""
    values = as_list(got)
    want = as_list(src[col])
    if source.name.endswith((".csv", ".csv.gz")) and any(isinstance(v, str) for v in values) \
            and not all(isinstance(w, str) for w in want):
        texts = pd.read_csv(source, dtype=str, keep_default_na=False)[col].tolist()
        assert_column_equal(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values], texts, what + " (kept as the CSV text)")
        return
    assert_column_equal(values, want, what)


def as_list(series: pd.Series) -> list[Any]:
    return series.to_numpy(dtype=object).tolist()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def visible_files(root: Path) -> list[str]:
    """Files under ``root`` except the internal ``_scorer/`` markers."""
    return [p for p in listing(root) if not p.startswith("_scorer/")]


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), f"{out} should not exist or be empty: {listing(out)}"


def sum_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """id (ints above 2**53), a, b (full-precision floats, one NaN), note (text with commas/quotes/unicode)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 100.0, n)
    b = rng.normal(0.0, 1.0, n) * np.exp(rng.normal(0.0, 5.0, n))
    if n > 3:
        b[3] = np.nan
    return pd.DataFrame({
        "id": np.arange(n, dtype=np.int64) + BIG_ID,
        "a": a,
        "b": b,
        "note": np.asarray([NOTES[i % len(NOTES)] for i in range(n)], dtype=object),
    })


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def manifest_files(out: Path) -> dict[str, dict[str, Any]]:
    """Manifest file entries keyed by input path relative to the input root (absolute paths accepted)."""
    return {entry["input"]: entry for entry in manifest(out)["files"]}


def entry_for(out: Path, rel: str, input_root: Path) -> dict[str, Any]:
    for key, entry in manifest_files(out).items():
        if key == rel or Path(key) == input_root / rel:
            return entry
    raise AssertionError(f"manifest has no entry for {rel}: {sorted(manifest_files(out))}")


def digest_matches(value: str, digest: str) -> bool:
    return value in (digest, f"sha256:{digest}")


def names_row(text: str, row: int, line: int | None) -> bool:
    """Whether an error text names a 0-based data row or a 1-based line number."""
    pattern = rf"\brows?[ =:#]*{row}\b"
    if line is not None:
        pattern += rf"|\blines?[ =:#]*{line}\b"
    return re.search(pattern, text, re.IGNORECASE) is not None


# --- running the command -------------------------------------------------------------------


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    full.update(env or {})
    return full


@contextlib.contextmanager
def patched_environ(env: dict[str, str] | None) -> Iterator[None]:
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(clean_env(env))
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def batch_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "scorer.cli", "batch", *map(str, args)]


def run_batch(*args: object, env: dict[str, str] | None = None, in_process: bool = False,
              prefix: Sequence[str] = (), timeout: float = 180) -> Result:
    """``scorer batch ARGS``: a real process by default; ``in_process`` calls ``scorer.cli.main``."""
    if in_process:
        out, err = io.StringIO(), io.StringIO()
        with patched_environ(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["batch", *map(str, args)])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        return Result(code, out.getvalue(), err.getvalue())
    proc = subprocess.run([*prefix, *batch_cmd(*args)], env=clean_env(env), capture_output=True, text=True,
                          timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def ok(result: Result, code: int = 0) -> Result:
    assert result.code == code, f"exit {result.code}, expected {code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result


# --- formats in and out -------------------------------------------------------------------------

ALL_INPUTS = ("t_csv.csv", "t_gz.csv.gz", "t_pq.parquet", "t_jsonl.jsonl", "t_nd.ndjson", "t_arrow.arrow",
              "t_feather.feather")


@pytest.mark.fast
@pytest.mark.parametrize("out_fmt", OUTPUT_FORMATS)
def test_every_input_format_to_each_output_format(tmp_path: Path, sum_bundle, out_fmt: str) -> None:  # type: ignore[no-untyped-def]
    """Each input format (csv, csv.gz, parquet, jsonl, ndjson, arrow, feather) scored into this output format:
    the file reads back completely, rows in input order, input columns unchanged (ints > 2**53 exact) and the
    prediction columns exactly Scorer.score's, in model calls of at most --chunk-rows rows."""
    bundle = sum_bundle()
    src = sum_frame(23, seed=1)
    for name in ALL_INPUTS:
        write_as(src, tmp_path / "in" / name)
    out = tmp_path / "out"
    ok(run_batch(bundle, "--input", tmp_path / "in", "--output", out, "--output-format", out_fmt,
                 "--chunk-rows", 5, "--workers", 1, in_process=True))
    want = Scorer.load(bundle).score(src)
    for name in ALL_INPUTS:
        path = find_output(out, name, out_fmt)
        got = read_output(path)
        assert list(got.columns) == [*src.columns, *SUM_OUTPUTS], f"{path.name}: columns {list(got.columns)}"
        for col in src.columns:
            assert_kept_equal(got[col], src, col, tmp_path / "in" / name, f"{name} -> {path.name} [{col}]")
        assert_column_equal(as_list(got["sum"]), as_list(want["sum"]), f"{name} -> {path.name} [sum]")
        calls = got["rows_in_call"].to_numpy()
        assert calls.max() <= 5 and calls.min() >= 1, f"{path.name}: model calls of {sorted(set(calls))} rows"
    assert (out / "_SUCCESS").is_file()


@pytest.mark.fast
@pytest.mark.parametrize(("keep", "kept"), [("all", ["id", "a", "b", "note"]), ("none", []), ("id,note", ["id", "note"])])
def test_keep_columns(tmp_path: Path, sum_bundle, keep: str, kept: list[str]) -> None:  # type: ignore[no-untyped-def]
    """--keep-columns all / none / a list: output columns are exactly the kept input columns (values unchanged)
    followed by the prediction columns, for a CSV and a Parquet input."""
    bundle = sum_bundle()
    src = sum_frame(12, seed=2)
    write_as(src, tmp_path / "in" / "x.csv")
    write_as(src, tmp_path / "in" / "y.parquet")
    out = tmp_path / "out"
    ok(run_batch(bundle, "--input", tmp_path / "in", "--output", out, "--keep-columns", keep, "--workers", 1,
                 in_process=True))
    want = Scorer.load(bundle).score(src)
    for name in ("x.csv", "y.parquet"):
        got = read_output(out / name)
        assert list(got.columns) == [*kept, *SUM_OUTPUTS], f"{name}: {list(got.columns)}"
        for col in kept:
            assert_kept_equal(got[col], src, col, tmp_path / "in" / name, f"{name} [{col}]")
        assert_column_equal(as_list(got["sum"]), as_list(want["sum"]), f"{name} [sum]")


@pytest.mark.fast
def test_csv_quoted_newlines_round_trip(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """A standard CSV whose quoted text fields hold newlines, commas and quotes (as pandas writes them) is
    read as the rows it holds and written back with the same text."""
    bundle = sum_bundle()
    src = pd.DataFrame({"id": [1, 2, 3], "a": [1.5, 2.5, 3.5], "b": [0.25, 0.5, 0.75],
                        "note": np.asarray(["two\nlines", 'comma, and "quote"', "plain"], dtype=object)})
    write_as(src, tmp_path / "in" / "q.csv")
    out = tmp_path / "out"
    ok(run_batch(bundle, "--input", tmp_path / "in", "--output", out, "--workers", 1, in_process=True))
    got = read_output(out / "q.csv")
    assert_column_equal(as_list(got["note"]), as_list(src["note"]), "note")
    assert_column_equal(as_list(got["sum"]), [1.75, 3.0, 4.25], "sum")


@pytest.mark.fast
@pytest.mark.parametrize("name", ["spam", "tabular"])
def test_predictions_bit_identical_to_post_predict(tmp_path: Path, example_bundles, build_module, name: str) -> None:  # type: ignore[no-untyped-def]
    """For the same rows, every output format's prediction columns equal, value for value, what POST /predict
    returns (codecs.json_predictions of Scorer.score, decoded), across chunk boundaries."""
    bundle = example_bundles[name]
    scorer = Scorer.load(bundle)
    maker = build_module.make_spam_frame if name == "spam" else build_module.make_tabular_frame
    frame = maker(40, 99)
    files = ("rows-csv.csv", "rows-parquet.parquet", "rows-jsonl.jsonl", "rows-arrow.arrow")  # distinct outputs
    for file in files:
        write_as(frame, tmp_path / "in" / file)
    posted = json.loads(codecs.json_predictions(scorer.score(frame)))["predictions"]
    columns = list(posted[0])
    for fmt in ("same", "csv.gz"):
        out = tmp_path / f"out-{fmt}"
        ok(run_batch(bundle, "--input", tmp_path / "in", "--output", out, "--output-format", fmt,
                     "--chunk-rows", 16, "--workers", 1, in_process=True))
        for file in files:
            path = find_output(out, file, fmt)
            got = read_output(path)
            assert list(got.columns)[-len(columns):] == columns, f"{path.name}: {list(got.columns)}"
            rows = [dict(zip(columns, values, strict=True))
                    for values in zip(*(as_list(got[c]) for c in columns), strict=True)]
            assert len(rows) == len(posted), f"{path.name}: {len(rows)} rows"
            for i, (row, want) in enumerate(zip(rows, posted, strict=True)):
                assert row == want, f"{file} -> {path.name}: row {i} {row} != POST /predict {want}"


# --- directories, manifest, _SUCCESS -----------------------------------------------------------


def test_nested_directories_mirror_paths_with_manifest_and_success(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """A nested tree scored by 2 workers: outputs mirror relative paths, rows keep input order over many chunks;
    hidden files, other extensions (logged) and symlinks leaving the tree are skipped, a symlink inside is scored;
    manifest.json lists every file with rows, a sha256 that matches the written file, the bundle digest; _SUCCESS;
    no temp files left behind."""
    bundle = sum_bundle()
    inp, out = tmp_path / "in", tmp_path / "out"
    frames = {"a/b/c.csv": sum_frame(3000, seed=3), "a/d.parquet": sum_frame(50, seed=4), "top.jsonl": sum_frame(7, seed=5)}
    for rel, df in frames.items():
        write_as(df, inp / rel)
    write_as(sum_frame(5, seed=6), inp / ".hidden.csv")
    (inp / "notes.txt").write_text("not data\n")
    outside = write_as(sum_frame(5, seed=7), tmp_path / "elsewhere" / "outside.csv")
    (inp / "link_out.csv").symlink_to(outside)
    (inp / "link_in.csv").symlink_to(inp / "a" / "b" / "c.csv")
    frames["link_in.csv"] = frames["a/b/c.csv"]

    result = ok(run_batch(bundle, "--input", inp, "--output", out, "--workers", 2, "--chunk-rows", 100))

    assert "notes.txt" in result.output, "skipping a file with another extension should be logged"
    expected = sorted([*frames, "manifest.json", "_SUCCESS"])
    assert visible_files(out) == expected, f"output tree {listing(out)}"
    scorer = Scorer.load(bundle)
    for rel, df in frames.items():
        got = read_output(out / rel)
        assert_column_equal(as_list(got["id"]), as_list(df["id"]), f"{rel} [id] (input order)")
        assert_column_equal(as_list(got["sum"]), as_list(scorer.score(df)["sum"]), f"{rel} [sum]")

    m = manifest(out)
    assert m["scorer_version"] == __version__
    assert m["bundle"]["name"] == scorer.bundle.name
    assert digest_matches(m["bundle"]["digest"], scorer.bundle.digest), m["bundle"]
    assert isinstance(m["settings"], dict) and m["settings"]
    assert isinstance(m["totals"], dict) and m["totals"]
    inputs = [e["input"] for e in m["files"]]
    rels = [str(Path(i).relative_to(inp)) if Path(i).is_absolute() else i for i in inputs]
    assert sorted(rels) == sorted(frames), f"manifest files: {rels}"
    for rel, df in frames.items():
        entry = entry_for(out, rel, inp)
        assert entry["status"] == "ok", entry
        assert (entry["rows_in"], entry["rows_out"], entry["rows_rejected"]) == (len(df), len(df), 0), entry
        written = out / entry["output"] if not Path(entry["output"]).is_absolute() else Path(entry["output"])
        assert written == out / rel, entry
        assert digest_matches(entry["sha256"], sha256(out / rel)), f"{rel}: manifest sha256 does not match the file"
        assert isinstance(entry["seconds"], int | float)


@pytest.mark.fast
def test_manifest_lists_files_in_sorted_walk_order(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """The manifest lists files in a sorted walk order (all paths sorted, or top-down with each folder's files
    sorted before its sorted subfolders), whatever order they finished in: two runs give the same list."""
    inp, out = tmp_path / "in", tmp_path / "out"
    names = ["a/b/c.csv", "a/d.parquet", "b.jsonl", "z.csv"]
    for i, rel in enumerate(names):
        write_as(sum_frame(400 if i == 0 else 3, seed=i), inp / rel)
    ok(run_batch(sum_bundle(), "--input", inp, "--output", out, "--workers", 1, "--chunk-rows", 50, in_process=True))
    listed = [e["input"] for e in manifest(out)["files"]]
    walk = [str(Path(d, f).relative_to(inp)) for d, dirs, files in os.walk(inp) if not dirs.sort()
            for f in sorted(files)]
    assert listed in (sorted(names), walk), listed



@pytest.mark.fast
def test_one_walk_rule_for_a_local_tree_and_a_uri_listing(tmp_path: Path) -> None:
    """The input walk of a local directory and the same rule over a URI listing (the Spark engine's Hadoop
    input) pick the same files: hidden files and folders and ``_``-prefixed files skipped, nested and
    ``_``-prefixed folders walked, other types skipped."""
    from scorer.batch import walk

    root = tmp_path / "in"
    names = ["a.csv", "sub/b.parquet", "_part/c.jsonl", "sub/deeper/d.arrow", ".hidden.csv", "_SUCCESS",
             "_marker.csv", ".hid/e.csv", "sub/.f.csv", "notes.txt", "_part/_g.parquet"]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x\n")
    scored = ["a.csv", "_part/c.jsonl", "sub/b.parquet", "sub/deeper/d.arrow"]
    assert [p.relative_to(root).as_posix() for p in walk.walk(root)] == scored
    uri = root.as_uri()
    listing = [p.as_uri() for p in root.rglob("*") if p.is_file()]
    assert [u.removeprefix(uri + "/") for u in walk.select(uri, listing)] == sorted(scored)


# --- kill -9 and resume ------------------------------------------------------------------------

KILL_FILES = ("f0.csv", "f1.parquet", "f2.csv.gz", "f3.jsonl", "f4.arrow", "f5.csv")
KILL_ROWS = 120_000


def process_group_alive(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    pids.append(int(entry.name))
    return pids


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group (the command and its workers) and wait until none of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while process_group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_group_alive(proc.pid), "processes of the killed group are still running"


def assert_no_partial_outputs(out: Path, what: str) -> None:
    """Every non-hidden file (outside _scorer/) is a known output that reads back with all its rows."""
    for rel in visible_files(out):
        if Path(rel).name.startswith("."):
            continue  # a temp file: hidden, never a final name
        if rel in ("manifest.json", "_SUCCESS"):
            continue
        assert rel in KILL_FILES, f"{what}: unexpected non-hidden file {rel} ({listing(out)})"
        got = read_output(out / rel)
        assert len(got) == KILL_ROWS, f"{what}: {rel} under its final name has {len(got)} of {KILL_ROWS} rows"


def test_kill_9_mid_run_never_leaves_partial_files_and_resume_is_byte_identical(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """kill -9 of the whole process group (2 workers) once a file is committed, then again at a random moment
    of the resumed run: no final-named file is ever partial, no _SUCCESS/manifest before the end; the next run
    skips committed files (untouched) and exits 0; the result is byte-identical, file for file, to an
    uninterrupted run into another directory."""
    bundle = sum_bundle(delay=0.02)
    inp = tmp_path / "in"
    for i, name in enumerate(KILL_FILES):
        write_as(sum_frame(KILL_ROWS, seed=100 + i), inp / name)
    out, clean = tmp_path / "out", tmp_path / "clean"
    args = (bundle, "--input", inp, "--output", out, "--workers", 2, "--chunk-rows", 5000)

    def start(log_name: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / log_name, "wb") as log:
            return subprocess.Popen(batch_cmd(*args), env=clean_env(), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    # 1. Kill once a file is under its final name. Its commit may be recorded a moment after the rename, so files
    #    seen 0.5 s before the kill must be skipped later; files committed in the last moment may be redone.
    proc = start("kill1.log")
    committed: list[str] = []
    first_seen = 0.0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if not committed:
                committed = [n for n in KILL_FILES if (out / n).exists()]
                first_seen = time.monotonic()
            elif time.monotonic() - first_seen > 0.5 and not (out / "_SUCCESS").exists():
                break
            time.sleep(0.01)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL, (
        f"the run ended (exit {proc.returncode}) before it could be killed mid-run:\n{(tmp_path / 'kill1.log').read_text()}")
    assert committed, "nothing was committed before the kill"
    assert not (out / "_SUCCESS").exists(), "_SUCCESS after a kill -9 mid-run"
    assert not (out / "manifest.json").exists(), "manifest.json before every file was committed"
    assert len([n for n in KILL_FILES if (out / n).exists()]) < len(KILL_FILES)
    assert_no_partial_outputs(out, "after the first kill")
    before = {n: (out / n).stat() for n in committed}

    # 2. Resume, and kill that at a random moment (seeded) too.
    proc = start("kill2.log")
    try:
        proc.wait(timeout=random.Random(20261121).uniform(1.5, 4.0))
    except subprocess.TimeoutExpired:
        pass
    finally:
        kill_group(proc)
    if (out / "_SUCCESS").exists():  # only if the resume got to the end before the kill
        assert (out / "manifest.json").exists() and all((out / n).exists() for n in KILL_FILES), listing(out)
    assert_no_partial_outputs(out, "after the second kill")

    # 3. Resume to the end.
    resumed = ok(run_batch(*args))
    for n, st in before.items():
        now = (out / n).stat()
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), f"{n} was rewritten on resume"
    assert re.search(r"skip", resumed.output, re.IGNORECASE), f"resume does not say it skipped files:\n{resumed.output}"
    leftovers = [p for p in visible_files(out) if Path(p).name.startswith(".")]
    assert not leftovers, f"temp files of the killed runs left in the output after resume: {leftovers}"

    # 4. An uninterrupted run into another directory gives the same bytes.
    ok(run_batch(bundle, "--input", inp, "--output", clean, "--workers", 2, "--chunk-rows", 5000))
    files = [p for p in visible_files(clean) if p != "manifest.json"]
    assert [p for p in visible_files(out) if p != "manifest.json"] == files, (
        f"resumed tree {listing(out)} != clean tree {listing(clean)}")
    assert sorted(files) == sorted([*KILL_FILES, "_SUCCESS"])
    for rel in files:
        assert (out / rel).read_bytes() == (clean / rel).read_bytes(), f"{rel} differs between resumed and clean runs"
    keys = ("rows_in", "rows_out", "rows_rejected", "sha256", "status")

    def per_file(root: Path) -> dict[str, dict[str, Any]]:
        return {k: {"output": str(Path(e["output"]).relative_to(root)) if Path(e["output"]).is_absolute() else e["output"],
                    **{f: e.get(f) for f in keys}} for k, e in manifest_files(root).items()}

    resumed_m = per_file(out)
    assert resumed_m == per_file(clean)
    assert all(e["rows_out"] == KILL_ROWS for e in resumed_m.values())


@pytest.mark.fast
def test_rerun_rescores_only_changed_inputs(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """Re-running over a finished output skips unchanged files (not rewritten) and re-scores a file whose
    size/mtime changed, so outputs always match their current inputs."""
    bundle = sum_bundle()
    inp, out = tmp_path / "in", tmp_path / "out"
    write_as(sum_frame(10, seed=1), inp / "same.csv")
    write_as(sum_frame(10, seed=2), inp / "changed.csv")
    args = (bundle, "--input", inp, "--output", out, "--workers", 1)
    ok(run_batch(*args, in_process=True))
    same_stat = (out / "same.csv").stat()
    bigger = sum_frame(15, seed=3)
    write_as(bigger, inp / "changed.csv")
    ok(run_batch(*args, in_process=True))
    now = (out / "same.csv").stat()
    assert (now.st_ino, now.st_mtime_ns) == (same_stat.st_ino, same_stat.st_mtime_ns), "unchanged input re-scored"
    assert_column_equal(as_list(read_output(out / "changed.csv")["id"]), as_list(bigger["id"]), "changed.csv [id]")
    assert entry_for(out, "changed.csv", inp)["rows_out"] == 15
    assert digest_matches(entry_for(out, "changed.csv", inp)["sha256"], sha256(out / "changed.csv"))


# --- bad rows -------------------------------------------------------------------------------------

# (file, bad rows as {0-based data row: 1-based line}) -- written by write_bad_inputs
BAD_FILES = {
    "malformed.csv": {2: 4},            # a row with 4 fields for 3 columns
    "short.csv": {1: 3},                # a row with 2 fields for 3 columns
    "badvalue.csv": {4: 6},             # a = "abc"
    "poison.csv": {5: 7},               # a = 666: the model raises for the whole call
    "mixed.jsonl": {1: 2, 3: 4, 6: 7},  # invalid JSON line, a = "abc", a = 666
}
BAD_ROWS_PER_FILE = 8


def good_row(i: int) -> tuple[int, float, float]:
    return i, i + 0.5, 2.0 * i


def csv_file(path: Path, special: dict[int, str]) -> None:
    """8 good rows ``id,a,b``, except the rows in ``special`` (row -> raw line)."""
    lines = ["id,a,b"]
    for i in range(BAD_ROWS_PER_FILE):
        lines.append(special.get(i, "%d,%r,%r" % good_row(i)))
    path.write_text("\n".join(lines) + "\n")


def write_bad_inputs(inp: Path) -> None:
    """good.csv plus the BAD_FILES, 8 data rows each; bad rows as described in BAD_FILES."""
    inp.mkdir(parents=True)

    csv_file(inp / "good.csv", {})
    csv_file(inp / "malformed.csv", {2: "2,2.5,4.0,99"})
    csv_file(inp / "short.csv", {1: "1,1.5"})
    csv_file(inp / "badvalue.csv", {4: "4,abc,8.0"})
    csv_file(inp / "poison.csv", {5: "5,666,10.0"})
    lines = []
    for i in range(BAD_ROWS_PER_FILE):
        rid, a, b = good_row(i)
        if i == 1:
            lines.append('{"id": 1, "a": ')
        elif i == 3:
            lines.append(json.dumps({"id": rid, "a": "abc", "b": b}))
        elif i == 6:
            lines.append(json.dumps({"id": rid, "a": 666, "b": b}))
        else:
            lines.append(json.dumps({"id": rid, "a": a, "b": b}))
    (inp / "mixed.jsonl").write_text("\n".join(lines) + "\n")


def assert_good_rows(path: Path, skip: set[int]) -> None:
    got = read_output(path)
    keep = [i for i in range(BAD_ROWS_PER_FILE) if i not in skip]
    assert_column_equal(as_list(got["id"]), keep, f"{path.name} [id]")
    assert_column_equal(as_list(got["a"]), [good_row(i)[1] for i in keep], f"{path.name} [a]")
    assert_column_equal(as_list(got["sum"]), [good_row(i)[1] + good_row(i)[2] for i in keep], f"{path.name} [sum]")


def test_bad_rows_fail_fails_only_those_files(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """--bad-rows fail (the default): each file with a malformed CSV row, an uncoercible value or a row the model
    raises on fails (exit 5, no output under its name, manifest 'failed' naming the file and the row/line), the
    good file is still committed, and there is no _SUCCESS."""
    bundle = sum_bundle()
    inp, out = tmp_path / "in", tmp_path / "out"
    write_bad_inputs(inp)
    result = ok(run_batch(bundle, "--input", inp, "--output", out, "--chunk-rows", 3, "--workers", 1), 5)
    assert not (out / "_SUCCESS").exists()
    assert_good_rows(out / "good.csv", set())
    assert entry_for(out, "good.csv", inp)["status"] == "ok"
    for name, bad in BAD_FILES.items():
        for candidate in acceptable_outputs(name, "same"):
            assert not (out / candidate).exists(), f"failed file {name} has an output under its final name"
        entry = entry_for(out, name, inp)
        assert entry["status"] == "failed", entry
        row, line = min(bad.items())
        error = str(entry.get("error") or "")
        assert names_row(error, row, line), f"{name}: error {error!r} does not name row {row} / line {line}"
        assert name in result.output, f"{name}'s failure is not reported on stdout/stderr"


def test_bad_rows_reject_writes_good_rows_and_a_rejects_file(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """--bad-rows reject: exit 4, every file committed with its good rows in input order, and one rejects line per
    bad row with its 0-based row, 1-based line (CSV/JSONL), a reason (for the poison row: the class of what the model
    raised, not its text) and its values; the manifest counts rows in/out/rejected; _SUCCESS exists."""
    bundle = sum_bundle()
    inp, out = tmp_path / "in", tmp_path / "out"
    write_bad_inputs(inp)
    result = run_batch(bundle, "--input", inp, "--output", out, "--chunk-rows", 3, "--workers", 1, "--bad-rows", "reject")
    assert_good_rows(out / "good.csv", set())
    rejects_files = {str(p.relative_to(out)): p for p in out.rglob("*.rejects.jsonl")}
    for name, bad in BAD_FILES.items():
        entry = entry_for(out, name, inp)
        assert entry["status"] == "ok", f"{name} failed: {entry.get('error')}"
        assert_good_rows(find_output(out, name, "same"), set(bad))
        assert (entry["rows_in"], entry["rows_out"], entry["rows_rejected"]) == (
            BAD_ROWS_PER_FILE, BAD_ROWS_PER_FILE - len(bad), len(bad)), entry
        candidates = [f"{name}.rejects.jsonl", *(f"{o}.rejects.jsonl" for o in acceptable_outputs(name, "same"))]
        path = next((rejects_files[c] for c in candidates if c in rejects_files), None)
        assert path is not None, f"no rejects file for {name}: {sorted(rejects_files)}"
        rejects = read_jsonl(path)
        assert [(r["row"], r.get("line")) for r in rejects] == sorted(bad.items()), rejects
        for r in rejects:
            assert r["file"] == name, r
            assert isinstance(r["reason"], str) and r["reason"].strip(), r
            assert isinstance(r.get("values"), dict), r
        by_row = {r["row"]: r for r in rejects}
        if name == "badvalue.csv":
            assert by_row[4]["values"].get("a") == "abc", by_row[4]
        if name == "poison.csv":
            assert by_row[5]["reason"] == "model raised ValueError in predict", by_row[5]
            assert float(by_row[5]["values"]["a"]) == 666, by_row[5]
        if name == "mixed.jsonl":
            assert by_row[6]["reason"] == "model raised ValueError in predict", rejects
            assert by_row[3]["values"].get("a") == "abc" and "abc" not in by_row[3]["reason"], rejects
    assert not any(p.startswith("good.csv.rejects") for p in rejects_files), "rejects file for a file without bad rows"
    ok(result, 4)
    assert (out / "_SUCCESS").is_file()


@pytest.mark.fast
def test_more_rejects_than_max_rejected_rows_fails_the_file(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """A file with 3 bad rows (malformed, uncoercible, model raises) fails under --bad-rows reject
    --max-rejected-rows 2 (exit 5, the other file committed, no _SUCCESS) and is committed with
    --max-rejected-rows 3 (exit 4): the limit is 'above N'."""
    bundle = sum_bundle()
    inp = tmp_path / "in"
    inp.mkdir()
    csv_file(inp / "good.csv", {})
    bad = {1: "1,1.5,2.0,3", 3: "3,abc,6.0", 6: "6,666,12.0"}
    csv_file(inp / "three.csv", bad)
    over, at = tmp_path / "over", tmp_path / "at"
    ok(run_batch(bundle, "--input", inp, "--output", over, "--bad-rows", "reject", "--max-rejected-rows", 2,
                 "--workers", 1, in_process=True), 5)
    assert not (over / "_SUCCESS").exists()
    assert entry_for(over, "three.csv", inp)["status"] == "failed"
    assert str(entry_for(over, "three.csv", inp).get("error") or "").strip()
    assert not (over / "three.csv").exists()
    assert_good_rows(over / "good.csv", set())
    ok(run_batch(bundle, "--input", inp, "--output", at, "--bad-rows", "reject", "--max-rejected-rows", 3,
                 "--workers", 1, in_process=True), 4)
    assert (at / "_SUCCESS").is_file()
    assert_good_rows(at / "three.csv", set(bad))
    assert entry_for(at, "three.csv", inp)["rows_rejected"] == 3


# --- refusals: message on stderr, exit code, nothing written -------------------------------------


def small_input(root: Path) -> Path:
    write_as(sum_frame(5, seed=9), root / "rows.csv")
    return root


def test_missing_input_is_refused(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """An input path that does not exist: exit 2, stderr names it, the output dir is not created."""
    out = tmp_path / "out"
    result = ok(run_batch(sum_bundle(), "--input", tmp_path / "nope", "--output", out), 2)
    assert "nope" in result.stderr, result.stderr
    assert_nothing_written(out)


@pytest.mark.parametrize("where", ["inside", "same", "inside-single-file-parent"])
def test_output_inside_input_is_refused(tmp_path: Path, sum_bundle, where: str) -> None:  # type: ignore[no-untyped-def]
    """An output dir inside (or equal to) the input dir, or the folder of a single input file (its output would
    replace the input): exit 2 with a message, nothing created or changed."""
    inp = small_input(tmp_path / "in")
    before = {p: (inp / p).read_bytes() for p in listing(inp)}
    source: Path = inp
    out = inp / "out"
    if where == "same":
        out = inp
    elif where == "inside-single-file-parent":
        source, out = inp / "rows.csv", inp
    result = ok(run_batch(sum_bundle(), "--input", source, "--output", out), 2)
    assert result.stderr.strip(), "no message on stderr"
    assert {p: (inp / p).read_bytes() for p in listing(inp)} == before, listing(inp)
    assert not (inp / "out").exists()


@pytest.mark.fast
def test_output_beside_input_with_same_prefix_is_allowed(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """'Inside the input' is a path relation, not a string prefix: --input in --output in-scored works."""
    inp = small_input(tmp_path / "in")
    ok(run_batch(sum_bundle(), "--input", inp, "--output", tmp_path / "in-scored", "--workers", 1, in_process=True))
    assert len(read_output(tmp_path / "in-scored" / "rows.csv")) == 5


@pytest.mark.fast
def test_two_inputs_mapping_to_one_output_never_lose_data(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """x.csv and x.jsonl both become x.parquet under --output-format parquet: the run refuses (exit 2, nothing
    written) or keeps both outputs apart -- it never overwrites one with the other while reporting both ok."""
    inp, out = tmp_path / "in", tmp_path / "out"
    write_as(sum_frame(4, seed=1), inp / "x.csv")
    write_as(sum_frame(6, seed=2), inp / "x.jsonl")
    result = run_batch(sum_bundle(), "--input", inp, "--output", out, "--output-format", "parquet", "--workers", 1,
                       in_process=True)
    if result.code == 2:
        assert "x.parquet" in result.stderr or "x.csv" in result.stderr, result.stderr
        assert_nothing_written(out)
        return
    entries = manifest(out)["files"]
    outputs = [e["output"] for e in entries]
    assert len(set(outputs)) == len(outputs), f"two inputs written to the same output: {outputs} (exit {result.code})"
    for e in entries:
        assert digest_matches(e["sha256"], sha256(out / e["output"])), e


@pytest.mark.fast
@pytest.mark.parametrize("fmt", ["same", "parquet", "csv"])
def test_zero_row_inputs_give_zero_row_outputs_with_columns(tmp_path: Path, example_bundles, fmt: str) -> None:  # type: ignore[no-untyped-def]
    """A header-only CSV and a zero-row Parquet file are committed as zero-row outputs that still carry the
    columns (kept input columns + the bundle's declared output columns), so readers such as pandas accept them."""
    bundle = example_bundles["spam"]
    inp, out = tmp_path / "in", tmp_path / "out"
    empty = pd.DataFrame({"feature1": pd.Series([], dtype=float), "feature2": pd.Series([], dtype=object),
                          "feature3": pd.Series([], dtype=float)})
    write_as(empty, inp / "e1.csv")
    write_as(empty, inp / "e2.parquet")
    ok(run_batch(bundle, "--input", inp, "--output", out, "--output-format", fmt, "--workers", 1, in_process=True))
    columns = [*empty.columns, *Scorer.load(bundle).output_columns]
    for name in ("e1.csv", "e2.parquet"):
        path = find_output(out, name, fmt)
        assert entry_for(out, name, inp)["rows_out"] == 0
        got = read_output(path)
        assert len(got) == 0 and list(got.columns) == columns, f"{path.name}: columns {list(got.columns)}"


def test_keep_columns_naming_a_missing_column_is_reported(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """--keep-columns with a column the input does not have is a clear error naming it (exit 2 with nothing
    written, or the file fails with exit 5) -- not a traceback."""
    out = tmp_path / "out"
    result = run_batch(sum_bundle(), "--input", small_input(tmp_path / "in"), "--output", out,
                       "--keep-columns", "id,nope", "--workers", 1)
    assert result.code in (2, 5), f"exit {result.code}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert "nope" in result.stderr, result.stderr
    if result.code == 2:
        assert_nothing_written(out)
    else:
        assert "nope" in str(entry_for(out, "rows.csv", tmp_path / "in").get("error"))


def test_unreadable_input_file_is_refused(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """A file the process may not read (mode 000; as root, run without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH so
    permissions apply): exit 2, stderr names the file, nothing written."""
    inp = small_input(tmp_path / "in")
    secret = write_as(sum_frame(5, seed=10), inp / "secret.csv")
    secret.chmod(0)
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is missing: cannot make a file unreadable")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
        probe = subprocess.run([*prefix, "cat", str(secret)], capture_output=True)
        assert probe.returncode != 0, "setpriv did not drop the DAC capabilities"
    out = tmp_path / "out"
    try:
        result = ok(run_batch(sum_bundle(), "--input", inp, "--output", out, prefix=prefix), 2)
    finally:
        secret.chmod(0o644)
    assert "secret.csv" in result.stderr, result.stderr
    assert_nothing_written(out)


def test_corrupt_parquet_is_reported_by_name(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """A .parquet file that is not Parquet is named in the error. The contract leaves open whether that is an
    'unreadable input' (exit 2, nothing written) or a failed file (exit 5, the others committed, manifest
    'failed'); either way no output appears under its name and there is no _SUCCESS."""
    inp = small_input(tmp_path / "in")
    (inp / "broken.parquet").write_bytes(b"this is not parquet at all\n" * 10)
    out = tmp_path / "out"
    result = run_batch(sum_bundle(), "--input", inp, "--output", out)
    assert result.code in (2, 5), f"exit {result.code}\n{result.output}"
    assert "broken.parquet" in result.stderr, result.stderr
    assert not (out / "broken.parquet").exists() and not (out / "_SUCCESS").exists()
    if result.code == 2:
        assert_nothing_written(out)
    else:
        assert entry_for(out, "broken.parquet", inp)["status"] == "failed"
        assert len(read_output(out / "rows.csv")) == 5


@pytest.mark.parametrize("case", ["raises-in-load", "no-such-bundle"])
def test_bundle_load_failure_exits_3(tmp_path: Path, bundle_factory, case: str) -> None:  # type: ignore[no-untyped-def]
    """A bundle that cannot be loaded (its load() raises; the path does not exist): exit 3, the reason on
    stderr, nothing written."""
    if case == "raises-in-load":
        bundle = bundle_factory("broken", code="""
            import scorer
            class CustomPreprocessor(scorer.CustomPreprocessor):
                def load(self, artifacts_dir):
                    raise RuntimeError("artifact checksum kaput")
                def predict(self, df):
                    return [1] * len(df)
        """)
        needle = "artifact checksum kaput"
    else:
        bundle, needle = tmp_path / "no-bundle-here", "no-bundle-here"
    out = tmp_path / "out"
    result = ok(run_batch(bundle, "--input", small_input(tmp_path / "in"), "--output", out), 3)
    assert needle in result.stderr, result.stderr
    assert_nothing_written(out)


@pytest.mark.parametrize(("args", "env", "needle"), [
    (("--output-format", "xlsx"), {}, "xlsx"),
    (("--chunk-rows", "0"), {}, "chunk"),
    (("--bad-rows", "ignore"), {}, "ignore"),
    ((), {"SCORER_CHUNK_ROWS": "lots"}, "SCORER_CHUNK_ROWS"),
    ((), {"SCORER_OUTPUT_FORMAT": "xlsx"}, "xlsx"),
])
def test_bad_flags_are_refused(tmp_path: Path, sum_bundle, args: tuple[str, ...], env: dict[str, str], needle: str) -> None:  # type: ignore[no-untyped-def]
    """An unknown output format, a non-positive chunk size, an unknown bad-rows policy, as a flag or a SCORER_*
    variable: exit 2, stderr says which, nothing written."""
    out = tmp_path / "out"
    result = ok(run_batch(sum_bundle(), "--input", small_input(tmp_path / "in"), "--output", out, *args, env=env), 2)
    assert needle.lower() in result.stderr.lower(), result.stderr
    assert_nothing_written(out)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p: (root / p).read_bytes() for p in visible_files(root)}


def test_other_bundle_digest_refused_unless_overwrite(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """An output dir written with one bundle is refused (exit 2, nothing changed) for a bundle with another
    digest; --overwrite (or SCORER_OVERWRITE) replaces it and the manifest then carries the new digest."""
    first, second = sum_bundle(name="first"), sum_bundle(delay=0.001, name="second")
    inp, out = small_input(tmp_path / "in"), tmp_path / "out"
    ok(run_batch(first, "--input", inp, "--output", out))
    before = snapshot(out)
    refused = ok(run_batch(second, "--input", inp, "--output", out), 2)
    assert "digest" in refused.stderr.lower(), refused.stderr
    assert snapshot(out) == before, "a refused run changed the output dir"
    ok(run_batch(second, "--input", inp, "--output", out, "--overwrite"))
    assert digest_matches(manifest(out)["bundle"]["digest"], Scorer.load(second).bundle.digest)
    ok(run_batch(first, "--input", inp, "--output", out, env={"SCORER_OVERWRITE": "true"}))
    assert digest_matches(manifest(out)["bundle"]["digest"], Scorer.load(first).bundle.digest)
    assert (out / "_SUCCESS").is_file()


@pytest.mark.fast
def test_changed_settings_never_mix_outputs(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """Re-running into a finished output dir with other settings (--keep-columns none) either refuses (exit 2,
    nothing changed) or re-scores every file with the new settings -- never a mix; --overwrite always re-scores."""
    bundle = sum_bundle()
    inp, out = tmp_path / "in", tmp_path / "out"
    write_as(sum_frame(6, seed=1), inp / "x.csv")
    write_as(sum_frame(6, seed=2), inp / "y.parquet")
    ok(run_batch(bundle, "--input", inp, "--output", out, "--workers", 1, in_process=True))
    before = snapshot(out)
    again = run_batch(bundle, "--input", inp, "--output", out, "--workers", 1, "--keep-columns", "none", in_process=True)
    if again.code == 2:
        assert snapshot(out) == before
    else:
        ok(again)
        for name in ("x.csv", "y.parquet"):
            assert list(read_output(out / name).columns) == SUM_OUTPUTS, name
    ok(run_batch(bundle, "--input", inp, "--output", out, "--workers", 1, "--keep-columns", "none", "--overwrite",
                 in_process=True))
    for name in ("x.csv", "y.parquet"):
        assert list(read_output(out / name).columns) == SUM_OUTPUTS, name


# --- SCORER_* variables ----------------------------------------------------------------------------


def test_env_vars_work_like_flags(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """Everything from SCORER_* alone (bundle, single-file input, output, format, chunk rows, kept columns,
    workers, bad-rows policy): the file lands as DIR/<its name> in that format; a flag beats its variable."""
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "rows.csv").write_text("id,a,b\n" + "".join(f"{i},{i}.5,1\n" for i in range(9)) + "9,abc,1\n")
    out = tmp_path / "out"
    env = {"SCORER_BUNDLE": str(sum_bundle()), "SCORER_INPUT": str(inp / "rows.csv"), "SCORER_OUTPUT": str(out),
           "SCORER_OUTPUT_FORMAT": "parquet", "SCORER_CHUNK_ROWS": "4", "SCORER_KEEP_COLUMNS": "none",
           "SCORER_WORKERS": "1", "SCORER_BAD_ROWS": "reject", "SCORER_MAX_REJECTED_ROWS": "1"}
    ok(run_batch(env=env), 4)
    assert sorted(p for p in visible_files(out) if not p.endswith(".rejects.jsonl")) == [
        "_SUCCESS", "manifest.json", "rows.parquet"], listing(out)
    got = read_output(out / "rows.parquet")
    assert list(got.columns) == SUM_OUTPUTS
    assert_column_equal(as_list(got["sum"]), [i + 1.5 for i in range(9)], "sum")
    assert got["rows_in_call"].max() <= 4
    flagged = tmp_path / "flagged"
    ok(run_batch("--output", flagged, "--output-format", "jsonl", "--keep-columns", "id",
                 env={**env, "SCORER_OUTPUT": str(tmp_path / "unused")}), 4)
    assert not (tmp_path / "unused").exists()
    assert not (flagged / "rows.parquet").exists()
    got = read_output(flagged / "rows.jsonl")
    assert list(got.columns) == ["id", *SUM_OUTPUTS]
    assert [str(v) for v in as_list(got["id"])] == [str(i) for i in range(9)]  # typed or CSV text: both allowed
