"""Random Spark ML pipelines, fitted in real Spark and scored both by Spark and natively, compared.

From one integer seed, :func:`make_case` builds a training frame, a random ``Pipeline`` of the stages
``scorer.spark_native`` claims (issue 15) and a plan for a *different* scoring frame; :func:`run_case`
fits the pipeline in the process's local SparkSession, saves it, builds the scoring frame (unseen
levels, nulls, NaN, extreme magnitudes, and values exactly on the fitted bucket splits and tree
thresholds), scores it with ``PipelineModel.load(dir).transform`` and with
``scorer.spark_native.pipeline.compile_pipeline(dir).transform`` and compares every column Spark adds
under the exactness contract (indices, one-hot vectors, class predictions and labels equal; every
other number within 1e-9 relative). Where Spark's transform raises, native must raise
:class:`~scorer.spark_native.base.InvalidData`; where Spark drops rows, native drops the same rows
(a pass-through row id tells). A pipeline native reports :class:`~scorer.spark_native.base.Unsupported`
is counted apart. Everything about a case follows from its seed, so a reported seed reproduces it
(``scripts/spark-native-soak --seed N --count 1``).

Shared by ``tests/test_spark_native_property.py`` (a fixed-seed CI set) and
``scripts/spark-native-soak`` (the longer run).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

LEVELS = ["a", "b", "c", "d", "e", "f", "g"]
UNSEEN = ["zz", "", "A", "a "]  # never in a training frame: "" and case/space variants are other labels
EXTREMES = [1e300, -1e300, 5e-324, -0.0, 0.0, 1e-300, 1.7976931348623157e308, -3.5e15]
CLASSIFIERS = ["lr", "dtc", "rfc", "gbtc", "nb"]
REGRESSORS = ["linreg", "glr", "dtr", "rfr", "gbtr"]


@dataclass
class Case:
    """One random pipeline and its data, all from ``seed``."""

    seed: int
    train: pd.DataFrame
    numeric: list[str]  # numeric input columns (float64, NaN = null)
    strings: list[str]  # string input columns (object, None = null)
    stages: list[Any]  # pyspark stages (estimators, transformers, a pre-fitted label indexer)
    describe: list[str]  # one line per stage: class and the random params chosen
    exact: set[str]  # output columns compared exactly (indices, one-hot, class predictions, labels)
    label: str | None  # the raw label column (kept out of the scoring frame half the time)
    score_label: bool  # whether the scoring frame carries the label column
    bad_strings: bool  # scoring frame has unseen levels and nulls in string columns
    bad_numbers: bool  # scoring frame has NaN in numeric columns
    identity: dict[str, str] = field(default_factory=dict)  # column name -> raw numeric column equal to it
    boundaries: dict[str, list[float]] = field(default_factory=dict)  # raw column -> values to hit exactly


@dataclass
class Result:
    seed: int
    status: str  # "match", "mismatch", "unsupported", "fit-failed"
    describe: list[str]
    detail: str = ""
    both_raised: bool = False
    rows_dropped: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase (fit, save, spark, native)


# --- generation ---------------------------------------------------------------------------------


def _numeric_column(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.choice(["normal", "repeated", "wide", "int"])
    if kind == "normal":
        return rng.normal(rng.uniform(-5, 5), rng.uniform(0.1, 10), n)
    if kind == "repeated":  # few distinct values: ties for mode, quantiles and tree thresholds
        return rng.choice(rng.normal(0, 3, int(rng.integers(2, 6))).round(2), n)
    if kind == "wide":  # magnitudes over many decades, both signs
        return rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-3, 6, n)
    return rng.integers(0, 12, n).astype(float)


def _string_column(rng: np.random.Generator, n: int) -> np.ndarray:
    k = int(rng.integers(2, 6))
    levels = list(rng.choice(LEVELS, k, replace=False))
    if rng.random() < 0.3:  # equal frequencies: stringOrderType's tie-break (alphabetical) decides
        values = np.array((levels * (n // k + 1))[:n], dtype=object)
        rng.shuffle(values)
        return values
    weights = rng.dirichlet(np.ones(k))
    return rng.choice(np.array(levels, dtype=object), n, p=weights)


def make_case(seed: int) -> Case:
    """The pipeline and training frame of ``seed`` (pyspark stages: pyspark must be importable)."""
    from pyspark.ml import feature as F

    rng = np.random.default_rng(seed)
    n = int(rng.integers(100, 260))
    numeric = [f"x{i}" for i in range(int(rng.integers(1, 5)))]
    strings = [f"s{i}" for i in range(int(rng.integers(0, 4)))]
    if not numeric and not strings:
        numeric = ["x0"]
    train = pd.DataFrame({c: _numeric_column(rng, n) for c in numeric})
    for c in strings:
        train[c] = _string_column(rng, n)
    predictor = str(rng.choice(CLASSIFIERS + REGRESSORS))
    stages: list[Any] = []
    describe: list[str] = []
    exact: set[str] = set()
    identity = {c: c for c in numeric}
    boundaries: dict[str, list[float]] = {}
    nonneg: list[str] = []  # assembler inputs that are never negative (NaiveBayes)
    binary: list[str] = []  # assembler inputs that are 0/1 (Bernoulli NaiveBayes)
    bad_strings = bool(rng.random() < 0.5)
    bad_numbers = bool(rng.random() < 0.5)

    def add(stage: Any, text: str) -> None:
        stages.append(stage)
        describe.append(f"{type(stage).__name__}({text})")

    # Imputer: its columns may be null/NaN at training time too.
    scalars: list[str] = list(numeric)  # numeric scalar columns available to later stages
    if numeric and rng.random() < 0.5:
        cols = [c for c in numeric if rng.random() < 0.7] or numeric[:1]
        strategy = str(rng.choice(["mean", "median", "mode"]))
        imp = F.Imputer(inputCols=cols, outputCols=[f"{c}_imp" for c in cols], strategy=strategy)
        text = f"{cols}, strategy={strategy}"
        if rng.random() < 0.2:  # a repeated value as the missing marker
            marker = float(train[cols[0]].iloc[0])
            imp.setMissingValue(marker)
            text += f", missingValue={marker!r}"
        add(imp, text)
        for c in cols:
            train.loc[rng.random(n) < 0.15, c] = np.nan
            scalars[scalars.index(c)] = f"{c}_imp"
            identity[f"{c}_imp"] = c
    clean = [c for c in numeric if f"{c}_imp" not in scalars]  # raw columns that must be NaN-free in training

    # Bucketizer / QuantileDiscretizer on some scalar columns.
    buckets: list[str] = []
    if scalars and rng.random() < 0.4:
        cols = [c for c in scalars if rng.random() < 0.5] or scalars[:1]
        invalid = str(rng.choice(["error", "skip", "keep"]))
        outs = [f"{c}_bk" for c in cols]
        if rng.random() < 0.5:
            splits = []
            for c in cols:
                raw = train[identity[c]].dropna().to_numpy()
                inner = np.unique(np.quantile(raw, sorted(rng.uniform(0, 1, int(rng.integers(1, 4))))))
                lo = [-np.inf] if rng.random() < 0.7 else [float(raw.min())]
                hi = [np.inf] if rng.random() < 0.7 else [float(raw.max())]
                s = sorted(set(lo + [float(v) for v in inner] + hi))
                if len(s) < 3:
                    s = [-np.inf, float(np.median(raw)), np.inf]
                splits.append(s)
                boundaries.setdefault(identity[c], []).extend(v for v in s if np.isfinite(v))
            if len(cols) == 1 and rng.random() < 0.5:
                add(F.Bucketizer(inputCol=cols[0], outputCol=outs[0], splits=splits[0], handleInvalid=invalid),
                    f"{cols[0]}, splits={splits[0]}, handleInvalid={invalid}")
            else:
                add(F.Bucketizer(inputCols=cols, outputCols=outs, splitsArray=splits, handleInvalid=invalid),
                    f"{cols}, splitsArray={splits}, handleInvalid={invalid}")
        else:
            nb = int(rng.integers(2, 6))
            add(F.QuantileDiscretizer(inputCols=cols, outputCols=outs, numBuckets=nb, handleInvalid=invalid),
                f"{cols}, numBuckets={nb}, handleInvalid={invalid}")
        buckets = outs
        exact.update(outs)
        if invalid == "error":  # raw inputs must be NaN-free at training time (imputed ones are already)
            clean += [c for c in cols if c in numeric]

    # StringIndexer(s) over the string columns, then maybe OneHotEncoder.
    indexed: list[str] = []
    max_levels = 2
    if strings:
        groups = [strings] if rng.random() < 0.5 else [[c] for c in strings]
        for group in groups:
            invalid = str(rng.choice(["error", "skip", "keep"]))
            order = str(rng.choice(["frequencyDesc", "frequencyAsc", "alphabetDesc", "alphabetAsc"]))
            outs = [f"{c}_idx" for c in group]
            if len(group) == 1 and rng.random() < 0.5:
                si = F.StringIndexer(inputCol=group[0], outputCol=outs[0], handleInvalid=invalid, stringOrderType=order)
            else:
                si = F.StringIndexer(inputCols=group, outputCols=outs, handleInvalid=invalid, stringOrderType=order)
            add(si, f"{group}, handleInvalid={invalid}, stringOrderType={order}")
            if invalid != "error":  # nulls at training time too (fit ignores them; transform handles them)
                for c in group:
                    train.loc[rng.random(n) < 0.05, c] = None
            indexed += outs
            exact.update(outs)
            for c in group:
                max_levels = max(max_levels, int(train[c].nunique()) + 1)
    encoded: list[str] = []
    onehot_from = [c for c in indexed + buckets if rng.random() < 0.5]
    if onehot_from:
        drop = bool(rng.random() < 0.5)
        invalid = str(rng.choice(["error", "keep"]))
        encoded = [f"{c}_oh" for c in onehot_from]
        add(F.OneHotEncoder(inputCols=onehot_from, outputCols=encoded, dropLast=drop, handleInvalid=invalid),
            f"{onehot_from}, dropLast={drop}, handleInvalid={invalid}")
        exact.update(encoded)

    # The label: a noisy function of the inputs, so models have something to learn.
    score = np.zeros(n)
    for c in numeric:
        v = train[c].to_numpy(float)
        score += rng.normal() * (pd.Series(v).rank(pct=True).fillna(0.5).to_numpy() - 0.5)
    for c in strings:
        effect = {lvl: rng.normal() for lvl in LEVELS}
        score += np.array([effect.get(v, 0.0) if v is not None else 0.0 for v in train[c]])
    score += rng.normal(0, 0.3, n)
    classifier = predictor in CLASSIFIERS
    label_col: str | None
    target = "label"
    if classifier:
        k = 2 if predictor == "gbtc" or rng.random() < 0.5 else int(rng.integers(3, 5))
        cls = np.digitize(score, np.quantile(score, np.linspace(0, 1, k + 1)[1:-1]))
        if rng.random() < 0.5:  # a string label indexed by a pre-fitted StringIndexer, mapped back at the end
            names = np.array(["no", "yes", "maybe", "other"][:k], dtype=object)
            train["y"] = names[cls]
            label_col = "y"
        else:
            train["label"] = cls.astype(float)
            label_col = "label"
    else:
        label_col = "label"
        train["label"] = np.exp(np.clip(score, -3, 3))  # positive: every GLR family fits

    for c in clean:  # no missing values where a stage would fail at training time
        train[c] = train[c].fillna(0.0)

    # VectorAssembler over a random subset.
    pool = scalars + buckets + indexed + encoded
    nonneg = buckets + indexed + encoded
    binary = list(encoded)
    if predictor == "nb":
        model_type = str(rng.choice(["multinomial", "complement", "bernoulli", "gaussian"]))
        if model_type == "bernoulli":
            pool = binary
        elif model_type != "gaussian":
            pool = nonneg + ([c for c in scalars if (train[identity[c]].dropna() >= 0).all()])
        if not pool:
            model_type = "gaussian"
            pool = scalars + buckets + indexed + encoded
    chosen = [c for c in pool if rng.random() < 0.8] or pool[:1]
    if not chosen:  # a string-only frame whose indexers all went to one-hot... pool is never empty, but be safe
        chosen = pool
    invalid = str(rng.choice(["error", "skip", "keep"]))
    add(F.VectorAssembler(inputCols=chosen, outputCol="features", handleInvalid=invalid),
        f"{chosen}, handleInvalid={invalid}")
    features = "features"

    # Scalers (not under Bernoulli/multinomial NaiveBayes, which need their 0/1 or >= 0 features).
    if predictor != "nb" or model_type == "gaussian":
        for _ in range(int(rng.choice([0, 0, 1, 1, 1, 2]))):
            kind = str(rng.choice(["standard", "minmax", "maxabs"]))
            out = f"{features}_{kind}"
            if kind == "standard":
                wm, ws = bool(rng.random() < 0.5), bool(rng.random() < 0.8)
                add(F.StandardScaler(inputCol=features, outputCol=out, withMean=wm, withStd=ws),
                    f"withMean={wm}, withStd={ws}")
            elif kind == "minmax":
                lo = float(rng.choice([0.0, -1.0, 2.5]))
                hi = lo + float(rng.choice([1.0, 3.0]))
                add(F.MinMaxScaler(inputCol=features, outputCol=out, min=lo, max=hi), f"min={lo}, max={hi}")
            else:
                add(F.MaxAbsScaler(inputCol=features, outputCol=out), "")
            features = out

    if label_col == "y":
        indexer = F.StringIndexer(inputCol="y", outputCol="label",
                                  stringOrderType=str(rng.choice(["frequencyDesc", "alphabetAsc"])))
        label_model = indexer.fit(_spark().createDataFrame(train[["y"]]))
        stages.insert(0, label_model)
        describe.insert(0, f"StringIndexerModel(label y, labels={list(label_model.labels)})")
        exact.add("label")
    max_bins = int(rng.integers(max(max_levels, 4), 33))
    pred, text = _predictor(rng, predictor, features, target, max_bins, locals().get("model_type", "multinomial"))
    add(pred, text)
    if classifier:
        exact.add("prediction")
        if label_col == "y" and rng.random() < 0.6:
            stage = F.IndexToString(inputCol="prediction", outputCol="predicted_y", labels=list(label_model.labels))
            add(stage, "prediction -> predicted_y")
            exact.add("predicted_y")
    return Case(seed=seed, train=train, numeric=numeric, strings=strings, stages=stages, describe=describe,
                exact=exact, label=label_col, score_label=bool(rng.random() < 0.5), bad_strings=bad_strings,
                bad_numbers=bad_numbers, identity=identity, boundaries=boundaries)


def _predictor(rng: np.random.Generator, kind: str, features: str, label: str, max_bins: int,
               nb_type: str) -> tuple[Any, str]:
    from pyspark.ml import classification as C
    from pyspark.ml import regression as R

    common = {"featuresCol": features, "labelCol": label}
    depth = int(rng.integers(1, 5))
    if kind == "lr":
        family = str(rng.choice(["auto", "multinomial", "binomial"]))
        reg, enet = float(rng.choice([0.0, 0.01, 0.1])), float(rng.choice([0.0, 0.5]))
        fit_intercept = bool(rng.random() < 0.8)
        lr = C.LogisticRegression(maxIter=int(rng.integers(5, 15)), regParam=reg, elasticNetParam=enet,
                                  family=family, fitIntercept=fit_intercept, **common)
        text = f"family={family}, regParam={reg}, elasticNetParam={enet}, fitIntercept={fit_intercept}"
        # thresholds: set later by _fix_thresholds once the number of classes is known
        if rng.random() < 0.35:
            lr._thresholds_seed = int(rng.integers(0, 2**31))  # type: ignore[attr-defined]
            text += ", thresholds=random"
        return lr, text
    if kind == "linreg":
        solver = str(rng.choice(["l-bfgs", "normal", "auto"]))
        reg = float(rng.choice([0.0, 0.01, 0.3]))
        return (R.LinearRegression(maxIter=20, regParam=reg, solver=solver, fitIntercept=bool(rng.random() < 0.8),
                                   **common), f"solver={solver}, regParam={reg}")
    if kind == "glr":
        family, link = [("gaussian", "identity"), ("gaussian", "log"), ("poisson", "log"), ("poisson", "sqrt"),
                        ("gamma", "log"), ("gamma", "inverse"), ("binomial", "logit"), ("binomial", "probit"),
                        ("binomial", "cloglog"), ("tweedie", None)][int(rng.integers(0, 10))]
        glr = R.GeneralizedLinearRegression(family=family, maxIter=8, regParam=float(rng.choice([0.0, 0.01])),
                                            **common)
        text = f"family={family}"
        if link:
            glr.setLink(link)
            text += f", link={link}"
        else:
            vp, lp = float(rng.choice([0.0, 1.0, 1.5, 2.0])), float(rng.choice([0.0, 1.0, -1.0]))
            glr.setVariancePower(vp).setLinkPower(lp)
            text += f", variancePower={vp}, linkPower={lp}"
        if rng.random() < 0.5:
            glr.setLinkPredictionCol("link_prediction")
            text += ", linkPredictionCol"
        if family == "binomial":
            glr._binary_label = True  # type: ignore[attr-defined]
        return glr, text
    if kind in ("dtc", "dtr"):
        cls = C.DecisionTreeClassifier if kind == "dtc" else R.DecisionTreeRegressor
        return cls(maxDepth=depth, maxBins=max_bins, seed=7, **common), f"maxDepth={depth}, maxBins={max_bins}"
    if kind in ("rfc", "rfr"):
        cls = C.RandomForestClassifier if kind == "rfc" else R.RandomForestRegressor
        trees = int(rng.integers(2, 7))
        subset = str(rng.choice(["auto", "all", "sqrt", "onethird"]))
        return (cls(maxDepth=depth, maxBins=max_bins, numTrees=trees, featureSubsetStrategy=subset, seed=7, **common),
                f"maxDepth={depth}, maxBins={max_bins}, numTrees={trees}, featureSubsetStrategy={subset}")
    if kind in ("gbtc", "gbtr"):
        cls = C.GBTClassifier if kind == "gbtc" else R.GBTRegressor
        iters = int(rng.integers(2, 5))
        extra: dict[str, Any] = {}
        if kind == "gbtr":
            extra["lossType"] = str(rng.choice(["squared", "absolute"]))
        return (cls(maxDepth=min(depth, 4), maxBins=max_bins, maxIter=iters, stepSize=float(rng.choice([0.1, 0.5])),
                    seed=7, **extra, **common), f"maxDepth={min(depth, 4)}, maxBins={max_bins}, maxIter={iters} {extra}")
    nb = C.NaiveBayes(modelType=nb_type, smoothing=float(rng.choice([1.0, 0.5])), **common)
    return nb, f"modelType={nb_type}"


_SESSION: Any = None
#: Session settings for tiny frames: a shuffle (StringIndexer, Imputer's mode) in 2 tasks, not 200.
SMALL_DATA_CONF = {"spark.sql.shuffle.partitions": "2"}


def _spark() -> Any:
    global _SESSION
    if _SESSION is None:
        from scorer.jvm import spark_session

        _SESSION = spark_session()
    return _SESSION


def small_data_conf() -> dict[str, str | None]:
    """Apply :data:`SMALL_DATA_CONF` to the session; returns the previous values (to restore)."""
    conf = _spark().conf
    before = {k: conf.get(k, None) for k in SMALL_DATA_CONF}
    for k, v in SMALL_DATA_CONF.items():
        conf.set(k, v)
    return before


def restore_conf(before: dict[str, str | None]) -> None:
    for k, v in before.items():
        if v is None:
            _spark().conf.unset(k)
        else:
            _spark().conf.set(k, v)


def spark_types(frame: pd.DataFrame) -> dict[str, str]:
    return {c: "float" if pd.api.types.is_numeric_dtype(frame[c]) else "string" for c in frame.columns}


def _prepare_stages(case: Case) -> None:
    """Last-minute params that depend on the training frame: the label's class count (thresholds),
    a 0/1 label for binomial GLR."""
    rng = np.random.default_rng(case.seed + 1)
    for stage in case.stages:
        seed = getattr(stage, "_thresholds_seed", None)
        if seed is not None:
            k = int(case.train[case.label].nunique()) if case.label else 2
            t = np.random.default_rng(seed).uniform(0.1, 1.0, k)
            if k == 2 and rng.random() < 0.5:
                stage.setThreshold(float(t[0] / (t[0] + t[1])))
            else:
                stage.setThresholds([float(v) for v in t])
        if type(stage).__name__ == "LogisticRegression" and stage.getFamily() == "binomial" and case.label \
                and case.train[case.label].nunique() > 2:
            stage.setFamily("multinomial")  # binomial fits two classes only
        if getattr(stage, "_binary_label", False):
            case.train["label"] = (case.train["label"] > case.train["label"].median()).astype(float)


# --- scoring frame ------------------------------------------------------------------------------


def tree_thresholds(path: Path) -> list[tuple[int, float]]:
    """(feature index, threshold) of every continuous split of the saved predictor at ``path``."""
    import pyarrow.parquet as pq

    table = pq.read_table(str(path / "data")).to_pylist()
    found = []
    for row in table:
        node = row.get("nodeData", row)
        split = node.get("split") or {}
        if split.get("numCategories", 0) == -1 and node.get("leftChild", -1) >= 0:
            found.append((int(split["featureIndex"]), float(split["leftCategoriesOrThreshold"][0])))
    return found


def scoring_frame(case: Case, model: Any, path: Path) -> pd.DataFrame:
    """A new frame from the same distributions (seed-derived), with the case's invalid values and
    values exactly on the fitted bucket splits and tree thresholds."""
    rng = np.random.default_rng(case.seed + 1_000_003)
    n = int(rng.integers(40, 80))
    frame = pd.DataFrame({"rid": np.arange(n, dtype=float)})
    for c in case.numeric:
        v = _numeric_column(rng, n)
        v[rng.random(n) < 0.1] = rng.choice(case.train[c].dropna().to_numpy(), 1)[0]  # a training value, repeated
        if rng.random() < 0.5:
            hit = rng.random(n) < 0.08
            v[hit] = rng.choice(EXTREMES, int(hit.sum()))
        frame[c] = v
    for c in case.strings:
        seen = [x for x in case.train[c].dropna().unique()]
        v = rng.choice(np.array(seen, dtype=object), n)
        frame[c] = v
    # Fitted boundaries: QuantileDiscretizer splits, tree thresholds on untransformed inputs.
    bounds = {k: list(vs) for k, vs in case.boundaries.items()}
    stages = list(model.stages)
    for stage, estimator in zip(stages, case.stages):
        if type(stage).__name__ == "Bucketizer" and type(estimator).__name__ == "QuantileDiscretizer":
            ins = stage.getInputCols() if stage.isSet("inputCols") else [stage.getInputCol()]
            splits = stage.getSplitsArray() if stage.isSet("splitsArray") else [stage.getSplits()]
            for col, s in zip(ins, splits):
                bounds.setdefault(case.identity[col], []).extend(float(x) for x in s if np.isfinite(x))
    last = stages[-1] if type(stages[-1]).__name__ != "IndexToString" else stages[-2]
    if "Tree" in type(last).__name__ or "Forest" in type(last).__name__ or "GBT" in type(last).__name__:
        if last.getFeaturesCol() == "features":  # no scaler between the raw column and the split
            attrs = _feature_names(model, case)
            folder = sorted((path / "stages").glob(f"{len(stages) - 1 - (last is not stages[-1])}_*"))[0]
            for index, threshold in tree_thresholds(folder):
                name = attrs.get(index)
                if name in case.identity:
                    bounds.setdefault(case.identity[name], []).append(threshold)
    for col, values in bounds.items():
        if values and col in frame:
            hit = rng.random(n) < 0.3
            frame.loc[hit, col] = rng.choice(np.array(values), int(hit.sum()))
    if case.bad_numbers and case.numeric:
        for c in case.numeric:
            frame.loc[rng.random(n) < 0.1, c] = np.nan
    if case.bad_strings and case.strings:
        for c in case.strings:
            col = frame[c].to_numpy(object)
            col[rng.random(n) < 0.1] = None
            hit = rng.random(n) < 0.1
            col[hit] = rng.choice(np.array(UNSEEN, dtype=object), int(hit.sum()))
            frame[c] = col
    if case.score_label and case.label:
        frame[case.label] = rng.choice(case.train[case.label].dropna().to_numpy(), n)
    return frame


def _feature_names(model: Any, case: Case) -> dict[int, str]:
    """Index -> input column name of the assembled ``features`` vector, from its ML attribute metadata
    (a schema computation: no Spark job)."""
    df = _spark().createDataFrame(case.train.head(1))
    field = model.transform(df).schema["features"]
    attrs = field.metadata.get("ml_attr", {}).get("attrs", {})
    return {int(a["idx"]): str(a.get("name", "")) for group in attrs.values() for a in group}


# --- scoring and comparison ---------------------------------------------------------------------


def spark_outcome(path: Any, frame: pd.DataFrame) -> tuple[pd.DataFrame | None, list[str], set[str], str]:
    """Spark's own transform: (added columns as pandas, their names, the vector ones, error or ""), by
    the ``PipelineModel`` loaded from ``path`` (or ``path`` itself when it is a fitted model)."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F

    from scorer.spark_ml import spark_frame

    loaded = PipelineModel.load(str(path)) if isinstance(path, Path) else path
    sdf = spark_frame(_spark(), frame, spark_types(frame))
    out = loaded.transform(sdf)
    added = [f.name for f in out.schema.fields if f.name not in frame.columns]
    vectors = {f.name for f in out.schema.fields if isinstance(f.dataType, VectorUDT)}
    # A null vector (a stage's null output, e.g. OneHotEncoder of a null bucket) comes back as None.
    select = [F.col("rid")] + [F.when(F.col(c).isNull(), None).otherwise(vector_to_array(F.col(c))).alias(c)
                               if c in vectors else F.col(c) for c in added]
    try:
        got = out.select(*select).toPandas()
    except Exception as exc:  # the data error Spark's transform raises (a Py4J / captured Java exception)
        return None, added, vectors, _first_line(exc)
    return got, added, vectors, ""


