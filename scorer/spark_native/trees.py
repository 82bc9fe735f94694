"""Tree predictors (decision trees, random forests, gradient-boosted trees) compiled to numpy.

Every tree of a model is one set of node arrays; all rows walk all trees together, one depth level per
step (index arrays, no per-row Python loop). Splits are Spark 3.5's (``org.apache.spark.ml.tree.Split``):

- ``ContinuousSplit.shouldGoLeft``: ``features(featureIndex) <= threshold`` (NaN compares false: right);
- ``CategoricalSplit``: built from the saved left categories with ``isLeft = leftCategories.length <=
  numCategories / 2``; when ``isLeft`` a value goes left if it is one of them, otherwise a value goes
  left unless it is one of the *other* categories. So a value that is no category at all (NaN, -1,
  2.5, ``numCategories``) goes right under the first form and left under the second, as in Spark.

Saved data (``DecisionTreeModelReadWrite``, ``EnsembleModelReadWrite``): ``data/`` holds one row per node
(``treeID`` and ``nodeData`` for ensembles) with ``id``, ``prediction``, ``impurityStats``, ``leftChild``,
``rightChild`` and ``split{featureIndex, leftCategoriesOrThreshold, numCategories}`` (numCategories -1:
continuous); ensembles keep the tree weights in ``treesMetadata/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scorer.spark_native.base import Compiler, InvalidData, Unsupported
from scorer.spark_native.layout import StageFiles
from scorer.spark_native.predictor import Classifier, Regressor, sequential_sum


@dataclass
class Forest:
    """All trees' nodes in one set of arrays (a tree's node ``id`` offset by the nodes before it)."""

    roots: np.ndarray  # (trees,) node index of each root
    feature: np.ndarray  # (nodes,) feature index, -1 at a leaf
    threshold: np.ndarray  # continuous split threshold (NaN elsewhere)
    categorical: np.ndarray  # bool: a categorical split
    left: np.ndarray
    right: np.ndarray
    num_categories: np.ndarray  # categorical split: numCategories
    category_row: np.ndarray  # categorical split: its row in ``goes_left``
    goes_left: np.ndarray  # (categorical splits, max categories) bool: category c goes left
    other_goes_left: np.ndarray  # (nodes,) bool: where a value that is no category goes (not isLeft)
    prediction: np.ndarray  # (nodes,) the node's prediction
    stats: list[list[float]]  # (nodes,) impurityStats
    depth: int

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """The leaf each row reaches in each tree: (rows, trees) node indices."""
        n = x.shape[0]
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        if self.feature.size and int(self.feature.max()) >= x.shape[1]:
            raise ValueError(f"the model reads feature {int(self.feature.max())}, vectors have {x.shape[1]}")
        for _ in range(self.depth):
            at = self.feature[node] >= 0
            if not at.any():
                break
            row, tree = np.nonzero(at)
            here = node[row, tree]
            value = x[row, self.feature[here]]
            left = value <= self.threshold[here]
            cat = self.categorical[here]
            if cat.any():
                nodes, v = here[cat], value[cat]
                valid = (v >= 0) & (v < self.num_categories[nodes]) & (np.floor(v) == v)
                column = np.where(valid, v, 0).astype(np.int64)
                inside = self.goes_left[self.category_row[nodes], column]
                left[cat] = np.where(valid, inside, self.other_goes_left[nodes])
            node[row, tree] = np.where(left, self.left[here], self.right[here])
        return node


def _forest(trees: list[list[dict[str, Any]]]) -> Forest:
    """Node rows per tree (each tree's ids 0..n-1, root 0) as a :class:`Forest`."""
    total = sum(len(t) for t in trees)
    feature = np.full(total, -1, dtype=np.int64)
    threshold = np.full(total, np.nan)
    categorical = np.zeros(total, dtype=bool)
    left = np.full(total, -1, dtype=np.int64)
    right = np.full(total, -1, dtype=np.int64)
    num_categories = np.zeros(total, dtype=np.int64)
    category_row = np.zeros(total, dtype=np.int64)
    other_goes_left = np.zeros(total, dtype=bool)
    prediction = np.zeros(total)
    stats: list[list[float]] = [[] for _ in range(total)]
    categories: list[tuple[int, list[float]]] = []
    roots = []
    offset = 0
    for nodes in trees:
        if sorted(int(n["id"]) for n in nodes) != list(range(len(nodes))):
            raise Unsupported("a tree's node ids are not 0..n-1")
        roots.append(offset)
        for n in nodes:
            i = offset + int(n["id"])
            prediction[i] = float(n["prediction"])
            stats[i] = [float(s) for s in (n.get("impurityStats") or [])]
            if int(n["leftChild"]) < 0:
                continue
            left[i], right[i] = offset + int(n["leftChild"]), offset + int(n["rightChild"])
            split = n["split"]
            feature[i] = int(split["featureIndex"])
            values = [float(v) for v in split["leftCategoriesOrThreshold"] or []]
            k = int(split["numCategories"])
            if k < 0:
                threshold[i] = values[0]
            else:
                categorical[i], num_categories[i] = True, k
                category_row[i] = len(categories)
                other_goes_left[i] = not len(values) <= k // 2  # Spark's isLeft is false
                categories.append((k, values))
        offset += len(nodes)
    width = max((k for k, _ in categories), default=0)
    goes_left = np.zeros((len(categories), width), dtype=bool)
    for r, (_, values) in enumerate(categories):
        goes_left[r, np.asarray(values, dtype=np.int64)] = True
    depth = _depth(left, right, np.asarray(roots, dtype=np.int64))
    return Forest(
        np.asarray(roots, dtype=np.int64), feature, threshold, categorical, left, right, num_categories,
        category_row, goes_left, other_goes_left, prediction, stats, depth,
    )


def _depth(left: np.ndarray, right: np.ndarray, roots: np.ndarray) -> int:
    depth, level = 0, roots
    while level.size:
        inner = level[left[level] >= 0]
        if not inner.size:
            break
        level = np.concatenate([left[inner], right[inner]])
        depth += 1
    return depth


def _flat(stage: StageFiles) -> list[list[dict[str, Any]]]:
    """The saved node rows grouped per tree (ordered by treeID for an ensemble)."""
    rows = stage.rows("data")
    if rows and "nodeData" in rows[0]:
        per: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            per.setdefault(int(r["treeID"]), []).append(r["nodeData"])
        if sorted(per) != list(range(len(per))):
            raise Unsupported("tree ids are not 0..n-1")
        return [per[t] for t in range(len(per))]
    return [rows]


def _weights(stage: StageFiles, trees: int) -> np.ndarray:
    rows = sorted(stage.rows("treesMetadata"), key=lambda r: int(r["treeID"]))
    if len(rows) != trees:
        raise Unsupported(f"treesMetadata lists {len(rows)} trees, data holds {trees}")
    return np.asarray([float(r["weights"]) for r in rows], dtype=np.float64)


def _no_leaf_col(stage: StageFiles) -> None:
    if stage.param("leafCol"):
        raise Unsupported("leafCol (leaf indices) is not implemented")


def _tree_sum(forest: Forest, leaves: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The trees' leaf predictions added in tree order (each times its weight when given): Spark's
    sequential sum (RandomForestRegressionModel) and ``ddot`` with the tree weights (GBTRegressionModel)."""
    total = np.zeros(leaves.shape[0])
    for t in range(leaves.shape[1]):
        values = forest.prediction[leaves[:, t]]
        total = total + (values if weights is None else values * weights[t])
    return total


def _leaves(forest: Forest, x: np.ndarray, uid: str, column: str) -> np.ndarray:
    try:
        return forest.leaves(x)
    except ValueError as exc:
        raise InvalidData(f"stage {uid}: column {column!r}: {exc}") from exc


def _num_classes(stage: StageFiles, forest: Forest) -> int:
    known = stage.meta.get("numClasses")
    if known is not None:
        return int(known)
    return max((len(s) for s in forest.stats), default=0)


def _class_stats(forest: Forest, num_classes: int) -> np.ndarray:
    """Each node's impurityStats (class counts) as a (nodes, classes) array."""
    out = np.zeros((len(forest.stats), num_classes))
    for i, s in enumerate(forest.stats):
        if s:
            if len(s) != num_classes:
                raise Unsupported(f"a node holds {len(s)} class counts for {num_classes} classes")
            out[i] = s
    return out


def _normalize(raw: np.ndarray, uid: str) -> np.ndarray:
    """``ProbabilisticClassificationModel.normalizeToProbabilitiesInPlace``: each value over the row's sum
    (which must be > 0, values >= 0)."""
    total = sequential_sum(raw)
    if (raw < 0).any() or not (total > 0).all():
        raise InvalidData(f"stage {uid}: raw predictions cannot be normalized to probabilities")
    return np.asarray(raw / total[:, None])


class DecisionTreeClassifier(Classifier):
    """``DecisionTreeClassificationModel``: raw = the leaf's impurityStats (class counts); ``predict`` (used
    only without raw and probability columns) is the leaf's own prediction."""

    def __init__(self, stage: StageFiles) -> None:
        _no_leaf_col(stage)
        self.forest = _forest(_flat(stage))
        super().__init__(stage, _num_classes(stage, self.forest))
        self.counts = _class_stats(self.forest, self.num_classes)

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.counts[_leaves(self.forest, x, self.uid, self.features_col)[:, 0]])

    def raw2probability(self, raw: np.ndarray) -> np.ndarray:
        return _normalize(raw, self.uid)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.forest.prediction[_leaves(self.forest, x, self.uid, self.features_col)[:, 0]])


