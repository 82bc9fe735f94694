"""Native feature stages (scorer.spark_native.features) against Spark's own ``transform``.

Each case fits or builds the stage in a real local Spark, saves it inside a ``PipelineModel``,
compiles the saved directory natively and compares every output column with what Spark's
``transform`` gives on the same rows (fed the way scorer feeds Spark: Arrow, NaN -> null): indices,
buckets and strings exactly, other numbers within 1e-9 relative. Where Spark's transform fails
(``handleInvalid='error'``), the native stage must raise InvalidData. Data is random with fixed seeds
plus the edge cases of each stage (nulls, unseen labels, values on split points, extreme magnitudes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scorer.spark_native.base import Columns, InvalidData, Unsupported
from scorer.spark_native.pipeline import compile_pipeline

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


def compare(spark: Any, stages: list[Any], df: pd.DataFrame, tmp: Path, *, exact: bool = False) -> dict[str, np.ndarray]:
    """Spark's transform and the native pipeline on ``df`` (with a row id), every output column equal."""
    from pyspark.ml import PipelineModel

    from scorer.spark_ml import spark_frame

    df = df.assign(rid=np.arange(len(df), dtype=np.float64))
    path = _save(stages, tmp)
    native = compile_pipeline(path).transform(_columns(df))
    types = {c: "float" if pd.api.types.is_numeric_dtype(df[c]) else "string" for c in df.columns}
    rows = PipelineModel(stages=stages).transform(spark_frame(spark, df, types)).collect()
    spark_cols = {c: _spark_values([r[c] for r in rows]) for c in (rows[0].__fields__ if rows else [])}
    if not rows:
        assert len(native["rid"]) == 0
        return native
    assert set(native) == set(spark_cols), (sorted(native), sorted(spark_cols))
    np.testing.assert_array_equal(native["rid"], spark_cols["rid"])
    for name, expected in spark_cols.items():
        got = native[name]
        if expected.dtype == object or got.dtype == object:
            assert list(got) == list(expected), name
        elif exact:
            np.testing.assert_array_equal(got, expected, err_msg=name)
        else:
            assert got.shape == expected.shape, name
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=name)
    return native


def both_fail(spark: Any, stages: list[Any], df: pd.DataFrame, tmp: Path) -> None:
    """Spark's transform raises on ``df``, and so does the native pipeline (InvalidData)."""
    from pyspark.ml import PipelineModel

    from scorer.spark_ml import spark_frame

    native = compile_pipeline(_save(stages, tmp))
    with pytest.raises(InvalidData):
        native.transform(_columns(df))
    types = {c: "float" if pd.api.types.is_numeric_dtype(df[c]) else "string" for c in df.columns}
    with pytest.raises(Exception) as caught:
        PipelineModel(stages=stages).transform(spark_frame(spark, df, types)).collect()
    assert not isinstance(caught.value, InvalidData)


def _strings(rng: np.random.Generator, pool: list[str], n: int, null_rate: float = 0.1) -> list[str | None]:
    return [None if rng.random() < null_rate else str(rng.choice(pool)) for _ in range(n)]


# ----------------------------------------------------------------------------------------- StringIndexer


@pytest.mark.parametrize("seed", [1, 2])
def test_string_indexer_every_mode_and_order(spark: Any, tmp_path: Path, seed: int) -> None:
    """Multi-column StringIndexer, each handleInvalid mode, random order types, nulls and unseen labels."""
    from pyspark.ml.feature import StringIndexer

    rng = np.random.default_rng(seed)
    train = pd.DataFrame({"a": _strings(rng, ["x", "y", "z", "w", ""], 60), "b": _strings(rng, ["p", "q", "r"], 60)})
    score = pd.DataFrame({"a": _strings(rng, ["x", "y", "z", "w", "", "new"], 80), "b": _strings(rng, ["p", "q", "r", "s"], 80)})
    types = {"a": "string", "b": "string"}
    from scorer.spark_ml import spark_frame

    fit_df = spark_frame(spark, train, types)
    orders = ["frequencyDesc", "frequencyAsc", "alphabetDesc", "alphabetAsc"]
    order = orders[seed % 4]
    for mode in ("keep", "skip"):
        model = StringIndexer(inputCols=["a", "b"], outputCols=["ai", "bi"], handleInvalid=mode, stringOrderType=order).fit(fit_df)
        native = compare(spark, [model], score, tmp_path, exact=True)
        assert (len(native["rid"]) < len(score)) == (mode == "skip")
    model = StringIndexer(inputCol="a", handleInvalid="error", stringOrderType=orders[(seed + 1) % 4]).fit(fit_df)
    valid = pd.DataFrame({"a": [v for v in train["a"] if pd.notna(v)]})
    compare(spark, [model], valid, tmp_path, exact=True)  # default outputCol: <uid>__output
    both_fail(spark, [model], pd.DataFrame({"a": ["x", "never seen"]}), tmp_path)
    both_fail(spark, [model], pd.DataFrame({"a": ["x", None]}), tmp_path)


