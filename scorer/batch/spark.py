"""``scorer batch --engine spark``: score a dataset on a Spark cluster, write a Spark dataset.

The input (a file or a directory; Parquet, CSV with a header, JSON Lines; one format per run)
is read with ``spark.read``; the output is written by Spark's own commit protocol: part files
appear under the output only when the job commits, then ``_SUCCESS``. A failed job leaves no
output under the final name.

Two ways to score:

* **Python bundles** (pickles, ``CustomPreprocessor``): ``mapInArrow``. The bundle travels with
  Spark's file distribution (``SparkContext.addFile``; a folder is zipped first) and is pinned by
  its content digest; each executor Python worker loads it once (Spark reuses its Python
  workers) and scores every Arrow batch with :func:`scorer.batch.chunks.score_chunk`, the function the
  local engine runs on every chunk. So rows, types, coercions and bad-row reasons are the local
  engine's. Arrow rather than pandas batches: kept columns (ids) then pass through untouched,
  exactly like the local engine's, with no int-to-float detour for columns holding nulls.
* **Spark ML and H2O MOJO bundles** without custom code, when they score on the JVM
  (``--spark-scoring spark``, or ``auto`` when native scoring lacks a stage): the model's own Spark
  transform, ``model.transform_spark(df)``. Scored natively (:mod:`scorer.native_scoring`) they are
  Python bundles like any other: ``mapInArrow``, the executors pinned to the path the driver chose.

CSV columns are read as text (no ``inferSchema``): the scoring core converts the model's columns
exactly as the local engine does (and names the rows it cannot convert), other columns pass
through as written ("007" stays "007"), and no extra pass over the data is needed to infer types.
The Spark-transform path casts the model's columns to the bundle's input schema in Spark.

What is particular to this engine is how chunks are scheduled (Spark's tasks) and written (one
dataset, by Spark's commit protocol). The input walk, the planning checks, chunk scoring, the
bad-row policy and the scorer of a process are :mod:`scorer.batch`'s, shared with the local engine.

Exit codes are the local engine's: 0 ok, 2 usage (nothing written), 3 bundle failed to load,
4 rows rejected (``--bad-rows reject``; they are in ``<output>/_rejects/``), 5 the job failed.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import tempfile
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from scorer.batch import chunks, walk, worker
from scorer.batch.files import Chunk, detect_format, input_schema
from scorer.batch.plan import check_output_format, input_files, local_input, require_paths
from scorer.batch.rejects import BadRowPolicy
from scorer.bundle import bundle_files
from scorer.core import Scorer
from scorer.load_options import LoadOptions
from scorer.errors import (
    EXIT_OK,
    EXIT_REJECTED,
    BatchFailed,
    KeepColumnsError,
    ReadError,
    ScorerError,
    UsageError,
)
from scorer.settings import Settings
from scorer.spark_ml import SPARK_TYPES, column

log = logging.getLogger("scorer.batch")

READERS = {"parquet": "parquet", "csv": "csv", "csv.gz": "csv", "jsonl": "json"}
OUTPUTS = ("parquet", "csv", "csv.gz", "jsonl")
SAMPLE_ROWS = 100  # rows scored on the driver to learn the output column types
_FILE = "__scorer_file"  # the input file of each row, for messages
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Job:
    files: list[str]  # what spark.read is given
    root: str  # files are named relative to this in messages
    in_fmt: str
    out_fmt: str
    output: str  # what the writer is given (a URI)
    local_output: Path | None  # the output, when it is a path on this machine

    @property
    def output_name(self) -> str:
        return str(self.local_output) if self.local_output is not None else self.output


# --- planning ---------------------------------------------------------------------------------------


def _is_uri(path: str) -> bool:
    """A URI (hdfs://, s3a://, file:/...) goes through Hadoop's file systems; a plain path is a local path."""
    return bool(_URI.match(path))


def plan(settings: Settings, list_files: Any = None) -> Job:
    """Every check that can be made before Spark starts; a URI input is listed with ``list_files(uri) ->
    (root, [file URI])`` once it has."""
    require_paths(settings)
    fmt = settings.output_format
    check_output_format(fmt, OUTPUTS, engine="spark")
    local_out = None if _is_uri(settings.output) else Path(settings.output).resolve()
    if local_out is not None and local_out.exists() and not settings.overwrite:
        unfinished = "" if (local_out / "_SUCCESS").exists() else " without _SUCCESS (an interrupted run)"
        raise UsageError(f"{local_out} already exists{unfinished}; use --overwrite to replace it")
    if _is_uri(settings.input):
        if list_files is None:
            raise UsageError("internal: a non-local input needs Spark to list it")
        root, files = list_files(settings.input)
        if not files:
            raise UsageError(f"no input files ({', '.join(READERS)}) under {settings.input}")
    else:
        source, root_path = local_input(settings)
        paths = input_files(source, root_path, list(READERS))
        inside = root_path if source.is_dir() else paths[0]
        if local_out is not None and (local_out.is_relative_to(inside) or inside.is_relative_to(local_out)):
            raise UsageError(f"output {local_out} and input {inside} overlap: choose an output outside the input")
        root, files = root_path.as_uri(), [p.as_uri() for p in paths]
    formats = {f: detect_format(Path(urllib.parse.urlparse(f).path)) for f in files}
    unknown = [f for f, kind in formats.items() if kind not in READERS]
    if unknown:
        kind = formats[unknown[0]]
        why = "Arrow files cannot be read by Spark" if kind == "arrow" else "unknown file type"
        raise UsageError(f"{_name(unknown[0], root)}: {why}; --engine spark reads {', '.join(READERS)}")
    kinds = sorted({READERS[k] for k in formats.values() if k})
    if len(kinds) > 1:
        raise UsageError(f"the input mixes formats ({', '.join(kinds)}): --engine spark reads one format per run")
    found = {kind for kind in formats.values() if kind is not None}  # every file has one: unknown ones failed above
    in_fmt = found.pop() if len(found) == 1 else "csv"  # csv with csv.gz
    if not _is_uri(settings.input):
        _check_same_columns(files, formats, root)
    out_fmt = in_fmt if fmt == "same" else fmt
    return Job(files, root, in_fmt, out_fmt, settings.output if local_out is None else local_out.as_uri(), local_out)


def _check_same_columns(files: list[str], formats: dict[str, str | None], root: str) -> None:
    """Spark reads a dataset with one set of columns (the first file's): a file lacking one would be
    scored with nulls where the local engine fails it. Local files are checked up front (names only:
    Parquet columns are matched by name, and Spark itself refuses a CSV header in another order or a
    column of another type)."""
    first: tuple[str, list[str]] | None = None
    for uri in files:
        try:
            names = input_schema(Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path)), formats[uri] or "").names
        except ReadError:
            continue  # Spark reports it (exit 5), as the local engine fails the file
        if first is None:
            first = (uri, names)
        elif set(names) != set(first[1]):
            raise UsageError(f"{_name(uri, root)} and {_name(first[0], root)} have different columns "
                             f"({', '.join(names)} vs {', '.join(first[1])}): --engine spark reads one set of "
                             "columns per run; score them separately")