class RandomForestClassifier(Classifier):
    """``RandomForestClassificationModel.predictRaw``: per tree, the leaf's class counts over their sum
    (skipped when the sum is 0), added tree by tree; probability normalizes that."""

    def __init__(self, stage: StageFiles) -> None:
        _no_leaf_col(stage)
        self.forest = _forest(_flat(stage))
        super().__init__(stage, _num_classes(stage, self.forest))
        counts = _class_stats(self.forest, self.num_classes)
        total = sequential_sum(counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.votes = np.where((total != 0)[:, None], counts / total[:, None], 0.0)

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        leaves = _leaves(self.forest, x, self.uid, self.features_col)
        raw = np.zeros((x.shape[0], self.num_classes))
        for t in range(leaves.shape[1]):
            raw = raw + self.votes[leaves[:, t]]
        return raw

    def raw2probability(self, raw: np.ndarray) -> np.ndarray:
        return _normalize(raw, self.uid)


class GBTClassifier(Classifier):
    """``GBTClassificationModel`` (binary only in Spark): margin = sum of tree prediction x tree weight
    (``ddot``), raw = ``[-margin, margin]``, probability via ``LogLoss.computeProbability``:
    ``p0 = 1 / (1 + exp(-2 * raw0))``, ``p1 = 1 - p0``; ``predict`` is ``margin > 0`` unless thresholds."""

    def __init__(self, stage: StageFiles) -> None:
        _no_leaf_col(stage)
        trees = _flat(stage)
        self.forest = _forest(trees)
        self.weights = _weights(stage, len(trees))
        if str(stage.param("lossType", "logistic")).lower() != "logistic":
            raise Unsupported(f"lossType {stage.param('lossType')!r}")
        super().__init__(stage, 2)

    def margin(self, x: np.ndarray) -> np.ndarray:
        return _tree_sum(self.forest, _leaves(self.forest, x, self.uid, self.features_col), self.weights)

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        m = self.margin(x)
        return np.stack([-m, m], axis=1)

    def raw2probability(self, raw: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            p0 = 1.0 / (1.0 + np.exp(-2.0 * raw[:, 0]))
        return np.stack([p0, 1.0 - p0], axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.thresholds is not None:
            return super().predict(x)
        return (self.margin(x) > 0.0).astype(np.float64)


class DecisionTreeRegressor(Regressor):
    """``DecisionTreeRegressionModel.predict``: the leaf's prediction."""

    def __init__(self, stage: StageFiles) -> None:
        _no_leaf_col(stage)
        if stage.param("varianceCol"):
            raise Unsupported("varianceCol is not implemented")
        super().__init__(stage)
        self.forest = _forest(_flat(stage))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.forest.prediction[_leaves(self.forest, x, self.uid, self.features_col)[:, 0]])


class RandomForestRegressor(Regressor):
    """``RandomForestRegressionModel.predict``: the trees' predictions summed in order, over numTrees."""

    def __init__(self, stage: StageFiles) -> None:
        _no_leaf_col(stage)
        super().__init__(stage)
        trees = _flat(stage)
        self.forest = _forest(trees)
        self.num_trees = len(trees)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _tree_sum(self.forest, _leaves(self.forest, x, self.uid, self.features_col)) / self.num_trees


class GBTRegressor(Regressor):
    """``GBTRegressionModel.predict``: ``ddot`` of the trees' predictions with the tree weights."""

    def __init__(self, stage: StageFiles) -> None:
        _no_leaf_col(stage)
        super().__init__(stage)
        trees = _flat(stage)
        self.forest = _forest(trees)
        self.weights = _weights(stage, len(trees))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _tree_sum(self.forest, _leaves(self.forest, x, self.uid, self.features_col), self.weights)


COMPILERS: dict[str, Compiler] = {
    "DecisionTreeClassificationModel": DecisionTreeClassifier,
    "RandomForestClassificationModel": RandomForestClassifier,
    "GBTClassificationModel": GBTClassifier,
    "DecisionTreeRegressionModel": DecisionTreeRegressor,
    "RandomForestRegressionModel": RandomForestRegressor,
    "GBTRegressionModel": GBTRegressor,
}
