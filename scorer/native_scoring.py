"""Native or JVM: which path scores a Spark ML pipeline or an H2O MOJO, and why.

``--spark-scoring``:

* ``native``: the pipeline's stages compiled to numpy (:mod:`scorer.spark_native`), the MOJO's trees
  read by :mod:`scorer.h2o_native`; no JVM, no pyspark import. A stage or algorithm native scoring
  lacks fails the load (exit 3) with one line naming it.
* ``spark``: the JVM, as before: a local SparkSession for pipelines, ``--mojo-backend`` for MOJOs.
* ``auto`` (default): native when everything is supported, else the JVM, logged with the stage or
  algorithm that forced it. When the JVM path is installed (pyspark, and Java), the bundle's sample
  (its manifest's ``sample_input``) is scored both ways first, in a child process so this one stays
  free to fork workers (or in this process's SparkSession when it already has one); any difference
  beyond the exactness contract (labels equal, numbers within 1e-9 relative) keeps the JVM.

Every choice is reported on the model as ``scoring`` (``/metadata``, ``scorer info``): the path, the
reason, and what the verification compared.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scorer.errors import BundleLayoutError, ScorerError
from scorer.preprocessor import CustomPreprocessor
from scorer.schema import Schema

if TYPE_CHECKING:  # the verification's (``auto`` with the JVM path installed): the native path needs neither
    import pandas as pd

log = logging.getLogger("scorer.native_scoring")

RTOL = 1e-9  # the exactness contract (issue: probabilities within 1e-9 relative of Spark's)
VERIFY_TIMEOUT_S = 300.0


def jvm_path_installed() -> bool:
    """Whether this machine could score on the JVM: pyspark importable and a Java runtime found."""
    java = os.environ.get("JAVA_HOME")
    has_java = bool(shutil.which("java")) or bool(java and Path(java, "bin", "java").exists())
    return has_java and importlib.util.find_spec("pyspark") is not None


def _sample_frame(sample: Sample | None, schema: Mapping[str, str]) -> pd.DataFrame | None:
    """The sample as the model receives it: coerced by the bundle's schema (the manifest's, else the model's)."""
    if sample is None or not sample.rows:
        return None
    import pandas as pd

    frame = pd.DataFrame(sample.rows["data"], columns=sample.rows["columns"])
    return Schema(sample.schema or schema).coerce(frame).to_frame()


@dataclass(frozen=True)
class Sample:
    """A bundle's sample input and its declared input schema (None: the model's own)."""

    rows: dict[str, Any] | None
    schema: Mapping[str, str] | None = None


def compare(native: pd.DataFrame, jvm: pd.DataFrame) -> str | None:
    """The first difference between two answers beyond the exactness contract, or None."""
    if list(native.columns) != list(jvm.columns) or len(native) != len(jvm):
        return f"native answered columns {list(native.columns)} x {len(native)} rows, the JVM {list(jvm.columns)} x {len(jvm)}"
    for column in native.columns:
        a, b = native[column].to_numpy(), jvm[column].to_numpy()
        if a.dtype.kind in "fiu" and b.dtype.kind in "fiu":
            a64, b64 = a.astype("float64"), b.astype("float64")
            bad = ~(np.isclose(a64, b64, rtol=RTOL, atol=0.0, equal_nan=True))
        else:
            bad = np.array([str(x) != str(y) for x, y in zip(a, b)], dtype=bool)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            return f"sample row {row}, column {column}: native {a[row]!r}, JVM {b[row]!r}"
    return None


def _jvm_answer(kind: str, path: Path, frame: pd.DataFrame, mojo_backend: str) -> pd.DataFrame:
    """The JVM path's answer on ``frame``: in this process when it already runs Spark, else in a child."""
    if "pyspark" in sys.modules:
        from pyspark.sql import SparkSession

        if SparkSession.getActiveSession() is not None:
            return _score_on_jvm(kind, path, frame, mojo_backend)
    request = json.dumps({"kind": kind, "path": str(path), "backend": mojo_backend})
    done = subprocess.run([sys.executable, "-m", "scorer.native_scoring", request], input=_ipc(frame),
                          capture_output=True, timeout=VERIFY_TIMEOUT_S)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise RuntimeError(f"the JVM path failed: {tail[0]}")
    return _frame(done.stdout)


