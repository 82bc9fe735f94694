"""Checking a plan against the pipeline it was compiled from, on the bundle's sample and edge rows.

The rows (as a request brings them: both sides get them through the schema's coercion): the sample, then the sample's first row with one column changed at a time to each edge value
of its kind (missing values, signed zeros, ±inf and huge magnitudes for numbers; an unknown category, the
empty string and missing for text; each category an encoder learned, as ints and as floats where the
column is numeric). Both sides score the same DataFrame; where scikit-learn raises, the plan must raise
too (each such group is then scored row by row, so one refused row does not hide the others).

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
FLOAT_EDGES = (np.nan, 0.0, -0.0, np.inf, -np.inf, 1e300, -1e300, 5e-324, 0.5, -1.0)
INT_EDGES = (0, 1, -1, 2, 2**31, -(2**31))
TEXT_EDGES = (None, "", "\x00scorer-unknown-category")

Answer = Callable[[pd.DataFrame], pd.DataFrame]


def edge_frames(sample: pd.DataFrame, schema: Mapping[str, str], plan: Plan) -> list[pd.DataFrame]:
    """Groups of rows to compare: the sample, then per column its edge rows (one group per column)."""
    groups = [sample.reset_index(drop=True)]
    if sample.empty:
        return groups
    base = sample.iloc[:1]
    learned = _learned_values(plan)
    for column in sample.columns:
        kind = schema.get(column, "any")
        values: list[Any] = list(learned.get(column, []))
        if kind == "float":
            values += list(FLOAT_EDGES)
        elif kind == "int":
            values = [int(v) for v in values if _integral(v)] + list(INT_EDGES)
        elif kind == "bool":
            values = [True, False]
        elif kind == "string":
            values = [v for v in values if isinstance(v, str) or v is None] + list(TEXT_EDGES)
        else:
            values += [*TEXT_EDGES, np.nan, 0.0, 1]
        if not values:
            continue
        rows = pd.concat([base] * len(values), ignore_index=True).astype(object)
        edge = np.empty(len(values), dtype=object)
        edge[:] = values
        rows[column] = edge  # as a request's rows: the schema coerces them as it coerces any request
        groups.append(rows)
    return groups


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
    """(rows compared, the first difference beyond the contract or None)."""
    compared = 0
    for group in groups:
        found = _compare_group(plan_answer, reference, group)
        compared += len(group)
        if found is not None:
            return compared, found
    return compared, None


def _compare_group(plan_answer: Answer, reference: Answer, rows: pd.DataFrame) -> str | None:
    ours, theirs = _outcome(plan_answer, rows), _outcome(reference, rows)
    if isinstance(ours, pd.DataFrame) and isinstance(theirs, pd.DataFrame):
        return compare(ours, theirs)
    if len(rows) > 1:  # one side refused the group: halves, down to single rows, so no refused row hides another
        half = len(rows) // 2
        for part in (rows.iloc[:half], rows.iloc[half:]):
            found = _compare_group(plan_answer, reference, part.reset_index(drop=True))
            if found is not None:
                return found
        return None
    if isinstance(ours, pd.DataFrame) != isinstance(theirs, pd.DataFrame):
        refused = "the plan" if not isinstance(ours, pd.DataFrame) else "scikit-learn"
        why = ours if refused == "the plan" else theirs
        return f"{refused} refused a row the other scored ({why})"
    return None


def _outcome(answer: Answer, rows: pd.DataFrame) -> pd.DataFrame | str:
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
