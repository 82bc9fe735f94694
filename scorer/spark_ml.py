"""Spark ML bundles: a saved ``PipelineModel`` scored in the process's local SparkSession.

The pipeline is read once; its saved stages tell the input schema and the output columns
(:mod:`scorer.spark_native.interface`, the same reading the native path uses). Output has the
scikit-learn shape: ``prediction`` (a classifier's class label) and ``probability_<class>``.

Spark's cost per call is fixed (plan, job, collect: tens of ms), so the server's micro-batcher
feeds it whole coalesced batches. :meth:`SparkPipelineModel.transform_spark` is the same scoring
on a Spark DataFrame, used by the Spark engine on datasets of any size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scorer.errors import BundleCodeError
from scorer.jvm import spark_session
from scorer.preprocessor import CustomPreprocessor
from scorer.spark_native.interface import analyse
from scorer.spark_native.layout import read_pipeline
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


class SparkPipelineModel(CustomPreprocessor):
    """A saved Spark ML ``PipelineModel`` directory. Usable from custom code::

        self.pipeline = SparkPipelineModel(artifacts_dir / "pipeline")
        self.pipeline.load(artifacts_dir)
        ...
        return self.pipeline.predict(df)
    """

    # Set by load() (read from the pipeline's stages).
    input_schema: dict[str, str]
    output_columns: list[str]

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
        self._analyse()

    def _analyse(self) -> None:
        iface = analyse(self.path, read_pipeline(self.path))
        self.input_schema = iface.input_schema
        self.prediction_col = iface.prediction_col
        self.probability_col = iface.probability_col
        self.classes = iface.classes
        self.output_columns = iface.output_columns

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
            regression: pd.DataFrame = out.select(prediction.cast("double").alias("prediction")).toPandas()
            return regression
        got = out.select(prediction.cast("int").alias("i"), vector_to_array(F.col(quote(self.probability_col))).alias("p"))
        frame = got.toPandas()
        n = len(frame)
        proba = np.vstack(frame["p"].to_numpy()) if n else np.empty((0, len(self.classes)))
        labels = np.asarray(self.classes, dtype=object)[frame["i"].to_numpy(dtype=np.int64)]
        columns = [labels, *(np.ascontiguousarray(proba[:, i]) for i in range(len(self.classes)))]
        return frame_from_arrays(self.output_columns, columns, n)