def test_string_indexer_numeric_input_is_cast_to_string(spark: Any, tmp_path: Path) -> None:
    """A double column is indexed by Spark's cast to string ("1.0"); a double whose Java string a
    label could spell, but not provably, is Unsupported natively."""
    from pyspark.ml.feature import StringIndexer

    from scorer.spark_ml import spark_frame

    train = pd.DataFrame({"x": [1.0, 2.0, 2.0, -3.0, 0.0, 1e6, 0.5, 12345678.0]})
    model = StringIndexer(inputCol="x", outputCol="xi", handleInvalid="keep").fit(spark_frame(spark, train, {"x": "float"}))
    score = pd.DataFrame({"x": [1.0, 2.0, -3.0, 0.0, 1e6, 7.0, np.nan, 0.25, 1e300, -1e-300, -0.0 + 4]})
    compare(spark, [model], score, tmp_path, exact=True)
    native = compile_pipeline(_save([model], tmp_path))
    for ambiguous in (0.5, 12345678.0):
        with pytest.raises(Unsupported):
            native.transform(_columns(pd.DataFrame({"x": [1.0, ambiguous]})))


def test_string_indexer_spark2_layout(spark: Any, tmp_path: Path) -> None:
    """The Spark 2.x data layout (one ``labels`` column) is read like Spark 3.5's reader reads it."""
    import pyarrow as pa
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import StringIndexer

    from scorer.spark_ml import spark_frame

    train = pd.DataFrame({"a": ["u", "v", "v", "w", "w", "w"]})
    model = StringIndexer(inputCol="a", outputCol="ai", handleInvalid="keep").fit(spark_frame(spark, train, {"a": "string"}))
    path = _save([model], tmp_path)
    stage_dir = next((path / "stages").iterdir())
    data = next((stage_dir / "data").glob("*.parquet"))
    labels = pq.read_table(data).column("labelsArray")[0].as_py()[0]
    pq.write_table(pa.table({"labels": [labels]}), data)
    meta_file = stage_dir / "metadata" / "part-00000"
    meta_file.write_text(meta_file.read_text().replace('"sparkVersion":"3.5', '"sparkVersion":"2.4'))
    for crc in stage_dir.rglob("*.crc"):
        crc.unlink()
    score = pd.DataFrame({"a": ["w", "u", None, "zz", "v"]})
    native = compile_pipeline(path).transform(_columns(score))
    loaded = PipelineModel.load(str(path))
    rows = loaded.transform(spark_frame(spark, score, {"a": "string"})).collect()
    np.testing.assert_array_equal(native["ai"], [r["ai"] for r in rows])


# ---------------------------------------------------------------------------------------- OneHotEncoder


@pytest.mark.parametrize("seed", [3, 4])
def test_one_hot_encoder(spark: Any, tmp_path: Path, seed: int) -> None:
    """dropLast x handleInvalid, category sizes from data; unseen, negative, fractional and null inputs."""
    from pyspark.ml.feature import OneHotEncoder

    from scorer.spark_ml import spark_frame

    rng = np.random.default_rng(seed)
    train = pd.DataFrame({"a": rng.integers(0, 4, 50).astype(float), "b": rng.integers(0, 2, 50).astype(float)})
    fit_df = spark_frame(spark, train, {"a": "float", "b": "float"})
    odd = [5.0, -1.0, 1.5, 3.999, np.nan, 0.0, 4.0, -0.5]
    score = pd.DataFrame(
        {
            "a": np.concatenate([rng.integers(0, 4, 40).astype(float), odd]),
            "b": np.concatenate([rng.integers(0, 2, 40).astype(float), odd[::-1]]),
        }
    )
    drop_last = seed % 2 == 0
    model = OneHotEncoder(inputCols=["a", "b"], outputCols=["av", "bv"], dropLast=drop_last, handleInvalid="keep").fit(fit_df)
    compare(spark, [model], score, tmp_path, exact=True)
    strict = OneHotEncoder(inputCol="a", outputCol="av", dropLast=not drop_last).fit(fit_df)
    compare(spark, [strict], score.iloc[:40].assign(a=list(score["a"][:38]) + [1.5, np.nan]), tmp_path, exact=True)
    both_fail(spark, [strict], pd.DataFrame({"a": [1.0, 4.0]}), tmp_path)
    both_fail(spark, [strict], pd.DataFrame({"a": [1.0, -1.0]}), tmp_path)


