"""Tree ensembles compiled to one node table and walked for every row and every tree at once.

Covered: ``HistGradientBoostingClassifier``/``Regressor`` (numeric splits on the raw thresholds its
predictor compares, missing values, native categorical splits through the internal ordinal encoding),
``DecisionTree``/``ExtraTree``, ``RandomForest``/``ExtraTrees`` (classifier and regressor) and
``GradientBoostingClassifier``/``Regressor``.

Every tree of an ensemble is stored in one normalised table (:class:`Nodes`: children, the input column,
the threshold, where a missing value goes, a categorical split's row in a go-left table, leaf values).
Rows reach their leaves in one of two ways, chosen per call, with the same answer:

* the *walk*: nodes renumbered so that a node's two children are neighbours; every (row, tree) pair
  moves one level per step, ``node = right[node] - (x <= threshold)``, leaves pointing at themselves;
* the *bit masks* (trees of at most 64 leaves, as gradient boosting grows them): every split is
  compared at once, a split a row passes to the right drops the leaves of its left subtree from the
  tree's 64-bit mask of leaves, and the row's leaf is the lowest bit left (leaves in left-to-right
  order; the QuickScorer idea). No per-level loop, so deep unbalanced trees cost no more than shallow ones.

Missing values: scikit-learn sends NaN left or right per node. A node whose NaN goes left reads a copy
of its column where NaN is -inf (``-inf <= t`` holds); the others read the column itself
(``NaN <= t`` fails, so the row goes right). Categorical splits (HistGradientBoosting) read a column
of category codes (the position among the fitted categories, 256 when missing or unknown) and look up
a table of 257 go-left flags per split, built from the predictor's raw bitsets, the known-category
bitsets and the node's missing direction, as ``_predictor.pyx`` decides.

Sums over trees are ``numpy.cumsum`` along the trees, which adds in the order scikit-learn adds
(tree after tree, starting from the baseline), so raw scores are bit-for-bit those of scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
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

MISSING_CODE = 256  # category code of a missing or unknown category: the go-left table's last column
_CELLS = 1 << 17  # elements per working array in one chunk of rows (fits the CPU caches)
_FLOAT32_MAX = float(np.finfo(np.float32).max)

NODE_ARRAYS = ("left", "right", "feature", "threshold", "nan_left", "cat", "value", "starts")


@dataclass
class Nodes:
    """Every node of every tree, trees one after another (``starts[t]``: tree t's first node; a tree's
    root is its first node). ``left``/``right`` are global node indices, -1 for a leaf; ``feature`` the
    input column; ``cat`` the split's row in ``cat_left`` (-1: numeric split); ``value`` (nodes, width)
    the leaf values (zero for splits)."""

    left: Array  # int32
    right: Array  # int32
    feature: Array  # int32
    threshold: Array  # float64
    nan_left: Array  # bool
    cat: Array  # int32
    value: Array  # float64 (nodes, width)
    starts: Array  # int32 (trees + 1)

    @classmethod
    def concat(cls, trees: list[dict[str, Array]]) -> Nodes:
        """One table from per-tree tables (children local to the tree, -1 for leaves)."""
        sizes = [len(t["left"]) for t in trees]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
        parts: dict[str, list[Array]] = {k: [] for k in NODE_ARRAYS[:-1]}
        for tree, start in zip(trees, starts[:-1]):
            for key in ("left", "right"):
                local = np.asarray(tree[key]).astype(np.int64)
                if local.size and local.max() >= len(tree["left"]):
                    raise ValueError("child index outside the tree")
                parts[key].append(np.where(local < 0, -1, local + start))
            for key in NODE_ARRAYS[2:-1]:
                parts[key].append(np.asarray(tree[key]))
        return cls(
            left=np.concatenate(parts["left"]).astype(np.int32),
            right=np.concatenate(parts["right"]).astype(np.int32),
            feature=np.concatenate(parts["feature"]).astype(np.int32),
            threshold=np.concatenate(parts["threshold"]).astype(np.float64),
            nan_left=np.concatenate(parts["nan_left"]).astype(bool),
            cat=np.concatenate(parts["cat"]).astype(np.int32),
            value=np.concatenate(parts["value"]).astype(np.float64),
            starts=starts,
        )

    def arrays(self) -> dict[str, Array]:
        return {k: getattr(self, k) for k in NODE_ARRAYS}


@dataclass
class Categories:
    """HistGradientBoosting's ordinal encoding of its categorical columns: ``columns[j]``'s fitted
    categories are ``values[offsets[j]:offsets[j + 1]]`` (sorted, no NaN); ``left`` (splits, 257) says
    which codes a categorical split sends left."""

    columns: Array  # int32
    values: Array  # float64
    offsets: Array  # int64
    left: Array  # bool (categorical splits, MISSING_CODE + 1)

    @classmethod
    def none(cls) -> Categories:
        return cls(
            columns=np.zeros(0, np.int32), values=np.zeros(0, np.float64),
            offsets=np.zeros(1, np.int64), left=np.zeros((0, MISSING_CODE + 1), bool),
        )

    def arrays(self) -> dict[str, Array]:
        return {"cat_columns": self.columns, "cat_values": self.values, "cat_offsets": self.offsets,
                "cat_left": self.left}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Array]) -> Categories:
        return cls(columns=arrays["cat_columns"], values=arrays["cat_values"],
                   offsets=arrays["cat_offsets"], left=arrays["cat_left"])

    def codes(self, X: Array, where: str) -> Array:
        """(n, categorical columns) float64 codes: a category's position, MISSING_CODE when NaN or
        unknown (the encoder's NaN). Infinity is refused, as the encoder's validation refuses it."""
        out = np.empty((X.shape[0], self.columns.size), dtype=np.float64)
        for j, column in enumerate(self.columns):
            x = X[:, column]
            if np.isinf(x).any():
                raise InvalidData(f"{where}: column {int(column)} contains infinity")
            known = self.values[self.offsets[j]:self.offsets[j + 1]]
            pos = np.searchsorted(known, x)
            safe = np.minimum(pos, max(known.size - 1, 0))
            found = (pos < known.size) & (known[safe] == x) if known.size else np.zeros(x.shape, bool)
            out[:, j] = np.where(found, pos, MISSING_CODE)
        return out


class Forest:
    """The node table made ready to walk: columns of the extended input (the row, its -inf copies,
    its category codes), the walk's renumbered nodes and, when every tree has at most 64 leaves, the
    bit-mask tables."""

    def __init__(self, nodes: Nodes, n_features: int, categories: Categories) -> None:
        self.nodes = nodes
        self.n_features = n_features
        self.categories = categories
        self.n_trees = int(nodes.starts.size - 1)
        self.width = int(nodes.value.shape[1])
        split = nodes.left >= 0
        numeric_left = split & (nodes.cat < 0) & nodes.nan_left
        self.neg_columns = np.unique(nodes.feature[numeric_left]).astype(np.intp)
        cat_position = {int(c): j for j, c in enumerate(categories.columns)}
        # the column each node reads in the extended input
        column = nodes.feature.astype(np.int64).copy()
        neg_at = {int(c): n_features + j for j, c in enumerate(self.neg_columns)}
        code_base = n_features + self.neg_columns.size
        for i in np.flatnonzero(numeric_left):
            column[i] = neg_at[int(nodes.feature[i])]
        for i in np.flatnonzero(split & (nodes.cat >= 0)):
            column[i] = code_base + cat_position[int(nodes.feature[i])]
        column[~split] = 0
        threshold = np.where(split & (nodes.cat < 0), nodes.threshold, np.nan)
        self.has_cat = bool((nodes.cat[split] >= 0).any())
        self._build_walk(column, threshold)
        self._build_masks(column, threshold)

    # -- the walk ------------------------------------------------------------------------------
    def _build_walk(self, column: Array, threshold: Array) -> None:
        """Renumber nodes breadth-first (all trees' roots first, then level by level), a node's
        children side by side (left = right - 1); leaves point at themselves."""
        nodes = self.nodes
        frontier = nodes.starts[:-1].astype(np.int64)
        levels = [frontier]
        while True:
            split = frontier[nodes.left[frontier] >= 0]
            if not split.size:
                break
            frontier = np.stack([nodes.left[split], nodes.right[split]], axis=1).reshape(-1).astype(np.int64)
            levels.append(frontier)
        order = np.concatenate(levels)
        new_id = np.empty(order.size, dtype=np.int64)
        new_id[order] = np.arange(order.size)
        leaf = nodes.left[order] < 0
        right = np.where(leaf, np.arange(order.size), new_id[np.maximum(nodes.right[order], 0)])
        self.walk_depth = len(levels) - 1
        self.walk_roots = np.arange(self.n_trees, dtype=np.intp)
        self.walk_column = column[order].astype(np.intp)
        self.walk_threshold = threshold[order]
        self.walk_right = right.astype(np.intp)
        self.walk_leaf = leaf
        self.walk_cat = nodes.cat[order].astype(np.intp)
        self.walk_value = nodes.value[order]
        if self.width == 1:
            self.walk_value = self.walk_value[:, 0].copy()

    def _walk(self, Xe: Array) -> Array:
        """Every (row, tree) pair one level per step; pairs that reached a leaf are dropped once a
        quarter of those still walking have (most paths end well before the deepest leaf)."""
        n, width = Xe.shape
        trees = self.n_trees
        flat = Xe.ravel()
        node = np.tile(self.walk_roots, n)
        rowoff = np.repeat(np.arange(n, dtype=np.intp) * width, trees)
        pos = np.arange(n * trees, dtype=np.intp)
        reached = np.empty(n * trees, dtype=np.intp)
        col = np.empty_like(node)
        val = np.empty(node.shape, dtype=np.float64)
        thr = np.empty(node.shape, dtype=np.float64)
        le = np.empty(node.shape, dtype=bool)
        for _ in range(self.walk_depth):
            m = node.size
            if not m:
                break
            c, v, t, g = col[:m], val[:m], thr[:m], le[:m]
            np.take(self.walk_column, node, out=c, mode="clip")
            c += rowoff
            np.take(flat, c, out=v, mode="clip")
            np.take(self.walk_threshold, node, out=t, mode="clip")
            np.less_equal(v, t, out=g)
            if self.has_cat:
                cat = self.walk_cat[node]
                is_cat = cat >= 0
                if is_cat.any():
                    g[is_cat] = self.categories.left[cat[is_cat], v[is_cat].astype(np.intp)]
            np.take(self.walk_right, node, out=node, mode="clip")
            node -= g
            done = self.walk_leaf[node]
            if np.count_nonzero(done) * 4 > m:
                reached[pos[done]] = node[done]
                keep = ~done
                node, pos, rowoff = node[keep], pos[keep], rowoff[keep]
        reached[pos] = node
        values: Array = self.walk_value[reached.reshape(n, trees)]
        return values

    # -- the bit masks -------------------------------------------------------------------------
    def _build_masks(self, column: Array, threshold: Array) -> None:
        """Per split: the bits of its left subtree's leaves (leaves numbered left to right in their
        tree), dropped when a row goes right; uint32 masks when every tree has at most 32 leaves."""
        nodes = self.nodes
        self.masks_ok = True
        cols: list[Array] = []
        thrs: list[Array] = []
        cats: list[Array] = []
        drops: list[Array] = []
        seg_starts: list[int] = []
        leaf_nodes: list[Array] = []
        leaf_starts: list[int] = []
        at = 0
        n_leaves = 0
        widest = 1
        for t in range(self.n_trees):
            lo, hi = int(nodes.starts[t]), int(nodes.starts[t + 1])
            in_order = _leaves_in_order(nodes.left, nodes.right, lo)
            if len(in_order) > 64:
                self.masks_ok = False
                return
            widest = max(widest, len(in_order))
            rank = {leaf: i for i, leaf in enumerate(in_order)}
            first, last = _leaf_ranges(nodes.left, nodes.right, lo, rank)
            splits = [i for i in range(lo, hi) if nodes.left[i] >= 0]
            seg_starts.append(at)
            leaf_starts.append(n_leaves)
            leaf_nodes.append(np.array(in_order, dtype=np.int64))
            n_leaves += len(in_order)
            if not splits:  # a one-leaf tree: a split that drops nothing
                cols.append(np.zeros(1, np.int64))
                thrs.append(np.full(1, np.nan))
                cats.append(np.full(1, -1, np.int64))
                drops.append(np.zeros(1, dtype=np.uint64))
                at += 1
                continue
            s = np.array(splits, dtype=np.int64)
            left_first = np.array([first[int(nodes.left[i])] for i in splits], dtype=np.uint64)
            left_last = np.array([last[int(nodes.left[i])] for i in splits], dtype=np.uint64)
            span = left_last - left_first + np.uint64(1)  # < 64: the right subtree has a leaf
            drops.append(((np.uint64(1) << span) - np.uint64(1)) << left_first)
            cols.append(column[s])
            thrs.append(threshold[s])
            cats.append(nodes.cat[s].astype(np.int64))
            at += len(splits)
        self.mask_dtype = np.uint32 if widest <= 32 else np.uint64
        self.mask_column = np.concatenate(cols).astype(np.intp)
        self.mask_threshold = np.concatenate(thrs)
        cat = np.concatenate(cats)
        self.mask_cat_at = np.flatnonzero(cat >= 0).astype(np.intp)
        self.mask_cat_row = cat[self.mask_cat_at].astype(np.intp)
        self.mask_drop = np.concatenate(drops).astype(self.mask_dtype)
        self.mask_starts = np.array(seg_starts, dtype=np.intp)
        self.leaf_start = np.array(leaf_starts, dtype=np.intp)
        leaf_value = self.nodes.value[np.concatenate(leaf_nodes)]
        self.leaf_value = leaf_value[:, 0].copy() if self.width == 1 else leaf_value

    def _masked(self, Xe: Array) -> Array:
        val = np.take(Xe, self.mask_column, axis=1)
        le = val <= self.mask_threshold
        if self.mask_cat_at.size:
            codes = val[:, self.mask_cat_at].astype(np.intp)
            le[:, self.mask_cat_at] = self.categories.left[self.mask_cat_row, codes]
        drop: Array = le.view(np.uint8).astype(self.mask_dtype)
        np.subtract(drop, 1, out=drop, casting="unsafe")  # 0 where the row goes left, all ones where right
        np.bitwise_and(drop, self.mask_drop, out=drop)
        gone = np.bitwise_or.reduceat(drop, self.mask_starts, axis=1)
        lowest = ~gone
        lowest &= gone + 1  # the lowest leaf still there: alive & -alive, with -alive = gone + 1
        lowest -= 1
        leaf = np.bitwise_count(lowest).astype(np.intp)
        leaf += self.leaf_start
        values: Array = self.leaf_value[leaf]
        return values

    # -- rows to leaf values -------------------------------------------------------------------
    def extended(self, X: Array, where: str) -> Array:
        """The row block each node reads: X, then its columns with NaN as -inf, then category codes."""
        parts = [X]
        if self.neg_columns.size:
            neg = X[:, self.neg_columns]
            neg[np.isnan(neg)] = -np.inf
            parts.append(neg)
        if self.categories.columns.size:
            parts.append(self.categories.codes(X, where))
        if len(parts) == 1:
            return np.ascontiguousarray(X)
        return np.concatenate(parts, axis=1)

    def leaf_values(self, X: Array, where: str, strategy: str | None = None) -> Array:
        """Leaf values reached by every row in every tree: (n, trees) or (n, trees, width).
        ``strategy`` ("walk" or "masks") overrides the choice (the bit masks when they exist)."""
        n = X.shape[0]
        shape = (n, self.n_trees) if self.width == 1 else (n, self.n_trees, self.width)
        out = np.empty(shape, dtype=np.float64)
        if strategy is None:  # the masks when the trees are small enough: measured faster at 1 and 10,000 rows
            masks = self.masks_ok
        else:
            masks = strategy == "masks"
        if masks and not self.masks_ok:
            raise ValueError("this forest has trees of more than 64 leaves")
        per_row = self.mask_column.size if masks else self.n_trees
        run = self._masked if masks else self._walk
        chunk = max(1, _CELLS // max(per_row, 1))
        for lo in range(0, n, chunk):
            out[lo:lo + chunk] = run(self.extended(X[lo:lo + chunk], where))
        return out


def _leaves_in_order(left: Array, right: Array, root: int) -> list[int]:
    out: list[int] = []
    stack = [root]
    while stack:
        i = stack.pop()
        if left[i] < 0:
            out.append(i)
        else:
            stack.append(int(right[i]))
            stack.append(int(left[i]))
    return out


def _leaf_ranges(left: Array, right: Array, root: int, rank: dict[int, int]) -> tuple[dict[int, int], dict[int, int]]:
    """For every node of a tree, the rank of its first and last leaf (left to right)."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    post: list[int] = []
    stack = [root]
    while stack:
        i = stack.pop()
        post.append(i)
        if left[i] >= 0:
            stack.append(int(left[i]))
            stack.append(int(right[i]))
    for i in reversed(post):  # children before parents
        if left[i] < 0:
            first[i] = last[i] = rank[i]
        else:
            first[i] = first[int(left[i])]
            last[i] = last[int(right[i])]
    return first, last


# -- ops ---------------------------------------------------------------------------------------

class _TreeOp(EstimatorOp):
    """What the tree ops share: the forest, its stored form, the input checks."""

    def __init__(self, meta: dict[str, Any], nodes: Nodes, categories: Categories,
                 extra: dict[str, Array]) -> None:
        self.meta = meta
        self.name = str(meta["name"])
        self.classes = meta.get("classes")
        self.extra = extra
        self.forest = Forest(nodes, int(meta["n_features"]), categories)

    def state(self) -> State:
        arrays = {**self.forest.nodes.arrays(), **self.forest.categories.arrays(), **self.extra}
        return dict(self.meta), arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, Array]):  # type: ignore[no-untyped-def]
        nodes = Nodes(**{k: arrays[k] for k in NODE_ARRAYS})
        extra = {k: v for k, v in arrays.items() if k not in NODE_ARRAYS and not k.startswith("cat_")}
        return cls(dict(meta), nodes, Categories.from_arrays(arrays), extra)

    def rows_at_splits(self, base: Array, limit: int) -> Array:
        """Rows on the trees' numeric split points, for the load-time check: for up to ``limit`` splits
        (evenly chosen), ``base`` (one feature row) with the features of the split's path set so that
        the row reaches it (an ancestor's threshold to go left, the next float above it to go right),
        then three rows with the split's feature at its threshold and one float below and above.
        Splits below a categorical split, and infinite thresholds, are left out."""
        nodes = self.forest.nodes
        split = np.flatnonzero(nodes.left >= 0)
        numeric = split[(nodes.cat[split] < 0) & np.isfinite(nodes.threshold[split])]
        width = int(np.asarray(base).size)
        if not numeric.size or limit <= 0:
            return np.empty((0, width))
        chosen = np.unique(numeric[np.linspace(0, numeric.size - 1, min(limit, numeric.size)).astype(np.intp)])
        parent = np.full(nodes.left.size, -1, dtype=np.int64)
        parent[nodes.left[split]] = split
        parent[nodes.right[split]] = split
        rows: list[Array] = []
        for node in chosen.tolist():
            row = np.array(base, dtype=np.float64).reshape(-1)
            path: list[tuple[int, bool]] = []
            child, above = node, int(parent[node])
            while above >= 0 and nodes.cat[above] < 0:
                path.append((above, int(nodes.left[above]) == child))
                child, above = above, int(parent[above])
            if above >= 0:
                continue  # a categorical split on the way
            for at, left in reversed(path):  # root first: a deeper split on the same feature narrows it
                t = float(nodes.threshold[at])
                row[int(nodes.feature[at])] = t if left else np.nextafter(t, np.inf)
            feature, t = int(nodes.feature[node]), float(nodes.threshold[node])
            for value in (t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)):
                probe = row.copy()
                probe[feature] = value
                rows.append(probe)
        return np.array(rows, dtype=np.float64).reshape(-1, width)

    def checked(self, X: Array) -> Array:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.forest.n_features:
            raise InvalidData(f"{self.name}: expected {self.forest.n_features} features")
        if self.meta["float32"]:
            # scikit-learn's trees read float32; a value float32 cannot hold is infinite and refused
            with np.errstate(over="ignore"):
                X32 = X.astype(np.float32)
            bad = np.isinf(X32) if self.meta["allow_nan"] else ~np.isfinite(X32)
            if bad.any():
                column = int(np.flatnonzero(bad.any(axis=0))[0])
                what = "infinity or a value too large for float32" if self.meta["allow_nan"] else (
                    "NaN, infinity or a value too large for float32")
                raise InvalidData(f"{self.name}: column {column} contains {what}")
            X = X32.astype(np.float64)
        return X


