"""Native feature stages (scorer.spark_native.features) against Spark's own ``transform``.

Each case fits or builds the stage in a real local Spark, saves it inside a ``PipelineModel``,
compiles the saved directory natively and compares every output column with what Spark's
``transform`` gives on the same rows (fed the way scorer feeds Spark: Arrow, NaN -> null): indices,
buckets and strings exactly, other numbers within 1e-9 relative. Where Spark's transform fails
(``handleInvalid='error'``), the native stage must raise InvalidData. Data is random with fixed seeds
plus the edge cases of each stage (nulls, unseen labels, values on split points, extreme magnitudes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scorer.spark_native.base import Columns, InvalidData, Unsupported
from scorer.spark_native.pipeline import NativePipeline, compile_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def spark() -> Any:
    from scorer.jvm import spark_session

    return spark_session()


def _columns(df: pd.DataFrame) -> Columns:
    cols: Columns = {}
    for c in df.columns:
        if pd.api.types.is_numeric_dtype(df[c]):
            cols[c] = df[c].to_numpy(dtype=np.float64)
        else:
            cols[c] = np.array([None if v is None or v is pd.NA or v != v else v for v in df[c]], dtype=object)
    return cols


def _spark_values(values: list[Any]) -> np.ndarray:
    """A collected Spark column as our column convention: vectors dense (null -> NaN row)."""
    first = next((v for v in values if v is not None), None)
    if first is not None and hasattr(first, "toArray"):
        width = len(first.toArray())
        return np.array([np.full(width, np.nan) if v is None else v.toArray() for v in values], dtype=np.float64).reshape(
            len(values), width
        )
    if isinstance(first, str):
        return np.array(values, dtype=object)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _save(stages: list[Any], tmp: Path) -> Path:
    from pyspark.ml import PipelineModel

    path = tmp / "pipeline"
    PipelineModel(stages=stages).write().overwrite().save(str(path))
    return path


def _spark_transform(spark: Any, stages: list[Any], df: pd.DataFrame) -> list[Any]:
    from pyspark.ml import PipelineModel

    from scorer.spark_ml import spark_frame

    types = {c: "float" if pd.api.types.is_numeric_dtype(df[c]) else "string" for c in df.columns}
    return list(PipelineModel(stages=stages).transform(spark_frame(spark, df, types)).collect())


@dataclass
class Saved:
    """A pipeline saved by Spark and compiled natively; Spark's in-memory stages kept for the oracle."""

    spark: Any
    stages: list[Any]
    native: NativePipeline

    def compare(self, df: pd.DataFrame, *, exact: bool = False) -> Columns:
        """Spark's transform and the native pipeline on ``df`` (plus a row id): every column equal."""
        df = df.assign(rid=np.arange(len(df), dtype=np.float64))
        native = self.native.transform(_columns(df))
        rows = _spark_transform(self.spark, self.stages, df)
        if not rows:
            assert len(native["rid"]) == 0
            return native
        expected_cols = {c: _spark_values([r[c] for r in rows]) for c in rows[0].__fields__}
        assert set(native) == set(expected_cols), (sorted(native), sorted(expected_cols))
        np.testing.assert_array_equal(native["rid"], expected_cols["rid"])
        for name, expected in expected_cols.items():
            got = native[name]
            if expected.dtype == object or got.dtype == object:
                assert list(got) == list(expected), name
            elif exact:
                np.testing.assert_array_equal(got, expected, err_msg=name)
            else:
                assert got.shape == expected.shape, name
                np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=name)
        return native

    def both_fail(self, df: pd.DataFrame) -> None:
        """Spark's transform raises on ``df``, and the native pipeline raises InvalidData."""
        with pytest.raises(InvalidData):
            self.native.transform(_columns(df))
        with pytest.raises(Exception) as caught:
            _spark_transform(self.spark, self.stages, df)
        assert not isinstance(caught.value, InvalidData)


def saved(spark: Any, stages: list[Any], tmp: Path) -> Saved:
    return Saved(spark, stages, compile_pipeline(_save(stages, tmp)))


def fit_frame(spark: Any, df: pd.DataFrame) -> Any:
    from scorer.spark_ml import spark_frame

    return spark_frame(spark, df, {c: "float" if pd.api.types.is_numeric_dtype(df[c]) else "string" for c in df.columns})