def _name(uri: str, root: str) -> str:
    """A file as messages name it: relative to the input root, like the local engine's labels."""
    name, root = urllib.parse.unquote(uri), urllib.parse.unquote(root).rstrip("/")
    for prefix in (root, root.replace("file:///", "file:/"), root.replace("file:/", "file:///", 1)):
        if name.startswith(prefix + "/"):
            return name[len(prefix) + 1:]
    return name


def _hadoop_lister(spark: Any) -> Any:
    """``list(uri) -> (root, files)``: the data files under a path of any Hadoop file system (hdfs://,
    s3a://, file:/...), picked by the one input walk's rule (:mod:`scorer.batch.walk`)."""

    def list_files(uri: str) -> tuple[str, list[str]]:
        path = spark._jvm.org.apache.hadoop.fs.Path(uri)
        fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
        if not fs.exists(path):
            raise UsageError(f"input not found: {uri}")
        path = fs.makeQualified(path)
        if fs.getFileStatus(path).isFile():
            return path.getParent().toString(), [path.toString()]
        root = path.toString().rstrip("/")
        names, it = [], fs.listFiles(path, True)
        while it.hasNext():
            names.append(it.next().getPath().toString())
        return root, walk.select(root, names)

    return list_files


# --- reading and writing ----------------------------------------------------------------------------