def native_input(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The pandas frame as native columns (scorer's conventions: float64 with NaN, object with None)."""
    cols: dict[str, np.ndarray] = {}
    for c in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[c]):
            cols[c] = np.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else v
                                for v in frame[c]], dtype=object)
        else:
            cols[c] = frame[c].to_numpy(np.float64)
    return cols


def compare(spark: pd.DataFrame, added: list[str], vectors: set[str], native: dict[str, np.ndarray],
            exact: set[str], inputs: set[str]) -> list[str]:
    """Every problem found: a missing or extra column, other rows kept, a value off the contract."""
    problems = []
    rid = np.asarray(native.get("rid", []), dtype=float)
    if not np.array_equal(rid, spark["rid"].to_numpy(float)):
        return [f"rows kept differ: spark kept {len(spark)} rows, native {len(rid)}"
                f" (spark-only {sorted(set(spark['rid']) - set(rid))[:8]}, native-only {sorted(set(rid) - set(spark['rid']))[:8]})"]
    extra = [c for c in native if c not in added and c not in inputs]
    if extra:
        problems.append(f"native adds columns Spark does not: {extra}")
    for c in added:
        if c not in native:
            problems.append(f"{c}: missing from native output")
            continue
        want = spark[c]
        got = np.asarray(native[c])
        try:
            if c in vectors:
                width = next((len(x) for x in want if x is not None), got.shape[-1] if got.ndim == 2 else 0)
                # a null vector compares as a row of NaN (the native convention has no null vector)
                w = np.array([np.full(width, np.nan) if x is None else np.asarray(x, dtype=float) for x in want])
                w = w.reshape(len(want), width)
                if got.shape != w.shape:
                    problems.append(f"{c}: native shape {got.shape}, spark {w.shape}")
                    continue
            elif not pd.api.types.is_numeric_dtype(want):
                ws, gs = [_text(v) for v in want], [_text(v) for v in got.tolist()]
                if ws != gs:
                    bad = next((i for i, (a, b) in enumerate(zip(gs, ws)) if a != b), min(len(gs), len(ws)))
                    problems.append(f"{c}: strings differ ({len(gs)} vs {len(ws)} rows; first at row {bad}: "
                                    f"native {gs[bad] if bad < len(gs) else '-'!r}, spark {ws[bad] if bad < len(ws) else '-'!r})")
                continue
            else:
                w = want.to_numpy(float)
                if got.shape != w.shape:
                    problems.append(f"{c}: native shape {got.shape}, spark {w.shape}")
                    continue
            g = got.astype(float)
            if c in exact:
                same = (g == w) | (np.isnan(g) & np.isnan(w))
                if not same.all():
                    i = np.argwhere(~same)[0]
                    problems.append(f"{c}: not equal at {tuple(int(x) for x in i)}: native {g[tuple(i)]!r}, spark {w[tuple(i)]!r} "
                                    f"({int((~same).sum())} values differ)")
            else:
                np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)
        except AssertionError as exc:
            problems.append(f"{c}: {' '.join(str(exc).split())[:300]}")
    return problems