def _strings(rng: np.random.Generator, pool: list[str], n: int, null_rate: float = 0.1) -> list[str | None]:
    return [None if rng.random() < null_rate else str(rng.choice(pool)) for _ in range(n)]


# ----------------------------------------------------------------------------------------- StringIndexer


def test_string_indexer_every_mode(spark: Any, tmp_path: Path) -> None:
    """Multi-column StringIndexer fitted (keep) and built from labels (skip, error): nulls, unseen labels,
    the empty string; the single-column default output name."""
    from pyspark.ml.feature import StringIndexer, StringIndexerModel

    rng = np.random.default_rng(1)
    train = pd.DataFrame({"a": _strings(rng, ["x", "y", "z", "w", ""], 60), "b": _strings(rng, ["p", "q", "r"], 60)})
    score = pd.DataFrame({"a": _strings(rng, ["x", "y", "z", "w", "", "new"], 80), "b": _strings(rng, ["p", "q", "r", "s"], 80)})
    keep = StringIndexer(inputCols=["a", "b"], outputCols=["ak", "bk"], handleInvalid="keep", stringOrderType="alphabetAsc")
    skip = StringIndexerModel.from_arrays_of_labels(
        [["w", "x", "y", "z", "new"], ["q", "p", "s"]], inputCols=["a", "b"], outputCols=["as", "bs"], handleInvalid="skip"
    )
    padded = StringIndexerModel.from_arrays_of_labels(  # pyspark pads the shorter list with null labels
        [["x", "y", "w", "", "z"], ["r"]], inputCols=["a", "b"], outputCols=["ap", "bp"], handleInvalid="keep"
    )
    stages = [keep.fit(fit_frame(spark, train)), padded, skip]
    native = saved(spark, stages, tmp_path).compare(score, exact=True)
    assert 0 < len(native["rid"]) < len(score)
    error = StringIndexerModel.from_labels(["z", "y", "x", "w", ""], inputCol="a", handleInvalid="error")
    pipeline = saved(spark, [error], tmp_path / "error")
    pipeline.compare(pd.DataFrame({"a": [v for v in train["a"] if pd.notna(v)]}), exact=True)  # output <uid>__output
    pipeline.both_fail(pd.DataFrame({"a": ["x", "never seen"]}))
    pipeline.both_fail(pd.DataFrame({"a": ["x", None]}))


def test_string_indexer_numeric_input_is_cast_to_string(spark: Any, tmp_path: Path) -> None:
    """A double column is indexed by Spark's cast to string ("1.0", "1.0E7"); a double whose Java string
    a label could spell, but not provably so, is Unsupported natively."""
    from pyspark.ml.feature import StringIndexerModel

    labels = ["2.0", "1.0", "-3.0", "0.0", "1000000.0", "0.5", "1.2345678E7", "9999999.0", "x"]
    model = StringIndexerModel.from_labels(labels, inputCol="x", outputCol="xi", handleInvalid="keep")
    pipeline = saved(spark, [model], tmp_path)
    score = [1.0, 2.0, -3.0, 0.0, 1e6, 7.0, np.nan, 0.25, 1e300, -1e-300, 9999999.0, 1e7, -np.inf]
    pipeline.compare(pd.DataFrame({"x": score}), exact=True)
    for ambiguous in (0.5, 12345678.0, -0.0):
        with pytest.raises(Unsupported):
            pipeline.native.transform(_columns(pd.DataFrame({"x": [1.0, ambiguous]})))


def test_string_indexer_spark2_layout(spark: Any, tmp_path: Path) -> None:
    """The Spark 2.x data layout (one ``labels`` column: StringIndexerModelReader, majorVersion < 3)
    gives the labels the 3.x layout gives."""
    import pyarrow as pa
    from pyspark.ml.feature import StringIndexerModel

    model = StringIndexerModel.from_labels(["w", "v", "u"], inputCol="a", outputCol="ai", handleInvalid="keep")
    path = _save([model], tmp_path)
    stage_dir = next((path / "stages").iterdir())
    data = next((stage_dir / "data").glob("*.parquet"))
    labels = pq.read_table(data).column("labelsArray")[0].as_py()[0]
    pq.write_table(pa.table({"labels": [labels]}), data)
    meta_file = stage_dir / "metadata" / "part-00000"
    meta_file.write_text(meta_file.read_text().replace('"sparkVersion":"3.5', '"sparkVersion":"2.4'))
    Saved(spark, [model], compile_pipeline(path)).compare(pd.DataFrame({"a": ["w", "u", None, "zz", "v"]}), exact=True)


