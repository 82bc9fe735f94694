"""Compiled preprocessing steps (scorer.sklearn_plan.preprocess) against scikit-learn's own ``transform``.

Every case fits a real scikit-learn step on random data (seeded, parameters crossed per seed), compiles
it, and feeds the op the block the pipeline layer hands it (float64 when every column is numeric, else
an object array of Python values), while scikit-learn transforms the DataFrame (or array) itself. The
answers must be equal cell for cell (float64 bit for bit, object cells equal and of the same kind), and
where scikit-learn raises a ValueError the op must raise InvalidData. Each op is also stored (meta through
strict JSON, arrays without object dtype) and rebuilt, and the rebuilt op must answer the same. Data
carries the edge cases: NaN and None, unknown and infrequent categories, int-typed categories, pandas
``str`` columns, infinity where the step refuses it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)

from scorer.sklearn_plan.base import OPS, InvalidData, Op, Unsupported, compiler_for
from scorer.sklearn_plan.preprocess import UFUNCS

pytestmark = [pytest.mark.fast, pytest.mark.filterwarnings("ignore")]

# ------------------------------------------------------------------------------------------- harness


def block(X: Any) -> np.ndarray:
    """What the pipeline layer hands a step: float64 when every column is numeric (NaN for missing),
    else an object array of Python values (str, float incl. nan, int, None)."""
    if isinstance(X, np.ndarray):
        return X if X.dtype in (np.float64, object) else X.astype(np.float64)
    if all(pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]) for c in X.columns):
        return X.to_numpy(dtype=np.float64)
    out = np.empty(X.shape, dtype=object)
    for j, c in enumerate(X.columns):
        s = X[c]
        out[:, j] = s.to_numpy().tolist() if pd.api.types.is_numeric_dtype(s) else s.to_numpy(dtype=object)
    return out


def is_nan(v: Any) -> bool:
    return isinstance(v, (float, np.floating)) and v != v


def assert_same(ours: np.ndarray, theirs: Any) -> None:
    theirs = theirs.toarray() if hasattr(theirs, "toarray") else np.asarray(theirs)
    assert ours.shape == theirs.shape
    if ours.dtype == object or theirs.dtype == object:
        assert ours.dtype == theirs.dtype
        for a, b in zip(ours.ravel().tolist(), theirs.ravel().tolist()):
            assert (is_nan(a) and is_nan(b)) or (
                a == b and isinstance(a, str) == isinstance(b, str) and (a is None) == (b is None)
            ), (a, b)
    else:
        assert ours.dtype == np.float64
        assert np.array_equal(ours, theirs.astype(np.float64), equal_nan=True)


def stored(compiled: Op) -> Op:
    """The op through its stored form: meta as strict JSON, arrays of numbers, bools or text only."""
    meta, arrays = compiled.state()
    meta = json.loads(json.dumps(meta, allow_nan=False))
    for a in arrays.values():
        assert a.dtype.kind in "biufU"
    assert OPS[compiled.kind] is type(compiled)
    return type(compiled).from_state(meta, {k: np.array(v) for k, v in arrays.items()})


def compare(fitted: Any, batches: list[Any]) -> int:
    """Compile ``fitted`` and compare with its transform on every batch; the number of batches where
    scikit-learn answered (the rest raised, and so did the ops)."""
    compiled = compiler_for(fitted)(fitted)
    ops = [compiled, stored(compiled)]
    answered = 0
    for X in batches:
        try:
            expected = fitted.transform(X)
        except (ValueError, TypeError):
            for o in ops:
                with pytest.raises(InvalidData):
                    o.apply(block(X))
            continue
        answered += 1
        for o in ops:
            assert_same(o.apply(block(X)), expected)
    return answered


def fit(step: Any, X: Any, y: Any = None) -> Any | None:
    """The fitted step, or None when scikit-learn refuses these parameters on this data."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return step.fit(X, y)
    except (
        ValueError,
        TypeError,
        AttributeError,
    ):  # AttributeError: sklearn's own message for an infrequent drop
        return None


