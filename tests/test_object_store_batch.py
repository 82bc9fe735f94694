"""``scorer batch`` with ``s3://`` inputs and outputs, against a real S3-compatible server (SeaweedFS,
:mod:`seaweed`) and real ``scorer batch`` processes (issue 17's acceptance list):

* a nested prefix of CSV, Parquet and JSON Lines objects (markers and hidden objects skipped) scores to
  the same bytes, object for object, as the same job on local files, and so do the mixed directions
  (local to store, store to local); the manifest's sha256 and sizes are those of the objects;
* ``kill -9`` at random moments, once during a multipart upload of an output: never an incomplete object
  under a final key, never ``_SUCCESS`` early; the rerun resumes to a clean run's result and leaves no
  temporary object and no incomplete multipart upload behind;
* a ~2 GB object streams through in bounded memory (tree RSS < 1 GiB), output to the store too;
* the store going away mid-job is exit 5 naming the object; once it is back, the rerun completes;
* wrong credentials, a missing bucket, a prefix without data are exit 2 with one line and nothing written;
* one writer per output prefix: a second run is refused while the first holds the lock, a stale lock
  (its owner dead, or expired) is taken over.

Most tests share the session's SeaweedFS (one bucket, a prefix each); the big-object and the store-down
tests start one of their own (room for GBs; a server to stop and start again).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from conftest import SUM_MODEL
from proc_tree import Sampler
from seaweed import Seaweed, seaweed, start_seaweed  # noqa: F401 - the session fixture
from test_batch import kill_group, sum_frame, write_as

BUCKET = "scorer-batch"
MIB, GIB = 1 << 20, 1 << 30
STATE = "_scorer/"
TEMP_SUFFIX = ".scorer-tmp"


# --- helpers ------------------------------------------------------------------------------------------


def make_sum_bundle(root: Path, delay: float = 0.0) -> Path:
    """conftest's ``sum`` model (a + b, and the rows of its call), sleeping ``delay`` s per call."""
    (root / "artifacts").mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "custom_preprocess.py").write_text(textwrap.dedent(SUM_MODEL))
    if delay:
        (root / "artifacts" / "delay.txt").write_text(str(delay))
    return root


def batch(*args: object, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scorer.cli", "batch", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def start_batch(*args: object, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``scorer batch`` in a process group of its own (so ``kill_group`` takes its workers too)."""
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "scorer.cli", "batch", *map(str, args)], env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def ok(done: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    assert done.returncode == code, f"exit {done.returncode}, expected {code}\n{done.stdout}\n{done.stderr[-6000:]}"
    return done


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


def refusal_line(stderr: str) -> str:
    """The one line a refusal prints: the lock is taken before the bundle loads, so nothing else is on stderr."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("scorer batch: "), stderr
    return lines[0]


def s3_listing(client: Any, prefix: str, bucket: str = BUCKET) -> dict[str, int]:
    """Every object under ``prefix/``: its name relative to the prefix, and its size."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            found[obj["Key"].removeprefix(prefix + "/")] = obj["Size"]
    return found


def s3_tree(client: Any, prefix: str, bucket: str = BUCKET) -> dict[str, bytes]:
    """Every object under ``prefix/`` downloaded, by its name relative to the prefix."""
    return {rel: client.get_object(Bucket=bucket, Key=f"{prefix}/{rel}")["Body"].read()
            for rel in s3_listing(client, prefix, bucket)}


def s3_uploads(client: Any, prefix: str, bucket: str = BUCKET) -> list[str]:
    """The keys of incomplete multipart uploads under ``prefix/``."""
    keys = []
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix + "/"):
        keys += [u["Key"] for u in page.get("Uploads", [])]
    return keys


def put_tree(client: Any, local: Path, prefix: str, bucket: str = BUCKET) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(local).as_posix()}",
                              Body=path.read_bytes())


def local_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def results(tree: dict[str, bytes]) -> dict[str, bytes]:
    """What a run leaves for its readers: every file but the run's own state and the manifest."""
    return {rel: data for rel, data in tree.items() if not rel.startswith(STATE) and rel != "manifest.json"}