def _text(value: Any) -> str | None:
    """A string cell, None for a missing one (Spark's toPandas may give NaN, native gives None)."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _first_line(exc: BaseException) -> str:
    """The root cause of a (Java) exception in one line: the last ``Caused by:``, else the first line
    naming an exception."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by:")]
    named = [line for line in lines if "Exception" in line or "Error" in line]
    return (causes or named or lines or [type(exc).__name__])[-1 if causes else 0][:240]


def run_case(seed: int, workdir: Path | None = None, load: bool = True, keep: Path | None = None) -> Result:
    """Build, fit, save, score both ways and compare the pipeline of ``seed``. ``load=False`` scores
    Spark's side with the fitted model rather than the one loaded back from its directory; ``keep``: a
    folder to :func:`freeze` the case into (for the committed set)."""
    from pyspark.ml import Pipeline

    from scorer.spark_ml import spark_frame

    start = time.monotonic()
    phases: dict[str, float] = {}
    mark = [start]

    def lap(name: str) -> None:
        now = time.monotonic()
        phases[name] = phases.get(name, 0.0) + now - mark[0]
        mark[0] = now

    def result(status: str, detail: str = "", **kw: Any) -> Result:
        lap("compare")
        return Result(seed, status, case.describe, detail, seconds=time.monotonic() - start, phases=phases, **kw)

    case = make_case(seed)
    _prepare_stages(case)
    lap("build")
    root = Path(tempfile.mkdtemp(prefix="spark-prop-", dir=workdir))
    path = root / "pipeline"
    try:
        try:
            train = spark_frame(_spark(), case.train, spark_types(case.train)).coalesce(1)
            model = Pipeline(stages=case.stages).fit(train)
            lap("fit")
            model.write().overwrite().save(str(path))
            lap("save")
        except Exception as exc:
            return result("fit-failed", _first_line(exc))
        frame = scoring_frame(case, model, path)
        lap("frame")
        answer = SparkAnswer(*spark_outcome(path if load else model, frame))
        lap("spark")
        if keep is not None:
            freeze(keep, case, path, frame, answer)
        return judge(path, frame, answer, case.exact, result, lap)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_cases(seeds: list[int] | range, threads: int = 1, workdir: Path | None = None) -> dict[int, Result]:
    """:func:`run_case` for every seed, from ``threads`` Python threads sharing the one SparkSession: a
    tiny frame's Spark jobs are mostly driver and scheduling latency, so several pipelines fitted at once
    keep two cores busier than one after another. Each case depends only on its seed (fixed estimator
    seeds, one partition), so the results are the same whatever the thread count."""
    from concurrent.futures import ThreadPoolExecutor

    _spark()
    if threads <= 1:
        return {seed: run_case(seed, workdir) for seed in seeds}
    with ThreadPoolExecutor(threads, thread_name_prefix="spark-case") as pool:
        return dict(zip(seeds, pool.map(lambda seed: run_case(seed, workdir), seeds), strict=True))