# --------------------------------------------------------------------------------- categorical data

KINDS = ("str", "pdstr", "int", "float", "mixed_missing", "bool")


def column(rng: np.random.Generator, kind: str, n: int, unknown: bool) -> pd.Series:
    """One categorical column: a few frequent values and a tail of rare ones; ``unknown`` adds values
    (and missing values) never seen in fit."""
    weights = np.array([30, 20, 10, 5, 2, 1, 1], dtype=float)
    pick = rng.choice(len(weights), size=n, p=weights / weights.sum())
    if unknown:
        pick = np.where(rng.random(n) < 0.2, rng.integers(7, 10, size=n), pick)
    if kind in ("str", "pdstr", "mixed_missing"):
        labels = np.array([f"c{i}" for i in range(10)], dtype=object)
        values = labels[pick]
        if kind == "str" and not unknown:
            values = np.where(rng.random(n) < 0.05, np.nan, values)  # NaN is a category, None is not
        if kind == "mixed_missing" or unknown:
            holes = rng.random(n)
            values = np.where(holes < 0.08, None, values)
            values = np.where((holes >= 0.08) & (holes < 0.15), np.nan, values)
        if kind == "pdstr":
            return pd.Series(values, dtype="str")
        return pd.Series(values, dtype=object)
    if kind == "int":
        values = (pick * 3 - 4).astype(np.int64)
        if unknown and rng.random() < 0.5:
            floats = values.astype(np.float64)
            floats[rng.random(n) < 0.1] = np.nan
            floats[rng.random(n) < 0.05] = 0.5
            return pd.Series(floats)
        return pd.Series(values)
    if kind == "bool":
        return pd.Series(pick % 2 == 0)
    values = pick * 0.25 - 0.5
    values[rng.random(n) < 0.1] = np.nan
    if unknown:
        values[rng.random(n) < 0.05] = -0.0
    return pd.Series(values)


def frame(rng: np.random.Generator, kinds: list[str], n: int, unknown: bool = False) -> pd.DataFrame:
    return pd.DataFrame({f"x{j}": column(rng, k, n, unknown) for j, k in enumerate(kinds)})


def batches(rng: np.random.Generator, kinds: list[str], fitted_on: pd.DataFrame) -> list[Any]:
    out: list[Any] = [
        fitted_on.iloc[:50],
        frame(rng, kinds, 60),
        frame(rng, kinds, 60, unknown=True),
        fitted_on.iloc[:1],
        frame(rng, kinds, 1, unknown=True),
    ]
    if "float" in kinds:
        with_inf = frame(rng, kinds, 20)
        col = kinds.index("float")
        with_inf.iloc[3, col] = np.inf
        out.append(with_inf)
    return out


def explicit_categories(X: pd.DataFrame, rng: np.random.Generator) -> list[Any]:
    cats = []
    for c in X.columns:
        s = X[c]
        values = [v for v in pd.unique(s.to_numpy(dtype=object)) if not (v is None or is_nan(v))]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            chosen = sorted(values)[: max(1, len(values) - 1)]
            if s.isna().any():
                chosen.append(np.nan)
            cats.append(np.array(chosen, dtype=s.dtype if s.dtype.kind != "i" else np.int64))
        elif pd.api.types.is_bool_dtype(s):
            cats.append(np.array([False, True]))
        else:
            chosen = list(rng.permutation(sorted(values)))[: max(1, len(values) - 1)] + ["never"]
            cats.append(chosen)
    return cats


def encoder_case(seed: int) -> tuple[np.random.Generator, list[str], pd.DataFrame]:
    rng = np.random.default_rng(seed)
    kinds = [str(k) for k in rng.choice(KINDS, size=int(rng.integers(1, 4)))]
    return rng, kinds, frame(rng, kinds, int(rng.choice([40, 120, 300])))