@op
class HistGradientBoostingOp(_TreeOp):
    """HistGradientBoostingClassifier/Regressor: baseline plus every iteration's trees, then the link."""

    kind = "sklearn.hist_gradient_boosting"

    def apply(self, X: Array) -> Array:
        raw = _boosted_raw(self.forest.leaf_values(self.checked(X), self.name), self.extra["baseline"])
        return _finish(self.meta["link"], raw)


@op
class GradientBoostingOp(_TreeOp):
    """GradientBoostingClassifier/Regressor: the init estimator's constant raw score plus
    ``learning_rate * leaf`` of every stage's trees, then the loss's link (classifiers)."""

    kind = "sklearn.gradient_boosting"

    def apply(self, X: Array) -> Array:
        raw = _boosted_raw(self.forest.leaf_values(self.checked(X), self.name), self.extra["baseline"])
        return _finish(self.meta["link"], raw)

    def predict(self, proba: Array) -> Array:
        if proba.shape[1] != 2 or self.classes is None:
            return super().predict(proba)
        # scikit-learn: class 1 when the raw score is >= 0 (argmax would take class 0 on a tie)
        labels: Array = np.asarray(self.classes)[(proba[:, 1] >= 0.5).astype(np.intp)]
        return labels


@op
class ForestOp(_TreeOp):
    """Random forests, extra trees and single decision trees: the mean of the trees' leaf values
    (a classifier's leaves hold class fractions), summed tree after tree then divided."""

    kind = "sklearn.forest"

    def apply(self, X: Array) -> Array:
        values = self.forest.leaf_values(self.checked(X), self.name)
        if self.forest.n_trees == 1:
            out: Array = values[:, 0]
            return out.copy()
        total = np.cumsum(values, axis=1)[:, -1]
        total /= self.forest.n_trees
        return total