# -------------------------------------------------------------------------------------- VectorAssembler


@pytest.mark.parametrize("mode", ["keep", "skip", "error"])
def test_vector_assembler(spark: Any, tmp_path: Path, mode: str) -> None:
    """Scalars and a one-hot vector (null when its input is null) assembled under each mode."""
    from pyspark.ml.feature import OneHotEncoder, VectorAssembler

    from scorer.spark_ml import spark_frame

    rng = np.random.default_rng(5)
    n = 40
    x = rng.normal(0, 1e3, n)
    x[[0, 5]] = [1e308, -1e-308]
    y = rng.integers(-2, 3, n).astype(float)
    c = rng.integers(0, 3, n).astype(float)
    if mode != "error":
        x[[3, 9]] = np.nan
        c[[4, 9]] = np.nan
    df = pd.DataFrame({"x": x, "y": y, "c": c})
    ohe = OneHotEncoder(inputCol="c", outputCol="cv").fit(spark_frame(spark, df.fillna(0.0), {}))
    va = VectorAssembler(inputCols=["x", "cv", "y"], outputCol="features", handleInvalid=mode)
    native = compare(spark, [ohe, va], df, tmp_path)
    assert native["features"].shape[1] == 4
    if mode == "error":
        both_fail(spark, [ohe, va], df.assign(x=[np.nan] + list(x[1:])), tmp_path)
        both_fail(spark, [ohe, va], df.assign(c=[np.nan] + list(c[1:])), tmp_path)


# ----------------------------------------------------------------------------------------------- Imputer


@pytest.mark.parametrize("strategy", ["mean", "median", "mode"])
def test_imputer(spark: Any, tmp_path: Path, strategy: str) -> None:
    """Surrogates from data, the default (NaN) and a set missingValue, several columns."""
    from pyspark.ml.feature import Imputer

    from scorer.spark_ml import spark_frame

    rng = np.random.default_rng(6)
    a = rng.normal(5, 2, 60)
    b = rng.integers(-1, 4, 60).astype(float) * 1e200
    a[rng.random(60) < 0.2] = np.nan
    b[rng.random(60) < 0.2] = np.nan
    df = pd.DataFrame({"a": a, "b": b})
    fit_df = spark_frame(spark, df, {})
    model = Imputer(inputCols=["a", "b"], outputCols=["ai", "bi"], strategy=strategy).fit(fit_df)
    compare(spark, [model], df, tmp_path)
    minus_one = Imputer(inputCol="b", outputCol="bi", missingValue=-1e200, strategy=strategy).fit(fit_df)
    compare(spark, [minus_one], df, tmp_path)


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


@pytest.mark.parametrize("with_mean,with_std", [(True, True), (False, True), (True, False), (False, False)])
def test_standard_scaler(spark: Any, tmp_path: Path, with_mean: bool, with_std: bool) -> None:
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    from scorer.spark_ml import spark_frame

    df = _features(7)
    va = VectorAssembler(inputCols=list(df.columns), outputCol="f")
    fit_df = va.transform(spark_frame(spark, df, {}))
    scaler = StandardScaler(inputCol="f", outputCol="s", withMean=with_mean, withStd=with_std).fit(fit_df)
    compare(spark, [va, scaler], _features(8), tmp_path)


def test_min_max_and_max_abs_scalers(spark: Any, tmp_path: Path) -> None:
    """MinMaxScaler (set min/max, a constant feature, NaN kept) and MaxAbsScaler (a zero feature)."""
    from pyspark.ml.feature import MaxAbsScaler, MinMaxScaler, VectorAssembler

    from scorer.spark_ml import spark_frame

    df = _features(9)
    va = VectorAssembler(inputCols=list(df.columns), outputCol="f", handleInvalid="keep")
    fit_df = va.transform(spark_frame(spark, df, {}))
    score = _features(10)
    score.loc[[2, 7], "u"] = np.nan
    mm = MinMaxScaler(inputCol="f", outputCol="m", min=-3.0, max=5.5).fit(fit_df)
    ma = MaxAbsScaler(inputCol="f", outputCol="a").fit(fit_df)
    mm_default = MinMaxScaler(inputCol="f", outputCol="m2").fit(fit_df)
    compare(spark, [va, mm, ma, mm_default], score, tmp_path)


# -------------------------------------------------------------------------------------------- Bucketizer


