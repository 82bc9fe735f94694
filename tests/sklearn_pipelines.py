"""Random scikit-learn pipelines for the scoring plans' property tests: fitted here, then compared with
their compiled plans row by row (tests/test_plan_property.py, scripts/plan-soak).

Each seed draws a frame (numeric columns with NaN and repeated values, string and int-typed categorical
columns with skewed levels, so infrequent categories exist, and missing values), a preprocessing of each
column group (scalers, imputers, encoders with their handle_unknown, drop and infrequent options, a
known ufunc, passthrough, drop) and an estimator (tree ensembles, gradient boosting, linear models;
classifiers with string or int labels, binary or multiclass, and regressors); then scoring rows that
were not seen in training: unknown and infrequent levels, missing values, ±inf, huge magnitudes, and
values exactly on the numeric columns' learned split points (midpoints of training values) and the
next float above them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Case:
    seed: int
    pipeline: Any
    train: pd.DataFrame
    score: list[pd.DataFrame]  # blocks of rows, compared block by block
    description: list[str] = field(default_factory=list)


def _numeric(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.integers(0, 3)
    if kind == 0:
        values = rng.normal(0, 1, n) * 10.0 ** int(rng.integers(-2, 4))
    elif kind == 1:
        values = rng.integers(-3, 6, n).astype(float)  # few distinct values: split points between them
    else:
        values = rng.exponential(2.0, n)
    return values


def _levels(rng: np.random.Generator, k: int, as_int: bool) -> list[Any]:
    return [int(i * 3 + 1) for i in range(k)] if as_int else [f"L{i}" for i in range(k)]


def make_case(seed: int, n: int = 240) -> Case:
    rng = np.random.default_rng(seed)
    n_num = int(rng.integers(1, 5))
    n_cat = int(rng.integers(0, 4))
    frame: dict[str, Any] = {}
    nan_numeric = bool(rng.random() < 0.5)
    for i in range(n_num):
        values = _numeric(rng, n)
        if nan_numeric and i == 0:
            values[rng.random(n) < 0.1] = np.nan
        frame[f"x{i}"] = values
    cat_levels: dict[str, list[Any]] = {}
    missing_cat = bool(rng.random() < 0.3)
    for j in range(n_cat):
        as_int = bool(rng.random() < 0.3)
        levels = _levels(rng, int(rng.integers(2, 9)), as_int)
        weights = rng.dirichlet(np.full(len(levels), 0.6))
        picked = rng.choice(len(levels), size=n, p=weights)
        column = np.array([levels[p] for p in picked], dtype=np.int64 if as_int else object)
        if missing_cat and not as_int and j == 0:
            column[rng.random(n) < 0.08] = None
        frame[f"c{j}"] = column
        cat_levels[f"c{j}"] = levels
    train = pd.DataFrame(frame)
    task = rng.choice(["binary", "multiclass", "regression"], p=[0.45, 0.25, 0.3])
    signal = sum(np.nan_to_num(train[f"x{i}"].to_numpy(), nan=0.0) * rng.normal() for i in range(n_num))
    for c, levels in cat_levels.items():
        effect = dict(zip(levels, rng.normal(0, 1, len(levels)), strict=True))
        signal = signal + np.array([effect.get(v, 0.0) for v in train[c]])
    signal = signal + rng.normal(0, 0.5, n)
    if task == "regression":
        y: Any = signal
    else:
        k = 2 if task == "binary" else int(rng.integers(3, 5))
        cuts = np.quantile(signal, np.linspace(0, 1, k + 1)[1:-1])
        codes = np.searchsorted(cuts, signal)
        labels = [f"class{i}" for i in range(k)] if rng.random() < 0.6 else [i * 2 for i in range(k)]
        y = np.array([labels[c] for c in codes], dtype=object if isinstance(labels[0], str) else np.int64)
    description: list[str] = [f"task={task}", f"numeric={n_num}", f"categorical={n_cat}"]
    pipeline = _pipeline(rng, train, cat_levels, task, nan_numeric, missing_cat, description)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.fit(train, y)
    score = _scoring_rows(rng, train, cat_levels)
    return Case(seed, pipeline, train, score, description)


def _numeric_branch(rng: np.random.Generator, nan: bool, description: list[str]) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    choice = rng.choice(["passthrough", "standard", "minmax", "robust", "maxabs", "ufunc", "impute"])
    description.append(f"numeric:{choice}")
    scalers = {
        "standard": lambda: StandardScaler(with_mean=bool(rng.random() < 0.8), with_std=bool(rng.random() < 0.8)),
        "minmax": lambda: MinMaxScaler(clip=bool(rng.random() < 0.5)),
        "robust": lambda: RobustScaler(with_centering=bool(rng.random() < 0.7)),
        "maxabs": lambda: MaxAbsScaler(),
    }
    if choice == "passthrough":
        return "passthrough"
    if choice == "ufunc":
        return FunctionTransformer(np.abs if rng.random() < 0.5 else np.square)
    if choice == "impute":
        strategy = str(rng.choice(["mean", "median", "most_frequent", "constant"]))
        imputer = SimpleImputer(strategy=strategy, add_indicator=bool(nan and rng.random() < 0.5))
        return make_pipeline(imputer, scalers[str(rng.choice(list(scalers)))]())
    return scalers[choice]()


def _categorical_branch(rng: np.random.Generator, task: str, missing: bool, description: list[str],
                        numbers: bool = False) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, TargetEncoder

    options = ["onehot", "onehot", "ordinal", "impute-onehot"] + (["target"] if task != "multiclass" else [])
    choice = str(rng.choice(options))
    description.append(f"categorical:{choice}")
    if choice in ("onehot", "impute-onehot"):
        handle = str(rng.choice(["ignore", "infrequent_if_exist", "error"]))
        kwargs: dict[str, Any] = {"handle_unknown": handle, "sparse_output": bool(rng.random() < 0.3)}
        if rng.random() < 0.4:
            kwargs["min_frequency"] = int(rng.integers(3, 30))
        if rng.random() < 0.2:
            kwargs["max_categories"] = int(rng.integers(2, 5))
        if handle != "error" and rng.random() < 0.3 or handle == "error" and rng.random() < 0.5:
            kwargs["drop"] = str(rng.choice(["first", "if_binary"]))
        description.append(f"onehot:{kwargs}")
        encoder = OneHotEncoder(**kwargs)
        if choice == "impute-onehot":
            return make_pipeline(SimpleImputer(strategy=str(rng.choice(["most_frequent", "constant"])),
                                               fill_value=-1 if numbers else "MISSING",
                                               missing_values=np.nan),
                                 encoder)
        return encoder
    if choice == "ordinal":
        if rng.random() < 0.7:
            encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                     encoded_missing_value=-2 if rng.random() < 0.5 else np.nan)
        else:
            encoder = OrdinalEncoder()
        if rng.random() < 0.3:
            encoder.set_params(min_frequency=int(rng.integers(3, 30)))
        return encoder
    return TargetEncoder(random_state=int(rng.integers(0, 1000)))


def _estimator(rng: np.random.Generator, task: str, description: list[str], categorical_mask: Any,
               only: str | None = None) -> Any:
    from sklearn.ensemble import (
        ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier, GradientBoostingRegressor,
        HistGradientBoostingClassifier, HistGradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor,
    )
    from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    depth = int(rng.integers(2, 7))
    if task == "regression":
        choices = {
            "hgb": lambda: HistGradientBoostingRegressor(max_iter=int(rng.integers(3, 20)), max_depth=depth,
                                                         categorical_features=categorical_mask,
                                                         loss=str(rng.choice(["squared_error", "absolute_error"]))),
            "rf": lambda: RandomForestRegressor(n_estimators=int(rng.integers(2, 8)), max_depth=depth, random_state=0),
            "et": lambda: ExtraTreesRegressor(n_estimators=int(rng.integers(2, 8)), max_depth=depth, random_state=0),
            "dt": lambda: DecisionTreeRegressor(max_depth=depth, random_state=0),
            "gb": lambda: GradientBoostingRegressor(n_estimators=int(rng.integers(3, 15)), max_depth=min(depth, 4),
                                                    random_state=0),
            "linear": lambda: [LinearRegression(), Ridge(alpha=float(rng.uniform(0.1, 3))), ElasticNet(alpha=0.05),
                               Lasso(alpha=0.01)][int(rng.integers(0, 4))],
        }
    else:
        choices = {
            "hgb": lambda: HistGradientBoostingClassifier(max_iter=int(rng.integers(3, 20)), max_depth=depth,
                                                          categorical_features=categorical_mask),
            "rf": lambda: RandomForestClassifier(n_estimators=int(rng.integers(2, 8)), max_depth=depth, random_state=0),
            "et": lambda: ExtraTreesClassifier(n_estimators=int(rng.integers(2, 8)), max_depth=depth, random_state=0),
            "dt": lambda: DecisionTreeClassifier(max_depth=depth, random_state=0),
            "gb": lambda: GradientBoostingClassifier(n_estimators=int(rng.integers(3, 12)), max_depth=min(depth, 3),
                                                     random_state=0),
            "logistic": lambda: LogisticRegression(C=float(rng.uniform(0.1, 10)), max_iter=300),
        }
    name = only or str(rng.choice(list(choices)))
    description.append(f"estimator:{name}")
    return choices[name]()


def _pipeline(rng: np.random.Generator, train: pd.DataFrame, cat_levels: dict[str, list[Any]], task: str,
              nan_numeric: bool, missing_cat: bool, description: list[str]) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder, StandardScaler

    numeric = [c for c in train.columns if c.startswith("x")]
    strings = [c for c in cat_levels if _text(train[c])]
    ints = [c for c in cat_levels if not _text(train[c])]
    if cat_levels and rng.random() < 0.2:
        # HistGradientBoosting's native categorical splits: every categorical column ordinal-encoded first
        description.append("hgb-native-categorical")
        encoder = lambda: OrdinalEncoder(handle_unknown="use_encoded_value",  # noqa: E731
                                         unknown_value=-1 if rng.random() < 0.5 else np.nan)
        transformers = [(name, encoder(), columns) for name, columns in (("cat", strings), ("icat", ints)) if columns]
        transformers.append(("num", "passthrough" if rng.random() < 0.5 else StandardScaler(), numeric))
        mask = [True] * (len(strings) + len(ints)) + [False] * len(numeric)
        estimator = _estimator(rng, task, description, mask, only="hgb")
        return Pipeline([("columns", ColumnTransformer(transformers)), ("model", estimator)])
    num_branch = _numeric_branch(rng, nan_numeric, description)
    transformers = [("num", num_branch, numeric)]
    # string and int-typed categorical columns in separate branches (an encoder sees one dtype)
    for name, columns in (("cat", strings), ("icat", ints)):
        if columns:
            transformers.append((name, _categorical_branch(rng, task, missing_cat and name == "cat", description,
                                                           numbers=name == "icat"), columns))
    remainder = str(rng.choice(["drop", "passthrough"])) if rng.random() < 0.2 else "drop"
    steps: list[tuple[str, Any]] = [("columns", ColumnTransformer(transformers, remainder=remainder))]
    if rng.random() < 0.15:
        steps.append(("scale", StandardScaler()))
        description.append("scale-all")
    estimator = _estimator(rng, task, description, None)
    if not _handles_nan(estimator):  # NaN from the data, an encoder's missing or unknown value
        steps.append(("impute", SimpleImputer()))
        description.append("impute-all")
    steps.append(("model", estimator))
    if type(estimator).__name__.startswith("HistGradientBoosting"):
        steps[0][1].set_params(sparse_threshold=0.0)  # it takes no sparse input
    return Pipeline(steps)


def _text(series: pd.Series) -> bool:
    """A string column: object, or pandas 3's ``str`` dtype (which a frame built from Python strings gets)."""
    return not pd.api.types.is_numeric_dtype(series)


