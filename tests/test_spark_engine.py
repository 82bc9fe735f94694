"""``scorer batch --engine spark`` on a real Spark standalone cluster (a master and two workers on
127.0.0.1, started by ``tests/spark_cluster.py``) and on ``local[2]``.

Every run is a real ``python -m scorer.cli batch`` process (the Spark driver, client mode). Outputs are
compared with ``--engine local`` on the same input after sorting by id: every column, exact. Nothing
here is mocked; without Java or pyspark the tests skip, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from spark_cluster import (  # noqa: F401 - spark_cluster is a fixture
    TEST_DEFAULTS,
    StandaloneCluster,
    require_spark,
    spark_cluster,
    spark_env,
)

from scorer import cli

REPO = Path(__file__).resolve().parent.parent
TABULAR_ROWS, SPAM_ROWS, JVM_ROWS = 3000, 2000, 1500
NOTES = ["plain", "comma, inside", 'quote "q" inside', "ünïcödé ✓", "  padded  ", "", None]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def lines(self, needle: str) -> list[str]:
        """Log lines holding ``needle`` (spark-submit merges the Python driver's stderr into stdout)."""
        return [ln for ln in (self.stderr + self.stdout).splitlines() if needle in ln]


def run_batch(bundle: Path, *args: object, env: dict[str, str] | None = None) -> Result:
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", "batch", str(bundle), "--log-format", "text",
                           *map(str, args)], env=env or spark_env(), capture_output=True, text=True, timeout=900,
                          check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def ok(result: Result, code: int = 0) -> Result:
    assert result.code == code, f"exit {result.code}, expected {code}\n--- stderr\n{result.stderr[-6000:]}"
    return result


# --- data ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, build_module: Any) -> dict[str, Path]:
    """Inputs in several files: tabular (int64 ids beyond 2**53), spam (text ids, awkward notes) and
    jvm (the spark/h2o bundles' columns, with missing numbers and unseen levels)."""
    root = tmp_path_factory.mktemp("spark-data")
    tab = build_module.make_tabular_frame(TABULAR_ROWS, seed=11).drop(columns=["label"])
    tab.insert(0, "id", np.arange(TABULAR_ROWS, dtype=np.int64) + 2**53)
    spam = build_module.make_spam_frame(SPAM_ROWS, seed=12).drop(columns=["label"])
    spam.insert(0, "id", [f"m{i:05d}" for i in range(SPAM_ROWS)])
    spam["note"] = pd.Series([NOTES[i % len(NOTES)] for i in range(SPAM_ROWS)], dtype=object)
    jvm = build_module.jvm_reference_frame(JVM_ROWS)
    jvm.insert(0, "id", np.arange(JVM_ROWS, dtype=np.int64) + 2**53)
    for name, df, parts in (("tabular", tab, 3), ("spam", spam, 2), ("jvm", jvm, 2)):
        bounds = np.linspace(0, len(df), parts + 1).astype(int)
        for i in range(parts):
            part = df.iloc[bounds[i]:bounds[i + 1]]
            sub = "sub/" if i == parts - 1 else ""  # nested directories are walked
            (root / f"{name}_pq" / sub).mkdir(parents=True, exist_ok=True)
            part.to_parquet(root / f"{name}_pq" / f"{sub}part{i}.parquet", index=False)
            (root / f"{name}_csv" / sub).mkdir(parents=True, exist_ok=True)
            quoting = csv.QUOTE_NONNUMERIC if i == 0 else csv.QUOTE_MINIMAL  # "" (quoted) and empty both appear
            part.to_csv(root / f"{name}_csv" / f"{sub}part{i}.csv", index=False, quoting=quoting)
    return {p.name: p for p in root.iterdir()}