# ---------------------------------------------------------------------------------------- OneHotEncoder


def test_one_hot_encoder(spark: Any, tmp_path: Path) -> None:
    """dropLast x handleInvalid, category sizes from data; unseen, negative, fractional and null inputs."""
    from pyspark.ml.feature import OneHotEncoder

    rng = np.random.default_rng(3)
    train = pd.DataFrame({"a": rng.integers(0, 4, 50).astype(float), "b": rng.integers(0, 2, 50).astype(float)})
    fit_df = fit_frame(spark, train)
    odd = [5.0, -1.0, 1.5, 3.999, np.nan, 0.0, 4.0, -0.5, 1e300, -np.inf]
    score = pd.DataFrame(
        {
            "a": np.concatenate([rng.integers(0, 4, 40).astype(float), odd]),
            "b": np.concatenate([rng.integers(0, 2, 40).astype(float), odd[::-1]]),
        }
    )
    drop = OneHotEncoder(inputCols=["a", "b"], outputCols=["ad", "bd"], handleInvalid="keep").fit(fit_df)
    full = drop.copy({drop.dropLast: False, drop.outputCols: ["af", "bf"]})
    saved(spark, [drop, full], tmp_path).compare(score, exact=True)
    error = drop.copy({drop.handleInvalid: "error", drop.outputCols: ["ae", "be"]})
    saved(spark, [error], tmp_path / "valid").compare(score.iloc[:40], exact=True)
    one = OneHotEncoder(inputCol="a", outputCol="av", dropLast=False).fit(fit_df)
    strict = saved(spark, [one], tmp_path / "error")
    strict.compare(pd.DataFrame({"a": [0.0, 3.0, 1.5, 3.5, -0.0, np.nan]}), exact=True)
    strict.both_fail(pd.DataFrame({"a": [1.0, 4.0]}))
    strict.both_fail(pd.DataFrame({"a": [1.0, -0.5]}))


# -------------------------------------------------------------------------------------- VectorAssembler


def test_vector_assembler(spark: Any, tmp_path: Path) -> None:
    """Scalars and a one-hot vector (null when its input is null) assembled under each handleInvalid."""
    from pyspark.ml.feature import OneHotEncoder, VectorAssembler

    rng = np.random.default_rng(5)
    n = 40
    x = rng.normal(0, 1e3, n)
    x[[0, 5]] = [1e308, -1e-308]
    y = rng.integers(-2, 3, n).astype(float)
    c = rng.integers(0, 3, n).astype(float)
    clean = pd.DataFrame({"x": x, "y": y, "c": c})
    x[[3, 9]] = np.nan
    c[[4, 9]] = np.nan
    dirty = pd.DataFrame({"x": x, "y": y, "c": c})
    ohe = OneHotEncoder(inputCol="c", outputCol="cv").fit(fit_frame(spark, clean))
    inputs = ["x", "cv", "y"]
    keep = VectorAssembler(inputCols=inputs, outputCol="fk", handleInvalid="keep")
    skip = VectorAssembler(inputCols=inputs, outputCol="fs", handleInvalid="skip")
    native = saved(spark, [ohe, keep, skip], tmp_path).compare(dirty)
    assert native["fk"].shape == (n - 3, 4)
    error = saved(spark, [ohe, VectorAssembler(inputCols=inputs, outputCol="fe")], tmp_path / "error")
    error.compare(clean)
    error.both_fail(clean.assign(x=[np.nan] + list(clean["x"][1:])))
    error.both_fail(clean.assign(c=[np.nan] + list(clean["c"][1:])))


# ----------------------------------------------------------------------------------------------- Imputer