# ---------------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("seed", range(50))
def test_one_hot_encoder_matches_sklearn(seed: int) -> None:
    """Categories auto or explicit, every handle_unknown, infrequent grouping, every kind of drop and
    output dtype: the compiled encoder answers as OneHotEncoder.transform does, or raises where it does."""
    rng, kinds, X = encoder_case(seed)
    answered = 0
    for variant in range(6):
        params: dict[str, Any] = {
            "handle_unknown": str(rng.choice(["error", "ignore", "infrequent_if_exist", "warn"])),
            "sparse_output": bool(rng.random() < 0.5),
            "min_frequency": [None, None, 3, 0.1, 25][int(rng.integers(5))],
            "max_categories": [None, None, 1, 2, 3][int(rng.integers(5))],
            "dtype": [np.float64, np.float64, np.float32, np.int8][int(rng.integers(4))],
        }
        drop = int(rng.integers(4))
        if drop == 1:
            params["drop"] = "first"
        elif drop == 2:
            params["drop"] = "if_binary"
        elif drop == 3:
            params["drop"] = [X[c].dropna().iloc[int(rng.integers(5))] for c in X.columns]
        if variant % 2:
            params["categories"] = explicit_categories(X, rng)
        fitted = fit(OneHotEncoder(**params), X)
        if fitted is None:
            continue
        answered += compare(fitted, batches(rng, kinds, X))
    assert answered > 0 or seed % 7 == 0  # most seeds give some answering variant


@pytest.mark.parametrize("seed", range(30))
def test_ordinal_encoder_matches_sklearn(seed: int) -> None:
    """handle_unknown error/use_encoded_value (an integer or NaN), encoded_missing_value, infrequent
    categories, explicit categories, integer output dtypes."""
    rng, kinds, X = encoder_case(seed)
    for variant in range(6):
        handle = str(rng.choice(["error", "use_encoded_value"]))
        params: dict[str, Any] = {
            "handle_unknown": handle,
            "min_frequency": [None, None, 3, 0.1][int(rng.integers(4))],
            "max_categories": [None, None, 2, 3][int(rng.integers(4))],
            "encoded_missing_value": [np.nan, -1, 99][int(rng.integers(3))],
            "dtype": [np.float64, np.float64, np.float32, np.int64][int(rng.integers(4))],
        }
        if handle == "use_encoded_value":
            params["unknown_value"] = [np.nan, -2, 50][int(rng.integers(3))]
        if variant % 2:
            params["categories"] = explicit_categories(X, rng)
        fitted = fit(OrdinalEncoder(**params), X)
        if fitted is not None:
            compare(fitted, batches(rng, kinds, X))


@pytest.mark.parametrize("seed", range(40))
def test_target_encoder_matches_sklearn(seed: int) -> None:
    """The encodings fitted on all the data (transform, as at predict time), target_mean_ for unknown
    categories, binary, continuous and multiclass targets (n_classes columns per feature)."""
    rng, kinds, X = encoder_case(seed)
    n = len(X)
    targets = {
        "continuous": rng.normal(size=n) * 3 + X.index.to_numpy() % 5,
        "binary": np.where(rng.random(n) < 0.4, "yes", "no"),
        "multiclass": rng.choice(["a", "b", "c"], size=n),
    }
    for target_type, y in targets.items():
        params: dict[str, Any] = {
            "smooth": ["auto", 0.5, 10.0][int(rng.integers(3))],
            "target_type": target_type if rng.random() < 0.5 else "auto",
            "cv": 3,
            "random_state": 0,
        }
        if rng.random() < 0.3:
            params["categories"] = explicit_categories(X, rng)
        fitted = fit(TargetEncoder(**params), X, y)
        if fitted is not None:
            assert fitted.target_type_ == target_type
            compare(fitted, batches(rng, kinds, X))