def _read(spark: Any, job: Job) -> Any:
    reader = spark.read.option("mode", "FAILFAST")
    if READERS[job.in_fmt] == "csv":
        # RFC 4180 quoting ("" inside quotes); every file's header checked against the first's. Like the
        # local engine, an empty field is null and a quoted empty field ("") the empty string: Spark's
        # default nullValue "" would turn both into null, so it is set to a value no text field holds.
        reader = reader.options(header=True, escape='"', enforceSchema=False, nullValue="\u0000")
    return reader.format(READERS[job.in_fmt]).load(job.files)


def _write(df: Any, job: Job, overwrite: bool) -> None:
    writer = df.write.mode("overwrite" if overwrite else "errorifexists")
    if job.out_fmt in ("csv", "csv.gz"):
        writer = writer.options(header=True, escape='"', ignoreLeadingWhiteSpace=False, ignoreTrailingWhiteSpace=False)
        if job.out_fmt == "csv.gz":
            writer = writer.option("compression", "gzip")
        writer.csv(job.output)
    elif job.out_fmt == "jsonl":
        writer.option("ignoreNullFields", False).json(job.output)
    else:
        writer.parquet(job.output)


def _kept(names: list[str], outputs: list[str], keep: str) -> list[str]:
    """The input columns written beside the predictions (the local engine's rule); checked before any job,
    so a column ``--keep-columns`` names that the input lacks is a usage error."""
    try:
        return chunks.kept_columns(names, outputs, keep)
    except KeepColumnsError as exc:
        raise UsageError(exc.message) from None


# --- Python bundles: mapInArrow, the bundle loaded once per Python worker -----------------------------


@dataclass(frozen=True)
class WorkerPlan:
    """What every task needs; pickled into the tasks (small)."""

    bundle_file: str  # name under SparkFiles
    settings: Settings  # bundle_digest pinned to the driver's bundle
    root: str
    schema: pa.Schema  # of the output batches
    rejects: Any  # Accumulator of reject entries, or None with --bad-rows fail


def score_batches(batches: Iterator[pa.RecordBatch], plan: WorkerPlan) -> Iterator[pa.RecordBatch]:
    """The ``mapInArrow`` function: every batch through the local engine's chunk scorer, with the bundle
    loaded once per Python worker (pinned to the driver's digest)."""
    from pyspark import SparkFiles

    try:
        worker.load_once(SparkFiles.get(plan.bundle_file), plan.settings)
    except ScorerError as exc:
        raise BatchFailed(f"bundle failed to load on an executor: {exc.message}") from None
    settings = plan.settings
    bad_rows = BadRowPolicy.from_settings(settings)
    rejected = 0
    for batch in batches:
        table = pa.Table.from_batches([batch])
        files = table.column(_FILE)
        table = table.drop_columns([_FILE])
        result = chunks.score_chunk(Chunk(table, np.arange(table.num_rows)), settings.keep_columns,
                                    bad_rows.first_only)
        if result.error is not None:
            raise BatchFailed(f"{_name(files[0].as_py(), plan.root)}: {result.error}")
        if result.bad:
            first = result.bad[0]
            where = _name(files[first.row].as_py(), plan.root)
            if not bad_rows.reject:
                raise BatchFailed(bad_rows.failure(where, first.reason))
            rejected += len(result.bad)
            if bad_rows.over_limit(rejected):
                raise BatchFailed(bad_rows.limit_failure(where, first.reason))
            plan.rejects.add([b.as_json(_name(files[b.row].as_py(), plan.root), where=False)
                              for b in result.bad])  # no row number: a batch is not a file
        if result.table is not None:
            try:
                out = result.table.cast(plan.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise BatchFailed(f"{_name(files[0].as_py(), plan.root)}: columns changed type between batches: "
                                  f"{exc}") from None
            yield from out.to_batches()


def _output_schema(scorer: Scorer, sample: pa.Table, keep: str) -> pa.Schema:
    """Kept input columns (their Spark types) + the model's columns, typed by scoring sample rows here."""
    worker.use(scorer)
    result = chunks.score_chunk(Chunk(sample, np.arange(sample.num_rows)), keep, False)
    if result.table is not None and result.table.num_rows:
        schema = result.table.schema
    else:  # no usable sample rows: the manifest's sample input, else text columns
        predictions = None
        if scorer.bundle.manifest.sample_input:
            s = scorer.bundle.manifest.sample_input
            predictions = scorer.score(pd.DataFrame(s["data"], columns=s["columns"]))
        schema = chunks.empty_output(sample.schema, scorer.output_columns, keep, predictions).schema
    return pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema])


