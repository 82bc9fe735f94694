"""The load-time check at a tree model's split points (scorer.sklearn_plan.verify.split_difference).

A plan that compares one float off at a threshold answers every request-shaped row as scikit-learn does
unless a row lands exactly on that threshold, which the sample and the edge rows almost never do. The
check leads a feature row down to each split and scores the threshold and the floats either side with
the plan's estimator op and with the pipeline's last step. Here a plan with one threshold moved down by
one float (of a split chosen at random, deep ones included) passes the edge rows and is caught by the
split points; correct plans of every tree family pass them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import ensemble, linear_model, tree
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from scorer.schema import Schema
from scorer.sklearn_plan import verify
from scorer.sklearn_plan.base import OPS, EstimatorOp
from scorer.sklearn_plan.pipeline import Plan, compile_pipeline, final_step

pytestmark = pytest.mark.fast

SCHEMA = {"a": "float", "b": "float", "c": "float", "city": "string"}


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def frame(seed: int, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.uniform(-3, 3, n).round(2), "c": rng.normal(size=n),
                       "city": rng.choice(["oslo", "rome", "lima"], n)})
    df.loc[rng.random(n) < 0.1, "c"] = np.nan
    y = (df["a"] + np.sin(df["b"] * 2) + (df["city"] == "rome") + rng.normal(scale=0.3, size=n) > 0.5).astype(int)
    return df, y.to_numpy()


def pipeline(final: Any) -> Pipeline:
    columns = ColumnTransformer([("num", StandardScaler(), ["a", "b"]), ("raw", "passthrough", ["c"]),
                                 ("city", OneHotEncoder(handle_unknown="ignore"), ["city"])], sparse_threshold=0)
    return Pipeline([("columns", columns), ("model", final)])


def features(plan: Plan, rows: pd.DataFrame) -> np.ndarray:
    table = Schema(SCHEMA).coerce(rows)
    x = plan.features({name: table[name] for name in table.columns}, table.n_rows)
    assert isinstance(x, np.ndarray)
    return x


def edge_rows_difference(plan: Plan, pipe: Pipeline, sample: pd.DataFrame) -> str | None:
    """What the request-shaped check (sample and edge rows) finds, as scorer's load runs it."""
    def ours(rows: pd.DataFrame) -> pd.DataFrame:
        table = Schema(SCHEMA).coerce(rows)
        return pd.DataFrame(plan.run({name: table[name] for name in table.columns}, table.n_rows))

    def theirs(rows: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(pipe.predict_proba(Schema(SCHEMA).coerce(rows).to_frame()))

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        _, found = verify.difference(ours, theirs, verify.edge_frames(sample, SCHEMA, plan))
    return found


def moved(op: EstimatorOp, node: int) -> EstimatorOp:
    """``op`` with one split's threshold one float lower: a row exactly on it now goes right."""
    meta, arrays = op.state()
    arrays = dict(arrays)
    arrays["threshold"] = arrays["threshold"].copy()
    arrays["threshold"][node] = np.nextafter(arrays["threshold"][node], -np.inf)
    again = OPS[op.kind].from_state(meta, arrays)
    assert isinstance(again, EstimatorOp)
    return again


def test_a_threshold_one_float_off_is_caught_at_the_split_points_not_by_the_edge_rows() -> None:
    df, y = frame(0, 600)
    pipe = pipeline(ensemble.HistGradientBoostingClassifier(max_iter=15, random_state=0)).fit(df, y)
    plan = compile_pipeline(pipe)
    sample = df.head(20).reset_index(drop=True)
    x = features(plan, sample)
    assert edge_rows_difference(plan, pipe, sample) is None
    rows, found = verify.split_difference(plan, final_step(pipe), x)
    assert found is None and rows >= 3 * 15

    nodes = getattr(plan.estimator, "forest").nodes
    split = np.flatnonzero((nodes.left >= 0) & (nodes.cat < 0) & np.isfinite(nodes.threshold))
    rng = np.random.default_rng(1)
    depth = np.zeros(nodes.left.size, dtype=int)
    for i in range(nodes.left.size):  # children come after their parent in a tree's node list
        for child in (nodes.left[i], nodes.right[i]):
            if child >= 0:
                depth[child] = depth[i] + 1
    deep = split[depth[split] >= 3]
    assert deep.size
    tried = [*rng.choice(split, 4, replace=False).tolist(), int(deep[rng.integers(deep.size)])]
    caught = 0
    for node in tried:
        left_leaves = nodes.value[nodes.left[node]], nodes.value[nodes.right[node]]
        if np.array_equal(*left_leaves) and nodes.left[nodes.left[node]] < 0:
            continue  # both sides the same leaf value: no row can tell
        broken = Plan(plan.inputs, plan.branches, plan.ops, moved(plan.estimator, node), plan.finite)
        assert edge_rows_difference(broken, pipe, sample) is None, "the edge rows land on a threshold"
        _, found = verify.split_difference(broken, final_step(pipe), x)
        assert found is not None and "at a split point" in found, node
        caught += 1
    assert caught >= 4


@pytest.mark.parametrize("final", [
    ensemble.HistGradientBoostingClassifier(max_iter=10, random_state=0),
    ensemble.HistGradientBoostingRegressor(max_iter=10, random_state=0),
    ensemble.HistGradientBoostingClassifier(max_iter=5, categorical_features=[3, 4, 5], random_state=0),
    ensemble.RandomForestClassifier(n_estimators=5, max_depth=6, random_state=0),
    ensemble.ExtraTreesRegressor(n_estimators=5, max_depth=6, random_state=0),
    ensemble.GradientBoostingClassifier(n_estimators=10, random_state=0),
    tree.DecisionTreeRegressor(max_depth=8, random_state=0),
], ids=lambda est: type(est).__name__)
def test_compiled_tree_models_answer_as_scikit_learn_at_their_split_points(final: Any) -> None:
    df, y = frame(2, 500)
    if not getattr(final, "_support_missing_values", lambda X: True)(np.zeros((1, 1))) or isinstance(
            final, ensemble.GradientBoostingClassifier):
        df["c"] = df["c"].fillna(0.0)
    if isinstance(final, (ensemble.HistGradientBoostingRegressor, ensemble.ExtraTreesRegressor,
                          tree.DecisionTreeRegressor)):
        y = y + df["a"].to_numpy()
    pipe = pipeline(final).fit(df, y)
    plan = compile_pipeline(pipe)
    rows, found = verify.split_difference(plan, final_step(pipe), features(plan, df.head(5)))
    assert found is None
    assert rows >= 30


def test_models_without_split_points_are_not_probed() -> None:
    df, y = frame(3, 200)
    pipe = pipeline(linear_model.LogisticRegression()).fit(df.fillna(0.0), y)
    plan = compile_pipeline(pipe)
    assert verify.split_difference(plan, final_step(pipe), features(plan, df.fillna(0.0).head(3))) == (0, None)