def _boosted_raw(values: Array, baseline: Array) -> Array:
    """(n, k) raw scores: the baseline, then every iteration's tree for each of k outputs, in order."""
    n = values.shape[0]
    k = baseline.size
    steps = np.empty((n, values.shape[1] // k + 1, k), dtype=np.float64)
    steps[:, 0, :] = baseline
    steps[:, 1:, :] = values.reshape(n, -1, k)
    raw: Array = np.cumsum(steps, axis=1)[:, -1, :]
    return raw


def _finish(link: str, raw: Array) -> Array:
    if link == "logit":
        return binary_proba(expit(raw[:, 0]))
    if link == "half_logit":
        return binary_proba(expit(2 * raw[:, 0]))
    if link == "softmax":
        return softmax(np.asfortranarray(raw))
    if link == "log":
        out: Array = np.exp(raw[:, 0])
        return out
    return raw[:, 0].copy()


# -- compilers ---------------------------------------------------------------------------------

def _classes(est: Any) -> list[Any]:
    classes = np.asarray(est.classes_)
    if classes.dtype == object and len({type(c) for c in classes.tolist()}) > 1:
        raise Unsupported(f"{step_name(est)}: classes of mixed types")
    return list(classes.tolist())


def _sk_tree(tree: Any, width: int, scale: float | None = None) -> dict[str, Array]:
    """A fitted ``sklearn.tree._tree.Tree`` as a per-tree table."""
    left = np.asarray(tree.children_left)
    value = np.asarray(tree.value)
    if value.shape[1] != 1:
        raise Unsupported("multi-output trees: no compiled form")
    leaf_value = value[:, 0, :width].astype(np.float64)
    if scale is not None:
        leaf_value = scale * leaf_value
    return {
        "left": left, "right": np.asarray(tree.children_right),
        "feature": np.where(left >= 0, tree.feature, 0),
        "threshold": np.where(left >= 0, tree.threshold, np.nan),
        "nan_left": np.asarray(tree.missing_go_to_left).astype(bool),
        "cat": np.full(left.size, -1), "value": np.where((left < 0)[:, None], leaf_value, 0.0),
    }


def _allow_nan(tree_est: Any, n_features: int) -> bool:
    return bool(tree_est._support_missing_values(np.zeros((1, n_features))))


def _check_single_output(est: Any) -> None:
    if getattr(est, "n_outputs_", 1) != 1:
        raise Unsupported(f"{step_name(est)}(n_outputs_={est.n_outputs_}): multi-output trees")


@compiler(
    "sklearn.tree.DecisionTreeClassifier", "sklearn.tree.ExtraTreeClassifier",
    "sklearn.tree.DecisionTreeRegressor", "sklearn.tree.ExtraTreeRegressor",
    "sklearn.ensemble.RandomForestClassifier", "sklearn.ensemble.ExtraTreesClassifier",
    "sklearn.ensemble.RandomForestRegressor", "sklearn.ensemble.ExtraTreesRegressor",
)
def compile_forest(est: Any) -> ForestOp:
    from sklearn.base import is_classifier

    _check_single_output(est)
    name = step_name(est)
    trees = list(getattr(est, "estimators_", [est]))
    for tree in trees:
        _check_single_output(tree)
    classifier = is_classifier(est)
    width = int(est.n_classes_) if classifier else 1
    n_features = int(est.n_features_in_)
    meta: dict[str, Any] = {
        "name": name, "n_features": n_features, "float32": True,
        "allow_nan": _allow_nan(trees[0], n_features),
        "classes": _classes(est) if classifier else None,
    }
    nodes = Nodes.concat([_sk_tree(t.tree_, width) for t in trees])
    return ForestOp(meta, nodes, Categories.none(), {})


@compiler("sklearn.ensemble.GradientBoostingClassifier", "sklearn.ensemble.GradientBoostingRegressor")
def compile_gradient_boosting(est: Any) -> GradientBoostingOp:
    from sklearn.base import is_classifier
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.ensemble._gb import _init_raw_predictions

    name = step_name(est)
    classifier = is_classifier(est)
    n_features = int(est.n_features_in_)
    if isinstance(est.init_, str):
        if est.init_ != "zero":
            raise Unsupported(f"{name}(init={est.init_!r}): unknown init")
        baseline = np.zeros(est.n_trees_per_iteration_, dtype=np.float64)
    else:
        init = est.init_
        constant = {"prior", "most_frequent", "constant", "uniform"} if classifier else {
            "mean", "median", "quantile", "constant"}
        if type(init) not in (DummyClassifier, DummyRegressor) or init.strategy not in constant:
            raise Unsupported(f"{name}(init={type(init).__name__}): only a constant Dummy init")
        probe = np.zeros((1, n_features), dtype=np.float32)
        baseline = np.asarray(_init_raw_predictions(probe, init, est._loss, classifier),
                              dtype=np.float64).reshape(-1)
    link = _gb_link(est, classifier)
    scale = float(est.learning_rate)
    stages = est.estimators_
    trees = [_sk_tree(stages[i, k].tree_, 1, scale) for i in range(stages.shape[0])
             for k in range(stages.shape[1])]
    meta: dict[str, Any] = {
        "name": name, "n_features": n_features, "float32": True, "allow_nan": False, "link": link,
        "classes": _classes(est) if classifier else None,
    }
    return GradientBoostingOp(meta, Nodes.concat(trees), Categories.none(), {"baseline": baseline})


def _gb_link(est: Any, classifier: bool) -> str:
    if not classifier:
        return "identity"  # GradientBoostingRegressor.predict returns the raw score
    loss = type(est._loss).__name__
    if loss == "HalfBinomialLoss":
        return "logit"
    if loss == "HalfMultinomialLoss":
        return "softmax"
    if loss == "ExponentialLoss":
        return "half_logit"
    raise Unsupported(f"{step_name(est)}(loss={est.loss!r}): no compiled form")


_HGB_LINKS = {
    ("HalfBinomialLoss", "LogitLink"): "logit",
    ("HalfMultinomialLoss", "MultinomialLogit"): "softmax",
    ("HalfSquaredError", "IdentityLink"): "identity",
    ("AbsoluteError", "IdentityLink"): "identity",
    ("PinballLoss", "IdentityLink"): "identity",
    ("HalfPoissonLoss", "LogLink"): "log",
    ("HalfGammaLoss", "LogLink"): "log",
}


@compiler(
    "sklearn.ensemble.HistGradientBoostingClassifier", "sklearn.ensemble.HistGradientBoostingRegressor"
)
def compile_hist_gradient_boosting(est: Any) -> HistGradientBoostingOp:
    from sklearn.base import is_classifier

    name = step_name(est)
    classifier = is_classifier(est)
    key = (type(est._loss).__name__, type(est._loss.link).__name__)
    if key not in _HGB_LINKS or not isinstance(est.loss, str):
        raise Unsupported(f"{name}(loss={est.loss!r}): no compiled form")
    n_features = int(est.n_features_in_)
    remap, categories, known = _hgb_categories(est, n_features)
    trees = []
    cat_rows: list[Array] = []
    for iteration in est._predictors:
        for predictor in iteration:
            tree, rows = _hgb_tree(predictor, remap, known, categories, len(cat_rows))
            trees.append(tree)
            cat_rows.extend(rows)
    if cat_rows:
        categories.left = np.stack(cat_rows).astype(bool)
    meta: dict[str, Any] = {
        "name": name, "n_features": n_features, "float32": False, "allow_nan": True,
        "link": _HGB_LINKS[key], "classes": _classes(est) if classifier else None,
    }
    baseline = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)
    return HistGradientBoostingOp(meta, Nodes.concat(trees), categories, {"baseline": baseline})


def _hgb_categories(est: Any, n_features: int) -> tuple[Array, Categories, dict[int, Array]]:
    """The internal preprocessor as data: for every feature index the trees use, the input column;
    the categorical columns' fitted categories; each categorical tree feature's known-category bits."""
    name = step_name(est)
    if est.is_categorical_ is None:
        return np.arange(n_features), Categories.none(), {}
    if isinstance(est.categorical_features, str):
        raise Unsupported(f"{name}(categorical_features={est.categorical_features!r}): categories from "
                          "the input's dtypes are not numbers the plan's float matrix can carry")
    pre = est._preprocessor
    mask = np.asarray(est.is_categorical_, dtype=bool)
    cat_columns = np.flatnonzero(mask)
    num_columns = np.flatnonzero(~mask)
    encoder = pre.named_transformers_["encoder"]
    encoder_slice = pre.output_indices_["encoder"]
    numerical_slice = pre.output_indices_["numerical"]
    if (encoder_slice.start, encoder_slice.stop) != (0, cat_columns.size) or (
        numerical_slice.start, numerical_slice.stop) != (cat_columns.size, n_features):
        raise Unsupported(f"{name}: unexpected layout of the internal preprocessor")
    remap = np.concatenate([cat_columns, num_columns])
    values: list[Array] = []
    for cats in encoder.categories_:
        cats = np.asarray(cats)
        if cats.dtype.kind not in "fiu":
            raise Unsupported(f"{name}: categorical features whose categories are not numbers")
        cats = cats.astype(np.float64)
        values.append(cats[~np.isnan(cats)])
    offsets = np.concatenate([[0], np.cumsum([v.size for v in values])]).astype(np.int64)
    categories = Categories(
        columns=cat_columns.astype(np.int32),
        values=np.concatenate(values) if values else np.zeros(0), offsets=offsets,
        left=np.zeros((0, MISSING_CODE + 1), bool),
    )
    known_bitsets, f_idx_map = est._bin_mapper.make_known_categories_bitsets()
    known = {int(f): _bits(known_bitsets[f_idx_map[f]]) for f in range(cat_columns.size)}
    return remap, categories, known


def _bits(bitset: Array) -> Array:
    """A (8,) uint32 bitset as 256 booleans."""
    words = np.asarray(bitset, dtype=np.uint32)
    out: Array = ((words[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(bool).reshape(-1)
    return out


def _hgb_tree(predictor: Any, remap: Array, known: dict[int, Array], categories: Categories,
              first_row: int) -> tuple[dict[str, Array], list[Array]]:
    nodes = predictor.nodes
    leaf = nodes["is_leaf"].astype(bool)
    left = np.where(leaf, -1, nodes["left"].astype(np.int64))
    right = np.where(leaf, -1, nodes["right"].astype(np.int64))
    feature = np.where(leaf, 0, remap[nodes["feature_idx"]])
    is_cat = ~leaf & nodes["is_categorical"].astype(bool)
    cat = np.full(left.size, -1, dtype=np.int64)
    rows: list[Array] = []
    for i in np.flatnonzero(is_cat):
        go_left = _bits(predictor.raw_left_cat_bitsets[nodes["bitset_idx"][i]])
        known_bits = known[int(nodes["feature_idx"][i])]
        missing_left = bool(nodes["missing_go_to_left"][i])
        row = np.empty(MISSING_CODE + 1, dtype=bool)
        row[:MISSING_CODE] = np.where(go_left, True, np.where(known_bits, False, missing_left))
        row[MISSING_CODE] = missing_left
        cat[i] = first_row + len(rows)
        rows.append(row)
    tree = {
        "left": left, "right": right, "feature": feature,
        "threshold": np.where(leaf | is_cat, np.nan, nodes["num_threshold"]),
        "nan_left": nodes["missing_go_to_left"].astype(bool), "cat": cat,
        "value": np.where(leaf, nodes["value"], 0.0).astype(np.float64)[:, None],
    }
    return tree, rows
