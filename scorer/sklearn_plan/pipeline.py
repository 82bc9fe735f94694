"""A fitted pipeline's structure compiled to a plan, and the plan run over a batch of columns.

The shapes compiled: a bare estimator, or a ``Pipeline`` whose steps are transformers ending in an
estimator, where the first step may be a ``ColumnTransformer`` whose transformers are steps or
``Pipeline``s of steps, with ``'drop'`` and ``'passthrough'`` (and a remainder). Anything else (a
``FeatureUnion``, a nested ``ColumnTransformer``, a final step that is a transformer) is :class:`Unsupported`.

A plan runs as scikit-learn would: each branch of the column stage gets its columns as one 2-D block
(float64 when every column is numeric, else object, see :func:`block`), its ops run in order, the
branches' outputs are stacked side by side, the whole-matrix ops run, and the estimator gets the float64
matrix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scorer.sklearn_plan.base import Array, EstimatorOp, InvalidData, Op, Unsupported, compiler_for, step_name
from scorer.sklearn_plan.sparse import SparseRows
import scorer.sklearn_plan.steps  # noqa: F401  (registers every step)


@dataclass
class Branch:
    """One transformer of the column stage: its input columns and its ops (none: passthrough)."""

    name: str
    columns: list[str]
    ops: list[Op]


@dataclass
class Plan:
    """A compiled pipeline: ``inputs`` are the columns it reads (the pipeline's ``feature_names_in_``)."""

    inputs: list[str]
    branches: list[Branch]
    ops: list[Op]  # on the whole matrix, after the column stage
    estimator: EstimatorOp
    # The column stage's output is sparse in scikit-learn (ColumnTransformer.sparse_output_): estimators
    # then validate it without missing-value support, so NaN and infinity are refused before the estimator.
    finite: bool = False

    def features(self, columns: Mapping[str, Any], n_rows: int) -> Array | SparseRows:
        """The float64 matrix the estimator gets (sparse rows when a branch is a text vectorizer)."""
        blocks = []
        for branch in self.branches:
            x = block([columns[name] for name in branch.columns], n_rows)
            for o in branch.ops:
                x = o.apply(x)
            blocks.append(x)
        if any(isinstance(b, SparseRows) for b in blocks):
            return SparseRows.hstack([b if isinstance(b, SparseRows) else SparseRows.of_dense(as_float(b, "a block"))
                                      for b in blocks])
        if len(blocks) == 1:
            matrix = blocks[0]
        elif blocks:
            matrix = np.hstack(blocks)
        else:
            matrix = np.empty((n_rows, 0))
        for o in self.ops:
            matrix = o.apply(matrix)
        matrix = as_float(matrix, "the estimator's input")
        if self.finite and not np.isfinite(matrix).all():
            raise InvalidData(f"{type(self.estimator).__name__}: sparse features with NaN or infinity")
        return matrix

    def run(self, columns: Mapping[str, Any], n_rows: int) -> Array:
        """The estimator's answer: probabilities (n, classes) for a classifier, else predictions."""
        features = self.features(columns, n_rows)
        if isinstance(features, SparseRows):
            answer: Array = getattr(self.estimator, "apply_sparse")(features)
            return answer
        return self.estimator.apply(features)

    def steps(self) -> list[Op]:
        return [o for b in self.branches for o in b.ops] + [*self.ops, self.estimator]


def block(arrays: Sequence[Any], n_rows: int) -> Array:
    """Columns side by side as scikit-learn's validation hands them to a step: float64 when every column
    is numeric (integers and booleans as floats), else an object array of the values as they are."""
    arrays = [np.asarray(a) for a in arrays]
    numeric = all(a.dtype.kind in "iufb" for a in arrays)
    out = np.empty((n_rows, len(arrays)), dtype=np.float64 if numeric else object)
    for j, a in enumerate(arrays):
        out[:, j] = a if numeric or a.dtype.kind == "O" else a.astype(object)
    return out


def as_float(x: Array, what: str) -> Array:
    """``x`` as a C-ordered float64 matrix, or InvalidData where scikit-learn's conversion would fail."""
    if x.dtype == np.float64:
        return np.ascontiguousarray(x)
    try:
        return np.ascontiguousarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidData(f"{what} has values that are not numbers") from None


def compile_pipeline(estimator: Any) -> Plan:
    """The plan of a fitted pipeline or estimator, or raise Unsupported naming the step and why."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        raise Unsupported(f"{step_name(estimator)}: fitted without column names")
    inputs = [str(n) for n in names]
    if isinstance(estimator, Pipeline) and type(estimator) is not Pipeline:
        raise Unsupported(f"{step_name(estimator)}: a subclass of Pipeline")
    steps = _steps(estimator)
    if not steps:
        raise Unsupported("Pipeline: no estimator")
    *transformers, final = steps
    estimator_op = _compile(final)
    if not isinstance(estimator_op, EstimatorOp):
        raise Unsupported(f"{step_name(final)}: the last step is not an estimator")
    finite = False
    if transformers and type(transformers[0]) is ColumnTransformer:
        branches = _column_stage(transformers[0], inputs)
        finite = bool(getattr(transformers[0], "sparse_output_", False))
        transformers = transformers[1:]
    else:
        branches = [Branch("input", inputs, [])]
        while transformers and not _whole(transformers[0]):
            branches[0].ops.extend(_flat(transformers.pop(0)))
    ops = [o for t in transformers for o in _flat(t)]
    _check_sparse(branches, ops, estimator_op, final)
    return Plan(inputs, branches, ops, estimator_op, finite)


def _steps(estimator: Any) -> list[Any]:
    """A pipeline's steps without the skipped ones (None, 'passthrough'); a bare estimator as one step."""
    from sklearn.pipeline import Pipeline

    steps = [s for _, s in estimator.steps] if type(estimator) is Pipeline else [estimator]
    return [s for s in steps if s is not None and not (isinstance(s, str) and s == "passthrough")]


def final_step(estimator: Any) -> Any:
    """The scikit-learn estimator a plan's estimator op was compiled from (the pipeline's last step)."""
    return _steps(estimator)[-1]


def _check_sparse(branches: list[Branch], ops: list[Op], estimator: EstimatorOp, final: Any) -> None:
    """Sparse rows (text features) only flow into steps that take them: the next text step in their
    branch, and an estimator with ``apply_sparse`` (the linear models), with no whole-matrix step between."""
    sparse = False
    for branch in branches:
        flowing = False
        for o in branch.ops:
            if flowing and not getattr(o, "accepts_sparse", False):
                raise Unsupported(f"{type(o).__name__}: after a text vectorizer")
            flowing = flowing or getattr(o, "sparse_output", False)
        sparse = sparse or flowing
    if sparse and ops:
        raise Unsupported(f"{type(ops[0]).__name__}: on text features")
    if sparse and not callable(getattr(estimator, "apply_sparse", None)):
        raise Unsupported(f"{step_name(final)}: on text features")


def _whole(step: Any) -> bool:
    from sklearn.compose import ColumnTransformer

    return isinstance(step, ColumnTransformer)


def _compile(step: Any) -> Op:
    return compiler_for(step)(step)


def _flat(step: Any) -> list[Op]:
    """A transformer or a plain Pipeline of transformers as ops."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if isinstance(step, str) and step == "passthrough" or step is None:
        return []
    if type(step) is Pipeline:
        return [o for _, s in step.steps for o in _flat(s)]
    if isinstance(step, ColumnTransformer):
        raise Unsupported("ColumnTransformer: only as the pipeline's first step")
    compiled = _compile(step)
    if isinstance(compiled, EstimatorOp):
        raise Unsupported(f"{step_name(step)}: an estimator before the last step")
    return [compiled]


def _column_stage(ct: Any, inputs: list[str]) -> list[Branch]:
    """The fitted ColumnTransformer's branches in output order (``transformers_``, remainder last)."""
    if ct.n_features_in_ != len(inputs) or list(map(str, getattr(ct, "feature_names_in_", inputs))) != inputs:
        raise Unsupported("ColumnTransformer: its columns differ from the pipeline's")
    branches = []
    for name, transformer, columns in ct.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        selected = _columns(columns, inputs, name)
        if not selected and not (isinstance(transformer, str) and transformer == "passthrough"):
            continue  # a transformer given no columns is not fitted and adds nothing
        ops = _flat(transformer)
        one_dimensional = bool(ops) and getattr(ops[0], "one_dimensional", False)
        if isinstance(columns, str) != one_dimensional:  # a 1-D column for a text vectorizer, and only for one
            raise Unsupported(f"ColumnTransformer transformer {name!r}: "
                              + ("a text vectorizer needs its column named by a string" if one_dimensional
                                 else "one column named by a string (a 1-D input)"))
        branches.append(Branch(str(name), selected, ops))
    return branches


def _columns(columns: Any, inputs: list[str], name: str) -> list[str]:
    """A transformer's column specification as input names (names, positions, a mask, a slice)."""
    if callable(columns):
        raise Unsupported(f"ColumnTransformer transformer {name!r}: columns chosen by a callable")
    if isinstance(columns, str):
        return [columns]
    if isinstance(columns, slice):
        if isinstance(columns.start, str) or isinstance(columns.stop, str):
            raise Unsupported(f"ColumnTransformer transformer {name!r}: a slice of column names")
        return inputs[columns]
    values = list(np.asarray(columns).ravel()) if not isinstance(columns, list) else list(columns)
    if values and all(isinstance(v, bool | np.bool_) for v in values):
        return [n for n, keep in zip(inputs, values, strict=True) if keep]
    out = []
    for v in values:
        if isinstance(v, int | np.integer):
            out.append(inputs[int(v)])
        elif isinstance(v, str) and v in inputs:
            out.append(v)
        else:
            raise Unsupported(f"ColumnTransformer transformer {name!r}: column {v!r} is not an input")
    return out