def test_imputer(spark: Any, tmp_path: Path) -> None:
    """Surrogates from data (mean, median), the default (NaN) and a set missingValue, several columns."""
    from pyspark.ml.feature import Imputer

    rng = np.random.default_rng(6)
    a = rng.normal(5, 2, 60)
    b = rng.integers(-1, 4, 60).astype(float) * 1e200
    a[rng.random(60) < 0.2] = np.nan
    b[rng.random(60) < 0.2] = np.nan
    df = pd.DataFrame({"a": a, "b": b})
    fit_df = fit_frame(spark, df)
    mean = Imputer(inputCols=["a", "b"], outputCols=["am", "bm"]).fit(fit_df)
    median = Imputer(inputCol="b", outputCol="bd", missingValue=-1e200, strategy="median").fit(fit_df)
    saved(spark, [mean, median], tmp_path).compare(df)


# ----------------------------------------------------------------------------------------------- scalers


def _features(seed: int, n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "u": rng.normal(0, 1, n),
            "v": rng.normal(1e12, 1e9, n),
            "k": np.full(n, 3.0),  # constant: std 0, range 0
            "z": np.zeros(n),  # all zero: maxAbs 0
            "t": rng.normal(0, 1e-200, n),
        }
    )


def test_scalers(spark: Any, tmp_path: Path) -> None:
    """StandardScaler (every withMean/withStd, a zero std), MinMaxScaler (set and default min/max, a
    constant feature, NaN kept) and MaxAbsScaler (a zero feature) on one assembled vector."""
    from pyspark.ml.feature import MaxAbsScaler, MinMaxScaler, StandardScaler, VectorAssembler

    df = _features(7)
    va = VectorAssembler(inputCols=list(df.columns), outputCol="f", handleInvalid="keep")
    fit_df = va.transform(fit_frame(spark, df))
    standard = StandardScaler(inputCol="f", outputCol="s11", withMean=True, withStd=True).fit(fit_df)
    stages = [va, standard]
    for with_mean, with_std in [(False, True), (True, False), (False, False)]:
        copy = standard.copy({standard.withMean: with_mean, standard.withStd: with_std})
        stages.append(copy.copy({copy.outputCol: f"s{with_mean:d}{with_std:d}"}))
    minmax = MinMaxScaler(inputCol="f", outputCol="m", min=-3.0, max=5.5).fit(fit_df)
    stages += [minmax, minmax.copy({minmax.min: 0.0, minmax.max: 1.0, minmax.outputCol: "m01"})]
    stages.append(MaxAbsScaler(inputCol="f", outputCol="a").fit(fit_df))
    score = _features(8)
    score.loc[[2, 7], "u"] = np.nan
    score.loc[3, "v"] = -1e300
    native = saved(spark, stages, tmp_path).compare(score)
    assert {"s11", "s01", "s10", "s00", "m", "m01", "a"} <= set(native)


# -------------------------------------------------------------------------------------------- Bucketizer


def test_bucketizer(spark: Any, tmp_path: Path) -> None:
    """Single and multi-column splits under each handleInvalid: values on split points, -0.0 (below a 0.0
    split, as Java's binarySearch orders it), infinities, nulls; a value outside the splits raises."""
    from pyspark.ml.feature import Bucketizer

    rng = np.random.default_rng(11)
    s1 = [-np.inf, -1.0, 0.0, 2.5, np.inf]
    s2 = [-10.0, 0.0, 10.0, 100.0]
    a = np.concatenate([rng.normal(0, 3, 40), s1[1:-1], [-0.0, np.inf, -np.inf, 1e308, -5e-324]])
    b = np.concatenate([rng.uniform(-10, 100, 40), s2, [-0.0, 5e-324, 99.99999999999999, 50.0]])
    a[[1, 8]] = np.nan
    b[[2, 8]] = np.nan
    df = pd.DataFrame({"a": a, "b": b})
    stages = [
        Bucketizer(splitsArray=[s1, s2], inputCols=["a", "b"], outputCols=["ak", "bk"], handleInvalid="keep"),
        Bucketizer(splitsArray=[s1, s2], inputCols=["a", "b"], outputCols=["ae", "be"]),  # a null is no error
        Bucketizer(splits=s2, inputCol="b", outputCol="bs", handleInvalid="keep"),
    ]
    saved(spark, stages, tmp_path).compare(df, exact=True)
    skip = Bucketizer(splitsArray=[s1, s2], inputCols=["a", "b"], outputCols=["as", "bs"], handleInvalid="skip")
    native = saved(spark, [skip], tmp_path / "skip").compare(df, exact=True)
    assert len(native["rid"]) == len(df) - 3
    error = saved(spark, [Bucketizer(splits=s2, inputCol="b", outputCol="bb", handleInvalid="skip")], tmp_path / "out")
    error.both_fail(pd.DataFrame({"b": [5.0, 100.5]}))  # outside the splits: every mode raises
    error.both_fail(pd.DataFrame({"b": [5.0, -10.000000001]}))