def _bundle_file(scorer: Scorer, workdir: Path) -> Path:
    """The bundle as one file for ``addFile``: a zip as it is, a folder zipped (same content digest)."""
    source = scorer.bundle.source
    if source.is_file():
        return source
    target = workdir / f"bundle-{scorer.bundle.digest[:16]}.zip"
    root = scorer.bundle.root
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in bundle_files(root):  # every file the digest covers, nothing else
            zf.write(path, path.relative_to(root).as_posix())
    return target


class _ListParam:  # an AccumulatorParam (duck-typed: pyspark is imported lazily)
    def zero(self, value: list[Any]) -> list[Any]:
        return []

    def addInPlace(self, a: list[Any], b: list[Any]) -> list[Any]:
        a.extend(b)
        return a


def _python_scored(spark: Any, sdf: Any, scorer: Scorer, settings: Settings, job: Job, workdir: Path,
                   ) -> tuple[Any, Any]:
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    _kept(sdf.columns, scorer.output_columns or [], settings.keep_columns)  # usage error before any job
    bundle = _bundle_file(scorer, workdir)
    spark.sparkContext.addFile(str(bundle))
    with_file = sdf.select("*", F.col("_metadata.file_path").alias(_FILE))
    batches = sdf.limit(SAMPLE_ROWS)._collect_as_arrow()
    sample = pa.Table.from_batches(batches) if batches else to_arrow_schema(sdf.schema).empty_table()
    spark_schema = from_arrow_schema(_output_schema(scorer, sample, settings.keep_columns))
    rejects = spark.sparkContext.accumulator([], _ListParam()) if settings.bad_rows == "reject" else None
    worker_settings = worker.pinned(settings, scorer, bundle.name)
    plan = WorkerPlan(bundle.name, worker_settings, job.root, to_arrow_schema(spark_schema), rejects)
    return with_file.mapInArrow(functools.partial(score_batches, plan=plan), spark_schema), rejects


# --- Spark ML and H2O bundles on the JVM: their Spark transform ----------------------------------------------------------------


class SparkNative(Protocol):
    """A model that scores a Spark DataFrame itself (Spark ML pipelines, H2O MOJOs)."""

    def transform_spark(self, sdf: Any) -> Any: ...


def native_model(scorer: Scorer) -> SparkNative | None:
    """The bundle's model when it scores Spark DataFrames natively (and no custom code wraps it), else None."""
    model = scorer.model
    if scorer.bundle.custom_code() is None and _scores_spark(model):
        return model
    return None


def _scores_spark(model: object) -> TypeGuard[SparkNative]:
    return callable(getattr(model, "transform_spark", None))


def _native_scored(sdf: Any, model: SparkNative, scorer: Scorer, settings: Settings, job: Job) -> Any:
    outputs = scorer.output_columns or ["prediction"]
    kept = _kept(sdf.columns, outputs, settings.keep_columns)
    typed: dict[str, str] = {}
    if READERS[job.in_fmt] == "csv" and scorer.schema is not None:  # the model's text columns to its types
        typed = {c: SPARK_TYPES[k] for c, k in scorer.schema.columns.items()
                 if k in SPARK_TYPES and k != "string" and c in sdf.columns}
    raw = {c: f"__scorer_keep_{i}" for i, c in enumerate(kept) if c in typed}  # kept columns keep their text
    model_input = sdf.select(*[column(c).cast(typed[c]).alias(c) if c in typed else column(c) for c in sdf.columns],
                             *[column(c).alias(alias) for c, alias in raw.items()])
    scored = model.transform_spark(model_input)
    return scored.select(*[column(raw[c]).alias(c) if c in raw else column(c) for c in kept], *map(column, outputs))


# --- the command -------------------------------------------------------------------------------------------


def _error_line(exc: BaseException) -> str:
    """One line naming the problem, out of Spark's (multi-line, nested) error text."""
    text = str(exc)
    java = getattr(exc, "java_exception", None)
    if java is not None:
        root = java
        while root.getCause() is not None:
            root = root.getCause()
        text = f"{text}\n{root.toString()}"
    found = re.search(re.escape(BatchFailed.MARKER) + r"(.*)", text)
    if found:
        return found.group(1).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception): ", ln) and "Traceback" not in ln]
    return (errors[-1] if errors else lines[-1] if lines else type(exc).__name__)[:2000]