def read_dataset(path: Path) -> pd.DataFrame:
    """Every data file under ``path`` (a local-engine output or a Spark dataset), as one frame."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(
        part.startswith(("_", ".")) for part in p.relative_to(path).parts)
        and p.name != "manifest.json" and not p.name.endswith(".rejects.jsonl"))
    assert files, f"no data files in {path}"
    tables = []
    for f in files:
        if f.name.endswith(".parquet"):
            tables.append(pq.read_table(f))
        elif f.name.endswith(".csv"):  # as text: type inference per file could differ between the two
            names = pacsv.read_csv(f, read_options=pacsv.ReadOptions(skip_rows_after_names=10**9)).column_names
            tables.append(pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True,
                quoted_strings_can_be_null=False)))
        else:  # JSON Lines (Spark names them .json)
            tables.append(pa.Table.from_pylist([json.loads(ln) for ln in f.read_text().splitlines()]))
    table = pa.concat_tables(tables, promote_options="permissive")
    for i, name in enumerate(table.column_names):  # CSV text to numbers where every value is one (both sides alike)
        if pa.types.is_string(table.schema.field(i).type):
            for kind in (pa.int64(), pa.float64()):
                try:
                    table = table.set_column(i, name, pc.cast(table.column(i), kind))
                    break
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass
    return table.to_pandas().sort_values("id").reset_index(drop=True)


def assert_same_rows(spark_out: Path, local_out: Path) -> None:
    a, b = read_dataset(local_out), read_dataset(spark_out)
    assert list(b.columns) == list(a.columns)
    assert len(b) == len(a)
    pd.testing.assert_frame_equal(b, a, check_exact=True)


def snapshot(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def local_output(tmp_path_factory: pytest.TempPathFactory, example_bundles: dict[str, Path]
                 ) -> Callable[..., Path]:
    """``--engine local`` on the same input (once per input and settings)."""
    done: dict[tuple[Any, ...], Path] = {}
    root = tmp_path_factory.mktemp("local-out")

    def make(bundle: str, source: Path, *args: str, code: int = 0) -> Path:
        key = (bundle, source, args)
        if key not in done:
            out = root / f"{len(done)}"
            path = example_bundles.get(bundle) or REPO / "bundles" / bundle  # spark, h2o: committed artifacts
            ok(run_batch(path, "--input", source, "--output", out, "--workers", "1", *args), code)
            done[key] = out
        return done[key]

    return make


@pytest.fixture(scope="module")
def local2_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    require_spark()
    conf = tmp_path_factory.mktemp("local2-conf")
    (conf / "spark-defaults.conf").write_text("".join(f"{k} {v}\n" for k, v in TEST_DEFAULTS.items()))
    return spark_env(conf)


# --- on the standalone cluster ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_runs(spark_cluster: StandaloneCluster, data: dict[str, Path], example_bundles: dict[str, Path],  # noqa: F811
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Result, Path]]:
    """The example bundles scored on the cluster: tabular from Parquet (``python -m scorer.cli batch
    --spark-master URL``, client mode), spam (custom code) from CSV (``spark-submit --master URL
    .../scorer/cli.py batch``: the master comes from spark-submit)."""
    out = tmp_path_factory.mktemp("cluster-out")
    tabular = out / "tabular"
    runs = {"tabular": (run_batch(example_bundles["tabular"], "--engine", "spark", "--spark-master", spark_cluster.url,
                                  "--input", data["tabular_pq"], "--output", tabular, env=spark_cluster.env()), tabular)}
    spam = out / "spam"
    submit = [str(require_spark() / "bin" / "spark-submit"), "--master", spark_cluster.url, cli.__file__, "batch",
              str(example_bundles["spam"]), "--engine", "spark", "--input", str(data["spam_csv"]), "--output", str(spam),
              "--log-format", "text"]
    proc = subprocess.run(submit, env=spark_cluster.env(), capture_output=True, text=True, timeout=900, check=False)
    runs["spam"] = (Result(proc.returncode, proc.stdout, proc.stderr), spam)
    return runs


@pytest.mark.parametrize(("bundle", "source"), [("tabular", "tabular_pq"), ("spam", "spam_csv")])
def test_cluster_equals_local_engine(cluster_runs: dict[str, tuple[Result, Path]], local_output: Callable[..., Path],
                                     data: dict[str, Path], spark_cluster: StandaloneCluster,  # noqa: F811
                                     bundle: str, source: str) -> None:
    """On a master and two workers, started either way, a Python bundle (spam: custom code and helpers) scores every row
    exactly like the local engine: same columns, ids carried through, same predictions, bit for bit;
    the dataset is committed by Spark (_SUCCESS) in several part files, and both workers ran executors."""
    result, out = cluster_runs[bundle]
    ok(result)
    assert result.lines(f"({spark_cluster.url}) with Python workers"), result.stderr[-3000:]  # the cluster, not local
    assert (out / "_SUCCESS").is_file()
    assert len(list(out.glob("part-*"))) >= 2
    rows = TABULAR_ROWS if bundle == "tabular" else SPAM_ROWS
    assert result.lines(f"spark: {rows} rows scored in"), result.stderr[-3000:]
    assert "rows/s" in result.lines("rows scored in")[0]
    assert_same_rows(out, local_output(bundle, data[source]))
    workers_used = {p.relative_to(spark_cluster.workdir).parts[0] for p in spark_cluster.executor_dirs()}
    assert workers_used == {"worker1", "worker2"}


def test_second_run_without_overwrite_is_refused(cluster_runs: dict[str, tuple[Result, Path]],
                                                 example_bundles: dict[str, Path], data: dict[str, Path],
                                                 spark_cluster: StandaloneCluster) -> None:  # noqa: F811
    """Scoring into an existing dataset without --overwrite exits 2 and leaves it untouched."""
    first, out = cluster_runs["tabular"]
    ok(first)
    before = snapshot(out)
    again = run_batch(example_bundles["tabular"], "--engine", "spark", "--spark-master", spark_cluster.url,
                      "--input", data["tabular_pq"], "--output", out, env=spark_cluster.env())
    ok(again, 2)
    assert "already exists" in again.stderr and "--overwrite" in again.stderr
    assert snapshot(out) == before


def test_bad_value_fails_the_job_without_output(spark_cluster: StandaloneCluster, data: dict[str, Path],  # noqa: F811
                                                example_bundles: dict[str, Path], tmp_path: Path) -> None:
    """A value the schema cannot take fails the run (exit 5) with one line naming the file, the column
    and the expected type, never the value; Spark's commit protocol leaves no dataset (not even an empty
    directory) behind."""
    source = tmp_path / "in"
    source.mkdir()
    df = pd.read_csv(data["tabular_csv"] / "part1.csv", dtype=str, keep_default_na=False)
    df.loc[417, "f3"] = "not-a-number"
    df.to_csv(source / "bad.csv", index=False)
    (source / "good.csv").write_bytes((data["tabular_csv"] / "part1.csv").read_bytes())
    out = tmp_path / "out"
    result = ok(run_batch(example_bundles["tabular"], "--engine", "spark", "--spark-master", spark_cluster.url,
                          "--input", source, "--output", out, env=spark_cluster.env()), 5)
    failed = result.lines("ERROR scorer.batch: batch failed:")
    assert len(failed) == 1, result.stderr[-4000:]
    assert "bad.csv: column 'f3': a str value is not a number" in failed[0]
    assert "not-a-number" not in result.stderr
    assert not out.exists()


BATCH_LOG_MODEL = """
    import os

    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "float"}

        def load(self, artifacts_dir):
            self.log = (artifacts_dir / "log_path.txt").read_text().strip()
            with open(self.log, "a") as fh:
                fh.write(f"load {os.getpid()}\\n")

        def predict(self, df):
            with open(self.log, "a") as fh:
                fh.write(f"batch {os.getpid()} {len(df)}\\n")
            return pd.DataFrame({"sum": df["a"] + df["b"]})
