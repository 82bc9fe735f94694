"""What Spark's predictor models share: saved vectors and matrices, and the classifier's output chain.

A classifier's ``transform`` (``ProbabilisticClassificationModel.transform``, Spark 3.5
``ProbabilisticClassifier.scala``) adds up to three columns, each only when its param is not ``""``:

- ``rawPredictionCol`` = ``predictRaw(features)``;
- ``probabilityCol`` = ``raw2probability(raw)``, or ``predictProbability(features)`` when there is no raw column;
- ``predictionCol`` = ``raw2prediction(raw)``, else ``probability2prediction(probability)``, else
  ``predict(features)``.

Each model overrides some of these (a binary logistic regression compares with its threshold, a GBT turns
its margin into a probability with the logistic loss); :class:`Classifier` is that chain, a model's
compiler subclasses it. :class:`Regressor` is ``PredictionModel.transform``: one ``predictionCol``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scorer.spark_native.base import Columns, InvalidData, Unsupported
from scorer.spark_native.layout import StageFiles

# Scala's Double.MinValue: the most negative finite double.
DOUBLE_MIN = -np.finfo(np.float64).max


def vector(v: dict[str, Any] | None) -> np.ndarray:
    """A saved ``VectorUDT`` value (``struct<type, size, indices, values>``; type 0 sparse, 1 dense) as a
    dense float64 array."""
    if v is None:
        raise Unsupported("a saved vector is null")
    values = np.asarray(v.get("values") or [], dtype=np.float64)
    if v.get("type") == 1:
        return values
    out = np.zeros(int(v["size"]), dtype=np.float64)
    out[np.asarray(v.get("indices") or [], dtype=np.int64)] = values
    return out


def vector_support(v: dict[str, Any]) -> np.ndarray:
    """The entries a saved vector stores (all of a dense one, the listed ones of a sparse one): Spark's
    ``BLAS.dot`` with a sparse vector multiplies only those, so ``0 * inf`` never happens there."""
    if v.get("type") == 1:
        return np.ones(len(v.get("values") or []), dtype=bool)
    mask = np.zeros(int(v["size"]), dtype=bool)
    mask[np.asarray(v.get("indices") or [], dtype=np.int64)] = True
    return mask


def matrix(m: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """A saved ``MatrixUDT`` value (``struct<type, numRows, numCols, colPtrs, rowIndices, values,
    isTransposed>``; type 0 sparse CSC, or CSR when transposed; type 1 dense, column-major unless
    transposed) as a dense (rows, cols) array and the mask of the entries it stores."""
    if m is None:
        raise Unsupported("a saved matrix is null")
    rows, cols = int(m["numRows"]), int(m["numCols"])
    values = np.asarray(m.get("values") or [], dtype=np.float64)
    transposed = bool(m.get("isTransposed"))
    if m.get("type") == 1:
        dense = values.reshape((rows, cols)) if transposed else values.reshape((cols, rows)).T
        return np.ascontiguousarray(dense), np.ones((rows, cols), dtype=bool)
    ptrs = np.asarray(m.get("colPtrs") or [], dtype=np.int64)
    inner = np.asarray(m.get("rowIndices") or [], dtype=np.int64)
    outer = np.repeat(np.arange(len(ptrs) - 1), np.diff(ptrs))
    r, c = (outer, inner) if transposed else (inner, outer)
    dense = np.zeros((rows, cols), dtype=np.float64)
    mask = np.zeros((rows, cols), dtype=bool)
    dense[r, c] = values
    mask[r, c] = True
    return dense, mask


def dot(x: np.ndarray, coef: np.ndarray, support: np.ndarray) -> np.ndarray:
    """``BLAS.dot(features, coefficients)`` per row, over the coefficients' stored entries."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 is NaN, as in Spark; no warning
        if support.all():
            return np.asarray(x @ coef, dtype=np.float64)
        return np.asarray(x[:, support] @ coef[support], dtype=np.float64)


def sequential_sum(a: np.ndarray) -> np.ndarray:
    """Row sums of a 2-D array added left to right, as Scala's ``values.sum`` does."""
    total = np.zeros(a.shape[0], dtype=np.float64)
    for j in range(a.shape[1]):
        total = total + a[:, j]
    return total


def first_argmax(a: np.ndarray) -> np.ndarray:
    """``DenseVector.argmax`` per row: the first index of the largest value, a value replacing the best
    only when strictly greater (NaN never does; a NaN first value stays)."""
    best = a[:, 0].copy()
    index = np.zeros(a.shape[0], dtype=np.float64)
    for j in range(1, a.shape[1]):
        better = a[:, j] > best
        index[better] = j
        best[better] = a[better, j]
    return index


