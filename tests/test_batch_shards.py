"""Sharded ``scorer batch`` (``--shard-count N`` with ``--shard-index``, ``SCORER_SHARD_INDEX`` or the
``JOB_COMPLETION_INDEX`` of a Kubernetes Indexed Job): N real ``scorer batch`` processes into one output
give what one unsharded run gives, byte for byte, with one ``manifest.json`` and ``_SUCCESS`` written by
the last shard to finish; a shard killed with ``kill -9`` resumes; bad shard arguments write nothing.

The input is a tree of mixed formats (CSV, gzipped CSV, Parquet, JSON Lines, Arrow; nested folders)
with one bad row, scored with ``--bad-rows reject`` so that a rejects file is compared too. The one
difference between the sharded and the unsharded ``manifest.json``: ``settings.shard_count`` (3 vs 1),
and the per-file ``seconds`` (timing, different in every run) and ``skipped`` (set for files a resumed
run found committed); here ``settings.output`` differs too, since the runs write to different folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from scorer.batch.shards import Shard
from scorer.cli import main

# A + B, and the rows of its call; sleeps SHARD_TEST_DELAY seconds per call (only the killed shard sets
# it: the bundle, and so its digest, is the same for every run).
SUM_MODEL = """
    import os
    import time

    import pandas as pd
    import scorer


    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "float"}

        def predict(self, df):
            time.sleep(float(os.environ.get("SHARD_TEST_DELAY", "0")))
            return pd.DataFrame({"sum": df["a"] + df["b"], "rows_in_call": len(df)})
"""

ROWS = 1500
CHUNK = ("--chunk-rows", "400", "--bad-rows", "reject", "--workers", "1")
BAD_FILE = "nested/h.jsonl"  # one row whose `a` is text: its rejects file is part of the output


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": np.arange(n, dtype=np.int64) + 2**53 + 1, "a": rng.normal(0, 100, n),
                         "b": rng.normal(0, 1, n) * np.exp(rng.normal(0, 5, n)),
                         "note": [("plain", "comma, inside", 'quote "q"', "ünï ✓")[i % 4] for i in range(n)]})


def write_input(root: Path) -> list[str]:
    """The input tree; returns the data files' relative paths."""
    writers = {
        "a.csv": lambda df, p: df.to_csv(p, index=False),
        "b.csv.gz": lambda df, p: df.to_csv(p, index=False, compression="gzip"),
        "c.parquet": lambda df, p: df.to_parquet(p, index=False),
        "d.jsonl": lambda df, p: df.to_json(p, orient="records", lines=True),
        "e.arrow": lambda df, p: arrow_file(df, p),
        "nested/f.csv": lambda df, p: df.to_csv(p, index=False),
        "nested/deeper/g.parquet": lambda df, p: df.to_parquet(p, index=False),
        "nested/deeper/i.csv": lambda df, p: df.to_csv(p, index=False),
        BAD_FILE: lambda df, p: df.assign(a=df["a"].astype(object).where(df.index != 7, "abc")).to_json(
            p, orient="records", lines=True),
    }
    for i, (rel, write) in enumerate(writers.items()):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write(frame(ROWS + 37 * i, seed=i), root / rel)
    (root / "notes.txt").write_text("not data\n")
    return list(writers)


def arrow_file(df: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("SCORER_") and k not in ("JOB_COMPLETION_INDEX", "SHARD_TEST_DELAY")}
    return {**base, **(extra or {})}


def command(bundle: Path, inp: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "scorer.cli", "batch", str(bundle), "--input", str(inp), "--output", str(out),
            *CHUNK, *args]


