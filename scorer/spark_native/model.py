"""``NativePipelineModel``: a saved Spark ML pipeline scored by its compiled stages, without a JVM.

The same interface as :class:`scorer.spark_ml.SparkPipelineModel` (input schema, output columns,
the scikit-learn output shape, rows Spark would drop or fail on), with no pyspark import: a batch
becomes :data:`~scorer.spark_native.base.Columns` (numbers float64 with NaN missing, strings as
objects with None missing: what Spark receives from pandas through Arrow), runs through
:class:`~scorer.spark_native.pipeline.NativePipeline`, and the prediction and probability columns
are read back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scorer.preprocessor import CustomPreprocessor
from scorer.spark_native.base import Columns
from scorer.spark_native.interface import analyse
from scorer.spark_native.layout import read_pipeline
from scorer.spark_native.pipeline import NativePipeline, compile_pipeline
from scorer.table import frame_from_arrays


def columns_of(df: pd.DataFrame, schema: dict[str, str]) -> Columns:
    """The schema's columns of a batch in the native form (missing: NaN for numbers, None for strings)."""
    cols: Columns = {}
    for name, kind in schema.items():
        if name not in df.columns:
            continue
        series = df[name]
        if kind == "string":
            values = series.to_numpy(dtype=object)
            cols[name] = np.array([None if v is None or v is pd.NA or v != v else str(v) for v in values], dtype=object)
        else:
            cols[name] = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return cols


class NativePipelineModel(CustomPreprocessor):
    """A saved ``PipelineModel`` directory scored natively. :meth:`compile` raises
    :class:`~scorer.spark_native.base.Unsupported` when a stage has no native implementation."""

    input_schema: dict[str, str]
    output_columns: list[str]

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.pipeline: NativePipeline | None = None
        self.classes: list[Any] | None = None

    def compile(self) -> NativePipelineModel:
        files = read_pipeline(self.path)
        self.pipeline = compile_pipeline(self.path, files)
        iface = analyse(self.path, files)
        self.input_schema = iface.input_schema
        self.prediction_col = iface.prediction_col
        self.probability_col = iface.probability_col
        self.classes = iface.classes
        self.output_columns = iface.output_columns
        return self

    def load(self, artifacts_dir: Path) -> None:
        if self.pipeline is None:
            self.compile()

    @property
    def stage_classes(self) -> list[str]:
        return [f.cls for f in self.pipeline.files] if self.pipeline is not None else []

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        assert self.pipeline is not None, "load() first"
        out = self.pipeline.transform(columns_of(df, self.input_schema))
        prediction = np.asarray(out[self.prediction_col], dtype="float64")
        n = len(prediction)
        if self.classes is None:
            return pd.DataFrame({"prediction": prediction})
        proba = np.asarray(out[self.probability_col], dtype="float64").reshape(n, len(self.classes))
        labels = np.asarray(self.classes, dtype=object)[prediction.astype(np.int64)]
        columns = [labels, *(np.ascontiguousarray(proba[:, i]) for i in range(len(self.classes)))]
        return frame_from_arrays(self.output_columns, columns, n)