def softmax(raw: np.ndarray) -> np.ndarray:
    """``org.apache.spark.ml.impl.Utils.softmax`` per row: at the first +inf the row is scaled by 0 and that
    entry set to 1; otherwise ``exp(v - max)`` (max over values greater than ``Double.MinValue``) scaled by
    ``1 / sum``."""
    out = np.empty_like(raw)
    biggest = np.full(raw.shape[0], DOUBLE_MIN)
    for j in range(raw.shape[1]):
        biggest = np.where(raw[:, j] > biggest, raw[:, j], biggest)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        total = np.zeros(raw.shape[0], dtype=np.float64)
        for j in range(raw.shape[1]):
            out[:, j] = np.exp(raw[:, j] - biggest)
            total = total + out[:, j]
        out *= (1.0 / total)[:, None]
    posinf = np.isposinf(raw)
    hit = posinf.any(axis=1)
    if hit.any():
        # BLAS dscal(0.0) over the row, then 1.0 at the first +inf: an infinite or NaN value times 0 is NaN.
        first = np.argmax(posinf[hit], axis=1)
        with np.errstate(invalid="ignore"):
            out[hit] = raw[hit] * 0.0
        out[np.flatnonzero(hit), first] = 1.0
    return out


def features(cols: Columns, name: str, uid: str, width: int | None = None) -> np.ndarray:
    """The features column as a 2-D float64 array; ``width`` checked when the model needs exactly it."""
    if name not in cols:
        raise InvalidData(f"stage {uid}: input column {name!r} is missing")
    x = np.asarray(cols[name], dtype=np.float64)
    if x.ndim != 2:
        raise InvalidData(f"stage {uid}: column {name!r} is not a vector column")
    if width is not None and x.shape[1] != width:
        raise InvalidData(f"stage {uid}: column {name!r} has vectors of size {x.shape[1]}, the model expects {width}")
    return x


class Classifier:
    """``ProbabilisticClassificationModel``: the three output columns from ``predictRaw`` and the
    conversions a model overrides. ``thresholds`` is the param when defined (it has no default)."""

    def __init__(self, stage: StageFiles, num_classes: int) -> None:
        self.uid = stage.uid
        self.num_classes = num_classes
        self.features_col = str(stage.param("featuresCol", "features"))
        self.raw_col = str(stage.param("rawPredictionCol", "rawPrediction"))
        self.probability_col = str(stage.param("probabilityCol", "probability"))
        self.prediction_col = str(stage.param("predictionCol", "prediction"))
        given = stage.param("thresholds")
        self.thresholds = None if given is None else np.asarray(given, dtype=np.float64)
        if self.thresholds is not None and len(self.thresholds) != num_classes:
            raise Unsupported(f"thresholds has {len(self.thresholds)} values for {num_classes} classes")
        self.inputs = [self.features_col]
        self.outputs = [c for c in (self.raw_col, self.probability_col, self.prediction_col) if c]

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def raw2probability(self, raw: np.ndarray) -> np.ndarray:
        """A new array (Spark copies the raw vector before ``raw2probabilityInPlace``)."""
        raise NotImplementedError

    def raw2prediction(self, raw: np.ndarray) -> np.ndarray:
        if self.thresholds is None:
            return first_argmax(raw)
        return self.probability2prediction(self.raw2probability(raw))

    def probability2prediction(self, probability: np.ndarray) -> np.ndarray:
        if self.thresholds is None:
            return first_argmax(probability)
        # probability / threshold, the largest wins (strictly greater, from -inf): a zero threshold
        # makes +inf, or NaN (never chosen) when that class's probability is 0 too.
        best = np.full(probability.shape[0], -np.inf)
        index = np.zeros(probability.shape[0], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            for j in range(probability.shape[1]):
                scaled = probability[:, j] / self.thresholds[j]
                better = scaled > best
                index[better] = j
                best[better] = scaled[better]
        return index

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``ClassificationModel.predict``: ``raw2prediction(predictRaw(features))``."""
        return self.raw2prediction(self.predict_raw(x))

    def features(self, cols: Columns) -> np.ndarray:
        return features(cols, self.features_col, self.uid)

    def transform(self, cols: Columns) -> np.ndarray | None:
        if not self.outputs:
            return None
        x = self.features(cols)
        raw = probability = None
        if self.raw_col:
            raw = self.predict_raw(x)
            cols[self.raw_col] = raw
        if self.probability_col:
            probability = self.raw2probability(raw if raw is not None else self.predict_raw(x))
            cols[self.probability_col] = probability
        if self.prediction_col:
            if raw is not None:
                cols[self.prediction_col] = self.raw2prediction(raw)
            elif probability is not None:
                cols[self.prediction_col] = self.probability2prediction(probability)
            else:
                cols[self.prediction_col] = self.predict(x)
        return None


class Regressor:
    """``PredictionModel.transform`` of a regression model: ``predictionCol`` = ``predict(features)``."""

    def __init__(self, stage: StageFiles) -> None:
        self.uid = stage.uid
        self.features_col = str(stage.param("featuresCol", "features"))
        self.prediction_col = str(stage.param("predictionCol", "prediction"))
        self.inputs = [self.features_col]
        self.outputs = [self.prediction_col] if self.prediction_col else []

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def features(self, cols: Columns) -> np.ndarray:
        return features(cols, self.features_col, self.uid)

    def transform(self, cols: Columns) -> np.ndarray | None:
        if self.prediction_col:
            cols[self.prediction_col] = self.predict(self.features(cols))
        return None
