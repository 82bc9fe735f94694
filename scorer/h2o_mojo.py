"""H2O MOJO bundles: scored without an H2O cluster, by the MOJO's own Java predictor.

Two backends, same answers:

* ``genmodel`` (default): H2O's ``hex.genmodel`` predictor (shipped in the Sparkling Water scoring
  jar) in an in-process JVM started through JPype (:func:`scorer.jvm.genmodel_jvm`): no SparkSession,
  no file, no ``PredictCsv`` (whose argument errors call ``System.exit``). The batch goes to the JVM as
  primitive ``double[]`` rows and comes back the same way; a call costs about a millisecond of CPU
  (mostly pandas) plus 10-15 us a row, where the CSV handoff cost about 7 ms plus 20 us a row.
  JPype1 (in the ``spark`` extra) is the maintained Python-Java bridge over JNI; the alternative,
  py4j to the SparkSession's JVM, has no call taking a batch of rows without Java source of our
  own, and would keep a SparkSession (seconds of cold start) for every MOJO.
* ``spark``: pysparkling's ``H2OMOJOModel`` on a Spark DataFrame, which is also what the Spark
  engine runs natively on datasets of any size (:meth:`MojoModel.transform_spark`).

The rows reach the predictor as H2O's ``EasyPredictModelWrapper`` (configured with
``convertUnknownCategoricalLevelsToNa`` and ``convertInvalidNumbersToNa``, as pysparkling does) would
pass them to ``GenModel.score0``: a categorical value is its level's index in the MOJO's domain (an
unseen level, or a missing value, is NaN), a numeric value its number (anything that is not a number
is NaN). For MOJOs trained with the default categorical encoding that mapping is done here, in numpy
(:class:`ArrayRows`, copied from genmodel's ``EnumEncoder``); for the other encodings (one-hot
explicit, binary, eigen, label, enum-limited) genmodel's own wrapper converts each row
(:class:`RowDataRows`). The label is the one ``score0`` returns, as genmodel's wrapper reads it
(``preds[0]``; for a binomial model ``GenModel.getPrediction``: class 1 when ``preds[2] >= threshold``,
the MOJO's default threshold).

The schema comes from the MOJO: columns with a domain are strings, the others numbers. Output has
the scikit-learn shape: ``prediction`` (the class label) plus ``probability_<class>`` per class for
classifiers (binomial, multinomial, ordinal); ``prediction`` for regressors.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from scorer.errors import BundleCodeError, BundleLayoutError
from scorer.jvm import genmodel_jvm, spark_session
from scorer.preprocessor import CustomPreprocessor
from scorer.spark_ml import quote, spark_frame

BACKENDS = ("genmodel", "spark")
CLASSIFIERS = ("Binomial", "Multinomial", "Ordinal")


class MojoModel(CustomPreprocessor):
    """An H2O MOJO zip. Usable from custom code like :class:`scorer.spark_ml.SparkPipelineModel`."""

    # Set by load() (read from the MOJO).
    input_schema: dict[str, str]
    output_columns: list[str]

    def __init__(self, path: Path, backend: str = "genmodel") -> None:
        if backend not in BACKENDS:
            raise BundleLayoutError(f"unknown MOJO backend {backend!r}; use one of {BACKENDS}")
        self.path = Path(path)
        self.backend = backend
        self.classes: list[str] | None = None
        self._spark_model: Any = None
        self._rows: Rows | None = None

    def load(self, artifacts_dir: Path) -> None:
        if self.backend == "genmodel":
            jpype = genmodel_jvm()
            load = jpype.JClass("hex.genmodel.MojoModel").load
        else:
            self.session = spark_session()
            load = self.session.sparkContext._jvm.hex.genmodel.MojoModel.load
        try:
            self.genmodel = load(str(self.path.resolve()))
        except Exception as exc:
            raise BundleCodeError(f"{self.path}: not a loadable H2O MOJO: {type(exc).__name__}: {exc}") from exc
        model = self.genmodel
        category = str(model.getModelCategory())
        if category not in (*CLASSIFIERS, "Regression"):
            raise BundleCodeError(f"{self.path}: a {category} MOJO: scorer serves classifiers and regressors")
        self.features, domains = _input_columns(model)
        self.input_schema = {name: ("string" if d is not None else "float") for name, d in zip(self.features, domains)}
        if category in CLASSIFIERS:
            self.classes = _response_domain(model)
            self.output_columns = ["prediction", *(f"probability_{c}" for c in self.classes)]
        else:
            self.output_columns = ["prediction"]
        if self.backend == "genmodel":
            if model.getOffsetName() is not None:
                raise BundleCodeError(f"{self.path}: a MOJO with an offset column ({model.getOffsetName()}) "
                                      "is not supported by the genmodel backend: use --mojo-backend spark")
            native = str(model.getCategoricalEncoding()) == "AUTO" and not isinstance(
                model, jpype.JClass("hex.genmodel.ConverterFactoryProvidingModel"))
            self._rows = (ArrayRows if native else RowDataRows)(jpype, model, self.features, domains, self.classes)
        else:
            self._spark()

    # --- spark: pysparkling's H2OMOJOModel --------------------------------------------------------

    def _spark(self) -> Any:
        if self._spark_model is None:
            self.session = spark_session()  # pysparkling needs the session (with the jar) to exist
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
        if self._rows is not None:
            return self._rows.predict(df if list(df.columns) == self.features else df.reindex(columns=self.features))
        sdf = spark_frame(self.session, df.reindex(columns=self.features), self.input_schema or {})
        frame: pd.DataFrame = self.transform_spark(sdf).select(*(quote(c) for c in self.output_columns)).toPandas()
        return frame


def _input_columns(model: Any) -> tuple[list[str], list[list[str] | None]]:
    """The MOJO's input columns and their domains (None: numeric), as genmodel's wrapper maps them: the
    model's own columns for the default encoding, the columns before encoding for the others
    (``CategoricalEncoding.createColumnMapping``: ``EnumEncoderColumnMapper`` / ``OneHotEncoderColumnMapper``...)."""
    encoding = str(model.getCategoricalEncoding())
    if encoding in ("AUTO", "LabelEncoder") or model.getOrigNames() is None:
        names, count = model.getNames(), int(model.getNumCols())
        domains = [model.getDomainValues(i) for i in range(count)]
    else:
        names, count = model.getOrigNames(), int(model.getOrigNumCols())
        domains = list(model.getOrigDomainValues())[:count]
    return [str(n) for n in list(names)[:count]], [None if d is None else [str(v) for v in d] for d in domains]


def _response_domain(model: Any) -> list[str]:
    """The class labels, as ``EasyPredictModelWrapper.predictBinomial`` names them (quasibinomial: 0 and 1)."""
    domain = model.getDomainValues(model.getResponseIdx())
    if domain is None:
        return ["0", "1"]
    return [str(c) for c in domain]


class Rows(Protocol):
    def predict(self, frame: pd.DataFrame) -> pd.DataFrame: ...


def _numbers(values: pd.Series) -> np.ndarray:
    """A numeric column as float64; a value that is not a number is NaN (``convertInvalidNumbersToNa``)."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    texts = values.map(lambda v: v.strip() if isinstance(v, str) else v)
    return pd.to_numeric(texts, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _levels(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Where a categorical column has a value, and those values as text (a number is looked up by its text)."""
    present = values.notna().to_numpy()
    return present, [v if isinstance(v, str) else str(v) for v in values.to_numpy(dtype=object)[present]]


def _level_codes(values: np.ndarray, codes: dict[str, int]) -> np.ndarray:
    """Each value's level index, NaN for a missing value or an unseen level (a plain loop: faster than
    pandas on the small batches online scoring sends, and linear on large ones)."""
    nan = np.nan
    out = np.empty(len(values))
    for k, v in enumerate(values):
        if type(v) is str:
            out[k] = codes.get(v, nan)
        elif v is None or pd.isna(v):
            out[k] = nan
        else:
            out[k] = codes.get(str(v), nan)
    return out


def _outputs(labels: list[str], probabilities: np.ndarray | None, classes: list[str] | None) -> pd.DataFrame:
    if classes is None or probabilities is None:
        return pd.DataFrame({"prediction": np.asarray(labels, dtype=np.float64)})
    arrays: dict[str, Any] = {"prediction": np.asarray(labels, dtype=object)}
    for i, c in enumerate(classes):
        arrays[f"probability_{c}"] = probabilities[:, i]
    return pd.DataFrame(arrays)


class ArrayRows:
    """Rows encoded in numpy and scored by ``GenModel.score0(double[] row, double[] preds)``.

    The encoding is genmodel's ``EnumEncoder`` (``hex.genmodel.easy``), the default encoding's: a level is
    looked up in the column's domain, then as ``<column>.<level>``; not found (or missing) is NaN. Rows not
    set are NaN (``EasyPredictModelWrapper.predict``: ``nanArray(m.nfeatures())``).
    """

    def __init__(self, jpype: Any, model: Any, features: list[str], domains: list[list[str] | None],
                 classes: list[str] | None) -> None:
        self.model = model
        self.features = features
        self.classes = classes
        self.width = int(model.nfeatures())
        self.preds_size = int(model.getPredsSize(model.getModelCategory()))
        self.codes: list[dict[str, int] | None] = []
        for name, domain in zip(features, domains):
            if domain is None:
                self.codes.append(None)
                continue
            direct: dict[str, int] = {}
            for j, level in enumerate(domain):
                direct[level] = j  # HashMap.put: a repeated level keeps its last index
            prefix = f"{name}."
            prefixed = {level[len(prefix):]: j for level, j in direct.items() if level.startswith(prefix)}
            self.codes.append({**prefixed, **direct})  # the level itself first, then <column>.<level>
        self._doubles = jpype.JArray(jpype.JDouble)
        # score0 of some algorithms keeps scratch state in the model: one batch at a time per model.
        self._lock = threading.Lock()

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """The batch as ``score0`` reads it: one float64 row per input row."""
        matrix = np.full((len(frame), self.width), np.nan)
        numeric = [i for i, codes in enumerate(self.codes) if codes is None]
        block = frame.iloc[:, numeric]
        if all(pd.api.types.is_float_dtype(t) or pd.api.types.is_integer_dtype(t) for t in block.dtypes):
            matrix[:, numeric] = block.to_numpy(dtype=np.float64, na_value=np.nan)  # one copy for all of them
        else:
            for i in numeric:
                matrix[:, i] = _numbers(frame.iloc[:, i])
        for i, codes in enumerate(self.codes):
            if codes is not None:
                matrix[:, i] = _level_codes(frame.iloc[:, i].to_numpy(dtype=object), codes)
        return matrix

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        matrix = self.encode(frame)
        preds = np.empty((len(matrix), self.preds_size))
        with self._lock:
            row, out = self._doubles(self.width), self._doubles(self.preds_size)
            score0 = self.model.score0
            for i in range(len(matrix)):
                row[:] = matrix[i]
                preds[i] = score0(row, out)  # two JNI calls a row; the arrays cross as buffers
        if self.classes is None:
            return pd.DataFrame({"prediction": preds[:, 0]})
        labels = [self.classes[int(k) if k == k else 0] for k in preds[:, 0]]  # Java's (int) NaN is 0
        return _outputs(labels, preds[:, 1:1 + len(self.classes)], self.classes)


class RowDataRows:
    """Rows converted by genmodel's own ``EasyPredictModelWrapper`` (a ``RowData`` map per row), for the
    encodings and models whose conversion is not the default one. The wrapper's prediction is what
    ``PredictCsv`` writes: the label and the class probabilities, or the value."""

    def __init__(self, jpype: Any, model: Any, features: list[str], domains: list[list[str] | None],
                 classes: list[str] | None) -> None:
        config = (jpype.JClass("hex.genmodel.easy.EasyPredictModelWrapper$Config")().setModel(model)
                  .setConvertUnknownCategoricalLevelsToNa(True).setConvertInvalidNumbersToNa(True))
        self.wrapper = jpype.JClass("hex.genmodel.easy.EasyPredictModelWrapper")(config)
        self.row_data = jpype.JClass("hex.genmodel.easy.RowData")
        self.java_double = jpype.JClass("java.lang.Double")
        self.features = features
        self.numeric = [d is None for d in domains]
        self.classes = classes
        category = str(model.getModelCategory())
        self.predict_one = getattr(self.wrapper, f"predict{category}")

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        columns: list[tuple[str, np.ndarray, list[Any]]] = []
        for name, numeric in zip(self.features, self.numeric):
            if numeric:
                values = _numbers(frame[name])
                columns.append((name, ~np.isnan(values), list(values)))
            else:
                present, texts = _levels(frame[name])
                full: list[Any] = [None] * len(frame)
                for k, text in zip(np.flatnonzero(present), texts):
                    full[k] = text
                columns.append((name, present, full))
        labels: list[Any] = []
        probabilities = np.empty((len(frame), len(self.classes or ())))
        for i in range(len(frame)):
            row = self.row_data()
            for name, present, cells in columns:
                if present[i]:  # a missing value is left out of the row: NaN
                    row.put(name, self.java_double(cells[i]) if isinstance(cells[i], float) else cells[i])
            p = self.predict_one(row)
            if self.classes is None:
                labels.append(float(p.value))
            else:
                labels.append(str(p.label))
                probabilities[i] = np.asarray(p.classProbabilities)
        return _outputs(labels, probabilities if self.classes is not None else None, self.classes)