@dataclass
class SparkAnswer:
    """What Spark's transform gave for a scoring frame (:func:`spark_outcome`)."""

    outcome: pd.DataFrame | None  # rid + the added columns, None when the transform raised
    added: list[str]
    vectors: set[str]
    error: str


def judge(path: Path, frame: pd.DataFrame, answer: SparkAnswer, exact: set[str],
          result: Callable[..., Result], lap: Callable[[str], None] = lambda _: None) -> Result:
    """Score ``frame`` natively with the pipeline saved at ``path`` and hold it against Spark's answer."""
    from scorer.spark_native.base import InvalidData, Unsupported
    from scorer.spark_native.pipeline import compile_pipeline

    spark_df, added, vectors, spark_error = answer.outcome, answer.added, answer.vectors, answer.error
    try:
        native_pipe = compile_pipeline(path)
        native = native_pipe.transform(native_input(frame))
        native_error = ""
    except Unsupported as exc:
        return result("unsupported", str(exc))
    except InvalidData as exc:
        native, native_error = None, f"InvalidData: {exc}"
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return result("mismatch", f"native raised {type(exc).__name__}: {exc} (at {Path(tb.filename).name}:"
                      f"{tb.lineno})" + (f"; spark raised: {spark_error}" if spark_error else ""))
    lap("native")
    if spark_error and native is None:
        return result("match", f"both raise: spark {spark_error}; native {native_error}", both_raised=True)
    if spark_error:
        return result("mismatch", f"spark raised ({spark_error}), native did not")
    if native is None or spark_df is None:
        return result("mismatch", f"native raised ({native_error}), spark did not")
    problems = compare(spark_df, added, vectors, native, exact, set(frame.columns))
    return result("mismatch" if problems else "match", "; ".join(problems), rows_dropped=len(frame) - len(spark_df))