@pytest.mark.parametrize("mode", ["keep", "skip", "error"])
def test_bucketizer(spark: Any, tmp_path: Path, mode: str) -> None:
    """Single and multi-column splits, values on split points, -0.0, infinities, nulls per mode."""
    from pyspark.ml.feature import Bucketizer

    rng = np.random.default_rng(11)
    s1 = [-np.inf, -1.0, 0.0, 2.5, np.inf]
    s2 = [-10.0, 0.0, 10.0, 100.0]
    a = np.concatenate([rng.normal(0, 3, 40), s1[1:-1], [-0.0, np.inf, -np.inf, 1e308]])
    b = np.concatenate([rng.uniform(-10, 100, 40), s2, [-0.0, 5e-324, 99.99999999999999]])
    if mode != "error":
        a[[1, 8]] = np.nan
        b[[2, 8]] = np.nan
    df = pd.DataFrame({"a": a, "b": b})
    multi = Bucketizer(splitsArray=[s1, s2], inputCols=["a", "b"], outputCols=["ab", "bb"], handleInvalid=mode)
    native = compare(spark, [multi], df, tmp_path, exact=True)
    assert (len(native["rid"]) < len(df)) == (mode == "skip")
    single = Bucketizer(splits=s2, inputCol="b", outputCol="bb", handleInvalid=mode)
    compare(spark, [single], df[["b"]], tmp_path, exact=True)
    both_fail(spark, [single], pd.DataFrame({"b": [5.0, 100.5]}), tmp_path)  # outside the splits, every mode
    both_fail(spark, [single], pd.DataFrame({"b": [5.0, -10.000000001]}), tmp_path)


def test_quantile_discretizer(spark: Any, tmp_path: Path) -> None:
    """QuantileDiscretizer's fitted model is a Bucketizer with -inf/+inf outer splits."""
    from pyspark.ml.feature import QuantileDiscretizer

    from scorer.spark_ml import spark_frame

    rng = np.random.default_rng(12)
    df = pd.DataFrame({"x": rng.exponential(3, 200), "y": rng.integers(0, 7, 200).astype(float)})
    model = QuantileDiscretizer(inputCols=["x", "y"], outputCols=["xq", "yq"], numBuckets=5, handleInvalid="keep").fit(
        spark_frame(spark, df, {})
    )
    splits = model.getSplitsArray()
    x = np.concatenate([rng.exponential(3, 50), splits[0][1:-1], [np.nan]])
    y = np.resize(np.concatenate([splits[1][1:-1], [np.nan, -3.0, 12.0]]), len(x))
    score = pd.DataFrame({"x": x, "y": y})
    compare(spark, [model], score, tmp_path, exact=True)


# ----------------------------------------------------------------------------------------- IndexToString


def test_index_to_string(spark: Any, tmp_path: Path) -> None:
    from pyspark.ml.feature import IndexToString

    rng = np.random.default_rng(13)
    labels = ["zero", "one", "two", ""]
    stage = IndexToString(inputCol="i", outputCol="s", labels=labels)
    idx = np.concatenate([rng.integers(0, 4, 30).astype(float), [3.9, -0.5, 0.0, np.nan]])
    compare(spark, [stage], pd.DataFrame({"i": idx}), tmp_path)
    both_fail(spark, [stage], pd.DataFrame({"i": [1.0, 4.0]}), tmp_path)
    both_fail(spark, [stage], pd.DataFrame({"i": [1.0, -1.0]}), tmp_path)
    with pytest.raises(Unsupported):
        compile_pipeline(_save([IndexToString(inputCol="i", outputCol="s")], tmp_path))


# ---------------------------------------------------------------------------------------- SQLTransformer


def test_sql_transformer_projection(spark: Any, tmp_path: Path) -> None:
    """``SELECT`` of bare (or backquoted) columns with aliases runs natively; anything else is Unsupported."""
    from pyspark.ml.feature import SQLTransformer

    rng = np.random.default_rng(14)
    df = pd.DataFrame({"a": rng.normal(size=10), "b c": rng.normal(size=10), "s": ["p", None] * 5})
    for statement in (
        "SELECT * FROM __THIS__",
        "SELECT *, a AS a2 FROM __THIS__",
        "select rid, `b c` as bc, s, A as `x``y` from __THIS__",
    ):
        compare(spark, [SQLTransformer(statement=statement)], df, tmp_path)
    for statement in (
        "SELECT a + 1 AS b FROM __THIS__",
        "SELECT * FROM __THIS__ WHERE a > 0",
        "SELECT upper(s) FROM __THIS__",
        "SELECT a, a FROM __THIS__",
        "SELECT DISTINCT a FROM __THIS__",
        "SELECT a FROM __THIS__ LIMIT 1",
        "SELECT a.b FROM __THIS__",
    ):
        with pytest.raises(Unsupported):
            compile_pipeline(_save([SQLTransformer(statement=statement)], tmp_path))
