"""Final-estimator ops of scoring plans against the fitted scikit-learn estimators they compile.

Every case fits a real estimator on seeded random data, compiles it, and compares the op with the
estimator's own ``predict_proba``/``predict`` on probe rows that include training rows, fresh rows,
values exactly on every split threshold and on the next floats either side, NaN and ±inf where the
estimator takes them, and unknown categories. Where scikit-learn raises on a value, the op raises
InvalidData. Every op is also stored (JSON meta + arrays) and rebuilt, and must answer bit for bit.
"""

from __future__ import annotations

import itertools
import json
import warnings
from typing import Any

import numpy as np
import pytest
from sklearn import ensemble, linear_model, svm, tree
from sklearn.dummy import DummyClassifier

from scorer.sklearn_plan.base import OPS, EstimatorOp, InvalidData, Unsupported, compiler_for

pytestmark = pytest.mark.fast

import scorer.sklearn_plan.linear  # noqa: E402,F401  (registers the compilers)
import scorer.sklearn_plan.trees  # noqa: E402,F401
from scorer.sklearn_plan.trees import Forest  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """Fits and predictions on one OpenMP thread: busy shared cores make OpenMP's waits slow."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def close(got: np.ndarray, want: np.ndarray) -> bool:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return got.shape == want.shape and bool(
        np.all(np.abs(got - want) <= 1e-12 * np.maximum(1.0, np.abs(want))))


def compiled(est: Any) -> EstimatorOp:
    result = compiler_for(est)(est)
    assert isinstance(result, EstimatorOp)
    return result


def rebuilt(result: EstimatorOp) -> EstimatorOp:
    meta, arrays = result.state()
    for name, array in arrays.items():
        assert isinstance(array, np.ndarray) and array.dtype != object, name
    meta = json.loads(json.dumps(meta))
    again = OPS[result.kind].from_state(meta, {k: v.copy() for k, v in arrays.items()})
    assert isinstance(again, EstimatorOp)
    return again


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and (
        a.tobytes() == b.tobytes() if a.dtype != object else list(a) == list(b))


def sklearn_answer(est: Any, X: np.ndarray, proba: bool) -> np.ndarray | None:
    """The estimator's answer, or None when it raises ValueError on these values."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(est.predict_proba(X) if proba else est.predict(X))
    except ValueError:
        return None


def check(est: Any, X: np.ndarray) -> EstimatorOp:
    """The op answers as ``est`` on every row of X (row by row where scikit-learn refuses some rows)."""
    result = compiled(est)
    again = rebuilt(result)
    proba = result.classes is not None
    if proba:
        assert result.classes == np.asarray(est.classes_).tolist()
    plain = (np.abs(np.nan_to_num(X, nan=0.0)) < 1e38).all(axis=1)
    if plain.any():
        want = sklearn_answer(est, X[plain], proba)
        if want is not None:
            _compare(est, result, again, X[plain], want, proba)
        else:  # scikit-learn refuses NaN here: the NaN-free rows together, the others on their own
            clean = plain & ~np.isnan(X).any(axis=1)
            _compare(est, result, again, X[clean], sklearn_answer(est, X[clean], proba), proba)
            plain = clean
    for row in X[~plain]:
        one = row[None, :]
        expect = sklearn_answer(est, one, proba)
        if expect is None:
            with pytest.raises(InvalidData):
                result.apply(one)
        else:
            _compare(est, result, again, one, expect, proba)
    return result


def _compare(est: Any, result: EstimatorOp, again: EstimatorOp, X: np.ndarray, want: np.ndarray,
             proba: bool) -> None:
    got = result.apply(X)
    assert same_bits(got, again.apply(X))
    if proba or got.dtype.kind == "f":
        assert close(got, want), (type(est).__name__, np.abs(got - want).max())
    else:
        assert list(got) == list(want)
    if proba:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = est.predict(X)
        assert list(result.predict(got)) == list(labels)


# -- data --------------------------------------------------------------------------------------