def test_one_hot_infrequent_and_drop_edges() -> None:
    """Cases chosen by hand: the infrequent column dropped by drop='first' when every category is
    infrequent, an explicit drop of a frequent category next to an infrequent group, unknowns mapped
    to that group, NaN as an infrequent category, None and NaN as two categories."""
    X = pd.DataFrame(
        {"a": ["x"] * 10 + ["y"] * 3 + ["z"] * 2 + [None] + [np.nan], "b": [1] * 8 + [2] * 6 + [3] * 3}
    )
    test = pd.DataFrame({"a": ["x", "y", "z", None, np.nan, "new"], "b": [1, 2, 3, 3, 4, 1]})
    for params in (
        {"max_categories": 1, "drop": "first", "handle_unknown": "infrequent_if_exist"},
        {"min_frequency": 4, "drop": ["x", 2], "handle_unknown": "infrequent_if_exist"},
        {"min_frequency": 4, "drop": "if_binary", "handle_unknown": "warn"},
        {"min_frequency": 2, "handle_unknown": "ignore", "sparse_output": False},
        {"handle_unknown": "ignore", "drop": "first"},
    ):
        fitted = OneHotEncoder(**params).fit(X)
        assert compare(fitted, [test, X]) == 2, params
    fitted = OneHotEncoder(handle_unknown="error").fit(X)
    assert compare(fitted, [test.iloc[:4], test]) == 1


def test_encoders_on_numpy_and_int_typed_categories() -> None:
    """Fitted on numpy arrays: object arrays of strings, int arrays whose categories are int64 fed as
    float64 blocks (1.0 is the category 1, 1.5 is unknown), and object arrays of Python ints."""
    ints = np.array([[1, 5], [2, 5], [3, 7], [1, 7]])
    floats = np.array([[1.0, 5.0], [1.5, 7.0], [3.0, np.nan], [2.0, -0.0]])
    objects = np.array([["a", 1], ["b", 2], [None, 3], ["a", 1]], dtype=object)
    for step in (
        OneHotEncoder(handle_unknown="ignore"),
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
    ):
        assert compare(step.fit(ints), [ints, floats]) == 2
        assert compare(step.fit(objects), [objects, np.array([["c", 1.0], [np.nan, 2]], dtype=object)]) == 2
    # A numeric column inside an object block: its missing value may arrive as None; NaN is its category.
    mixed = pd.DataFrame({"s": pd.Series(["a", "b", "a"], dtype=object), "f": [1.5, np.nan, 2.0]})
    for step in (OneHotEncoder(), OrdinalEncoder()):
        fitted = step.fit(mixed)
        cells = block(mixed)
        cells[1, 1] = None
        for o in (compiler_for(fitted)(fitted), stored(compiler_for(fitted)(fitted))):
            assert_same(o.apply(cells), fitted.transform(mixed))
    big = np.array([[2**60], [1]])
    with pytest.raises(Unsupported, match=r"OneHotEncoder: integer categories beyond 2\*\*53"):
        compiler_for(OneHotEncoder().fit(big))(OneHotEncoder().fit(big))


def test_encoder_errors_name_step_and_column_not_the_value() -> None:
    fitted = OneHotEncoder().fit(pd.DataFrame({"a": ["secret-a", "b"], "b": ["c", "d"]}))
    compiled = compiler_for(fitted)(fitted)
    with pytest.raises(InvalidData) as caught:
        compiled.apply(np.array([["secret-a", "secret-x"]], dtype=object))
    assert str(caught.value) == "OneHotEncoder: unknown category in column 1"
    with pytest.raises(InvalidData, match="the block has 1 columns, the step expects 2"):
        compiled.apply(np.array([["b"]], dtype=object))


# ------------------------------------------------------------------------------------------ scalers


