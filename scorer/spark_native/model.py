"""``NativePipelineModel``: a saved Spark ML pipeline scored by its compiled stages, without a JVM.

The same interface as :class:`scorer.spark_ml.SparkPipelineModel` (input schema, output columns,
the scikit-learn output shape, rows Spark would drop or fail on), with no pyspark import: a batch
becomes :data:`~scorer.spark_native.base.Columns` (numbers float64 with NaN missing, strings as
objects with None missing: what Spark receives from pandas through Arrow), runs through
:class:`~scorer.spark_native.pipeline.NativePipeline`, and the prediction and probability columns
are read back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from scorer.preprocessor import CustomPreprocessor
from scorer.spark_native.base import Columns
from scorer.spark_native.interface import analyse
from scorer.spark_native.layout import read_pipeline
from scorer.spark_native.pipeline import NativePipeline, compile_pipeline
from scorer.table import frame_from_arrays, is_series, pandas_na

if TYPE_CHECKING:  # imported for DataFrames and text to parse: a Table of numbers and strings needs none
    import pandas as pd


def columns_of(data: pd.DataFrame | Mapping[str, Any], schema: dict[str, str]) -> Columns:
    """The schema's columns of a batch (a DataFrame, or a Table's numpy columns) in the native form
    (missing: NaN for numbers, None for strings)."""
    cols: Columns = {}
    na = pandas_na()
    for name, kind in schema.items():
        if name not in data:
            continue
        values = data[name]
        if kind == "string":
            objects = values.to_numpy(dtype=object) if is_series(values) else np.asarray(values, dtype=object)
            cols[name] = np.array([None if v is None or v is na or v != v else str(v) for v in objects], dtype=object)
        else:
            cols[name] = numbers(values)
    return cols


def numbers(values: pd.Series | NDArray[Any]) -> NDArray[np.float64]:
    """A column as float64 with NaN for missing or unparseable values, as ``pd.to_numeric(...,
    errors="coerce")`` makes it; numpy numbers and booleans are converted without pandas."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(np.float64)
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


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
        columns = self._outputs(columns_of(df, self.input_schema))
        arrays = list(columns.values())
        return frame_from_arrays(list(columns), arrays, len(arrays[0]))  # fewer rows if Spark would drop some

    def predict_columns(self, columns: Mapping[str, NDArray[Any]], n_rows: int) -> dict[str, NDArray[Any]]:
        """:meth:`predict` on a Table's columns, without DataFrames (:class:`scorer.table.ColumnarModel`)."""
        return self._outputs(columns_of(columns, self.input_schema))

    def _outputs(self, cols: Columns) -> dict[str, NDArray[Any]]:
        assert self.pipeline is not None, "load() first"
        out = self.pipeline.transform(cols)
        prediction = np.asarray(out[self.prediction_col], dtype="float64")
        n = len(prediction)
        if self.classes is None:
            return {"prediction": prediction}
        proba = np.asarray(out[self.probability_col], dtype="float64").reshape(n, len(self.classes))
        labels = np.asarray(self.classes, dtype=object)[prediction.astype(np.int64)]
        return dict(zip(self.output_columns,
                        [labels, *(np.ascontiguousarray(proba[:, i]) for i in range(len(self.classes)))], strict=True))
