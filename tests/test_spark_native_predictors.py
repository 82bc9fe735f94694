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
from scorer.spark_native.pipeline import compile_pipeline, compile_stage
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


def _set_params(model: Any) -> dict[str, Any]:
    """The params set on a model, as Spark's writer saves them in ``paramMap``."""
    return {p.name: v for p, v in model.extractParamMap().items() if model.isSet(p)}


def _compare(spark: Any, models: list[Any], folder: Path) -> list[Any]:
    """Save ``models`` and compare native with Spark on them, row by row (see :func:`_check`).

    A model's first occurrence is saved by Spark in one PipelineModel; a later copy of it that differs
    only in params (thresholds, output columns, link, modelType) is saved as that stage's folder with
    its own ``paramMap``: saving and loading each stage costs Spark seconds on a loaded machine. Spark
    scores the in-memory models; :func:`test_spark_2_0_logistic_layout` checks a Spark-loaded one."""
    from pyspark.ml import PipelineModel

    bases: list[Any] = []
    for m in models:
        if m.uid not in {b.uid for b in bases}:
            bases.append(m)
    path = folder / "pipeline"
    PipelineModel(stages=bases).write().overwrite().save(str(path))
    stage_dirs = {d.name.split("_", 1)[1]: d for d in (path / "stages").iterdir()}
    paths = [path]
    for i, m in enumerate(models):
        if any(m is b for b in bases):
            continue
        variant = folder / f"variant{i}"
        shutil.copytree(stage_dirs[m.uid], variant)
        meta_file = variant / "metadata" / "part-00000"
        meta = json.loads(meta_file.read_text().splitlines()[0])
        meta["paramMap"] = _set_params(m)
        meta_file.write_text(json.dumps(meta) + "\n")
        (meta_file.parent / ".part-00000.crc").unlink(missing_ok=True)
        paths.append(variant)
    natives = _check(spark, paths, spark_models=bases + [m for m in models if not any(m is b for b in bases)])
    assert sum(len(n.stages) for n in natives) == len(models)
    return natives