def _handles_nan(estimator: Any) -> bool:
    return type(estimator).__name__.startswith(("HistGradientBoosting", "RandomForest", "DecisionTree", "ExtraTrees"))


def _scoring_rows(rng: np.random.Generator, train: pd.DataFrame, cat_levels: dict[str, list[Any]]) -> list[pd.DataFrame]:
    """Blocks of rows not seen in training: a sample of training rows followed by, per column, the values
    a pipeline answers (split points and the next float above, huge magnitudes, signed zeros, known
    levels), all in one block; then each value it may refuse (missing, ±inf, unseen and empty levels) as
    a block of its own row, so that a refusal is compared row by row without searching for it."""
    n = 60
    base = train.sample(n, random_state=int(rng.integers(0, 2**31)), replace=True).reset_index(drop=True)
    safe_blocks = [base]
    risky_blocks = []
    for column in train.columns:
        values = train[column]
        if column.startswith("x"):
            finite = np.unique(values.to_numpy()[np.isfinite(values.to_numpy())])
            mids = (finite[:-1] + finite[1:]) / 2 if len(finite) > 1 else finite
            picks = rng.choice(mids, size=min(6, len(mids)), replace=False) if len(mids) else np.array([])
            safe: list[Any] = [0.0, -0.0, *picks, *np.nextafter(picks, np.inf)]
            risky: list[Any] = [np.nan, np.inf, -np.inf, 1e300, -1e300]
        elif _text(values):
            safe, risky = list(cat_levels[column]), [None, "never-seen", ""]
        else:
            safe, risky = [int(v) for v in cat_levels[column]], [999, -7]
        safe_blocks.append(_with(base, column, safe, values))
        risky_blocks += [_with(base, column, [v], values) for v in risky]
    return [pd.concat(safe_blocks, ignore_index=True), *risky_blocks]


def _with(base: pd.DataFrame, column: str, edges: list[Any], values: pd.Series) -> pd.DataFrame:
    """Rows of ``base`` with ``column`` set to each of ``edges`` in turn."""
    block = pd.concat([base] * (len(edges) // len(base) + 1)).iloc[: len(edges)].reset_index(drop=True)
    if _text(values):
        column_values = np.empty(len(edges), dtype=object)
        column_values[:] = edges
        block[column] = column_values
    else:
        block[column] = np.asarray(edges, dtype=values.to_numpy().dtype)
    return block