def dataset(seed: int, n: int = 300, k: int = 5, nan: bool = False, classes: int = 2,
            regression: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    X[:, 0] = np.round(X[:, 0] * 4) / 4  # repeated values: thresholds between close neighbours
    X[:, 1] = rng.integers(0, 6, n)  # few distinct values
    if nan:
        X[rng.random((n, k)) < 0.1] = np.nan
    signal = np.nan_to_num(X[:, 0] + X[:, 1] * 0.5 - X[:, 2] ** 2) + rng.normal(scale=0.3, size=n)
    if regression:
        return X, signal
    edges = np.quantile(signal, np.linspace(0, 1, classes + 1)[1:-1])
    return X, np.searchsorted(edges, signal)


def thresholds(result: EstimatorOp) -> list[tuple[int, float]]:
    nodes = result.forest.nodes  # type: ignore[attr-defined]
    split = (nodes.left >= 0) & (nodes.cat < 0)
    pairs = sorted(set(zip(nodes.feature[split].tolist(), nodes.threshold[split].tolist())))
    return pairs


def edge_rows(result: EstimatorOp, X: np.ndarray, seed: int, special: bool = True) -> np.ndarray:
    """Rows with one value set exactly on a split threshold, on the floats either side (float64 and
    float32), and NaN/±inf."""
    rng = np.random.default_rng(seed)
    rows = []
    pairs = thresholds(result)
    if len(pairs) > 400:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), 400, replace=False))]
    for feature, t in pairs:
        for value in (t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), float(np.float32(t)),
                      float(np.nextafter(np.float32(t), np.float32(np.inf))),
                      float(np.nextafter(np.float32(t), np.float32(-np.inf)))):
            row = X[rng.integers(len(X))].copy()
            row[feature] = value
            rows.append(row)
    if special:
        for value in (np.nan, np.inf, -np.inf, 3.5e38, -3.5e38):
            for feature in range(X.shape[1]):
                row = X[rng.integers(len(X))].copy()
                row[feature] = value
                rows.append(row)
    return np.array(rows)