# --- the committed set: cases Spark fitted and answered, replayed without Spark -------------------


def freeze(folder: Path, case: Case, path: Path, frame: pd.DataFrame, answer: SparkAnswer) -> None:
    """Write one case to ``folder/s<seed>/``: the saved pipeline (without Hadoop's .crc and _SUCCESS
    files), the scoring frame, Spark's answer and ``case.json`` (what :func:`replay` needs)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyspark

    out = folder / f"s{case.seed:04d}"
    shutil.copytree(path, out / "pipeline", ignore=shutil.ignore_patterns("*.crc", "_SUCCESS"))

    def table(df: pd.DataFrame, lists: set[str]) -> Any:
        # from_pandas=False: NaN stays NaN (pandas' default would make it null); None is null.
        return pa.table({c: pa.array([None if v is None else [float(x) for x in v] for v in df[c]],
                                     type=pa.list_(pa.float64())) if c in lists
                         else pa.array([_text(v) for v in df[c]], type=pa.string()) if not pd.api.types.is_numeric_dtype(df[c])
                         else pa.array(df[c].to_numpy(), from_pandas=False) for c in df.columns})

    pq.write_table(table(frame, set()), out / "frame.parquet")
    if answer.outcome is not None:
        pq.write_table(table(answer.outcome, answer.vectors), out / "spark.parquet")
    meta = {"seed": case.seed, "describe": case.describe, "exact": sorted(case.exact), "added": answer.added,
            "vectors": sorted(answer.vectors), "error": answer.error, "spark_version": pyspark.__version__}
    (out / "case.json").write_text(json.dumps(meta, indent=1) + "\n")


def pack(folder: Path, archive: Path) -> None:
    """The frozen cases as one reproducible .tar.xz (sorted names, no owners or times)."""
    import tarfile

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with tarfile.open(archive, "w:xz") as tar:
        for item in sorted(folder.rglob("*")):
            tar.add(item, arcname=str(item.relative_to(folder)), recursive=False, filter=clean)


def unpack(archive: Path, into: Path) -> list[Path]:
    """The case folders of an archive :func:`pack` wrote, extracted under ``into``."""
    import tarfile

    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return sorted(p for p in into.iterdir() if (p / "case.json").exists())


def replay(case_dir: Path) -> Result:
    """:func:`judge` for a frozen case: native scoring against the answer Spark gave when it was made."""
    import pyarrow.parquet as pq

    start = time.monotonic()
    meta = json.loads((case_dir / "case.json").read_text())
    frame = pq.read_table(case_dir / "frame.parquet").to_pandas()
    spark_file = case_dir / "spark.parquet"
    outcome = pq.read_table(spark_file).to_pandas() if spark_file.exists() else None
    answer = SparkAnswer(outcome, meta["added"], set(meta["vectors"]), meta["error"])

    def result(status: str, detail: str = "", **kw: Any) -> Result:
        return Result(meta["seed"], status, meta["describe"], detail, seconds=time.monotonic() - start, **kw)

    return judge(case_dir / "pipeline", frame, answer, set(meta["exact"]), result)


def summary(results: list[Result]) -> str:
    count = {s: sum(r.status == s for r in results) for s in ("match", "mismatch", "unsupported", "fit-failed")}
    raised = sum(r.both_raised for r in results)
    dropped = sum(r.rows_dropped > 0 for r in results)
    total = sum(r.seconds for r in results)
    phases: dict[str, float] = {}
    for r in results:
        for k, v in r.phases.items():
            phases[k] = phases.get(k, 0.0) + v
    split = ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
    return (f"{len(results)} pipelines: {count['match']} match ({raised} where both raise, {dropped} with rows "
            f"dropped), {count['mismatch']} mismatch, {count['unsupported']} unsupported, "
            f"{count['fit-failed']} not fitted by Spark; {total:.0f} s ({total / max(len(results), 1):.2f} s each: {split})")


def report(result: Result) -> str:
    stages = "\n    ".join(result.describe)
    return f"seed {result.seed}: {result.status} ({result.seconds:.1f} s): {result.detail}\n    {stages}"


def main(argv: list[str] | None = None) -> int:
    """``scripts/spark-native-soak``: N pipelines from a seed; a summary and every mismatch with its seed."""
    import argparse

    parser = argparse.ArgumentParser(prog="spark-native-soak", description=main.__doc__)
    parser.add_argument("--seed", type=int, default=1000, help="first seed (default 1000: past the CI sets, live 0-11 and frozen 20-224)")
    parser.add_argument("--count", type=int, default=500, help="how many pipelines (seeds seed..seed+count-1)")
    parser.add_argument("--threads", type=int, default=3, help="pipelines fitted at once (default 3)")
    parser.add_argument("--verbose", action="store_true", help="print every pipeline, not only mismatches")
    parser.add_argument("--freeze", type=Path, metavar="ARCHIVE.tar.xz",
                        help="also write every fitted case (pipeline, scoring frame, Spark's answer) into this archive: "
                             "how tests/fixtures/spark-random.tar.xz is made")
    args = parser.parse_args(argv)
    from concurrent.futures import ThreadPoolExecutor

    _spark()
    small_data_conf()
    results = []
    keep = Path(tempfile.mkdtemp(prefix="spark-freeze-")) if args.freeze else None
    with ThreadPoolExecutor(max(1, args.threads), thread_name_prefix="spark-case") as pool:
        for result in pool.map(lambda seed: run_case(seed, keep=keep), range(args.seed, args.seed + args.count)):
            results.append(result)
            if result.status in ("mismatch", "unsupported", "fit-failed") or args.verbose:
                print(report(result), flush=True)
    print(summary(results))
    if keep is not None:
        pack(keep, args.freeze)
        shutil.rmtree(keep, ignore_errors=True)
        print(f"froze {sum(r.status != 'fit-failed' for r in results)} cases into {args.freeze}")
    for status in ("mismatch", "unsupported"):
        seeds = [r.seed for r in results if r.status == status]
        if seeds:
            print(f"{status}: seeds {seeds} (reproduce one: scripts/spark-native-soak --seed N --count 1)")
    return 1 if any(r.status in ("mismatch", "unsupported") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
