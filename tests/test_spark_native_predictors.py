"""Native tree and linear predictors against Spark's own ``transform`` (the oracle), row by row.

Models are trained in the process's local SparkSession on small fixed-seed data (binary, multiclass,
regression; a categorical feature made nominal by a StringIndexer before the VectorAssembler), several
saved together as one ``PipelineModel`` (each with its own output columns), compiled with
:func:`scorer.spark_native.pipeline.compile_pipeline` and fed the very feature vectors Spark scored:
random rows, NaN, infinities and huge/tiny magnitudes, values exactly on the fitted trees' thresholds,
and categorical values that are no category (-1, 2.5, numCategories, NaN). Every output column must
match: predictions exactly, everything else within 1e-9 relative.

The feature vectors are built in Spark (VectorAssembler, handleInvalid='keep') and handed to the
compiled model stages as a 2-D array: the native VectorAssembler is tested with the feature stages.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scorer.spark_native.base import InvalidData, Unsupported
from scorer.spark_native.layout import read_pipeline
from scorer.spark_native.pipeline import compile_pipeline
from scorer.spark_native.predictor import Classifier

CONT = ["x0", "x1", "x2", "x3"]
K = 6  # categories of the nominal feature


@pytest.fixture(scope="module")
def spark() -> Any:
    from scorer.jvm import spark_session

    return spark_session()


def _train_frame(spark: Any) -> Any:
    """400 rows: four continuous features, a 6-category string feature indexed alphabetically (so its
    index is the letter's position), labels for binary, 3-class, regression and positive targets."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StringIndexer, VectorAssembler

    from scorer.spark_ml import spark_frame

    rng = np.random.default_rng(7)
    n = 400
    x = rng.normal(size=(n, 4))
    c = rng.integers(0, K, size=n)
    cat_effect = np.array([0.0, 1.5, -1.0, 2.0, 0.5, -2.0])[c]
    z = x[:, 0] + 0.7 * x[:, 1] - 0.4 * x[:, 2] + cat_effect
    scores = np.stack([z, x[:, 2] + 0.5 * cat_effect, -z + x[:, 3]], axis=1) + rng.normal(scale=0.5, size=(n, 3))
    df = pd.DataFrame(x, columns=CONT)
    df["c"] = np.array(list("abcdef"))[c]
    df["y2"] = (z + rng.normal(scale=0.8, size=n) > 0).astype(float)
    df["y3"] = scores.argmax(axis=1).astype(float)
    df["yr"] = 2.0 * z + rng.normal(scale=0.3, size=n)
    df["ypos"] = np.exp(0.3 * z) * rng.gamma(4.0, 0.25, size=n)
    df["ycount"] = rng.poisson(np.exp(0.3 * z)).astype(float)
    counts = rng.poisson(2.0, size=(n, 4)).astype(float) + (c[:, None] == np.arange(4)) * 3
    for j in range(4):
        df[f"n{j}"] = counts[:, j]
    frame = spark_frame(spark, df, {})
    prep = Pipeline(stages=[
        StringIndexer(inputCol="c", outputCol="ci", stringOrderType="alphabetAsc"),
        VectorAssembler(inputCols=[*CONT, "ci"], outputCol="features"),
        VectorAssembler(inputCols=[f"n{j}" for j in range(4)], outputCol="counts"),
    ]).fit(frame)
    return prep.transform(frame).cache()


@pytest.fixture(scope="module")
def train(spark: Any) -> Any:
    return _train_frame(spark)


def _thresholds(path: Path) -> dict[int, list[float]]:
    """The continuous split thresholds of every saved tree model, per feature index."""
    found: dict[int, list[float]] = {}
    for stage in read_pipeline(path):
        if "Tree" not in stage.cls and "Forest" not in stage.cls and "GBT" not in stage.cls:
            continue
        for row in stage.rows("data"):
            node = row.get("nodeData", row)
            split = node["split"]
            if node["leftChild"] >= 0 and split["numCategories"] < 0:
                found.setdefault(split["featureIndex"], []).append(split["leftCategoriesOrThreshold"][0])
    return found


def _score_frame(spark: Any, thresholds: dict[int, list[float]]) -> Any:
    """Rows to score: random ones, then the edge cases named in the module docstring."""
    from pyspark.ml.feature import VectorAssembler

    from scorer.spark_ml import spark_frame

    rng = np.random.default_rng(11)
    rows = [np.concatenate([rng.normal(size=4) * 1.5, [rng.integers(0, K)]]) for _ in range(150)]
    for f, values in sorted(thresholds.items()):
        for t in values:
            row = np.concatenate([rng.normal(size=4), [rng.integers(0, K)]])
            row[f] = t
            rows.append(row)
            rows.append(np.where(np.arange(5) == f, np.nextafter(t, np.inf), row))
    for special in (np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, -0.0, 0.0):
        for f in range(4):
            row = np.concatenate([rng.normal(size=4), [rng.integers(0, K)]])
            row[f] = special
            rows.append(row)
    for cat in (-1.0, 2.5, float(K), float(K + 3), np.nan, 0.0, 5.0):
        rows.append(np.concatenate([rng.normal(size=4), [cat]]))
    x = np.array(rows)
    df = pd.DataFrame(x, columns=[*CONT, "ci"])
    counts = rng.poisson(2.0, size=(len(df), 4)).astype(float)
    counts[:3] = [[0, 0, 0, 0], [1e6, 0, 3, 0], [np.inf, 1, 0, 2]]
    for j in range(4):
        df[f"n{j}"] = counts[:, j]
        df[f"b{j}"] = (counts[:, j] > 1).astype(float)
    frame = spark_frame(spark, df, {})
    frame = VectorAssembler(inputCols=[*CONT, "ci"], outputCol="features", handleInvalid="keep").transform(frame)
    frame = VectorAssembler(inputCols=[f"n{j}" for j in range(4)], outputCol="counts", handleInvalid="keep").transform(frame)
    return VectorAssembler(inputCols=[f"b{j}" for j in range(4)], outputCol="binary", handleInvalid="keep").transform(frame)


def _as_array(values: pd.Series) -> np.ndarray:
    first = values.iloc[0] if len(values) else None
    if hasattr(first, "toArray"):
        return np.stack([v.toArray() for v in values]).astype(np.float64)
    return values.to_numpy(dtype=np.float64)


def _compare(spark: Any, models: list[Any], folder: Path, score: Any | None = None) -> list[Any]:
    """Save each of ``models`` as a one-stage PipelineModel (copies of one model share its uid, which a
    single pipeline does not allow), score with Spark (the saved pipelines loaded back, chained, one
    collect) and natively (each compiled with compile_pipeline, chained), and assert every output column
    of every stage matches. Returns the compiled pipelines."""
    from pyspark.ml import PipelineModel

    paths = []
    for i, model in enumerate(models):
        paths.append(folder / f"{i}_{model.uid}")
        PipelineModel(stages=[model]).write().overwrite().save(str(paths[-1]))
    return _check(spark, paths, score)


def _check(spark: Any, paths: list[Path], score: Any | None = None) -> list[Any]:
    from pyspark.ml import PipelineModel

    natives = [compile_pipeline(p) for p in paths]
    if score is None:
        found: dict[int, list[float]] = {}
        for p in paths:
            for f, values in _thresholds(p).items():
                found.setdefault(f, []).extend(values)
        score = _score_frame(spark, found)
    for p in paths:
        score = PipelineModel.load(str(p)).transform(score)
    out = score.toPandas()
    inputs = {c: _as_array(out[c]) for c in ("features", "counts", "binary") if c in out}
    got = dict(inputs)
    for native in natives:
        got = native.transform(got)
    checked = 0
    for native in natives:
        for stage in native.stages:
            for col in stage.outputs:
                expected = _as_array(out[col])
                if isinstance(stage, Classifier) and col == stage.prediction_col:
                    np.testing.assert_array_equal(got[col], expected, err_msg=f"{stage.uid} {col}")
                else:
                    np.testing.assert_allclose(got[col], expected, rtol=1e-9, atol=1e-12, err_msg=f"{stage.uid} {col}")
                checked += 1
    assert checked, "no output column compared"
    assert set(got) - set(inputs) == {c for n in natives for s in n.stages for c in s.outputs}
    return natives


def _named(model: Any, name: str, *, raw: bool = True, probability: bool = True) -> Any:
    model.setPredictionCol(f"{name}_pred")
    if hasattr(model, "setRawPredictionCol"):
        model.setRawPredictionCol(f"{name}_raw" if raw else "")
        model.setProbabilityCol(f"{name}_prob" if probability else "")
    return model


def test_tree_models_match_spark(spark: Any, train: Any, tmp_path: Path) -> None:
    """Decision tree, random forest and GBT classifiers and regressors (continuous and categorical splits,
    NaN going right, values on thresholds, non-category values) with every output-column combination and
    thresholds, equal Spark's transform."""
    from pyspark.ml.classification import (
        DecisionTreeClassifier,
        GBTClassifier,
        RandomForestClassifier,
    )
    from pyspark.ml.regression import DecisionTreeRegressor, GBTRegressor, RandomForestRegressor

    dt3 = DecisionTreeClassifier(labelCol="y3", maxDepth=6, seed=1).fit(train)
    rf3 = RandomForestClassifier(labelCol="y3", numTrees=12, maxDepth=5, seed=2).fit(train)
    gbt = GBTClassifier(labelCol="y2", maxIter=8, maxDepth=3, seed=3).fit(train)
    dtr = DecisionTreeRegressor(labelCol="yr", maxDepth=6, seed=4).fit(train)
    rfr = RandomForestRegressor(labelCol="yr", numTrees=8, maxDepth=5, seed=5).fit(train)
    gbtr = GBTRegressor(labelCol="yr", maxIter=8, maxDepth=3, seed=6).fit(train)
    models = [
        _named(dt3, "dt3"),
        _named(dt3.copy(), "dt3p", raw=False),
        _named(dt3.copy(), "dt3n", raw=False, probability=False).setThresholds([0.5, 0.2, 0.3]),
        _named(rf3, "rf3"),
        _named(rf3.copy(), "rf3t").setThresholds([0.2, 0.5, 0.0]),
        _named(rf3.copy(), "rf3tp", raw=False).setThresholds([0.3, 0.3, 0.4]),
        _named(gbt, "gbt"),
        _named(gbt.copy(), "gbtn", raw=False, probability=False),
        _named(gbt.copy(), "gbtt", raw=False, probability=False).setThresholds([0.3, 0.7]),
        _named(gbt.copy(), "gbtt2").setThresholds([0.6, 0.4]),
        _named(dtr, "dtr"),
        _named(rfr, "rfr"),
        _named(gbtr, "gbtr"),
    ]
    _compare(spark, models, tmp_path)
    # The data did exercise both categorical split forms and continuous ones.
    forms = set()
    for stage in (s for p in tmp_path.iterdir() for s in read_pipeline(p)):
        for row in stage.rows("data"):
            split = row.get("nodeData", row)["split"]
            if row.get("nodeData", row)["leftChild"] >= 0:
                k = split["numCategories"]
                forms.add("continuous" if k < 0 else ("left" if len(split["leftCategoriesOrThreshold"]) <= k // 2 else "complement"))
    assert forms == {"continuous", "left", "complement"}


def test_linear_models_match_spark(spark: Any, train: Any, tmp_path: Path) -> None:
    """Logistic regression (binary with threshold/thresholds incl. 0 and 1, multinomial with thresholds and
    a zero threshold, multinomial family on two classes, L1-sparse coefficients), linear regression and
    GLR families/links equal Spark's transform."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.regression import GeneralizedLinearRegression, LinearRegression

    lr2 = LogisticRegression(labelCol="y2", regParam=0.01).fit(train)
    lr3 = LogisticRegression(labelCol="y3", regParam=0.01).fit(train)
    lrm2 = LogisticRegression(labelCol="y2", family="multinomial", regParam=0.05).fit(train)
    lr_l1 = LogisticRegression(labelCol="y3", regParam=0.08, elasticNetParam=1.0).fit(train)
    linr = LinearRegression(labelCol="yr", regParam=0.1).fit(train)

    def glr(label: str, **params: Any) -> Any:
        return GeneralizedLinearRegression(labelCol=label, maxIter=25, regParam=0.01, **params).fit(train)

    glrs = [
        glr("yr", family="gaussian"),
        glr("y2", family="binomial"),
        glr("y2", family="binomial", link="cloglog"),
        glr("ycount", family="poisson"),
        glr("ypos", family="gamma", link="log"),
        glr("ypos", family="gamma"),
        glr("ypos", family="tweedie", variancePower=1.5),
        glr("ypos", family="tweedie", variancePower=1.5, linkPower=0.0),
        glr("ypos", family="tweedie", variancePower=0.0, linkPower=0.5),
    ]
    assert np.count_nonzero(lr_l1.coefficientMatrix.toArray() == 0) > 0
    models = [
        _named(lr2, "lr2"),
        _named(lr2.copy(), "lr2t").setThreshold(0.3),
        _named(lr2.copy(), "lr2t0").setThreshold(0.0),
        _named(lr2.copy(), "lr2t1", raw=False).setThreshold(1.0),
        _named(lr2.copy(), "lr2ts").setThresholds([0.7, 0.3]),
        _named(lr2.copy(), "lr2n", raw=False, probability=False).setThreshold(0.7),
        _named(lr3, "lr3"),
        _named(lr3.copy(), "lr3t").setThresholds([0.5, 0.2, 0.3]),
        _named(lr3.copy(), "lr3z", raw=False).setThresholds([0.4, 0.0, 0.6]),
        _named(lrm2, "lrm2"),
        _named(lr_l1, "lrl1"),
        _named(linr, "linr"),
    ]
    for i, m in enumerate(glrs):
        models.append(_named(m, f"glr{i}"))
    models[-1].setLinkPredictionCol("glr_link")
    _compare(spark, models, tmp_path)


def test_naive_bayes_matches_spark(spark: Any, train: Any, tmp_path: Path) -> None:
    """Naive Bayes: multinomial, complement and bernoulli on count/0-1 features, gaussian on the mixed
    ones (NaN and infinities included), with thresholds, equal Spark's transform."""
    from pyspark.ml.classification import NaiveBayes
    from pyspark.ml.feature import Binarizer

    binary = Binarizer(threshold=1.0, inputCol="counts", outputCol="binary").transform(train)
    models = [
        _named(NaiveBayes(labelCol="y3", featuresCol="counts", smoothing=0.5).fit(train), "nbm"),
        _named(NaiveBayes(labelCol="y3", featuresCol="counts", modelType="complement").fit(train), "nbc"),
        _named(NaiveBayes(labelCol="y2", featuresCol="binary", modelType="bernoulli").fit(binary), "nbb"),
        _named(NaiveBayes(labelCol="y3", modelType="gaussian").fit(train), "nbg"),
    ]
    models.append(_named(models[0].copy(), "nbmt").setThresholds([0.2, 0.5, 0.3]))
    natives = _compare(spark, models, tmp_path)
    # Spark's require: a negative count fails the batch; natively too (InvalidData, no value in the message).
    bad = {"counts": np.array([[1.0, -2.5, 0.0, 1.0]]), "features": np.zeros((1, 5)), "binary": np.zeros((1, 4))}
    with pytest.raises(InvalidData, match="counts") as err:
        natives[0].transform(bad)
    assert "-2.5" not in str(err.value)


def test_unsupported_params_fall_back(spark: Any, train: Any, tmp_path: Path) -> None:
    """A param combination without an exact native implementation is Unsupported at compile time, naming
    the stage: a tree's leafCol, a GLR offset column or probit link, a tree regressor's varianceCol."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import DecisionTreeClassifier
    from pyspark.ml.regression import DecisionTreeRegressor, GeneralizedLinearRegression

    dt = DecisionTreeClassifier(labelCol="y2", maxDepth=2).fit(train).setLeafCol("leaf")
    dtr = DecisionTreeRegressor(labelCol="yr", maxDepth=2, varianceCol="var").fit(train)
    probit = GeneralizedLinearRegression(labelCol="y2", family="binomial", link="probit", maxIter=5).fit(train)
    offset = GeneralizedLinearRegression(labelCol="yr", offsetCol="x3", maxIter=5).fit(train)
    for model, why in ((dt, "leafCol"), (dtr, "varianceCol"), (probit, "probit"), (offset, "offsetCol")):
        path = tmp_path / why
        PipelineModel(stages=[model]).write().overwrite().save(str(path))
        with pytest.raises(Unsupported, match=why) as err:
            compile_pipeline(path)
        assert model.uid in str(err.value)


def test_spark_2_0_logistic_layout(spark: Any, train: Any, tmp_path: Path) -> None:
    """A binary logistic regression saved in Spark 2.0's layout (``coefficients``/``intercept`` instead of
    ``coefficientMatrix``/``interceptVector``), rewritten from a fitted one: Spark 3.5 loads it (its
    reader's 2.0 branch) and the native reader scores it the same."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.mllib.linalg import Vectors as OldVectors

    model = _named(LogisticRegression(labelCol="y2", regParam=0.01).fit(train), "old").setThreshold(0.4)
    path = tmp_path / "old"
    PipelineModel(stages=[model]).write().overwrite().save(str(path))
    (stage_dir,) = (path / "stages").iterdir()
    meta_file = stage_dir / "metadata" / "part-00000"
    meta = json.loads(meta_file.read_text().splitlines()[0])
    meta["sparkVersion"] = "2.0.2"
    meta.pop("defaultParamMap", None)  # Spark 2.0 saved none
    meta["paramMap"].update({"featuresCol": "features", "probabilityCol": "old_prob", "rawPredictionCol": "old_raw"})
    meta_file.write_text(json.dumps(meta) + "\n")
    shutil.rmtree(stage_dir / "data")
    from pyspark.mllib.linalg import VectorUDT as OldVectorUDT
    from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType

    schema = StructType([
        StructField("numClasses", IntegerType()),
        StructField("numFeatures", IntegerType()),
        StructField("intercept", DoubleType()),
        StructField("coefficients", OldVectorUDT()),
    ])
    spark.createDataFrame(
        [(2, len(model.coefficients), float(model.intercept), OldVectors.dense(model.coefficients.toArray()))], schema
    ).write.parquet(str(stage_dir / "data"))
    assert "coefficients" in read_pipeline(path)[0].rows("data")[0]
    _check(spark, [path])
