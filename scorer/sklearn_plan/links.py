"""Raw scores to probabilities as scikit-learn's losses and linear classifiers compute them.

``expit`` is ``scipy.special.expit`` (``1 / (1 + exp(-x))``), written with numpy so that scoring needs no
scipy; ``softmax`` is ``sklearn.utils.extmath.softmax`` step by step (subtract the row maximum, ``exp``,
divide by the row sum), on an array of the same memory order so that numpy sums in the same order.
"""

from __future__ import annotations

import numpy as np

from scorer.sklearn_plan.base import Array


def expit(x: Array) -> Array:
    """The logistic function, elementwise (float64)."""
    with np.errstate(over="ignore"):
        out: Array = np.exp(np.negative(x))
    out += 1.0
    np.divide(1.0, out, out=out)
    return out


def softmax(x: Array) -> Array:
    """Row-wise softmax of a float64 (n, k) array, in place on a copy, as scikit-learn computes it."""
    out: Array = np.array(x, copy=True)
    out -= np.max(out, axis=1).reshape(-1, 1)
    np.exp(out, out=out)
    out /= np.sum(out, axis=1).reshape(-1, 1)
    return out


def binary_proba(p1: Array) -> Array:
    """(n, 2) probabilities from the positive class's: ``[1 - p1, p1]``, as the losses stack them."""
    proba: Array = np.empty((p1.shape[0], 2), dtype=np.float64)
    proba[:, 1] = p1
    proba[:, 0] = 1 - proba[:, 1]
    return proba