def _ipc(frame: pd.DataFrame) -> bytes:
    """A frame as Arrow IPC bytes (the values exactly: no text round trip)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _frame(data: bytes) -> pd.DataFrame:
    import pyarrow as pa

    result: pd.DataFrame = pa.ipc.open_stream(data).read_all().to_pandas()
    return result


def _score_on_jvm(kind: str, path: Path, frame: pd.DataFrame, mojo_backend: str) -> pd.DataFrame:
    model: Any
    if kind == "spark":
        from scorer.spark_ml import SparkPipelineModel

        model = SparkPipelineModel(path)
    else:
        from scorer.h2o_mojo import MojoModel

        model = MojoModel(path, backend=mojo_backend)
    model.load(path.parent)
    result: pd.DataFrame = model.predict(frame)
    return result


def _verified(kind: str, path: Path, native: Any, sample: Sample | None, mojo_backend: str) -> dict[str, Any]:
    """Score the sample natively and on the JVM; ``{"rows": n, "difference": str | None}`` or why not."""
    if not jvm_path_installed():
        return {"rows": 0, "skipped": "the JVM path is not installed here"}
    frame = _sample_frame(sample, native.input_schema)
    if frame is None or frame.empty:
        return {"rows": 0, "skipped": "the bundle has no sample input"}
    try:
        jvm = _jvm_answer(kind, path, frame, mojo_backend)
    except Exception as exc:  # the JVM path being broken is no reason to refuse the native one
        return {"rows": 0, "skipped": f"{type(exc).__name__}: {exc}"}
    try:
        answer = native.predict(frame)
    except ScorerError as exc:
        return {"rows": len(frame), "difference": f"native scoring failed on the sample: {exc}"}
    return {"rows": len(frame), "difference": compare(answer, jvm)}


class NativeUnsupported(Exception):
    """The model has a stage or algorithm native scoring lacks (the message names it)."""


def _choose(kind: str, path: Path, mode: str, native_factory: Any, jvm_factory: Any,
            sample: Sample | None, mojo_backend: str) -> CustomPreprocessor:
    what = "Spark pipeline" if kind == "spark" else "H2O MOJO"
    if mode == "spark":
        return _report(jvm_factory(), "jvm", "--spark-scoring spark")
    try:
        native = native_factory()
    except NativeUnsupported as exc:
        if mode == "native":
            raise BundleLayoutError(f"{path}: --spark-scoring native: {exc}") from exc
        if importlib.util.find_spec("pyspark") is None:
            raise BundleLayoutError(f"{path}: native scoring lacks {exc}, and the JVM path is not installed here "
                                    "(pip install 'scorer[spark]' and Java 17, or the Spark image)") from exc
        log.warning("%s %s scores on the JVM: %s", what, path, exc)
        return _report(jvm_factory(), "jvm", f"native scoring lacks {exc}")
    if mode == "native":
        return _report(native, "native", "--spark-scoring native")
    check = _verified(kind, path, native, sample, mojo_backend)
    if check.get("difference"):
        log.warning("%s %s scores on the JVM: native and JVM answers differ on the sample: %s", what, path,
                    check["difference"])
        return _report(jvm_factory(), "jvm", "native and JVM answers differ on the sample", check)
    return _report(native, "native", "every stage is supported", check)


def _report(model: Any, path: str, reason: str, verified: dict[str, Any] | None = None) -> CustomPreprocessor:
    model.scoring = {"path": path, "reason": reason, "verified": verified}
    log.info("scoring path: %s (%s)", path, reason)
    result: CustomPreprocessor = model
    return result


def spark_pipeline(path: Path, mode: str, sample: Sample | None = None) -> CustomPreprocessor:
    """The model for a saved Spark ``PipelineModel`` directory, by ``--spark-scoring``."""

    def native() -> CustomPreprocessor:
        from scorer.spark_native.base import Unsupported
        from scorer.spark_native.model import NativePipelineModel

        try:
            return NativePipelineModel(path).compile()
        except Unsupported as exc:
            raise NativeUnsupported(str(exc)) from exc

    def jvm() -> CustomPreprocessor:
        from scorer.spark_ml import SparkPipelineModel

        return SparkPipelineModel(path)

    return _choose("spark", path, mode, native, jvm, sample, "genmodel")


def h2o_mojo(path: Path, mode: str, mojo_backend: str, sample: Sample | None = None) -> CustomPreprocessor:
    """The model for an H2O MOJO zip, by ``--spark-scoring`` (the JVM path: ``--mojo-backend``)."""

    def native() -> CustomPreprocessor:
        from scorer.h2o_native import NativeMojo, Unsupported

        model = NativeMojo(path)
        try:
            model.load(path.parent)
        except Unsupported as exc:
            raise NativeUnsupported(str(exc)) from exc
        return model

    def jvm() -> CustomPreprocessor:
        from scorer.h2o_mojo import MojoModel

        return MojoModel(path, backend=mojo_backend)

    return _choose("h2o", path, mode, native, jvm, sample, mojo_backend)


def _main() -> None:
    """Child process of the verification: what to load in argv, the sample (Arrow IPC) on stdin, the JVM
    path's answer (Arrow IPC) on stdout."""
    request = json.loads(sys.argv[1])
    frame = _frame(sys.stdin.buffer.read())
    answer = _score_on_jvm(request["kind"], Path(request["path"]), frame, request["backend"])
    sys.stdout.buffer.write(_ipc(answer))


if __name__ == "__main__":
    _main()