def test_quantile_discretizer(spark: Any, tmp_path: Path) -> None:
    """QuantileDiscretizer's fitted model is a Bucketizer with -inf/+inf outer splits."""
    from pyspark.ml.feature import QuantileDiscretizer

    rng = np.random.default_rng(12)
    df = pd.DataFrame({"x": rng.exponential(3, 200), "y": rng.integers(0, 7, 200).astype(float)})
    model = QuantileDiscretizer(inputCols=["x", "y"], outputCols=["xq", "yq"], numBuckets=5, handleInvalid="keep").fit(
        fit_frame(spark, df)
    )
    splits = model.getSplitsArray()
    x = np.concatenate([rng.exponential(3, 50), splits[0][1:-1], [np.nan]])
    y = np.resize(np.concatenate([splits[1][1:-1], [np.nan, -3.0, 12.0]]), len(x))
    saved(spark, [model], tmp_path).compare(pd.DataFrame({"x": x, "y": y}), exact=True)


# ----------------------------------------------------------------------------------------- IndexToString


def test_index_to_string(spark: Any, tmp_path: Path) -> None:
    """Labels from the param (index truncated toward zero, null kept); unset labels are Unsupported."""
    from pyspark.ml.feature import IndexToString

    rng = np.random.default_rng(13)
    pipeline = saved(spark, [IndexToString(inputCol="i", outputCol="s", labels=["zero", "one", "two", ""])], tmp_path)
    pipeline.compare(pd.DataFrame({"i": np.concatenate([rng.integers(0, 4, 30).astype(float), [3.9, -0.5, 0.0, np.nan]])}))
    pipeline.both_fail(pd.DataFrame({"i": [1.0, 4.0]}))
    pipeline.both_fail(pd.DataFrame({"i": [1.0, -1.0]}))
    with pytest.raises(Unsupported):
        compile_pipeline(_save([IndexToString(inputCol="i", outputCol="s")], tmp_path / "meta"))


# ---------------------------------------------------------------------------------------- SQLTransformer


def test_sql_transformer_projection(spark: Any, tmp_path: Path) -> None:
    """``SELECT`` of bare or backquoted columns with aliases runs natively (the result holds exactly the
    projected columns); any other statement is Unsupported."""
    from pyspark.ml.feature import SQLTransformer

    rng = np.random.default_rng(14)
    df = pd.DataFrame({"a": rng.normal(size=10), "b c": rng.normal(size=10), "s": ["p", None] * 5})
    stages = [
        SQLTransformer(statement="SELECT * FROM __THIS__"),
        SQLTransformer(statement="SELECT *, a AS a2 FROM __THIS__"),
        SQLTransformer(statement="select rid, `b c` as bc, S, A as `x``y`, a2 from __THIS__"),
    ]
    path = _save(stages, tmp_path)
    Saved(spark, stages, compile_pipeline(path)).compare(df)
    meta = next((path / "stages").glob("2_*")) / "metadata" / "part-00000"
    original = meta.read_text()
    for statement in (
        "SELECT a + 1 AS b FROM __THIS__",
        "SELECT * FROM __THIS__ WHERE a > 0",
        "SELECT upper(s) FROM __THIS__",
        "SELECT a, a FROM __THIS__",
        "SELECT DISTINCT a FROM __THIS__",
        "SELECT a FROM __THIS__ LIMIT 1",
        "SELECT a.b FROM __THIS__",
        "SELECT a b FROM __THIS__",
        "SELECT * FROM __THIS__ t",
        "SELECT `__THIS__` FROM __THIS__",
    ):
        meta.write_text(original.replace("select rid, `b c` as bc, S, A as `x``y`, a2 from __THIS__", statement))
        with pytest.raises(Unsupported):
            compile_pipeline(path)
