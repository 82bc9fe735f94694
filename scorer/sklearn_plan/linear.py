"""Linear models compiled to their coefficients: ``X @ coef.T + intercept`` as scikit-learn writes it
(same operand layout, so numpy calls the same BLAS routine), then the probabilities or labels.

Covered: ``LogisticRegression`` (binary: ``expit``; multinomial: ``softmax``), ``SGDClassifier``
(binary ``log_loss`` and ``modified_huber`` probabilities; other losses predict labels),
``LinearSVC`` and ``RidgeClassifier`` (labels), ``LinearRegression``, ``Ridge``, ``Lasso``,
``ElasticNet`` and ``SGDRegressor`` (one target).

scikit-learn validates these inputs with ``ensure_all_finite=True``: NaN or infinity is refused, and
so the op raises :class:`~.base.InvalidData` naming the column.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scorer.sklearn_plan.base import (
    Array,
    EstimatorOp,
    InvalidData,
    State,
    Unsupported,
    compiler,
    op,
    step_name,
)
from scorer.sklearn_plan.links import binary_proba, expit, softmax
from scorer.sklearn_plan.sparse import SparseRows

#: what ``apply`` returns: the regression value, a probability rule, or the predicted labels
OUTPUTS = ("value", "logistic", "softmax", "modified_huber", "labels")


@op
class LinearOp(EstimatorOp):
    """``scores = X @ coef.T + intercept`` (``coef`` 1-D for a regressor: ``X @ coef + intercept``),
    then ``meta['output']``: the value itself, ``[1 - expit(s), expit(s)]``, ``softmax``, the
    modified Huber rule ``(clip(s, -1, 1) + 1) / 2``, or the labels ``predict`` returns (``classes``
    is then None: scikit-learn's label is ``s > 0`` or the argmax of the scores, not of
    probabilities)."""

    kind = "sklearn.linear"

    def __init__(self, meta: dict[str, Any], coef: Array, intercept: Array) -> None:
        if meta["output"] not in OUTPUTS:
            raise ValueError(f"unknown output {meta['output']!r}")
        self.meta = meta
        self.name = str(meta["name"])
        self.output = str(meta["output"])
        self.labels: list[Any] = list(meta["labels"] or [])
        self.classes = None if self.output in ("value", "labels") else self.labels
        self.coef = coef
        self.intercept = intercept
        self.n_features = int(coef.shape[0] if meta.get("transposed") else coef.shape[-1])

    def state(self) -> State:
        return dict(self.meta), {"coef": self.coef, "intercept": self.intercept}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, Array]) -> LinearOp:
        return cls(dict(meta), arrays["coef"], arrays["intercept"])

    def scores(self, X: Array) -> Array:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InvalidData(f"{self.name}: expected {self.n_features} features")
        finite = np.isfinite(X)
        if not finite.all():
            column = int(np.flatnonzero(~finite.all(axis=0))[0])
            raise InvalidData(f"{self.name}: column {column} contains NaN or infinity")
        if self.coef.ndim == 1 or self.meta.get("transposed"):
            out: Array = X @ self.coef + self.intercept  # coef stored as scikit-learn's coef_.T
        else:
            out = X @ self.coef.T + self.intercept
        return out

    def apply(self, X: Array) -> Array:
        return self._answer(self.scores(X))

    def apply_sparse(self, X: SparseRows) -> Array:
        """``apply`` on sparse rows (a text vectorizer's features), as scikit-learn's sparse product."""
        if X.width != self.n_features:
            raise InvalidData(f"{self.name}: expected {self.n_features} features")
        if not np.isfinite(X.data).all():
            raise InvalidData(f"{self.name}: a feature contains NaN or infinity")
        weights = self.coef if self.coef.ndim == 2 and self.meta.get("transposed") else (
            self.coef.reshape(-1, 1) if self.coef.ndim == 1 else self.coef.T)
        s = X.dot(np.ascontiguousarray(weights)) + self.intercept
        return self._answer(s.reshape(-1) if self.coef.ndim == 1 else s)

    def _answer(self, s: Array) -> Array:
        if self.output == "value":
            return s
        if s.ndim == 2 and s.shape[1] == 1:
            s = s.reshape(-1)
        if self.output == "logistic":
            return binary_proba(expit(s))
        if self.output == "softmax":
            return softmax(s)
        if self.output == "modified_huber":
            p1 = np.clip(s, -1, 1)
            p1 += 1.0
            p1 /= 2.0
            return binary_proba(p1)
        picked = (s > 0).astype(np.intp) if s.ndim == 1 else np.argmax(s, axis=1)
        labels: Array = np.asarray(self.labels)[picked]
        return labels


def _coefficients(est: Any, regressor: bool) -> tuple[Array, Array]:
    name = step_name(est)
    coef = est.coef_
    if hasattr(coef, "toarray"):
        raise Unsupported(f"{name}: sparse coef_ (sparsify()) has no compiled form")
    coef = np.asarray(coef, dtype=np.float64)
    if coef.dtype != np.float64 or not np.isfinite(coef).all():
        raise Unsupported(f"{name}: coefficients are not finite float64")
    if regressor and coef.ndim != 1:
        raise Unsupported(f"{name}(coef_ shape {coef.shape}): more than one target")
    if not regressor and coef.ndim not in (1, 2):
        raise Unsupported(f"{name}(coef_ shape {coef.shape}): unexpected coefficient shape")
    intercept = np.asarray(est.intercept_, dtype=np.float64)
    return coef, intercept


def _labels(est: Any) -> list[Any]:
    classes = np.asarray(est.classes_)
    if classes.ndim != 1:
        raise Unsupported(f"{step_name(est)}: multilabel targets")
    values = classes.tolist()
    if len({type(v) for v in values}) > 1:
        raise Unsupported(f"{step_name(est)}: classes of mixed types")
    return list(values)


def _op(est: Any, output: str, labels: list[Any] | None, regressor: bool) -> LinearOp:
    coef, intercept = _coefficients(est, regressor)
    # the operand scikit-learn hands BLAS is coef_.T: keep its memory layout (a C-ordered coef_.T when
    # coef_ is Fortran-ordered), so that numpy takes the same BLAS path
    transposed = coef.ndim == 2 and not coef.flags.c_contiguous and coef.T.flags.c_contiguous
    coef = np.ascontiguousarray(coef.T if transposed else coef)
    meta = {"name": step_name(est), "output": output, "labels": labels, "transposed": transposed}
    return LinearOp(meta, coef, intercept)


@compiler(
    "sklearn.linear_model.LinearRegression", "sklearn.linear_model.Ridge", "sklearn.linear_model.Lasso",
    "sklearn.linear_model.ElasticNet", "sklearn.linear_model.SGDRegressor",
)
def compile_regressor(est: Any) -> LinearOp:
    return _op(est, "value", None, regressor=True)


@compiler("sklearn.linear_model.LogisticRegression")
def compile_logistic(est: Any) -> LinearOp:
    labels = _labels(est)
    return _op(est, "logistic" if len(labels) <= 2 else "softmax", labels, regressor=False)


@compiler("sklearn.linear_model.SGDClassifier")
def compile_sgd_classifier(est: Any) -> LinearOp:
    labels = _labels(est)
    if est.loss not in ("log_loss", "modified_huber"):
        return _op(est, "labels", labels, regressor=False)
    if len(labels) > 2:
        raise Unsupported(
            f"SGDClassifier(loss={est.loss!r}): with more than two classes the labels are the argmax "
            "of the scores, which the normalised one-vs-rest probabilities do not determine (ties)"
        )
    return _op(est, "logistic" if est.loss == "log_loss" else "modified_huber", labels, regressor=False)


@compiler("sklearn.svm.LinearSVC", "sklearn.linear_model.RidgeClassifier")
def compile_label_classifier(est: Any) -> LinearOp:
    if hasattr(est, "_label_binarizer") and str(est._label_binarizer.y_type_).startswith("multilabel"):
        raise Unsupported(f"{step_name(est)}: multilabel targets")
    return _op(est, "labels", _labels(est), regressor=False)
