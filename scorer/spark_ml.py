"""Spark ML bundles: a saved ``PipelineModel`` scored in the process's local SparkSession.

The pipeline is read once; its stages tell the input schema (a ``StringIndexer``'s input is a
string column, anything else a model reads is numeric; columns a stage produces are not inputs,
nor is the label a label indexer reads). Output has the scikit-learn shape: a classifier gives
``prediction`` (the class label, taken from the ``StringIndexer`` that made its label column, or
an ``IndexToString`` of its prediction) and ``probability_<class>``; a regressor ``prediction``.

Spark's cost per call is fixed (plan, job, collect: tens of ms), so the server's micro-batcher
feeds it whole coalesced batches. :meth:`SparkPipelineModel.transform_spark` is the same scoring
on a Spark DataFrame, used by the Spark engine on datasets of any size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scorer.errors import BundleCodeError, BundleLayoutError
from scorer.jvm import spark_session
from scorer.preprocessor import CustomPreprocessor
from scorer.table import frame_from_arrays

SPARK_TYPES = {"float": "double", "int": "bigint", "bool": "boolean", "string": "string"}  # schema type -> Spark


def quote(column: str) -> str:
    """A column name as Spark SQL expression text (dots and spaces are not paths)."""
    return "`" + column.replace("`", "``") + "`"


def column(name: str) -> Any:
    """``F.col`` of a column name taken literally."""
    from pyspark.sql import functions as F

    return F.col(quote(name))


def spark_frame(session: Any, df: pd.DataFrame, types: dict[str, str]) -> Any:
    """A pandas batch as a Spark DataFrame (Arrow transfer), typed by a scorer schema; a column the
    schema does not name is a double if numeric, else a string."""
    ddl = []
    for c in df.columns:
        kind = types.get(c) or ("float" if pd.api.types.is_numeric_dtype(df[c]) else "string")
        ddl.append(f"{quote(c)} {SPARK_TYPES.get(kind, 'string')}")
    return session.createDataFrame(df, schema=", ".join(ddl))


def _param(stage: Any, name: str) -> Any:
    if stage.hasParam(name) and stage.isDefined(stage.getParam(name)):
        return stage.getOrDefault(stage.getParam(name))
    return None


def _columns(stage: Any, single: str, many: str) -> list[str]:
    one, several = _param(stage, single), _param(stage, many)
    return ([one] if one else []) + list(several or [])


class SparkPipelineModel(CustomPreprocessor):
    """A saved Spark ML ``PipelineModel`` directory. Usable from custom code::

        self.pipeline = SparkPipelineModel(artifacts_dir / "pipeline")
        self.pipeline.load(artifacts_dir)
        ...
        return self.pipeline.predict(df)
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.pipeline: Any = None
        self.classes: list[Any] | None = None

    def load(self, artifacts_dir: Path) -> None:
        self.session = spark_session()
        from pyspark.ml import PipelineModel

        try:
            self.pipeline = PipelineModel.load(self.path.resolve().as_uri())
        except Exception as exc:
            raise BundleCodeError(f"{self.path}: not a loadable Spark PipelineModel: {type(exc).__name__}: {exc}") from exc
        self._analyse(self.pipeline.stages)

    def _analyse(self, stages: list[Any]) -> None:
        predictors = [s for s in stages if s.hasParam("predictionCol") and s.hasParam("featuresCol")]
        if not predictors:
            raise BundleLayoutError(f"{self.path}: the pipeline has no prediction stage (a classifier or regressor)")
        final = predictors[-1]
        label_col = _param(final, "labelCol")
        self.prediction_col = _param(final, "predictionCol") or "prediction"
        self.probability_col = _param(final, "probabilityCol") if final.hasParam("probabilityCol") else None
        produced: set[str] = set()
        inputs: dict[str, str] = {}
        labels: list[str] | None = None
        for stage in stages:
            name = type(stage).__name__
            outputs = _columns(stage, "outputCol", "outputCols")
            if name == "StringIndexerModel" and label_col in outputs:
                labels = list(stage.labelsArray[outputs.index(label_col)])  # the label indexer: not an input
            elif name == "IndexToString" and _param(stage, "inputCol") == self.prediction_col:
                labels = labels or list(_param(stage, "labels") or [])
            else:
                reads = _columns(stage, "inputCol", "inputCols")
                if stage.hasParam("featuresCol"):
                    reads.append(_param(stage, "featuresCol"))
                kind = "string" if name == "StringIndexerModel" else "float"
                for column in reads:
                    if column and column not in produced and column not in inputs:
                        inputs[column] = kind
            produced.update(outputs)
            for out in ("predictionCol", "probabilityCol", "rawPredictionCol"):
                if stage.hasParam(out) and _param(stage, out):
                    produced.add(_param(stage, out))
        self.input_schema = inputs
        if self.probability_col:
            n = int(final.numClasses)
            self.classes = labels if labels and len(labels) == n else list(range(n))
            self.output_columns = ["prediction", *(f"probability_{c}" for c in self.classes)]
        else:
            self.output_columns = ["prediction"]

    def transform_spark(self, sdf: Any) -> Any:
        """``sdf`` with the output columns appended (Spark's own ``transform``, then the sklearn shape)."""
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F

        out = self.pipeline.transform(sdf)
        keep = [F.col(quote(c)) for c in sdf.columns]
        prediction = F.col(quote(self.prediction_col))
        if self.classes is None:
            return out.select(*keep, prediction.cast("double").alias("prediction"))
        labels = F.array(*(F.lit(c) for c in self.classes))
        probabilities = vector_to_array(F.col(quote(self.probability_col)))
        scores = [probabilities[i].alias(f"probability_{c}") for i, c in enumerate(self.classes)]
        return out.select(*keep, F.element_at(labels, prediction.cast("int") + 1).alias("prediction"), *scores)

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """A batch through Spark's ``transform``: the same values as :meth:`transform_spark`, with a cheaper
        plan (Spark analyses every expression on every call: labels and columns are made here instead)."""
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F

        wanted = [c for c in (self.input_schema or {}) if c in df.columns]
        out = self.pipeline.transform(spark_frame(self.session, df[wanted], self.input_schema or {}))
        prediction = F.col(quote(self.prediction_col))
        if self.classes is None:
            return out.select(prediction.cast("double").alias("prediction")).toPandas()
        got = out.select(prediction.cast("int").alias("i"), vector_to_array(F.col(quote(self.probability_col))).alias("p"))
        frame = got.toPandas()
        n = len(frame)
        proba = np.vstack(frame["p"].to_numpy()) if n else np.empty((0, len(self.classes)))
        labels = np.asarray(self.classes, dtype=object)[frame["i"].to_numpy(dtype=np.int64)]
        columns = [labels, *(np.ascontiguousarray(proba[:, i]) for i in range(len(self.classes)))]
        return frame_from_arrays(self.output_columns, columns, n)
