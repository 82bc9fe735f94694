"""From summed tree outputs to H2O's predictions: link functions, class probabilities, labels.

Vectorized copies of ``GbmMojoModel.unifyPreds`` / ``linkInv`` / ``exp``,
``DrfMojoModel.unifyPreds`` and ``hex.genmodel.GenModel``'s ``GBM_rescale``,
``correctProbabilities`` and ``getPrediction`` (with its tie-break: a ``java.util.Random`` seeded
from the row's bits picks among tied classes by prior probability), with the same operation order,
so that every double comes out as genmodel computes it (Java's ``Math.exp`` and numpy's may differ
in the last bit; nothing else does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MASK48 = (1 << 48) - 1
_MULTIPLIER = 0x5DEECE66D


def java_exp(x: np.ndarray) -> np.ndarray:
    """``GbmMojoModel.exp``: ``Math.min(1e19, Math.exp(x))``."""
    with np.errstate(over="ignore"):
        return np.minimum(1e19, np.exp(x))


def link_inverse(link: str, f: np.ndarray) -> np.ndarray:
    """``GbmMojoModel.linkInv`` for the links :data:`scorer.h2o_native.mojo.LINKS`."""
    if link == "log":
        return java_exp(f)
    if link == "logit":
        return 1 / (1 + java_exp(-f))
    if link == "inverse":
        xx = np.where(f < 0, np.minimum(-1e-5, f), np.maximum(-1e-5, f))
        with np.errstate(divide="ignore"):
            result: np.ndarray = 1.0 / xx
        return result
    return f  # identity


def gbm_rescale(preds: np.ndarray) -> np.ndarray:
    """``GenModel.GBM_rescale`` on (n, k) class scores: a softmax, summed left to right."""
    top = preds.max(axis=1, keepdims=True)
    exps = np.exp(preds - top)
    total = exps[:, 0].copy()
    for j in range(1, exps.shape[1]):
        total += exps[:, j]
    out: np.ndarray = exps / total[:, None]
    return out


def correct_probabilities(probs: np.ndarray, prior: np.ndarray, model: np.ndarray) -> np.ndarray:
    """``GenModel.correctProbabilities`` (balance_classes): reweight to the prior, renormalise."""
    probs = probs.copy()
    total = np.zeros(probs.shape[0])
    for c in range(probs.shape[1]):
        if prior[c] != 0 and model[c] != 0:
            probs[:, c] *= prior[c] / model[c]
        total += probs[:, c]
    positive = total > 0
    probs[positive] /= total[positive, None]
    return probs


def _java_random_next_double(seed: int) -> float:
    """``new java.util.Random(seed).nextDouble()``."""
    state = (seed ^ _MULTIPLIER) & _MASK48

    def next_bits(bits: int) -> int:
        nonlocal state
        state = (state * _MULTIPLIER + 0xB) & _MASK48
        return state >> (48 - bits)

    high = next_bits(26)
    low = next_bits(27)
    return float(((high << 27) + low) * 2.0**-53)


def _row_hash(row: np.ndarray) -> int:
    """``hash ^= Double.doubleToRawLongBits(d) >> 6`` over the row, as a signed Java long."""
    bits = np.where(np.isnan(row), np.nan, row).view(np.int64) >> 6  # NaN: Java's canonical NaN bits
    value = int(np.bitwise_xor.reduce(bits)) if bits.size else 0
    return value


def _break_tie(probs: np.ndarray, prior: np.ndarray | None, row: np.ndarray) -> int:
    """``GenModel.getPrediction`` for one row whose best class probability is tied."""
    # The Java appends c-1 to `ties` on every equality with the best so far and never clears the
    # list when a better class comes (only the count restarts): replayed as written.
    tie_list, best, tie_count = [0], 1, 0
    preds = np.concatenate([[0.0], probs])
    for c in range(2, preds.size):
        if preds[best] < preds[c]:
            best, tie_count = c, 0
        elif preds[best] == preds[c]:
            tie_count += 1
            tie_list.append(c - 1)
    if tie_count == 0:
        return best - 1
    seed = _row_hash(row)
    if prior is not None:
        total = 0.0
        for i in tie_list:
            total += float(prior[i])
        tie = _java_random_next_double(seed)
        partial = 0.0
        for i in tie_list:
            partial += float(prior[i]) / total
            if tie <= partial:
                return i
    low = ((seed & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000  # (int) hash
    idx = abs(low) % (tie_count + 1) * (1 if low >= 0 else -1)  # Java's %: sign of the dividend
    res = preds[best]
    for b in range(1, preds.size):
        if res == preds[b]:
            idx -= 1
            if idx < 0:
                return b - 1
    raise AssertionError("GenModel.getPrediction: Should Not Reach Here")


def labels(probs: np.ndarray, prior: np.ndarray | None, threshold: float, x: np.ndarray) -> np.ndarray:
    """``GenModel.getPrediction``: class index per row of (n, k) probabilities. Binomial: class 1
    when ``p1 >= threshold``; else the most probable class, ties broken as genmodel does."""
    if probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(np.int64)
    best = np.argmax(probs, axis=1)
    top = probs[np.arange(probs.shape[0]), best]
    tied = np.flatnonzero((probs == top[:, None]).sum(axis=1) > 1)
    for i in tied:
        best[i] = _break_tie(probs[i], prior, x[i])
    return best.astype(np.int64)


@dataclass(frozen=True)
class Unify:
    """What ``unifyPreds`` needs from model.ini."""

    algo: str
    n_classes: int
    ntree_groups: int
    family: str | None
    link: str
    init_f: float
    binomial_double_trees: bool
    balance_classes: bool
    prior: np.ndarray | None
    model_distribution: np.ndarray | None
    threshold: float

    def regression(self, sums: np.ndarray) -> np.ndarray:
        """``preds[0]`` of a regression model from the summed trees (n,)."""
        if self.algo == "drf":
            out: np.ndarray = sums / self.ntree_groups
            return out
        return link_inverse(self.link, sums + self.init_f + 0.0)

    def probabilities(self, sums: np.ndarray) -> np.ndarray:
        """``preds[1:]`` of a classifier from the per-class tree sums (n, ntrees_per_group)."""
        if self.algo == "gbm":
            if self.family != "multinomial":
                p1 = link_inverse(self.link, sums[:, 0] + self.init_f + 0.0)
                probs = np.stack([1.0 - p1, p1], axis=1)
            elif self.n_classes == 2:
                s = sums[:, 0] + (self.init_f + 0.0)
                probs = gbm_rescale(np.stack([s, -s], axis=1))
            else:
                probs = gbm_rescale(sums)
        elif self.n_classes == 2 and not self.binomial_double_trees:
            p0 = sums[:, 0] / self.ntree_groups
            probs = np.stack([p0, 1.0 - p0], axis=1)
        else:
            total = sums[:, 0].copy()
            for c in range(1, sums.shape[1]):
                total += sums[:, c]
            positive = total > 0
            probs = sums.copy()
            probs[positive] = sums[positive] / total[positive, None]
        if self.balance_classes and self.prior is not None and self.model_distribution is not None:
            probs = correct_probabilities(probs, self.prior, self.model_distribution)
        return probs