def _delete_output(spark: Any, job: Job, *, committed: bool) -> None:
    """Remove the output directory; unless ``committed``, only when it holds no committed dataset
    (a failed job can leave an empty directory behind, which would block the next run)."""
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(job.output)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    if fs.exists(path) and (committed or not fs.exists(jvm.org.apache.hadoop.fs.Path(path, "_SUCCESS"))):
        fs.delete(path, True)


def run(settings: Settings) -> int:
    """``scorer batch --engine spark``: plan, start Spark, load the bundle here, score on Spark, commit.
    Returns the exit code; raises what :func:`scorer.errors.exit_code` maps (a usage error, a bundle that
    fails to load, :class:`~scorer.errors.BatchFailed`)."""
    started = time.perf_counter()
    job = None if _is_uri(settings.input) else plan(settings)  # a remote input is listed once Spark runs
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UsageError("--engine spark needs pyspark 3.5 and Java 17: install scorer[spark]") from None
    from scorer.jvm import spark_session

    ours = SparkSession.getActiveSession() is None
    try:
        # before the bundle: a Spark ML or H2O bundle loads into this session (the cluster's), not a local one
        spark = spark_session(master=settings.spark_master or None, app_name="scorer batch")
    except Exception as exc:  # noqa: BLE001 - no Java, a bad master URL: reported in one line
        raise BatchFailed(f"cannot start Spark: {_error_line(exc)}") from None
    workdir = Path(tempfile.mkdtemp(prefix="scorer-spark-"))
    try:
        scorer = Scorer.load(settings.bundle, LoadOptions.from_settings(settings))  # resolved once, here
        try:
            log.info("scoring with %s", worker.describe(scorer))
            spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(settings.chunk_rows))
            return _run(spark, settings, scorer, job, workdir, started)
        finally:
            scorer.close()  # a registry download is not kept (executors got their pinned copy by addFile)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if ours:
            spark.stop()


def _run(spark: Any, settings: Settings, scorer: Scorer, job: Job | None, workdir: Path, started: float) -> int:
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    native = native_model(scorer)
    try:
        if job is None:
            job = plan(settings, _hadoop_lister(spark))
        sdf = _read(spark, job)
        if native is not None:
            scored, rejects = _native_scored(sdf, native, scorer, settings, job), None
        else:
            scored, rejects = _python_scored(spark, sdf, scorer, settings, job, workdir)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable input (schema inference, sample), reported in one line
        raise BatchFailed(_error_line(exc)) from None
    observation = Observation()
    scored = scored.observe(observation, F.count(F.lit(1)).alias("rows"))
    log.info("scoring %d input file(s) (%s) on Spark %s (%s) with %s -> %s (%s)", len(job.files), job.in_fmt,
             spark.version, spark.sparkContext.master,
             "the model's Spark transform" if native is not None else "Python workers",
             job.output_name, job.out_fmt)
    job_started = time.perf_counter()
    try:
        _write(scored, job, settings.overwrite)
    except Exception as exc:  # noqa: BLE001 - Spark wraps everything (Py4JJavaError, AnalysisException, ...)
        line = _error_line(exc)
        if "PATH_ALREADY_EXISTS" in str(exc):  # checked by Spark before any task runs: nothing was written
            raise UsageError(f"{job.output_name} already exists; use --overwrite to replace it") from None
        _delete_output(spark, job, committed=False)
        raise BatchFailed(line) from None
    seconds = time.perf_counter() - job_started
    rows = int(observation.get["rows"])
    entries = list(rejects.value) if rejects is not None else []
    bad_rows = BadRowPolicy.from_settings(settings)
    if bad_rows.over_limit(len(entries)):  # each task keeps under the cap; together they may not
        _delete_output(spark, job, committed=True)
        first = entries[0]
        raise BatchFailed(bad_rows.limit_failure(first["file"], first["reason"]) + "; output removed")
    log.info("spark: %d rows scored in %.1fs, %.0f rows/s (%.1fs in all) -> %s", rows, seconds,
             rows / max(seconds, 1e-9), time.perf_counter() - started, job.output_name)
    if entries:
        lines = [orjson.dumps(e, default=str).decode() for e in entries]
        spark.sparkContext.parallelize(lines, 1).saveAsTextFile(job.output.rstrip("/") + "/_rejects")
        log.warning("committed; %d rows rejected (see %s/_rejects/)", len(entries), job.output_name)
        return EXIT_REJECTED
    return EXIT_OK