def numeric_data(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    X = rng.normal(size=(n, k)) * rng.choice([1e-3, 1.0, 1e6], size=k) + rng.normal(size=k) * 10
    X[rng.random((n, k)) < 0.1] = np.nan
    if k > 1:
        X[:, 1] = 4.0  # a constant column: scale 1
    return X


@pytest.mark.parametrize("seed", range(30))
def test_scalers_match_sklearn(seed: int) -> None:
    """Standard (with_mean/with_std), MinMax (feature_range, clip), Robust (centering, scaling,
    quantile_range, unit_variance) and MaxAbs (clip): bit for bit on float64, object blocks converted as
    check_array converts them, infinity refused."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 5))
    X = numeric_data(rng, 200, k)
    test = numeric_data(rng, 100, k) * 1.5
    test[0] = X[0]
    with_inf = test.copy()
    with_inf[5, 0] = -np.inf
    as_objects = test[:10].astype(object)
    as_objects[0, 0] = None
    frame_test = pd.DataFrame(test, columns=[f"f{j}" for j in range(k)])
    flags = rng.random(4) < 0.5
    steps = [
        StandardScaler(with_mean=bool(flags[0]), with_std=bool(flags[1])),
        MinMaxScaler(feature_range=[(0, 1), (-2.5, 3)][int(flags[2])], clip=bool(flags[3])),
        RobustScaler(
            with_centering=bool(flags[0]),
            with_scaling=bool(flags[1]),
            quantile_range=[(25.0, 75.0), (10.0, 90.0)][int(flags[2])],
            unit_variance=bool(flags[3]),
        ),
        MaxAbsScaler(clip=bool(flags[3])),
    ]
    for step in steps:
        fitted = step.fit(X)
        assert compare(fitted, [test, test[:1], with_inf, as_objects]) == 3
        assert compare(step.fit(pd.DataFrame(X, columns=frame_test.columns)), [frame_test]) == 1


# ------------------------------------------------------------------------------------------ imputer


@pytest.mark.parametrize("seed", range(40))
def test_simple_imputer_on_numbers_matches_sklearn(seed: int) -> None:
    """Every strategy, missing_values NaN or a number, fill values, add_indicator, keep_empty_features
    (an all-missing column in fit), int columns (an int fill dtype) fed as float64."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 4))
    missing = [np.nan, -1.0, 0][int(rng.integers(3))]
    X = np.round(rng.normal(size=(80, k)) * 2)
    X[rng.random(X.shape) < 0.15] = np.nan if is_nan(missing) else missing
    if rng.random() < 0.5:
        X[:, 0] = np.nan if is_nan(missing) else missing
    test = np.round(rng.normal(size=(40, k)) * 2)
    test[rng.random(test.shape) < 0.2] = np.nan if is_nan(missing) else missing
    other_missing = test.copy()
    other_missing[0, -1] = 7.0 if is_nan(missing) else np.nan  # a NaN where NaN is not the missing value
    with_inf = test.copy()
    with_inf[1, 0] = np.inf
    for strategy in ("mean", "median", "most_frequent", "constant"):
        params: dict[str, Any] = {
            "strategy": strategy,
            "missing_values": missing,
            "add_indicator": bool(rng.random() < 0.5),
            "keep_empty_features": bool(rng.random() < 0.5),
        }
        if strategy == "constant" and rng.random() < 0.5:
            params["fill_value"] = -7.5
        fitted = fit(SimpleImputer(**params), X)
        if fitted is None:
            continue
        compare(fitted, [test, test[:1], other_missing, with_inf, test.astype(object)])
    ints = pd.DataFrame({"a": [1, 2, 2, -1, 3], "b": [-1, -1, 5, 5, 5]})
    for strategy in ("most_frequent", "constant", "median"):
        fitted = SimpleImputer(strategy=strategy, missing_values=-1, add_indicator=True).fit(ints)
        assert compare(fitted, [ints, ints.iloc[:1]]) == 2


@pytest.mark.parametrize("seed", range(30))
def test_simple_imputer_on_objects_matches_sklearn(seed: int) -> None:
    """Object blocks: missing_values NaN (None is not NaN), None or a string; most_frequent and
    constant; the output stays object, with the indicator's booleans appended."""
    rng = np.random.default_rng(seed)
    missing = [np.nan, None, "?"][int(rng.integers(3))]
    labels = np.array(["red", "green", "blue", "?"], dtype=object)

    def data(n: int, k: int) -> np.ndarray:
        X = labels[rng.integers(0, 3, size=(n, k))]
        X[rng.random((n, k)) < 0.2] = missing
        X[rng.random((n, k)) < 0.05] = "?"
        return X

    k = int(rng.integers(1, 4))
    X = data(60, k)
    if rng.random() < 0.4:
        X[:, 0] = missing
    tests = [data(30, k), data(1, k)]
    mixed = data(10, k)
    mixed[0, 0], mixed[1, -1] = None, np.nan
    tests.append(mixed)
    for strategy in ("most_frequent", "constant"):
        params: dict[str, Any] = {
            "strategy": strategy,
            "missing_values": missing,
            "add_indicator": bool(rng.random() < 0.5),
            "keep_empty_features": bool(rng.random() < 0.5),
        }
        if strategy == "constant" and rng.random() < 0.5:
            params["fill_value"] = "filled"
        fitted = fit(SimpleImputer(**params), X)
        if fitted is not None:
            compare(fitted, tests)


# --------------------------------------------------------------------------------- FunctionTransformer


@pytest.mark.parametrize("name", sorted(UFUNCS))
def test_function_transformer_ufuncs_match_sklearn(name: str) -> None:
    """Each known ufunc, validate False (a DataFrame in, as in a ColumnTransformer) and True (NaN and
    infinity refused), plus the identity; a block that is not numeric is refused where numpy refuses it."""
    rng = np.random.default_rng(len(name))
    X = rng.normal(size=(50, 3)) * 3
    X[rng.random(X.shape) < 0.1] = np.nan
    X[0, 0], X[1, 1], X[2, 2] = 0.0, -1.0, 1.0
    test = pd.DataFrame(X, columns=["a", "b", "c"])
    finite = test.fillna(0.5)
    objects = np.array([["a", 1.0, 2.0]], dtype=object)
    numbers = np.array([[0.5, -1.5, None]], dtype=object)
    numbers[0, 2] = 2  # an int cell
    for func in (UFUNCS[name], None):
        for validate in (False, True):
            fitted = FunctionTransformer(func=func, validate=validate).fit(finite)
            expected = 2 if validate else 3
            assert compare(fitted, [test, finite, finite.iloc[:1]]) == expected
            compare(fitted, [objects, numbers])


def test_function_transformer_other_functions_are_unsupported() -> None:
    lam = FunctionTransformer(func=lambda x: x + 1).fit(np.ones((2, 2)))
    with pytest.raises(Unsupported, match=r"^FunctionTransformer\(func=.*<lambda>\): only the identity"):
        compiler_for(lam)(lam)
    kw = FunctionTransformer(func=np.log1p, kw_args={"out": None}).fit(np.ones((2, 2)))
    with pytest.raises(Unsupported, match=r"^FunctionTransformer\(kw_args=\.\.\.\)"):
        compiler_for(kw)(kw)


# --------------------------------------------------------------------------------------- what is not


def test_unsupported_steps_say_why() -> None:
    class MyScaler(StandardScaler):
        pass

    for step in (PolynomialFeatures().fit(np.ones((2, 2))), MyScaler().fit(np.ones((2, 2)))):
        with pytest.raises(Unsupported, match=r"no compiled form for this step"):
            compiler_for(step)
    own = SimpleImputer(strategy=np.nanmean).fit(np.ones((2, 2)))
    with pytest.raises(Unsupported, match=r"^SimpleImputer\(strategy=.*\): only mean"):
        compiler_for(own)(own)


def test_ops_import_without_sklearn_or_scipy() -> None:
    code = (
        "import sys, scorer.sklearn_plan.preprocess; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