def manifest_files(tree: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """The manifest's file entries by input, without what differs between runs (time taken, skipped on resume)."""
    files = json.loads(tree["manifest.json"])["files"]
    return {e["input"]: {k: v for k, v in e.items() if k not in ("seconds", "skipped")} for e in files}


def assert_manifest_describes(tree: dict[str, bytes], sizes: dict[str, int] | None = None) -> None:
    """Each committed file's manifest sha256 and output_bytes are those of the file as read back (and as the
    store's listing sizes it); a rejects file is there when the entry names one."""
    for entry in json.loads(tree["manifest.json"])["files"]:
        assert entry["status"] == "ok", entry
        data = tree[entry["output"]]
        assert entry["sha256"] in (hashlib.sha256(data).hexdigest(), "sha256:" + hashlib.sha256(data).hexdigest())
        assert entry["output_bytes"] == len(data), entry
        if sizes is not None:
            assert sizes[entry["output"]] == len(data), entry
        if "rejects" in entry:
            assert entry["rejects"] in tree and tree[entry["rejects"]], entry


def assert_same_result(got: dict[str, bytes], want: dict[str, bytes], what: str) -> None:
    """The same files with the same bytes (state and manifest apart), and manifests equal entry for entry."""
    assert sorted(results(got)) == sorted(results(want)), f"{what}: {sorted(got)} vs {sorted(want)}"
    for rel, data in results(want).items():
        assert got[rel] == data, f"{what}: {rel} differs ({len(got[rel])} vs {len(data)} bytes)"
    assert manifest_files(got) == manifest_files(want), what
    assert_manifest_describes(got)


@pytest.fixture(scope="module")
def bucket(seaweed: Seaweed) -> Any:  # noqa: F811
    """The tests' bucket in the session's server; its boto3 client."""
    client = seaweed.client()
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {"sum": make_sum_bundle(root / "sum"), "slow": make_sum_bundle(root / "slow", delay=0.25),
            "steady": make_sum_bundle(root / "steady", delay=0.01)}


# --- 1. the same bytes as a local run -------------------------------------------------------------------

NESTED = {"x.csv": 1500, "a/y.parquet": 1200, "a/b/z.jsonl": 900}
SKIPPED = ("_SUCCESS", ".hidden.csv", "a/_part.csv", "a/.tmp/w.csv")


def write_nested_input(root: Path) -> None:
    """NESTED files (x.csv with two rows the schema refuses: a rejects file), and SKIPPED ones that hold data
    too: scored if the walk did not skip them."""
    for i, (rel, rows) in enumerate(NESTED.items()):
        write_as(sum_frame(rows, seed=10 + i), root / rel)
    lines = (root / "x.csv").read_text().splitlines(keepends=True)
    for n in (7, 1200):
        fields = lines[n].split(",")
        fields[1] = "not-a-number"
        lines[n] = ",".join(fields)
    (root / "x.csv").write_text("".join(lines))
    for rel in SKIPPED:
        write_as(sum_frame(5, seed=99), root / rel) if rel.endswith(".csv") else (root / rel).write_text("")


def test_nested_prefix_scores_to_the_bytes_of_a_local_run(seaweed: Seaweed, bucket: Any,  # noqa: F811
                                                        bundles: dict[str, Path], tmp_path: Path) -> None:
    """``s3://…/in`` (x.csv, a/y.parquet, a/b/z.jsonl; _SUCCESS, hidden and _-prefixed objects skipped) to
    ``s3://…/out`` with 2 workers: every output object, the rejects object and the manifest's entries equal the
    same job on local files; the manifest's sha256 and sizes are the objects'. Local input to the store and the
    store to a local output give the same bytes too, and so does ``--output-format parquet`` both ways."""
    inp = tmp_path / "in"
    write_nested_input(inp)
    put_tree(bucket, inp, "nested/in")
    env = seaweed.env()
    common = (bundles["sum"], "--bad-rows", "reject", "--chunk-rows", 400)
    s3_in, s3 = f"s3://{BUCKET}/nested/in", f"s3://{BUCKET}/nested"

    ok(batch(*common, "--input", inp, "--output", tmp_path / "local", "--workers", 2, env=env), 4)
    want = local_tree(tmp_path / "local")
    assert sorted(results(want)) == ["_SUCCESS", "a/b/z.jsonl", "a/y.parquet", "x.csv", "x.csv.rejects.jsonl"]
    assert [r["row"] for r in map(json.loads, want["x.csv.rejects.jsonl"].splitlines())] == [6, 1199]
    assert set(manifest_files(want)) == set(NESTED)

    ok(batch(*common, "--input", s3_in, "--output", f"{s3}/out", "--workers", 2, env=env), 4)
    got = s3_tree(bucket, "nested/out")
    assert_same_result(got, want, "s3 -> s3")
    assert_manifest_describes(got, s3_listing(bucket, "nested/out"))
    assert [k for k in got if TEMP_SUFFIX in k or k == f"{STATE}lock"] == []

    ok(batch(*common, "--input", inp, "--output", f"{s3}/from-local", "--workers", 1, env=env), 4)
    assert_same_result(s3_tree(bucket, "nested/from-local"), want, "local -> s3")
    ok(batch(*common, "--input", s3_in, "--output", tmp_path / "from-s3", "--workers", 1, env=env), 4)
    assert_same_result(local_tree(tmp_path / "from-s3"), want, "s3 -> local")

    parquet = ("--output-format", "parquet", "--workers", 1)
    ok(batch(*common, *parquet, "--input", inp, "--output", tmp_path / "local-pq", env=env), 4)
    want_pq = local_tree(tmp_path / "local-pq")
    assert sorted(results(want_pq)) == ["_SUCCESS", "a/b/z.parquet", "a/y.parquet", "x.parquet",
                                        "x.parquet.rejects.jsonl"]
    ok(batch(*common, *parquet, "--input", s3_in, "--output", f"{s3}/out-pq", env=env), 4)
    assert_same_result(s3_tree(bucket, "nested/out-pq"), want_pq, "s3 -> s3, parquet")


def test_a_single_object_is_scored_beside_itself_like_a_local_file(seaweed: Seaweed, bucket: Any,  # noqa: F811
                                                                   bundles: dict[str, Path], tmp_path: Path) -> None:
    """``--input s3://…/data/day1.csv --output s3://…/data/scored``: one object, its output in a prefix beside it
    (as a local file may be scored into a folder beside it) gives the local run's bytes; an output prefix that
    holds the input object is refused (exit 2, nothing written)."""
    write_as(sum_frame(40, seed=5), tmp_path / "data" / "day1.csv")
    put_tree(bucket, tmp_path / "data", "single/data")
    env = seaweed.env()
    ok(batch(bundles["sum"], "--input", tmp_path / "data" / "day1.csv", "--output", tmp_path / "data" / "scored",
             "--workers", 1, env=env))
    ok(batch(bundles["sum"], "--input", f"s3://{BUCKET}/single/data/day1.csv", "--output",
             f"s3://{BUCKET}/single/data/scored", "--workers", 1, env=env))
    assert_same_result(s3_tree(bucket, "single/data/scored"), local_tree(tmp_path / "data" / "scored"), "one object")
    refused = batch(bundles["sum"], "--input", f"s3://{BUCKET}/single/data/day1.csv", "--output",
                    f"s3://{BUCKET}/single", "--workers", 1, env=env)
    assert refused.returncode == 2 and "overlap" in one_line(refused.stderr), refused.stderr
    assert sorted(s3_listing(bucket, "single")) == ["data/day1.csv", *(f"data/scored/{k}" for k in sorted(
        s3_listing(bucket, "single/data/scored")))]


# --- 5. refusals: exit 2, one line, nothing written ---------------------------------------------------


@pytest.fixture(scope="module")
def small_input(bucket: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``s3://…/small/in``: two small CSV objects; also ``small/markers`` (markers and hidden objects) and
    ``small/unknown`` (a .txt object), prefixes of no data files."""
    root = tmp_path_factory.mktemp("small")
    for i in range(2):
        write_as(sum_frame(50, seed=i), root / "in" / f"f{i}.csv")
    for rel in ("_SUCCESS", ".hidden.csv", "a/_part.csv", ".tmp/x.csv"):
        (root / "markers" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "markers" / rel).write_text("a,b\n1,2\n")
    (root / "unknown" / "notes.txt").parent.mkdir()
    (root / "unknown" / "notes.txt").write_text("a,b\n1,2\n")
    put_tree(bucket, root, "small")
    return f"s3://{BUCKET}/small/in"


@pytest.mark.parametrize(("case", "expected"), [
    ("wrong-secret", "the store refused the credentials"),
    ("missing-input-bucket", "no such bucket"),
    ("missing-output-bucket", "no such bucket"),
    ("empty-prefix", "no input files"),
    ("no-data-files", "no input files"),
    ("unknown-files", "no input files"),
])
def test_refusals_are_exit_2_with_one_line_and_nothing_written(seaweed: Seaweed, bucket: Any,  # noqa: F811
                                                              bundles: dict[str, Path], small_input: str,
                                                              case: str, expected: str) -> None:
    """Wrong credentials (a wrong secret), a missing bucket (input or output), an empty prefix and a prefix
    holding only markers and hidden objects: exit 2, one line on stderr naming the URI and the problem, and no
    object under the output prefix (nor a bucket created). A prefix holding a file of an unknown type only: the
    same, after the walk's warning naming that object."""
    out_prefix = f"refused/{case}"
    inp, out = small_input, f"s3://{BUCKET}/{out_prefix}"
    env = seaweed.env()
    if case == "wrong-secret":
        env = seaweed.env(AWS_SECRET_ACCESS_KEY="not-the-" + seaweed.secret_key[8:])
        named = out  # the output is checked first
    elif case == "missing-input-bucket":
        inp = named = "s3://no-such-input-bucket/in"
    elif case == "missing-output-bucket":
        out = named = "s3://no-such-output-bucket/out"
    elif case == "empty-prefix":
        inp = named = f"s3://{BUCKET}/small/nothing-here"
    elif case == "no-data-files":
        inp = named = f"s3://{BUCKET}/small/markers"
    else:
        inp = named = f"s3://{BUCKET}/small/unknown"
    done = batch(bundles["sum"], "--input", inp, "--output", out, "--workers", 1, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    if case == "unknown-files":  # the walk says which object it skipped, as for a local directory
        warning, line = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert json.loads(warning)["message"] == (f"skipping {BUCKET}/small/unknown/notes.txt: not a "
                                                  "csv/csv.gz/parquet/jsonl/arrow file"), warning
    else:
        line = one_line(done.stderr)
    assert line.startswith("scorer batch: ") and named in line and expected in line, line
    assert seaweed.secret_key not in done.stdout + done.stderr
    assert s3_listing(bucket, out_prefix) == {}
    assert s3_uploads(bucket, out_prefix) == []
    assert {b["Name"] for b in bucket.list_buckets()["Buckets"]}.isdisjoint(
        {"no-such-input-bucket", "no-such-output-bucket"})


# --- 6. one writer per output prefix ------------------------------------------------------------------


def lock_record(client: Any, prefix: str) -> dict[str, Any] | None:
    try:
        return json.loads(client.get_object(Bucket=BUCKET, Key=f"{prefix}/_scorer/lock")["Body"].read())
    except client.exceptions.NoSuchKey:
        return None


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_into_the_same_prefix_is_refused_while_the_first_holds_the_lock(
        seaweed: Seaweed, bucket: Any, bundles: dict[str, Path], small_input: str, tmp_path: Path) -> None:  # noqa: F811
    """While a slow run writes ``s3://…/locked``, a second run into it exits 2 with one line saying another
    scorer batch writes it (naming the first's pid), and leaves the lock as it was; the first finishes (exit 0,
    its outputs complete) and its lock object is gone."""
    prefix = "locked/out"
    args = (bundles["slow"], "--input", small_input, "--output", f"s3://{BUCKET}/{prefix}", "--workers", 1,
            "--chunk-rows", 5)
    first = start_batch(*args, env=seaweed.env(), log=tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 60
        while (held := lock_record(bucket, prefix)) is None:
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.05)
        assert held["pid"] == first.pid and held["host"] == socket.gethostname() and held["run"]
        assert held["expires"] > time.time()
        second = batch(*args, env=seaweed.env())
        assert second.returncode == 2, second.stdout + second.stderr
        line = refusal_line(second.stderr)
        assert f"s3://{BUCKET}/{prefix}/_scorer/lock: another scorer batch is writing this output" in line, line
        assert f"pid {first.pid}" in line, line
        assert first.poll() is None, "the first run ended before the second was refused: make it slower"
        assert lock_record(bucket, prefix)["run"] == held["run"]  # type: ignore[index]
        assert first.wait(timeout=120) == 0, (tmp_path / "first.log").read_text()
    finally:
        kill_group(first)
    assert lock_record(bucket, prefix) is None
    listing = s3_listing(bucket, prefix)
    assert {"f0.csv", "f1.csv", "_SUCCESS", "manifest.json"} <= set(listing), listing
    files = manifest_files(s3_tree(bucket, prefix))
    assert [files[f]["rows_out"] for f in ("f0.csv", "f1.csv")] == [50, 50]


@pytest.mark.parametrize("stale", ["dead-pid", "expired"])
def test_a_stale_lock_is_taken_over(seaweed: Seaweed, bucket: Any, bundles: dict[str, Path],  # noqa: F811
                                    small_input: str, stale: str) -> None:
    """A lock left by a process of this host that is gone (expiry still ahead), or one whose expiry passed
    (another host's), is taken over: the run completes (exit 0) and removes the lock. A live lock of another
    host is refused, naming that host."""
    prefix = f"stale/{stale}"
    if stale == "dead-pid":
        record = {"host": socket.gethostname(), "pid": dead_pid(), "run": "a-killed-run", "expires": time.time() + 600}
    else:
        record = {"host": "elsewhere", "pid": 1, "run": "an-old-run", "expires": time.time() - 5}
    bucket.put_object(Bucket=BUCKET, Key=f"{prefix}/_scorer/lock", Body=json.dumps(record).encode())
    args = (bundles["sum"], "--input", small_input, "--output", f"s3://{BUCKET}/{prefix}", "--workers", 1)
    ok(batch(*args, env=seaweed.env()))
    assert lock_record(bucket, prefix) is None
    assert {"f0.csv", "f1.csv", "_SUCCESS"} <= set(s3_listing(bucket, prefix))

    live = {"host": "elsewhere", "pid": 1, "run": "a-live-run", "expires": time.time() + 600}
    bucket.put_object(Bucket=BUCKET, Key=f"{prefix}/_scorer/lock", Body=json.dumps(live).encode())
    before = s3_tree(bucket, prefix)
    refused = batch(*args, env=seaweed.env())
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "another scorer batch is writing this output (host elsewhere, pid 1)" in refusal_line(refused.stderr)
    assert s3_tree(bucket, prefix) == before


def test_the_lock_is_renewed_and_a_run_whose_lock_is_taken_over_publishes_nothing_more(
        seaweed: Seaweed, bucket: Any, bundles: dict[str, Path], small_input: str, tmp_path: Path) -> None:  # noqa: F811
    """With ``--lock-seconds 1.5`` a slow run pushes its lock's expiry on (a new record, same run) every half
    second. Another run's record put over it (a takeover, as after a stall longer than the lock's life) makes
    the next renewal fail its If-Match: the run publishes nothing more (no _SUCCESS, no manifest), exits 5
    naming the lock, and leaves the other run's lock in place."""
    prefix = "renewed/out"
    args = (bundles["slow"], "--input", small_input, "--output", f"s3://{BUCKET}/{prefix}", "--workers", 1,
            "--chunk-rows", 5, "--lock-seconds", 1.5)
    log = tmp_path / "run.log"
    proc = start_batch(*args, env=seaweed.env(), log=log)
    try:
        first = wait_for(proc, log, "the lock", lambda: lock_record(bucket, prefix))
        renewed = wait_for(proc, log, "a renewal",
                           lambda: (r := lock_record(bucket, prefix)) and r["expires"] > first["expires"] and r)
        assert renewed["run"] == first["run"] and renewed["pid"] == proc.pid
        assert first["expires"] - time.time() <= 1.6  # the lock's life is --lock-seconds
        other = {"host": "elsewhere", "pid": 1, "run": "the-taker", "expires": time.time() + 600}
        bucket.put_object(Bucket=BUCKET, Key=f"{prefix}/_scorer/lock", Body=json.dumps(other).encode())
        code = proc.wait(timeout=120)
    finally:
        kill_group(proc)
    text = log.read_text()
    assert code == 5, text
    last = json.loads(text.splitlines()[-1])
    assert last["message"] == (f"batch failed: s3://{BUCKET}/{prefix}/_scorer/lock: this run's lock was taken over "
                               "by another run (not renewed within 1.5 s?); stopping"), last
    assert lock_record(bucket, prefix) == other
    listing = s3_listing(bucket, prefix)
    assert "_SUCCESS" not in listing and "manifest.json" not in listing, listing


# --- 2. kill -9 and resume --------------------------------------------------------------------------

KILL_INPUT = {"big.csv": 200_000, "a/f1.parquet": 30_000, "a/b/f2.jsonl": 30_000, "f3.csv": 30_000}
KILL_TRIALS = 4  # kills at random moments that hit a run before its end, besides two aimed at big.csv's output
MAX_RANDOM_TRIALS = 8
KILL_SEED = 20261127


@pytest.fixture(scope="module")
def kill_job(seaweed: Seaweed, bucket: Any, bundles: dict[str, Path],  # noqa: F811
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``s3://…/kill/in``: big.csv (its output, ~20 MB, goes up as a multipart upload of two parts) and
    three small files; the job's arguments (an output prefix to add), and a clean run's result and duration."""
    root = tmp_path_factory.mktemp("kill")
    for i, (rel, rows) in enumerate(KILL_INPUT.items()):
        write_as(sum_frame(rows, seed=200 + i), root / "in" / rel)
    put_tree(bucket, root / "in", "kill/in")
    args = (bundles["steady"], "--input", f"s3://{BUCKET}/kill/in", "--workers", 1, "--chunk-rows", 5000)
    t0 = time.monotonic()
    ok(batch(*args, "--output", f"s3://{BUCKET}/kill/clean", env=seaweed.env()))
    seconds = time.monotonic() - t0
    clean = s3_tree(bucket, "kill/clean")
    assert len(clean["big.csv"]) > 15 * MIB  # pyarrow uploads parts of 10 MiB
    return {"args": args, "clean": clean, "seconds": seconds, "logs": root, "local_in": root / "in"}


def wait_for(proc: subprocess.Popen[bytes], log: Path, what: str, found: Any) -> Any:
    """Poll ``found()`` until it returns something (the run must still be going)."""
    deadline = time.monotonic() + 120
    while not (got := found()):
        assert proc.poll() is None, f"the run ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after 120 s"
        time.sleep(0.02)
    return got


def test_kill_9_at_random_moments_never_leaves_a_partial_object_and_resume_equals_a_clean_run(
        seaweed: Seaweed, bucket: Any, kill_job: dict[str, Any]) -> None:  # noqa: F811
    """``kill -9`` of the run's process group: once while big.csv's output goes up as a multipart upload
    (parts uploaded, the upload still listed by the store after the kill), once as soon as that temporary
    object is complete (before or while it is copied to its final key), and at KILL_TRIALS random moments
    (seeded, over 10-80 % of a clean run's duration) until KILL_TRIALS of those hit a run before its end.
    After each kill every output under its final key has the clean run's bytes, and there is no ``_SUCCESS``
    before the end. The same command again exits 0 with the clean run's
    result (objects byte for byte, manifest entries), and no temporary object, no incomplete multipart upload
    and no lock left under the prefix."""
    rng = random.Random(KILL_SEED)
    clean, span = kill_job["clean"], kill_job["seconds"]
    aimed = ["multipart", "temporary complete"]
    table: list[tuple[Any, ...]] = []
    for trial in range(len(aimed) + MAX_RANDOM_TRIALS):
        mid_run = sum(row[3] == "" for row in table[len(aimed):])
        if trial >= len(aimed) and mid_run >= KILL_TRIALS:
            break
        # a random moment over 10-80 % of the clean run, the first KILL_TRIALS one in each of as many stretches
        # of it (the machine's load varies: a run may finish first, and another moment is drawn)
        j = trial - len(aimed)
        fraction = (j + rng.random()) / KILL_TRIALS if j < KILL_TRIALS else rng.random()
        when: str | float = aimed[trial] if trial < len(aimed) else (0.1 + 0.7 * fraction) * span
        prefix = f"kill/out-{trial}"
        args = (*kill_job["args"], "--output", f"s3://{BUCKET}/{prefix}")
        log = kill_job["logs"] / f"trial-{trial}.log"
        temp_key = f"{prefix}/.big.csv{TEMP_SUFFIX}"
        proc = start_batch(*args, env=seaweed.env(), log=log)
        t0 = time.monotonic()
        hit = ""
        try:
            if when == "multipart":  # big.csv's upload, once a part of it is in the store
                upload = wait_for(proc, log, "a part of big.csv's upload", lambda key=temp_key: next(
                    (u for u in bucket.list_multipart_uploads(Bucket=BUCKET, Prefix=key).get("Uploads", [])
                     if bucket.list_parts(Bucket=BUCKET, Key=key, UploadId=u["UploadId"]).get("Parts")), None))
            elif when == "temporary complete":
                wait_for(proc, log, "big.csv's complete temporary object",
                         lambda prefix=prefix: ".big.csv" + TEMP_SUFFIX in s3_listing(bucket, prefix))
            else:
                assert isinstance(when, float)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=when)
        finally:
            kill_group(proc)
        at = time.monotonic() - t0
        listing = s3_listing(bucket, prefix)
        uploads = s3_uploads(bucket, prefix)
        if when == "multipart":
            parts = bucket.list_parts(Bucket=BUCKET, Key=temp_key, UploadId=upload["UploadId"]).get("Parts", [])
            assert temp_key in uploads and parts, f"big.csv's upload was over before the kill: {uploads}"
            hit = f", {len(parts)} part(s) of big.csv's upload in"
        ended = ""
        if proc.returncode != -signal.SIGKILL:  # a random moment after the end: a run faster than the clean one
            assert proc.returncode == 0 and isinstance(when, float), log.read_text()
            ended = ", the run had ended"
        elif "_SUCCESS" in listing:  # killed after its last write, while exiting
            assert isinstance(when, float) and set(results(clean)) <= set(listing), listing
            ended = ", the run had written _SUCCESS"
        temps = sorted(k for k in listing if k.endswith(TEMP_SUFFIX))
        finals = sorted(k for k in listing if k in results(clean))
        for rel in finals:  # never an incomplete object under a final key
            data = bucket.get_object(Bucket=BUCKET, Key=f"{prefix}/{rel}")["Body"].read()
            assert data == clean[rel], f"trial {trial} (killed at {at:.2f}s): {rel} differs from the clean run's"
        if "manifest.json" in listing:
            assert manifest_files(s3_tree(bucket, prefix)) == manifest_files(clean)
        markers = [k for k in listing if k.startswith(f"{STATE}commits/")]

        resumed = ok(batch(*args, env=seaweed.env()))
        after = s3_tree(bucket, prefix)
        assert_same_result(after, clean, f"trial {trial}, resumed")
        assert [k for k in after if k.endswith(TEMP_SUFFIX)] == [], f"trial {trial}: temporaries left"
        assert s3_uploads(bucket, prefix) == [], f"trial {trial}: incomplete multipart uploads left"
        assert f"{STATE}lock" not in after
        skipped = sorted(e["output"] for e in json.loads(after["manifest.json"])["files"] if e.get("skipped"))
        committed = [m.removeprefix(f"{STATE}commits/").removesuffix(".json") for m in markers]
        # committed files under their final names are skipped, never rewritten; a file committed whose copy the
        # store was still finishing when its writer died may be skipped too (the copy landed before the rerun)
        assert set(finals) & set(committed) <= set(skipped) <= set(committed), resumed.stderr
        table.append((trial, when if isinstance(when, str) else f"after {when:.2f}s", f"{at:.2f}s", ended, hit,
                      finals, len(markers), [t.removeprefix(prefix + "/") for t in temps],
                      [u.removeprefix(prefix + "/") for u in uploads], skipped))
    print(f"\nclean run: {span:.2f}s")
    for row in table:
        print("trial {}: kill {} (at {}{}{}): final outputs {}, {} commit marker(s), temporary objects {}, "
              "incomplete uploads {}; resume skipped {} and left no temporary object or upload".format(*row))
    assert sum(row[3] == "" for row in table) == len(aimed) + KILL_TRIALS, "too few kills landed before the end"

    # a committed file whose final object is gone (its commit marker still there) is scored again, not skipped
    bucket.delete_object(Bucket=BUCKET, Key=f"{prefix}/big.csv")
    ok(batch(*args, env=seaweed.env()))
    after = s3_tree(bucket, prefix)
    assert_same_result(after, clean, "rerun with big.csv deleted")
    assert [e["output"] for e in json.loads(after["manifest.json"])["files"] if not e.get("skipped")] == ["big.csv"]


# --- 4. the store going away mid-job ------------------------------------------------------------------


def test_the_store_going_away_mid_job_is_exit_5_naming_the_object_and_a_rerun_completes(
        bundles: dict[str, Path], kill_job: dict[str, Any], tmp_path: Path) -> None:
    """A server of its own, stopped once a file is committed (its final object there) while the job writes the
    next: the job exits 5, its last log line naming the object it failed on (an ``s3://`` URI
    under the output prefix) and the store's failure. Started again (same data and ports): the same command
    exits 0 and the result equals a clean run's."""
    with start_seaweed(tmp_path / "seaweed") as server:
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        prefix = "down/out"
        args = (bundles["steady"], "--input", kill_job["local_in"], "--output", f"s3://{BUCKET}/{prefix}",
                "--workers", 1, "--chunk-rows", 5000)
        proc = start_batch(*args, env=server.env(), log=tmp_path / "down.log")
        try:
            committed = wait_for(proc, tmp_path / "down.log", "a committed output", lambda: sorted(
                k for k in s3_listing(client, prefix, BUCKET) if k in results(kill_job["clean"])))
            server.stop()
            t0 = time.monotonic()
            code = proc.wait(timeout=180)
            failed_after = time.monotonic() - t0
        finally:
            kill_group(proc)
        text = (tmp_path / "down.log").read_text()
        assert code == 5, text
        last = json.loads(text.splitlines()[-1])
        assert last["level"] == "error", text
        assert last["message"].startswith(f"batch failed: s3://{BUCKET}/{prefix}/"), last
        failed_on = last["message"].removeprefix("batch failed: ").split(": ")[0]
        assert failed_on.removeprefix(f"s3://{BUCKET}/{prefix}/") not in ("", "_SUCCESS"), last
        print(f"\nstopped the store once {committed} were committed; exit 5 after {failed_after:.1f}s: {last['message']}")

        t0 = time.monotonic()
        server.start()
        print(f"started again in {time.monotonic() - t0:.1f}s")
        t0 = time.monotonic()
        ok(batch(*args, env=server.env()))
        print(f"rerun: {time.monotonic() - t0:.1f}s")
        after = s3_tree(client, prefix, BUCKET)
        assert_same_result(after, kill_job["clean"], "rerun after the store came back")
        assert [k for k in after if k.endswith(TEMP_SUFFIX)] == [] and s3_uploads(client, prefix, BUCKET) == []
        assert sum(bool(e.get("skipped")) for e in json.loads(after["manifest.json"])["files"]) >= len(committed)


# --- 3. a ~2 GB object in bounded memory -------------------------------------------------------------

BIG_BYTES = 2_000_000_000
BIG_PATTERN_ROWS = 100_000  # a and b repeat with this period; ids never repeat
BIG_NOTE = "a text column of the input: read and dropped (--keep-columns id) " + "x" * 135
PART_BYTES = 64 * MIB


def big_csv_parts(a: np.ndarray, b: np.ndarray) -> Iterator[bytes]:
    """id,a,b,note CSV text in parts of >= PART_BYTES (the last smaller) until BIG_BYTES are out."""
    pattern = {"a": pc.cast(pa.array(a), pa.string()), "b": pc.cast(pa.array(b), pa.string()),
               "note": pa.array([BIG_NOTE] * len(a))}
    rows = sent = 0
    sink = pa.BufferOutputStream()
    while sent < BIG_BYTES:
        table = pa.table({"id": pa.array(np.arange(rows, rows + len(a), dtype=np.int64)), **pattern})
        pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(quoting_style="none", include_header=rows == 0))
        rows += len(a)
        if sink.tell() >= PART_BYTES or sent + sink.tell() >= BIG_BYTES:
            part = sink.getvalue().to_pybytes()
            sent += len(part)
            yield part
            sink = pa.BufferOutputStream()


def upload_parts(client: Any, bucket: str, key: str, parts: Iterator[bytes]) -> int:
    """One multipart upload of ``parts`` as they come, two at a time (nothing on disk); the bytes sent."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    sent = 0
    futures: list[concurrent.futures.Future[Any]] = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for number, part in enumerate(parts, 1):
            while sum(not f.done() for f in futures) >= 2:
                concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
            futures.append(pool.submit(client.upload_part, Bucket=bucket, Key=key, UploadId=upload,
                                       PartNumber=number, Body=part))
            sent += len(part)
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": f.result()["ETag"]} for n, f in enumerate(futures, 1)]})
    return sent


def test_a_2_gb_object_is_scored_in_bounded_memory(bundles: dict[str, Path], tmp_path: Path) -> None:
    """A ~2 GB CSV object (put as a multipart upload streamed from a generator) scored by the default command
    (every core) into ``s3://``: the tree RSS of the run (the command and its workers, sampled from /proc every
    0.1 s) peaks under 1 GiB; the output object holds every row, in order, with a + b; the manifest's counts,
    size and sha256 are the object's. Its own server, with room for the GBs (volumes of 64 MB)."""
    rng = np.random.default_rng(17)
    a, b = rng.standard_normal(BIG_PATTERN_ROWS), rng.standard_normal(BIG_PATTERN_ROWS)
    root = tmp_path / "seaweed"
    try:
        with start_seaweed(root, volume_max=200) as server:
            client = server.client()
            client.create_bucket(Bucket=BUCKET)
            t0 = time.monotonic()
            size = upload_parts(client, BUCKET, "big/in/big.csv", big_csv_parts(a, b))
            uploaded = time.monotonic() - t0
            assert client.head_object(Bucket=BUCKET, Key="big/in/big.csv")["ContentLength"] == size >= BIG_BYTES

            cmd = [sys.executable, "-m", "scorer.cli", "batch", str(bundles["sum"]), "--input",
                   f"s3://{BUCKET}/big/in/big.csv", "--output", f"s3://{BUCKET}/big/out", "--keep-columns", "id"]
            with open(tmp_path / "batch.log", "wb") as log:
                t0 = time.monotonic()
                proc = subprocess.Popen(cmd, env=server.env(), stdout=log, stderr=subprocess.STDOUT)
                sampler = Sampler(proc.pid, interval=0.1)
                sampler.start()
                try:
                    code = proc.wait(timeout=900)
                finally:
                    sampler.halt.set()
                    sampler.join()
                    if proc.poll() is None:
                        proc.kill()
                scored = time.monotonic() - t0
            assert code == 0, (tmp_path / "batch.log").read_text()[-3000:]
            peak = max(r for _, r in sampler.samples)

            t0 = time.monotonic()
            data = client.get_object(Bucket=BUCKET, Key="big/out/big.csv")["Body"].read()
            out = pacsv.read_csv(pa.BufferReader(data), convert_options=pacsv.ConvertOptions(
                column_types={"id": pa.int64(), "sum": pa.float64()}, include_columns=["id", "sum"]))
            rows = out.num_rows
            ids = out.column("id").to_numpy()
            np.testing.assert_array_equal(ids, np.arange(rows))
            k = ids % BIG_PATTERN_ROWS
            np.testing.assert_array_equal(out.column("sum").to_numpy(), a[k] + b[k])
            manifest = json.loads(client.get_object(Bucket=BUCKET, Key="big/out/manifest.json")["Body"].read())
            [entry] = manifest["files"]
            assert (entry["rows_in"], entry["rows_out"], entry["status"]) == (rows, rows, "ok")
            assert entry["output_bytes"] == len(data) == client.head_object(
                Bucket=BUCKET, Key="big/out/big.csv")["ContentLength"]
            assert entry["sha256"] in (hashlib.sha256(data).hexdigest(), "sha256:" + hashlib.sha256(data).hexdigest())
            assert rows * 200 < size < rows * 300  # every input row came out
            checked = time.monotonic() - t0
            print(f"\n{size / GIB:.2f} GiB object ({size:,} bytes, {rows:,} rows) uploaded in {uploaded:.1f}s; "
                  f"scored in {scored:.1f}s ({rows / scored:,.0f} rows/s), {len(sampler.samples)} samples, "
                  f"peak tree RSS {peak / MIB:,.0f} MiB; output ({len(data) / MIB:,.0f} MiB) checked in {checked:.1f}s")
            assert peak < GIB, f"peak tree RSS {peak / MIB:,.0f} MiB >= 1024 MiB"
    finally:
        shutil.rmtree(root, ignore_errors=True)  # GBs of volumes