def run(bundle: Path, inp: Path, out: Path, *args: str, extra: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.run(command(bundle, inp, out, *args), env=env(extra), capture_output=True, text=True,
                          timeout=180, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def output_files(root: Path) -> dict[str, bytes]:
    """Every file of an output except its internal state and manifest.json, by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != "_scorer" and p.name != "manifest.json"}


def comparable(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest without what differs between runs of the same job: timing, resume flags, the shard count
    (and the output folder, another one for each run here)."""
    files = [{k: v for k, v in f.items() if k not in ("seconds", "skipped")} for f in manifest["files"]]
    settings = {k: v for k, v in manifest["settings"].items() if k not in ("shard_count", "output")}
    return {**manifest, "files": files, "settings": settings}


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


@dataclass
class Job:
    bundle: Path
    inp: Path
    files: list[str]  # in the order of the sorted input walk (the manifest's order)
    one: Path  # one unsharded run's output
    one_code: int

    def share(self, index: int, count: int) -> list[str]:
        return Shard(index, count).share(self.files)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    """The bundle, the input tree, and one unsharded run of it (a real process)."""
    root = tmp_path_factory.mktemp("shards")
    bundle = root / "sum"
    (bundle / "artifacts").mkdir(parents=True)
    (bundle / "code").mkdir()
    (bundle / "code" / "custom_preprocess.py").write_text(textwrap.dedent(SUM_MODEL))
    write_input(root / "in")
    code, log = run(bundle, root / "in", root / "one")
    assert code == 4, log  # every file committed, one row rejected
    files = [f["input"] for f in manifest(root / "one")["files"]]
    return Job(bundle, root / "in", files, root / "one", code)


def test_three_concurrent_shards_equal_one_run(job: Job, tmp_path: Path) -> None:
    """Three shard processes at once (the index by --shard-index, by SCORER_SHARD_INDEX, and by
    JOB_COMPLETION_INDEX as a Kubernetes Indexed Job sets it) into one output: each scores its share, and
    the output equals one unsharded run byte for byte (every scored file and the rejects file), with
    _SUCCESS and a manifest.json that differs only in settings.shard_count (and the runs' timings)."""
    out = tmp_path / "out"
    how: list[tuple[tuple[str, ...], dict[str, str]]] = [
        (("--shard-count", "3", "--shard-index", "0"), {}),
        (("--shard-count", "3"), {"SCORER_SHARD_INDEX": "1"}),
        (("--shard-count", "3"), {"JOB_COMPLETION_INDEX": "2"}),
    ]
    procs = [subprocess.Popen(command(job.bundle, job.inp, out, *args), env=env(extra), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for args, extra in how]
    logs = [p.communicate(timeout=180)[0] for p in procs]
    for index, (proc, log) in enumerate(zip(procs, logs, strict=True)):
        mine = job.share(index, 3)
        assert proc.returncode == (4 if BAD_FILE in mine else 0), log
        assert f"shard {index} of 3: {len(mine)} of the {len(job.files)} input files" in log, log
    assert sorted(f for i in range(3) for f in job.share(i, 3)) == sorted(job.files)  # each file in one share

    assert (out / "_SUCCESS").is_file()
    assert output_files(out) == output_files(job.one)
    assert any(name.endswith(".rejects.jsonl") for name in output_files(out))
    sharded, one = manifest(out), manifest(job.one)
    assert (sharded["settings"]["shard_count"], one["settings"]["shard_count"]) == (3, 1)
    assert comparable(sharded) == comparable(one)


def visible(out: Path) -> list[str]:
    return [p.relative_to(out).as_posix() for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).parts[0] != "_scorer"]


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_success_waits_for_the_last_shard_and_a_killed_shard_resumes(job: Job, tmp_path: Path) -> None:
    """Shards 2 and 0 finish: their files are committed, but neither manifest.json nor _SUCCESS exists.
    Shard 1 is killed (kill -9 of its process group) once it has committed a file: still no _SUCCESS,
    and every final-named file is complete (the unsharded run's bytes). Rerun, shard 1 skips what it had
    committed and, being the last, writes manifest.json and _SUCCESS: the output equals the unsharded
    run's. A rerun of a finished shard changes nothing; one with another --shard-count is refused (exit 2,
    nothing changed)."""
    out = tmp_path / "out"
    for index in (2, 0):
        code, log = run(job.bundle, job.inp, out, "--shard-count", "3", "--shard-index", str(index))
        assert code == (4 if BAD_FILE in job.share(index, 3) else 0), log
        assert not (out / "_SUCCESS").exists() and not (out / "manifest.json").exists(), visible(out)
        assert "once every shard is done" in log, log
    done = [*job.share(2, 3), *job.share(0, 3)]
    assert set(output_files(out)) == {n for n in output_files(job.one) if n.removesuffix(".rejects.jsonl") in done}

    mine = job.share(1, 3)
    with open(tmp_path / "killed.log", "wb") as log_file:
        proc = subprocess.Popen(command(job.bundle, job.inp, out, "--shard-count", "3", "--shard-index", "1"),
                                env=env({"SHARD_TEST_DELAY": "0.25"}), stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not any((out / n).exists() for n in mine):
            time.sleep(0.01)
    finally:
        kill_group(proc)
    log = (tmp_path / "killed.log").read_text()
    assert proc.returncode == -signal.SIGKILL, f"shard 1 ended (exit {proc.returncode}) before the kill:\n{log}"
    committed = [n for n in mine if (out / n).exists()]
    assert committed and len(committed) < len(mine), (committed, log)
    assert not (out / "_SUCCESS").exists() and not (out / "manifest.json").exists()
    reference = output_files(job.one)
    for name, data in output_files(out).items():  # hidden temp files aside, every file is complete
        assert Path(name).name.startswith(".") or data == reference[name], f"{name} differs after the kill"
    before = {n: (out / n).stat().st_mtime_ns for n in committed}

    code, log = run(job.bundle, job.inp, out, "--shard-count", "3", "--shard-index", "1")
    assert code == (4 if BAD_FILE in mine else 0), log
    assert "skipped" in log and "all 3 shards done" in log, log
    assert {n: (out / n).stat().st_mtime_ns for n in committed} == before, "committed files were rescored"
    assert (out / "_SUCCESS").is_file()
    assert output_files(out) == reference
    assert comparable(manifest(out)) == comparable(manifest(job.one))

    # a finished shard again: it finds everything committed, and the job is complete again when it ends
    finished = manifest(out)
    code, log = run(job.bundle, job.inp, out, "--shard-count", "3", "--shard-index", "0")
    assert code == (4 if BAD_FILE in job.share(0, 3) else 0), log
    assert (out / "_SUCCESS").is_file() and output_files(out) == reference
    assert comparable(manifest(out)) == comparable(finished)

    # another shard count over this output: refused before anything is written
    snapshot = {p: (out / p).read_bytes() for p in visible(out)}
    code, log = run(job.bundle, job.inp, out, "--shard-count", "2", "--shard-index", "0")
    assert code == 2, log
    assert log.strip().splitlines() == [
        f"scorer batch: {out} holds output of a run split into 3 shard(s), this run asks for 2 (--shard-count): "
        "use --shard-count 3, --overwrite, or another output"], log
    assert {p: (out / p).read_bytes() for p in visible(out)} == snapshot


@pytest.mark.fast
@pytest.mark.parametrize(("args", "variables", "needle"), [
    (("--shard-index", "1"), {}, "--shard-index 1 needs --shard-count"),
    (("--shard-index", "0"), {"SCORER_SHARD_COUNT": "1"}, "--shard-index 0 needs --shard-count"),
    (("--shard-count", "3", "--shard-index", "3"), {}, "--shard-index 3 is outside the shards of --shard-count 3"),
    (("--shard-count", "3", "--shard-index", "-1"), {}, "--shard-index -1 is outside"),
    (("--shard-count", "0"), {}, "--shard-count must be at least 1, not 0"),
    (("--shard-count", "3"), {}, "--shard-count 3 needs --shard-index, or JOB_COMPLETION_INDEX"),
    (("--shard-count", "3"), {"JOB_COMPLETION_INDEX": "5"}, "JOB_COMPLETION_INDEX=5 is outside"),
    (("--shard-count", "3"), {"JOB_COMPLETION_INDEX": "two"}, "JOB_COMPLETION_INDEX='two' is not a shard index"),
    (("--engine", "spark", "--shard-count", "2", "--shard-index", "0"), {}, "are for --engine local"),
])
def test_bad_shard_arguments_are_refused_with_nothing_written(
        tmp_path: Path, bundle_factory, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
        args: tuple[str, ...], variables: dict[str, str], needle: str) -> None:
    """Exit 2 and one line on stderr naming the problem, before the bundle loads; no output directory."""
    for name in [n for n in os.environ if n.startswith("SCORER_") or n == "JOB_COMPLETION_INDEX"]:
        monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    bundle = bundle_factory("sum", code=SUM_MODEL)
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    frame(5, seed=1).to_csv(inp / "x.csv", index=False)
    code = main(["batch", str(bundle), "--input", str(inp), "--output", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scorer batch: ") and needle in lines[0], err
    assert not out.exists()


@pytest.mark.fast
@pytest.mark.parametrize("count", [1, 2, 3, 5, 12])
def test_shares_cover_the_files_once_by_position(count: int) -> None:
    """Shard i takes positions i, i + N, ... of the walk: every file in exactly one share, sizes within one."""
    files = [f"f{i:02d}.csv" for i in range(10)]
    shares = [Shard(i, count).share(files) for i in range(count)]
    assert sorted(f for share in shares for f in share) == files
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shares[0][:1] == files[:1] and all(share == files[i::count] for i, share in enumerate(shares))


@pytest.mark.fast
def test_another_shard_count_with_overwrite_takes_over_the_output(
        tmp_path: Path, bundle_factory, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """An output finished by 3 shards, rerun by 2 with --overwrite (in this process): the parts of the 3 are
    dropped, no _SUCCESS until both of the 2 are done, and the committed files are kept, not rescored (their
    bytes do not depend on the shard count)."""
    for name in [n for n in os.environ if n.startswith("SCORER_") or n == "JOB_COMPLETION_INDEX"]:
        monkeypatch.delenv(name)
    bundle = bundle_factory("sum", code=SUM_MODEL)
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for i in range(4):
        frame(20, seed=i).to_csv(inp / f"f{i}.csv", index=False)

    def shard(index: int, count: int, *more: str) -> None:
        code = main(["batch", str(bundle), "--input", str(inp), "--output", str(out), "--workers", "1",
                     "--shard-count", str(count), "--shard-index", str(index), *more])
        assert code == 0

    for index in range(3):
        shard(index, 3)
    assert (out / "_SUCCESS").is_file() and manifest(out)["settings"]["shard_count"] == 3
    written = {p: (out / p).stat().st_mtime_ns for p in visible(out) if p.endswith(".csv")}
    shard(0, 2, "--overwrite")
    assert not (out / "_SUCCESS").exists() and not (out / "manifest.json").exists()
    assert sorted(p.name for p in (out / "_scorer" / "shards").iterdir()) == ["part-0-of-2.json"]
    shard(1, 2, "--overwrite")
    assert (out / "_SUCCESS").is_file() and manifest(out)["settings"]["shard_count"] == 2
    assert [f["input"] for f in manifest(out)["files"]] == [f"f{i}.csv" for i in range(4)]
    assert all(f.get("skipped") for f in manifest(out)["files"])
    assert {p: (out / p).stat().st_mtime_ns for p in written} == written