"""


def test_bundle_loads_once_per_python_worker(spark_cluster: StandaloneCluster, bundle_factory: Any,  # noqa: F811
                                             tmp_path: Path) -> None:
    """The bundle reaches the executors through Spark's file distribution and each executor Python
    worker loads it once, then scores many Arrow batches with it (Spark reuses its Python workers)."""
    log = tmp_path / "calls.log"
    bundle = bundle_factory("logged", code=BATCH_LOG_MODEL, files={"artifacts/log_path.txt": str(log)})
    source = tmp_path / "in"
    source.mkdir()
    for i in range(4):
        a = np.arange(i * 500, (i + 1) * 500, dtype=float)
        pd.DataFrame({"id": np.arange(i * 500, (i + 1) * 500), "a": a, "b": a / 4}).to_parquet(source / f"{i}.parquet")
    out = tmp_path / "out"
    ok(run_batch(bundle, "--engine", "spark", "--spark-master", spark_cluster.url, "--input", source,
                 "--output", out, "--chunk-rows", "50", env=spark_cluster.env()))
    scored = read_dataset(out)
    assert scored["sum"].tolist() == (scored["a"] + scored["b"]).tolist() and len(scored) == 2000
    calls = [line.split() for line in log.read_text().splitlines()]
    loads = [int(c[1]) for c in calls if c[0] == "load"]
    batches = [(int(c[1]), int(c[2])) for c in calls if c[0] == "batch"]
    executor_pids = {pid for pid, _ in batches} - {loads[0]}  # loads[0]: the driver (types from sample rows)
    assert len(loads) == len(set(loads)), f"a Python worker loaded the bundle twice: {loads}"
    assert executor_pids <= set(loads)
    assert len(executor_pids) >= 2  # both executors scored
    assert sum(n for pid, n in batches if pid in executor_pids) == 2000
    assert len(batches) > len(loads) + 10  # many batches per load


@pytest.mark.parametrize(("bundle", "source", "scoring"),
                         [("spark", "jvm_pq", "spark"), ("h2o", "jvm_csv", "spark"), ("spark", "jvm_pq", "native")])
def test_jvm_bundles_on_cluster_equal_local_engine(spark_cluster: StandaloneCluster,  # noqa: F811
                                                   data: dict[str, Path], local_output: Callable[..., Path],
                                                   tmp_path: Path, bundle: str, source: str, scoring: str) -> None:
    """A Spark ML pipeline and an H2O MOJO scored on the JVM (no Python worker: the model's own Spark
    transform) give the local engine's rows exactly, missing values and unseen levels included; CSV text
    columns are cast to the bundle's input schema, ids keep their text. Scored natively, the pipeline runs
    in Python workers like any bundle and equals the local engine's native rows exactly, and the JVM's
    within the native contract (1e-9 relative)."""
    out = tmp_path / "out"
    result = ok(run_batch(REPO / "bundles" / bundle, "--engine", "spark", "--spark-master", spark_cluster.url,
                          "--input", data[source], "--output", out, "--spark-scoring", scoring, env=spark_cluster.env()))
    path = "the model's Spark transform" if scoring == "spark" else "Python workers"
    assert result.lines(path), result.stderr[-3000:]
    assert (out / "_SUCCESS").is_file()
    assert_same_rows(out, local_output(bundle, data[source], "--spark-scoring", scoring))
    if scoring == "native":
        jvm = read_dataset(local_output(bundle, data[source], "--spark-scoring", "spark"))
        pd.testing.assert_frame_equal(read_dataset(out), jvm, check_exact=False, rtol=1e-9, atol=1e-12)


# --- on local[2] -------------------------------------------------------------------------------------------


def test_local2_equals_local_engine(local2_env: dict[str, str], data: dict[str, Path], example_bundles: dict[str, Path],
                                    local_output: Callable[..., Path], tmp_path: Path) -> None:
    """local[2]: tabular from CSV (text ids) written as JSON Lines, exactly as the local engine writes
    them (spam runs on local[2] in test_rejected_rows). Input and output are named by file:// URI, so
    the run takes the path of any Hadoop file system (hdfs://, s3a://): the input listed through Hadoop,
    the output checked by Spark itself."""
    out = tmp_path / "tabular"
    result = ok(run_batch(example_bundles["tabular"], "--engine", "spark", "--spark-master", "local[2]",
                          "--input", data["tabular_csv"].as_uri(), "--output", out.as_uri(), "--output-format", "jsonl",
                          env=local2_env))
    assert (out / "_SUCCESS").is_file() and result.lines(f"spark: {TABULAR_ROWS} rows scored in")
    assert_same_rows(out, local_output("tabular", data["tabular_csv"], "--output-format", "jsonl"))


def test_both_engines_score_the_same_files_of_a_tree(local2_env: dict[str, str], data: dict[str, Path],
                                                     example_bundles: dict[str, Path],
                                                     local_output: Callable[..., Path], tmp_path: Path) -> None:
    """One input walk: hidden files and folders, ``_``-prefixed files and files of other types are skipped,
    nested and ``_``-prefixed folders are walked, alike by the local engine and by the Spark engine given
    the input as a path or as a URI (listed through Hadoop's file system)."""
    table = pq.read_table(data["tabular_pq"] / "part0.parquet")
    source = tmp_path / "in"
    layout = {"a.parquet": True, "sub/b.parquet": True, "_part/c.parquet": True, ".hidden.parquet": False,
              "_marker.parquet": False, ".hid/d.parquet": False, "sub/.e.parquet": False}
    expected: list[int] = []
    for i, (rel, scored) in enumerate(layout.items()):
        piece = table.slice(i * 40, 40)
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(piece, source / rel)
        if scored:
            expected += piece.column("id").to_pylist()
    (source / "notes.txt").write_text("not data\n")
    outputs = {"local": local_output("tabular", source)}
    for how, given in (("path", str(source)), ("uri", source.as_uri())):
        out = tmp_path / how
        ok(run_batch(example_bundles["tabular"], "--engine", "spark", "--spark-master", "local[2]", "--input", given,
                     "--output", out, env=local2_env))
        outputs[how] = out
    local = json.loads((outputs["local"] / "manifest.json").read_text())["files"]  # mirrors _part/ too
    ids = {"local": pa.concat_tables([pq.read_table(outputs["local"] / e["output"]) for e in local])["id"].to_pylist()}
    ids.update({how: read_dataset(outputs[how])["id"].tolist() for how in ("path", "uri")})
    assert {how: sorted(found) for how, found in ids.items()} == dict.fromkeys(ids, sorted(expected))
    assert_same_rows(outputs["uri"], outputs["path"])


def test_rejected_rows(local2_env: dict[str, str], data: dict[str, Path], example_bundles: dict[str, Path],
                       local_output: Callable[..., Path], tmp_path: Path) -> None:
    """--bad-rows reject: the good rows are committed (equal to the local engine's), the bad ones are
    listed in <output>/_rejects/ with the local engine's reasons, and the exit code is 4."""
    source = tmp_path / "in"
    source.mkdir()
    df = pd.read_csv(data["spam_csv"] / "sub" / "part1.csv", dtype=str, keep_default_na=False)
    df.loc[[5, 700], "feature1"] = ["oops", "1,5"]
    df.to_csv(source / "messages.csv", index=False)
    out = tmp_path / "out"
    ok(run_batch(example_bundles["spam"], "--engine", "spark", "--spark-master", "local[2]", "--input", source,
                 "--output", out, "--bad-rows", "reject", env=local2_env), 4)
    local = local_output("spam", source, "--bad-rows", "reject", code=4)
    assert_same_rows(out, local)
    rejects = [json.loads(ln) for p in sorted((out / "_rejects").glob("part-*")) for ln in p.read_text().splitlines()]
    local_rejects = [json.loads(ln) for ln in (local / "messages.csv.rejects.jsonl").read_text().splitlines()]
    assert sorted((r["file"], r["reason"], r["values"]["id"]) for r in rejects) == sorted(
        (r["file"], r["reason"], r["values"]["id"]) for r in local_rejects)
    assert len(rejects) == 2


def test_unreadable_input_fails_without_output(local2_env: dict[str, str], data: dict[str, Path],
                                               example_bundles: dict[str, Path], tmp_path: Path) -> None:
    """A file that is not what its name says fails the run with one line and leaves no output."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.parquet").write_bytes((data["tabular_pq"] / "part0.parquet").read_bytes())
    (source / "b.parquet").write_bytes(b"PAR1 this is not parquet at all")
    out = tmp_path / "out"
    result = ok(run_batch(example_bundles["tabular"], "--engine", "spark", "--spark-master", "local[2]",
                          "--input", source, "--output", out, env=local2_env), 5)
    failed = result.lines("ERROR scorer.batch: batch failed:")
    assert len(failed) == 1 and "b.parquet" in failed[0], result.stderr[-4000:]
    assert not out.exists()


@pytest.mark.parametrize(("files", "args", "message"), [
    ({"a.parquet": "tabular_pq/part0.parquet", "b.csv": "tabular_csv/part0.csv"}, (), "mixes formats"),
    ({"a.arrow": "tabular_csv/part0.csv"}, (), "Arrow files cannot be read by Spark"),
    ({"a.csv": "tabular_csv/part0.csv"}, ("--output-format", "arrow"), "not supported by --engine spark"),
    ({"a.csv": "tabular_csv/part0.csv", "b.csv": "spam_csv/part0.csv"}, (), "have different columns"),
])
def test_usage_errors_write_nothing(example_bundles: dict[str, Path], data: dict[str, Path], tmp_path: Path,
                                    files: dict[str, str], args: tuple[str, ...], message: str) -> None:
    """Inputs or settings the Spark engine cannot take exit 2 before Spark starts; nothing is written."""
    source = tmp_path / "in"
    source.mkdir()
    for name, origin in files.items():
        dataset, rel = origin.split("/", 1)
        (source / name).write_bytes((data[dataset] / rel).read_bytes())
    out = tmp_path / "out"
    result = ok(run_batch(example_bundles["tabular"], "--engine", "spark", "--input", source, "--output", out, *args), 2)
    assert message in result.stderr
    assert not out.exists()