def probe(result: EstimatorOp, X: np.ndarray, seed: int, special: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    fresh = rng.normal(size=(100, X.shape[1])) * 2
    return np.concatenate([X[:100], fresh, edge_rows(result, X, seed, special)])


def check_all(est: Any, X: np.ndarray, seed: int) -> EstimatorOp:
    result = compiled(est)
    rows = probe(result, X, seed)
    return check(est, rows)


# -- HistGradientBoosting -------------------------------------------------------------------------

HGB_CASES = list(itertools.product(
    [2, 3],  # classes
    [False, True],  # NaN in training
    [{}, {"max_depth": 3}, {"max_leaf_nodes": 100, "min_samples_leaf": 2}, {"max_iter": 5}],
))


@pytest.mark.parametrize(("classes", "nan", "params"), HGB_CASES)
def test_hist_gradient_boosting_classifier(classes: int, nan: bool, params: dict[str, Any]) -> None:
    seed = len(str(params)) + classes * 10 + nan
    X, y = dataset(seed, nan=nan, classes=classes)
    est = ensemble.HistGradientBoostingClassifier(random_state=0, **{"max_iter": 20, **params})
    est.fit(X, y)
    result = check_all(est, X, seed)
    both_strategies(result, probe(result, X, seed))


@pytest.mark.parametrize("loss", ["squared_error", "absolute_error", "quantile", "poisson", "gamma"])
@pytest.mark.parametrize("nan", [False, True])
def test_hist_gradient_boosting_regressor(loss: str, nan: bool) -> None:
    X, y = dataset(7, nan=nan, regression=True)
    if loss in ("poisson", "gamma"):
        y = np.exp(y / 3) + (0.0 if loss == "gamma" else 0.0)
    kwargs = {"quantile": 0.8} if loss == "quantile" else {}
    est = ensemble.HistGradientBoostingRegressor(loss=loss, max_iter=15, random_state=0, **kwargs).fit(X, y)
    check_all(est, X, 7)


def categorical_data(seed: int, n: int = 400, nan: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    X[:, 1] = rng.integers(0, 12, n)  # categories 0..11
    X[:, 3] = rng.choice([-5.0, 2.5, 7.0, 100.0, 300.0], n)  # not 0..n-1, one above 255
    if nan:
        X[rng.random(n) < 0.1, 1] = np.nan
        X[rng.random(n) < 0.1, 0] = np.nan
    effect = np.where(np.isin(X[:, 1], [1, 4, 5, 9]), 2.0, -1.0) + (X[:, 3] == 7.0) - X[:, 0]
    y = (np.nan_to_num(effect) + rng.normal(scale=0.5, size=n) > 0).astype(int)
    return X, y


@pytest.mark.parametrize("nan", [False, True])
@pytest.mark.parametrize("spec", ["mask", "indices"])
@pytest.mark.parametrize("classes", [2, 3])
def test_hist_gradient_boosting_categorical(nan: bool, spec: str, classes: int) -> None:
    X, y = categorical_data(3 + nan, nan=nan)
    if classes == 3:
        y = y + (X[:, 2] > 0.5)
    cats: Any = np.array([False, True, False, True]) if spec == "mask" else [1, 3]
    est = ensemble.HistGradientBoostingClassifier(
        categorical_features=cats, max_iter=20, random_state=0, min_samples_leaf=5).fit(X, y)
    result = compiled(est)
    assert result.forest.has_cat  # type: ignore[attr-defined]
    rows = probe(result, X, 5)
    unknown = X[:40].copy()
    unknown[:10, 1] = 12.0  # unknown category
    unknown[10:20, 1] = 1.5  # between categories
    unknown[20:25, 3] = 8.0
    unknown[25:30, 1] = -1.0
    unknown[30:35, 1] = np.nan
    unknown[35:38, 1] = -0.0  # the category 0.0
    unknown[38:40, 3] = np.nextafter(2.5, 3.0)  # next to a category: unknown
    every = np.concatenate([rows, unknown])
    check(est, every)
    both_strategies(result, every[np.isfinite(every[:, [1, 3]]).all(axis=1)])


def test_hist_gradient_boosting_categorical_regressor() -> None:
    X, y = categorical_data(11)
    est = ensemble.HistGradientBoostingRegressor(categorical_features=[1, 3], max_iter=10).fit(X, y * 3.0)
    check(est, probe(compiled(est), X, 11))


def test_hist_gradient_boosting_from_dtype_categories_are_unsupported() -> None:
    import pandas as pd

    X, y = categorical_data(2)
    frame = pd.DataFrame(X, columns=list("abcd")).assign(b=lambda f: f["b"].astype(int).astype(str).astype("category"))
    est = ensemble.HistGradientBoostingClassifier(max_iter=3).fit(frame, y)
    with pytest.raises(Unsupported, match=r"HistGradientBoostingClassifier\(categorical_features='from_dtype'\)"):
        compiled(est)


def test_tabular_bundle_model(example_bundles: dict[str, Any]) -> None:
    """The example bundle's pipeline (built by bundles/build.py, as a clean checkout has none): its final
    HistGradientBoostingClassifier on its transformed sample."""
    import joblib
    import pandas as pd

    root = example_bundles["tabular"]
    pipeline = joblib.load(root / "artifacts" / "model.joblib")
    manifest = json.loads((root / "manifest.json").read_text())
    sample = pd.DataFrame(manifest["sample_input"]["data"], columns=manifest["sample_input"]["columns"])
    rng = np.random.default_rng(0)
    frame = sample.sample(500, replace=True, random_state=0).reset_index(drop=True)
    for column in [c for c in frame.columns if c.startswith("f")]:
        frame[column] = frame[column].astype(float) + rng.normal(size=len(frame))
    X = np.asarray(pipeline[:-1].transform(frame), dtype=np.float64)
    result = check(pipeline[-1], X)
    check(pipeline[-1], edge_rows(result, X, 0))
    both_strategies(result, X)


def both_strategies(result: EstimatorOp, X: np.ndarray) -> None:
    """The walk and the bit masks reach the same leaves."""
    forest: Forest = result.forest  # type: ignore[attr-defined]
    name = type(result).__name__
    walked = forest.leaf_values(X, name, "walk")
    if forest.masks_ok:
        assert same_bits(walked, forest.leaf_values(X, name, "masks"))


# -- forests and single trees -------------------------------------------------------------------

FOREST_CLASSIFIERS = [ensemble.RandomForestClassifier, ensemble.ExtraTreesClassifier,
                      tree.DecisionTreeClassifier, tree.ExtraTreeClassifier]
FOREST_REGRESSORS = [ensemble.RandomForestRegressor, ensemble.ExtraTreesRegressor,
                     tree.DecisionTreeRegressor, tree.ExtraTreeRegressor]


def _forest_params(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    if cls in (tree.DecisionTreeClassifier, tree.ExtraTreeClassifier, tree.DecisionTreeRegressor,
               tree.ExtraTreeRegressor):
        params = {k: v for k, v in params.items() if k != "n_estimators"}
    return {"random_state": 0, **params}


@pytest.mark.parametrize("cls", FOREST_CLASSIFIERS)
@pytest.mark.parametrize(("classes", "nan", "params"), [
    (2, False, {"n_estimators": 10}),
    (3, True, {"n_estimators": 7, "max_depth": 4}),
    (4, False, {"n_estimators": 5, "max_depth": 3, "criterion": "entropy"}),
    (2, True, {"n_estimators": 12, "min_samples_leaf": 3}),
])
def test_forest_classifiers(cls: type, classes: int, nan: bool, params: dict[str, Any]) -> None:
    X, y = dataset(classes * 3 + nan, nan=nan, classes=classes)
    labels = np.array(["ant", "bee", "cat", "dog"])[y] if classes == 3 else y
    try:
        est = cls(**_forest_params(cls, params)).fit(X, labels)
    except ValueError:  # this estimator takes no NaN in training
        est = cls(**_forest_params(cls, params)).fit(np.nan_to_num(X), labels)
    result = check_all(est, X, classes)
    both_strategies(result, np.nan_to_num(X, nan=0.5))


@pytest.mark.parametrize("cls", FOREST_REGRESSORS)
@pytest.mark.parametrize(("nan", "params"), [
    (False, {"n_estimators": 10}),
    (True, {"n_estimators": 6, "max_depth": 5, "criterion": "absolute_error"}),
    (False, {"n_estimators": 3, "max_depth": 2}),
])
def test_forest_regressors(cls: type, nan: bool, params: dict[str, Any]) -> None:
    X, y = dataset(21 + nan, nan=nan, regression=True)
    try:
        est = cls(**_forest_params(cls, params)).fit(X, y)
    except ValueError:
        est = cls(**_forest_params(cls, params)).fit(np.nan_to_num(X), y)
    check_all(est, X, 21)


def test_multi_output_forest_is_unsupported() -> None:
    X, y = dataset(1, regression=True)
    est = ensemble.RandomForestRegressor(n_estimators=2).fit(X, np.stack([y, -y], axis=1))
    with pytest.raises(Unsupported, match="multi-output"):
        compiled(est)


# -- gradient boosting --------------------------------------------------------------------------

@pytest.mark.parametrize(("classes", "params"), [
    (2, {}),
    (2, {"loss": "exponential", "learning_rate": 0.3}),
    (3, {"max_depth": 2, "subsample": 0.7}),
    (2, {"init": "zero", "n_estimators": 30}),
    (3, {"init": "zero", "max_depth": 5}),
    (4, {"init": DummyClassifier(strategy="prior"), "n_estimators": 10}),
])
def test_gradient_boosting_classifier(classes: int, params: dict[str, Any]) -> None:
    X, y = dataset(40 + classes, classes=classes)
    est = ensemble.GradientBoostingClassifier(n_estimators=params.pop("n_estimators", 20), random_state=0,
                                              **params).fit(X, y)
    result = check_all(est, X, 40)
    both_strategies(result, X)


@pytest.mark.parametrize("params", [
    {}, {"loss": "absolute_error"}, {"loss": "huber", "alpha": 0.8}, {"loss": "quantile", "alpha": 0.3},
    {"init": "zero", "learning_rate": 0.05, "max_depth": 4},
])
def test_gradient_boosting_regressor(params: dict[str, Any]) -> None:
    X, y = dataset(50, regression=True)
    est = ensemble.GradientBoostingRegressor(n_estimators=25, random_state=0, **params).fit(X, y)
    check_all(est, X, 50)


def test_gradient_boosting_with_a_fitted_init_is_unsupported() -> None:
    X, y = dataset(51, regression=True)
    est = ensemble.GradientBoostingRegressor(init=linear_model.LinearRegression(), n_estimators=3).fit(X, y)
    with pytest.raises(Unsupported, match=r"GradientBoostingRegressor\(init=LinearRegression\)"):
        compiled(est)


def test_gradient_boosting_tie_predicts_the_positive_class() -> None:
    """A raw score of exactly 0: scikit-learn's predict says class 1, proba says [0.5, 0.5]."""
    X = np.array([[0.0], [1.0], [0.0], [1.0]])
    y = np.array([0, 1, 1, 0])
    est = ensemble.GradientBoostingClassifier(n_estimators=3).fit(X, y)
    result = compiled(est)
    proba = result.apply(X)
    assert (proba == 0.5).all()
    assert list(result.predict(proba)) == list(est.predict(X)) == [1, 1, 1, 1]


# -- linear models ------------------------------------------------------------------------------

def linear_rows(X: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    big = rng.normal(size=(20, X.shape[1])) * 1e3
    special = X[:3].copy()
    special[0, 1], special[1, 2], special[2, 0] = np.nan, np.inf, -np.inf
    return np.concatenate([X[:100], big, np.zeros((1, X.shape[1])), special])


@pytest.mark.parametrize("classes", [2, 3, 5])
@pytest.mark.parametrize("params", [{}, {"C": 0.01}, {"fit_intercept": False}, {"solver": "liblinear"},
                                    {"l1_ratio": 1.0, "solver": "saga", "C": 0.5, "max_iter": 2000}])
def test_logistic_regression(classes: int, params: dict[str, Any]) -> None:
    if params.get("solver") == "liblinear" and classes > 2:
        pytest.skip("liblinear fits two classes only")
    X, y = dataset(60 + classes, classes=classes)
    labels = np.array(["x", "y", "z", "u", "v"])[y] if classes == 3 else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = linear_model.LogisticRegression(**params).fit(X, labels)
    check(est, linear_rows(X, 60))


@pytest.mark.parametrize(("loss", "classes"), [("log_loss", 2), ("modified_huber", 2), ("hinge", 2),
                                               ("hinge", 3), ("perceptron", 4), ("squared_hinge", 2)])
def test_sgd_classifier(loss: str, classes: int) -> None:
    X, y = dataset(70 + classes, classes=classes)
    est = linear_model.SGDClassifier(loss=loss, random_state=0).fit(X, y)
    result = check(est, linear_rows(X, 70))
    assert (result.classes is None) == (loss not in ("log_loss", "modified_huber"))


@pytest.mark.parametrize("loss", ["log_loss", "modified_huber"])
def test_sgd_multiclass_probabilities_are_unsupported(loss: str) -> None:
    X, y = dataset(71, classes=3)
    est = linear_model.SGDClassifier(loss=loss, random_state=0).fit(X, y)
    with pytest.raises(Unsupported, match=rf"SGDClassifier\(loss='{loss}'\)"):
        compiled(est)


@pytest.mark.parametrize("cls", [svm.LinearSVC, linear_model.RidgeClassifier])
@pytest.mark.parametrize("classes", [2, 3])
def test_label_classifiers(cls: type, classes: int) -> None:
    X, y = dataset(80 + classes, classes=classes)
    labels = np.array(["no", "yes", "maybe"])[y]
    est = cls().fit(X, labels)
    result = check(est, linear_rows(X, 80))
    assert result.classes is None


@pytest.mark.parametrize("est", [
    linear_model.LinearRegression(), linear_model.LinearRegression(fit_intercept=False),
    linear_model.Ridge(alpha=3.0), linear_model.Ridge(fit_intercept=False), linear_model.Lasso(alpha=0.05),
    linear_model.ElasticNet(alpha=0.1, l1_ratio=0.3), linear_model.SGDRegressor(random_state=0),
], ids=lambda e: repr(e))
def test_linear_regressors(est: Any) -> None:
    X, y = dataset(90, regression=True)
    est.fit(X, y)
    check(est, linear_rows(X, 90))


def test_multi_target_regression_is_unsupported() -> None:
    X, y = dataset(91, regression=True)
    est = linear_model.Ridge().fit(X, np.stack([y, y], axis=1))
    with pytest.raises(Unsupported, match="more than one target"):
        compiled(est)


def test_wrong_width_is_invalid_data() -> None:
    X, y = dataset(92)
    for est in (linear_model.LogisticRegression().fit(X, y), ensemble.HistGradientBoostingClassifier(max_iter=2).fit(X, y),
                tree.DecisionTreeClassifier().fit(X, y)):
        with pytest.raises(InvalidData, match="expected 5 features"):
            compiled(est).apply(X[:, :4])
