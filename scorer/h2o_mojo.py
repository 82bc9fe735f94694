"""H2O MOJO bundles: scored without an H2O cluster, in the JVM of the process's SparkSession.

Two backends, same answers:

* ``genmodel`` (default): the MOJO's own Java predictor (``hex.genmodel``, shipped in the
  Sparkling Water scoring jar) run over the whole batch in one JVM call: the batch goes to the
  JVM as a CSV file in a private directory (``/dev/shm`` when there is one), and H2O's
  ``PredictCsv`` writes the predictions next to it. No Spark job, so a call costs a few ms.
* ``spark``: pysparkling's ``H2OMOJOModel`` on a Spark DataFrame, which is also what the Spark
  engine runs natively on datasets of any size (:meth:`MojoModel.transform_spark`).

Both treat an unseen categorical level, and a value that is not a number, as missing, as H2O's
own scoring does. The schema comes from the MOJO: columns with a domain are strings, the others
numbers. Output has the scikit-learn shape: ``prediction`` (the class label) plus
``probability_<class>`` per class for classifiers; ``prediction`` for regressors.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from scorer.errors import BundleCodeError, BundleLayoutError
from scorer.jvm import spark_session
from scorer.preprocessor import CustomPreprocessor
from scorer.spark_ml import quote, spark_frame

BACKENDS = ("genmodel", "spark")


class MojoModel(CustomPreprocessor):
    """An H2O MOJO zip. Usable from custom code like :class:`scorer.spark_ml.SparkPipelineModel`."""

    def __init__(self, path: Path, backend: str = "genmodel") -> None:
        if backend not in BACKENDS:
            raise BundleLayoutError(f"unknown MOJO backend {backend!r}; use one of {BACKENDS}")
        self.path = Path(path)
        self.backend = backend
        self.classes: list[str] | None = None
        self._lock = threading.Lock()
        self._spark_model: Any = None
        self._workdir: Path | None = None

    def load(self, artifacts_dir: Path) -> None:
        self.session = spark_session()
        jvm = self.session.sparkContext._jvm
        try:
            self.genmodel = jvm.hex.genmodel.MojoModel.load(str(self.path.resolve()))
        except Exception as exc:
            raise BundleCodeError(f"{self.path}: not a loadable H2O MOJO: {type(exc).__name__}: {exc}") from exc
        model = self.genmodel
        names = list(model.getNames())
        self.features = names[: model.getNumCols()]
        self.input_schema = {
            name: ("string" if model.getDomainValues(i) is not None else "float") for i, name in enumerate(self.features)
        }
        if model.isClassifier():
            self.classes = [str(c) for c in model.getDomainValues(model.getResponseIdx())]
            self.output_columns = ["prediction", *(f"probability_{c}" for c in self.classes)]
        else:
            self.output_columns = ["prediction"]
        if self.backend == "genmodel":
            self._start_genmodel()
        else:
            self._spark()

    # --- genmodel: one JVM call per batch --------------------------------------------------------

    def _start_genmodel(self) -> None:
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        self._workdir = Path(tempfile.mkdtemp(prefix="scorer-mojo-", dir=base))
        self._in = self._workdir / "batch.csv"
        self._out = self._workdir / "predictions.csv"
        gateway = self.session.sparkContext._gateway
        args = ["--mojo", str(self.path.resolve()), "--input", str(self._in), "--output", str(self._out), "--decimal"]
        array = gateway.new_array(gateway.jvm.java.lang.String, len(args))
        for i, arg in enumerate(args):
            array[i] = arg
        # PredictCsv's own argument errors call System.exit: these arguments are always valid and the
        # files exist, so make() only loads the MOJO (it was loaded above already, so it is readable).
        self._in.write_text(",".join(self.features) + "\n")
        self._predict_csv = gateway.jvm.hex.genmodel.tools.PredictCsv.make(array, self.genmodel)

    def __del__(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _genmodel_predict(self, df: pd.DataFrame) -> pd.DataFrame:
        frame = df.reindex(columns=self.features)
        for column, kind in self.input_schema.items():  # type: ignore[union-attr]
            if kind == "float":
                values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
                frame[column] = values.replace([np.inf, -np.inf], np.nan)  # Java spells them differently
        with self._lock:
            # PredictCsv reads with opencsv: quotes and backslashes are backslash-escaped, not doubled.
            frame.to_csv(self._in, index=False, na_rep="", quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n",
                         doublequote=False, escapechar="\\")
            self._predict_csv.run()
            table = pacsv.read_csv(
                self._out, convert_options=pacsv.ConvertOptions(
                    column_types={"predict": pa.string()}, strings_can_be_null=False),
            )
        names = table.column_names
        if self.classes is None:
            return pd.DataFrame({"prediction": table.column("predict").to_numpy().astype("float64")})
        arrays = {"prediction": np.asarray(table.column("predict").to_pylist(), dtype=object)}
        for i, c in enumerate(self.classes):
            arrays[f"probability_{c}"] = table.column(names[i + 1]).to_numpy().astype("float64")
        return pd.DataFrame(arrays)

    # --- spark: pysparkling's H2OMOJOModel --------------------------------------------------------

    def _spark(self) -> Any:
        if self._spark_model is None:
            from pysparkling.ml import H2OMOJOModel, H2OMOJOSettings

            settings = H2OMOJOSettings(convertUnknownCategoricalLevelsToNa=True, convertInvalidNumbersToNa=True)
            self._spark_model = H2OMOJOModel.createFromMojo(self.path.resolve().as_uri(), settings)
        return self._spark_model

    def transform_spark(self, sdf: Any) -> Any:
        """``sdf`` with the output columns appended, scored by pysparkling's ``H2OMOJOModel``."""
        from pyspark.sql import functions as F

        out = self._spark().transform(sdf)
        keep = [F.col(quote(c)) for c in sdf.columns]
        if self.classes is None:
            return out.select(*keep, F.col("prediction").cast("double").alias("prediction"))
        scores = [
            F.col("detailed_prediction.probabilities").getField(c).cast("double").alias(f"probability_{c}")
            for c in self.classes
        ]
        return out.select(*keep, F.col("prediction").cast("string").alias("prediction"), *scores)

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        if self.backend == "genmodel":
            return self._genmodel_predict(df)
        sdf = spark_frame(self.session, df.reindex(columns=self.features), self.input_schema or {})
        return self.transform_spark(sdf).select(*(quote(c) for c in self.output_columns)).toPandas()