def _check(spark: Any, paths: list[Path], score: Any | None = None, spark_models: list[Any] | None = None) -> list[Any]:
    """Compile each saved path natively, score the same rows with Spark (``spark_models``, else the paths
    loaded by Spark), and assert every output column of every stage matches."""
    from pyspark.ml import PipelineModel

    natives = [compile_pipeline(p) for p in paths]
    if score is None:
        found: dict[int, list[float]] = {}
        for p in paths:
            for f, values in _thresholds(p).items():
                found.setdefault(f, []).extend(values)
        score = _score_frame(spark, found)
    if spark_models is not None:
        score = PipelineModel(stages=spark_models).transform(score)
    else:
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
    rf3 = RandomForestClassifier(labelCol="y3", numTrees=5, maxDepth=4, seed=2).fit(train)
    gbt = GBTClassifier(labelCol="y2", maxIter=2, maxDepth=3, seed=3).fit(train)
    dtr = DecisionTreeRegressor(labelCol="yr", maxDepth=4, seed=4).fit(train)
    rfr = RandomForestRegressor(labelCol="yr", numTrees=3, maxDepth=3, seed=5).fit(train)
    gbtr = GBTRegressor(labelCol="yr", maxIter=2, maxDepth=3, seed=6).fit(train)
    models = [
        _named(dt3, "dt3"),
        _named(dt3.copy(), "dt3n", raw=False, probability=False).setThresholds([0.5, 0.2, 0.3]),
        _named(rf3, "rf3").setThresholds([0.2, 0.5, 0.0]),
        _named(rf3.copy(), "rf3tp", raw=False).setThresholds([0.3, 0.3, 0.4]),
        _named(gbt, "gbt").setThresholds([0.6, 0.4]),
        _named(gbt.copy(), "gbtn", raw=False, probability=False),
        _named(dtr, "dtr"),
        _named(rfr, "rfr"),
        _named(gbtr, "gbtr"),
    ]
    _compare(spark, models, tmp_path)
    # The data did exercise both categorical split forms and continuous ones.
    forms = set()
    for stage in read_pipeline(tmp_path / "pipeline"):
        for row in stage.rows("data"):
            split = row.get("nodeData", row)["split"]
            if row.get("nodeData", row)["leftChild"] >= 0:
                k = split["numCategories"]
                forms.add("continuous" if k < 0 else ("left" if len(split["leftCategoriesOrThreshold"]) <= k // 2 else "complement"))
    assert forms == {"continuous", "left", "complement"}


def test_linear_models_match_spark(spark: Any, train: Any, tmp_path: Path) -> None:
    """Logistic regression (binary with threshold/thresholds incl. 0 and 1, multinomial with thresholds and
    a zero threshold, multinomial family on two classes, L1-sparse coefficients), linear regression, GLR
    families/links and naive Bayes (multinomial, complement and bernoulli on count/0-1 features, gaussian
    on the mixed ones) equal Spark's transform; a negative count fails natively as in Spark."""
    from pyspark.ml.classification import LogisticRegression, NaiveBayes
    from pyspark.ml.feature import Binarizer
    from pyspark.ml.regression import GeneralizedLinearRegression, LinearRegression

    lr2 = LogisticRegression(labelCol="y2", regParam=0.01, maxIter=6).fit(train)
    lr3 = LogisticRegression(labelCol="y3", regParam=0.01, maxIter=6).fit(train)
    lrm2 = LogisticRegression(labelCol="y2", family="multinomial", regParam=0.05, maxIter=5).fit(train)
    lr_l1 = LogisticRegression(labelCol="y3", regParam=0.08, elasticNetParam=1.0, maxIter=8).fit(train)
    linr = LinearRegression(labelCol="yr", regParam=0.1, solver="normal").fit(train)

    def glr(label: str, **params: Any) -> Any:
        return GeneralizedLinearRegression(labelCol=label, maxIter=3, regParam=0.01, **params).fit(train)

    binomial, positive = glr("y2", family="binomial", link="cloglog"), glr("ypos", family="gamma")
    glrs = [  # other families and links on the same coefficients: Spark scores them as saved
        binomial,
        binomial.copy({binomial.link: "logit"}),
        binomial.copy({binomial.link: "probit"}),
        positive,
        positive.copy({positive.family: "poisson", positive.link: "log"}),
        positive.copy({positive.family: "tweedie", positive.variancePower: 1.5}),
        positive.copy({positive.family: "tweedie", positive.variancePower: 0.0, positive.linkPower: 0.5}),
        positive.copy({positive.family: "tweedie", positive.variancePower: 1.2, positive.linkPower: -0.7}),
        positive.copy({positive.family: "gaussian", positive.link: "identity"}),
    ]
    assert np.count_nonzero(lr_l1.coefficientMatrix.toArray() == 0) > 0
    models = [
        _named(lr2, "lr2"),
        _named(lr2.copy(), "lr2t0").setThreshold(0.0),
        _named(lr2.copy(), "lr2t1", raw=False).setThreshold(1.0),
        _named(lr2.copy(), "lr2ts").setThresholds([0.7, 0.3]),
        _named(lr2.copy(), "lr2n", raw=False, probability=False).setThreshold(0.3),
        _named(lr3, "lr3").setThresholds([0.5, 0.2, 0.3]),
        _named(lr3.copy(), "lr3z", raw=False).setThresholds([0.4, 0.0, 0.6]),
        _named(lrm2, "lrm2"),
        _named(lr_l1, "lrl1"),
        _named(linr, "linr"),
    ]
    for i, m in enumerate(glrs):
        models.append(_named(m, f"glr{i}"))
    models[-1].setLinkPredictionCol("glr_link")
    models.append(_named(glrs[0].copy(), "glr_linkonly").setLinkPredictionCol("glr_link2").setPredictionCol(""))
    binary = Binarizer(threshold=1.0, inputCol="counts", outputCol="binary").transform(train)
    nbb = NaiveBayes(labelCol="y2", featuresCol="binary", modelType="bernoulli").fit(binary)
    nbm = NaiveBayes(labelCol="y3", featuresCol="counts", smoothing=0.5).fit(train)
    models += [
        _named(nbm, "nbm"),
        _named(nbm.copy(), "nbmt").setThresholds([0.2, 0.5, 0.3]),
        _named(nbb, "nbb"),
        _named(nbb.copy({nbb.modelType: "complement", nbb.featuresCol: "counts"}), "nbc"),
        _named(NaiveBayes(labelCol="y3", modelType="gaussian").fit(train), "nbg"),
    ]
    natives = _compare(spark, models, tmp_path)
    # Spark's require: a negative count fails the batch; natively too (InvalidData, no value in the message).
    bad = {"counts": np.array([[1.0, -2.5, 0.0, 1.0]]), "features": np.zeros((1, 5)), "binary": np.zeros((1, 4))}
    with pytest.raises(InvalidData, match="counts") as err:
        natives[-1].transform(bad)
    assert "-2.5" not in str(err.value)


def test_unsupported_params_fall_back(spark: Any, train: Any, tmp_path: Path) -> None:
    """A param combination without an exact native implementation is Unsupported at compile time, naming
    the stage: a tree's leafCol, a GLR offset column, a tree regressor's varianceCol."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import DecisionTreeClassifier
    from pyspark.ml.regression import DecisionTreeRegressor, GeneralizedLinearRegression

    dt = DecisionTreeClassifier(labelCol="y2", maxDepth=1).fit(train)
    dtr = DecisionTreeRegressor(labelCol="yr", maxDepth=1).fit(train)
    glr = GeneralizedLinearRegression(labelCol="y2", family="binomial", maxIter=1).fit(train)
    cases = [
        (dt.copy().setLeafCol("leaf"), "leafCol"),
        (dtr.copy({dtr.varianceCol: "var"}), "varianceCol"),
        (glr.copy({glr.offsetCol: "x3"}), "offsetCol"),
    ]
    path = tmp_path / "pipeline"
    PipelineModel(stages=[m for m, _ in cases]).write().overwrite().save(str(path))
    files = read_pipeline(path)
    for stage, (model, why) in zip(files, cases):
        with pytest.raises(Unsupported, match=why) as err:
            compile_stage(stage)
        assert model.uid in str(err.value)
    with pytest.raises(Unsupported, match="leafCol"):
        compile_pipeline(path)


def test_probit_is_spark_s_own_normal_cdf(spark: Any) -> None:
    """The probit link's CDF is commons-math's erf as the JVM computes it: within 1 ulp of the JVM's
    ``Erf.erf`` on a grid across both the series and the continued-fraction branch and the tails, and
    ``Probit.unlink`` (breeze's Gaussian cdf) within 2e-14 relative. (libm's erf misses both bounds:
    3 ulps, 6e-14.)"""
    import math

    from scorer.spark_native.special import commons_erf, probit_unlink

    erf = spark._jvm.org.apache.commons.math3.special.Erf.erf
    x = np.concatenate([np.linspace(-7.0, 7.0, 1401), [0.0, -0.0, 1e-300, math.sqrt(1.5), -math.sqrt(1.5),
                                                       np.nextafter(math.sqrt(1.5), 0.0), 39.5, -40.5, 1e308]])
    jvm = np.array([erf(float(v)) for v in x])
    assert np.max(np.abs(commons_erf(x) - jvm)) <= np.finfo(float).eps
    eta = x * math.sqrt(2.0)
    cdf = np.array([0.5 * (1 + erf(float(v) / math.sqrt(2.0))) for v in eta])
    mine = probit_unlink(eta)
    tiny = cdf == 0.0
    assert np.array_equal(mine[tiny], cdf[tiny]) and tiny.sum() > 10  # the far tail: 0, exactly, both
    np.testing.assert_allclose(mine[~tiny], cdf[~tiny], rtol=2e-14, atol=0)
    assert np.isnan(commons_erf(np.array([np.nan]))[0])


def test_spark_2_0_logistic_layout(spark: Any, tmp_path: Path) -> None:
    """A binary logistic regression in Spark 2.0's layout (``coefficients``/``intercept`` instead of
    ``coefficientMatrix``/``interceptVector``, metadata without ``defaultParamMap``): Spark 3.5 loads it
    (its reader's 2.0 branch) and scores it as the native reader does."""
    from pyspark.ml.classification import LogisticRegressionModel
    from pyspark.mllib.linalg import Vectors as OldVectors
    from pyspark.mllib.linalg import VectorUDT as OldVectorUDT
    from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType

    path = tmp_path / "old"
    (path / "metadata").mkdir(parents=True)
    params = {
        "featuresCol": "features", "labelCol": "label", "predictionCol": "old_pred", "probabilityCol": "old_prob",
        "rawPredictionCol": "old_raw", "threshold": 0.4, "fitIntercept": True, "regParam": 0.01,
        "elasticNetParam": 0.0, "maxIter": 100, "tol": 1e-6, "standardization": True,
    }
    meta = {"class": "org.apache.spark.ml.classification.LogisticRegressionModel", "timestamp": 1480000000000,
            "sparkVersion": "2.0.2", "uid": "logreg_2a0c0ffee000", "paramMap": params}
    (path / "metadata" / "part-00000").write_text(json.dumps(meta) + "\n")
    coefficients = np.random.default_rng(3).normal(size=5)
    schema = StructType([
        StructField("numClasses", IntegerType()),
        StructField("numFeatures", IntegerType()),
        StructField("intercept", DoubleType()),
        StructField("coefficients", OldVectorUDT()),
    ])
    spark.createDataFrame([(2, 5, 0.25, OldVectors.dense(coefficients))], schema).write.parquet(str(path / "data"))
    assert "coefficients" in read_pipeline(path)[0].rows("data")[0]
    _check(spark, [path], spark_models=[LogisticRegressionModel.load(str(path))])
