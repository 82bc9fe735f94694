"""Checking a plan against the pipeline it was compiled from, on the bundle's sample and edge rows.

The rows (as a request brings them: both sides get them through the schema's coercion): the sample, and
its first row with one column changed at a time to each value of the column's kind that a pipeline
answers (signed zeros, small numbers, each category an encoder learned), all in one group; then, one row
each, the values a pipeline may refuse (missing values, ±inf and huge magnitudes for numbers; an unknown
category, the empty string and missing for text). Both sides score the same rows; where scikit-learn
raises, the plan must raise too (a group one side refuses is split in halves down to single rows, so one
refused row does not hide the others).

Then the estimator on its own, at its split points (:func:`split_difference`): the feature row of the
sample's first row, led down to each of up to :data:`MAX_SPLITS` numeric splits of a tree model, with the
split's feature at the threshold and one float either side, scored by the plan's estimator op and by the
pipeline's last step. Rows of a request rarely land exactly on a threshold, so the request-shaped rows
above do not test how a plan compares with one (``<=`` against ``<``, float32 against float64).

The contract: the same columns, labels equal, numbers within 1e-12 (``|a - b| <= 1e-12 * max(1, |b|)``,
NaN equal to NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from scorer.sklearn_plan.pipeline import Plan

TOLERANCE = 1e-12
# Per column kind: values a pipeline answers (compared together, in one group), and values it may refuse
# (compared one row each, so a refusal needs no search for the row that caused it).
SAFE = {"float": (0.0, -0.0, 5e-324, 0.5, -1.0, 1e300, -1e300), "int": (0, 1, -1, 2), "bool": (True, False),
        "string": (), "any": (0.0, 1)}
RISKY = {"float": (np.nan, np.inf, -np.inf), "int": (2**31, -(2**31)), "bool": (),
         "string": (None, "", "\x00scorer-unknown-category"),
         "any": (None, "", "\x00scorer-unknown-category", np.nan)}

Answer = Callable[[pd.DataFrame], pd.DataFrame]

#: Most split points probed per plan (three rows each; evenly chosen when a model has more).
MAX_SPLITS = 1000


def edge_frames(sample: pd.DataFrame, schema: Mapping[str, str], plan: Plan) -> list[pd.DataFrame]:
    """Groups of rows to compare: the sample with, per column, its first row changed to each value the
    pipeline answers (one group); then one single-row group per value it may refuse."""
    if sample.empty:
        return [sample]
    base = sample.iloc[:1]
    learned = _learned_values(plan)
    answered = [sample.reset_index(drop=True).astype(object)]
    refused = []
    for column in sample.columns:
        kind = schema.get(column, "any")
        kind = kind if kind in SAFE else "any"
        known: list[Any] = list(learned.get(column, []))
        if kind == "int":
            known = [int(v) for v in known if _integral(v)]
        elif kind == "string":
            known = [v for v in known if isinstance(v, str)]
        elif kind == "bool":
            known = []
        answered.append(_rows(base, column, known + list(SAFE[kind])))
        refused += [_rows(base, column, [v]) for v in RISKY[kind]]
    return [pd.concat([g for g in answered if len(g)], ignore_index=True), *refused]


def _rows(base: pd.DataFrame, column: str, values: list[Any]) -> pd.DataFrame:
    """``base``'s row once per value, ``column`` set to it, as a request's rows (the schema coerces them
    as it coerces any request)."""
    rows = pd.concat([base] * len(values), ignore_index=True).astype(object) if values else base.iloc[:0]
    if values:
        edge = np.empty(len(values), dtype=object)
        edge[:] = values
        rows[column] = edge
    return rows


def _integral(v: Any) -> bool:
    try:
        return bool(float(v) == int(v))
    except (TypeError, ValueError, OverflowError):
        return False


def _learned_values(plan: Plan) -> dict[str, list[Any]]:
    """Values the first op of each branch learned per input column (categories, thresholds), if it says."""
    out: dict[str, list[Any]] = {}
    for branch in plan.branches:
        if not branch.ops:
            continue
        probes = getattr(branch.ops[0], "probes", None)
        if not callable(probes):
            continue
        for column, values in zip(branch.columns, probes(), strict=False):
            out.setdefault(column, []).extend(values)
    return out


def difference(plan_answer: Answer, reference: Answer, groups: list[pd.DataFrame]) -> tuple[int, str | None]:
    """(rows compared, the first difference beyond the contract or None). ``groups`` as
    :func:`edge_frames` makes them: the single-row groups the plan answers are compared together, in
    one call of each side (scikit-learn's call costs milliseconds whatever its rows); those it refuses,
    one by one (each refusal must be scikit-learn's too)."""
    first, singles = groups[:1], groups[1:]
    answered = [g for g in singles if isinstance(_outcome(plan_answer, g), pd.DataFrame)]
    refused = [g for g in singles if not any(g is a for a in answered)]
    together = [pd.concat(answered, ignore_index=True)] if answered else []
    compared = 0
    for group in [*first, *together, *refused]:
        found = compare_rows(plan_answer, reference, group)
        compared += len(group)
        if found is not None:
            return compared, found
    return compared, None


def compare_rows(plan_answer: Answer, reference: Answer, rows: pd.DataFrame) -> str | None:
    """The first difference between the two answers on ``rows``, refusals included, or None."""
    ours, theirs = _outcome(plan_answer, rows), _outcome(reference, rows)
    if isinstance(ours, pd.DataFrame) and isinstance(theirs, pd.DataFrame):
        return compare(ours, theirs)
    if len(rows) > 1:  # one side refused the group: halves, down to single rows, so no refused row hides another
        half = len(rows) // 2
        for part in (rows.iloc[:half], rows.iloc[half:]):
            found = compare_rows(plan_answer, reference, part.reset_index(drop=True))
            if found is not None:
                return found
        return None
    if isinstance(ours, pd.DataFrame) != isinstance(theirs, pd.DataFrame):
        refused = "the plan" if not isinstance(ours, pd.DataFrame) else "scikit-learn"
        why = ours if refused == "the plan" else theirs
        return f"{refused} refused a row the other scored ({why})"
    return None


def _outcome(answer: Callable[[Any], pd.DataFrame], rows: Any) -> pd.DataFrame | str:
    try:
        return answer(rows)
    except Exception as exc:  # scikit-learn's refusals are ValueErrors mostly, but any raise is a refusal
        return type(exc).__name__


def compare(ours: pd.DataFrame, theirs: pd.DataFrame) -> str | None:
    """The first difference between two answers beyond the contract, or None."""
    if list(ours.columns) != list(theirs.columns) or len(ours) != len(theirs):
        return f"the plan answered columns {list(ours.columns)} x {len(ours)}, scikit-learn {list(theirs.columns)} x {len(theirs)}"
    for column in ours.columns:
        a, b = ours[column].to_numpy(), theirs[column].to_numpy()
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                bad = ~((np.abs(a64 - b64) <= TOLERANCE * np.maximum(1.0, np.abs(b64)))
                        | (np.isnan(a64) & np.isnan(b64)) | (a64 == b64))
        else:
            bad = np.array([not _same(x, y) for x, y in zip(a, b, strict=True)], dtype=bool)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            return f"column {column}, row {row}: the plan {a[row]!r}, scikit-learn {b[row]!r}"
    return None


def _same(x: Any, y: Any) -> bool:
    return bool(type(x) is type(y) and x == y) or (x is None and y is None)


def split_difference(plan: Plan, final: Any, features: Any) -> tuple[int, str | None]:
    """(rows compared, the first difference or None) between the plan's estimator op and ``final`` (the
    fitted scikit-learn estimator it was compiled from) on rows at the op's split points
    (``rows_at_splits``, tree models), made from the first row of ``features`` (the sample's feature
    matrix); (0, None) for an op without split points."""
    make = getattr(plan.estimator, "rows_at_splits", None)
    if not callable(make) or not isinstance(features, np.ndarray) or features.ndim != 2 or not len(features):
        return 0, None
    rows = make(features[0], MAX_SPLITS)
    if not len(rows):
        return 0, None
    names = getattr(final, "feature_names_in_", None)
    given = pd.DataFrame(rows, columns=list(names)) if names is not None and len(names) == rows.shape[1] else rows
    answer = final.predict_proba if plan.estimator.classes is not None else final.predict

    def matrix(values: Any) -> pd.DataFrame:
        return pd.DataFrame(np.asarray(values, dtype=np.float64).reshape(len(rows), -1))

    ours = _outcome(lambda _: matrix(plan.estimator.apply(rows)), given)
    theirs = _outcome(lambda x: matrix(answer(x)), given)
    if isinstance(ours, pd.DataFrame) and isinstance(theirs, pd.DataFrame):
        found = compare(ours, theirs)
        return len(rows), None if found is None else f"at a split point: {found}"
    if isinstance(ours, pd.DataFrame) == isinstance(theirs, pd.DataFrame):
        return len(rows), None
    refused = "the plan" if not isinstance(ours, pd.DataFrame) else "scikit-learn"
    return len(rows), f"at the split points, {refused} refused rows the other scored ({ours if refused == 'the plan' else theirs})"
