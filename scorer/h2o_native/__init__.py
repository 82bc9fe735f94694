"""H2O GBM and DRF MOJOs scored in numpy, without a JVM: same answers as h2o-genmodel.

:class:`NativeMojo` is a drop-in for :class:`scorer.h2o_mojo.MojoModel` (same ``features``,
``input_schema``, ``classes``, ``output_columns``, and ``predict`` output: labels as strings,
probabilities and regression values float64) for the MOJOs it can score exactly; ``load`` raises
:class:`Unsupported` (with the reason) for the others, so the caller falls back to genmodel.

Covered: MOJO version 1.40 (what h2o 3.46 writes) of GBM (distributions bernoulli,
quasibinomial, modified_huber, multinomial, gaussian, poisson, gamma, tweedie, laplace, quantile,
huber; links identity, log, logit, inverse) and DRF (regression, binomial with and without
``binomial_double_trees``, multinomial), with numeric and categorical splits (inline and large
bitsets), learned NA directions, ``balance_classes`` and the model's default threshold. Refused:
other algorithms and versions, calibrated models, offset/weights/fold columns, categorical
encodings other than H2O's own.

Inputs are read the way genmodel's ``EasyPredictModelWrapper`` reads them with
``convertUnknownCategoricalLevelsToNa`` and ``convertInvalidNumbersToNa``: a categorical value is
looked up as a string in the column's domain (then as ``"<column>.<value>"``, as
``EnumEncoder`` does), an unseen level or None is missing; a numeric value that is not a number
is missing; ±inf are numbers (genmodel compares them with the thresholds). The modules:
:mod:`.mojo` reads the zip, :mod:`.trees` walks the trees, :mod:`.outputs` turns tree sums into
predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from scorer.h2o_native.mojo import Mojo, Unsupported, read_mojo
from scorer.h2o_native.outputs import Unify, labels
from scorer.h2o_native.trees import Forest, build_forest, leaf_values
from scorer.preprocessor import CustomPreprocessor
from scorer.table import is_frame, is_series, pandas_na

if TYPE_CHECKING:  # imported for DataFrames and text to parse: a Table of numbers and levels needs none
    import pandas as pd

__all__ = ["NativeMojo", "Unsupported"]


class NativeMojo(CustomPreprocessor):
    """An H2O GBM/DRF MOJO zip scored natively. Usable like :class:`scorer.h2o_mojo.MojoModel`."""

    # Set by load() (read from the MOJO).
    input_schema: dict[str, str]
    output_columns: list[str]

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.classes: list[str] | None = None
        self.features: list[str] = []

    def load(self, artifacts_dir: Path) -> None:
        mojo = read_mojo(self.path)
        self._mojo = mojo
        self.features = mojo.features
        domains = mojo.domains[: mojo.n_features]
        self.input_schema = {name: ("string" if domains[i] is not None else "float")
                             for i, name in enumerate(self.features)}
        self._levels: list[dict[str, int] | None] = [
            None if domain is None else {level: i for i, level in enumerate(domain)} for domain in domains
        ]
        self._domain_sizes = np.array([-1 if d is None else len(d) for d in domains], dtype=np.int64)
        info = mojo.info
        if mojo.category != "Regression":
            response = mojo.domains[-1]
            if response is None:
                raise Unsupported(f"{self.path}: a classifier without a response domain is not scored natively")
            self.classes = [str(c) for c in response]
            self.output_columns = ["prediction", *(f"probability_{c}" for c in self.classes)]
        else:
            self.output_columns = ["prediction"]
        # Trees grouped per class, in genmodel's summation order; missing trees add nothing.
        self._class_trees: list[list[int]] = []
        present: list[bytes] = []
        for cls in range(mojo.ntrees_per_group):
            indices = []
            for group in range(mojo.ntree_groups):
                tree = mojo.trees[cls * mojo.ntree_groups + group]
                if tree is not None:
                    indices.append(len(present))
                    present.append(tree)
            self._class_trees.append(indices)
        self._forest: Forest = build_forest(present, str(self.path))

        def floats(key: str) -> np.ndarray | None:
            value = info.get(key)
            return None if value is None else np.asarray(value, dtype=np.float64)

        self._unify = Unify(
            algo=mojo.algo, n_classes=mojo.n_classes, ntree_groups=mojo.ntree_groups,
            family=info.get("distribution"), link=str(info.get("link_function")),
            init_f=float(info.get("init_f") or 0.0),
            binomial_double_trees=bool(info.get("binomial_double_trees")),
            balance_classes=bool(info.get("balance_classes")),
            prior=floats("prior_class_distrib"), model_distribution=floats("model_class_distrib"),
            threshold=float(info.get("default_threshold") or 0.5),
        )

    @property
    def mojo(self) -> Mojo:
        return self._mojo

    def rows(self, data: pd.DataFrame | Mapping[str, Any], n_rows: int | None = None) -> np.ndarray:
        """The (n, features) doubles genmodel scores for a batch (a DataFrame, or a Table's numpy
        columns and their length): numbers as they are (NaN for a missing or unparseable one),
        categorical levels as their index in the domain (NaN when missing or unseen)."""
        n = len(data) if is_frame(data) else n_rows
        assert n is not None, "n_rows is required for columns"
        x = np.empty((n, len(self.features)), dtype=np.float64)
        na = pandas_na()
        for j, name in enumerate(self.features):
            levels = self._levels[j]
            if name not in data:
                x[:, j] = np.nan
                continue
            column = data[name]
            values = column.to_numpy() if is_series(column) else np.asarray(column)
            if levels is None:
                if values.dtype.kind in "fiub":  # numpy numbers: as they are (the common case, no parsing)
                    x[:, j] = values
                else:
                    import pandas as pd

                    series = column if isinstance(column, pd.Series) else pd.Series(values, dtype=object)
                    x[:, j] = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                x[:, j] = [_level(levels, name, v, na) for v in (column.tolist() if is_series(column)
                                                                   else values.tolist())]
        return x

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self._outputs(self.rows(df)))

    def predict_columns(self, columns: Mapping[str, NDArray[Any]], n_rows: int) -> dict[str, NDArray[Any]]:
        """:meth:`predict` on a Table's columns, without DataFrames (:class:`scorer.table.ColumnarModel`)."""
        return self._outputs(self.rows(columns, n_rows))

    def _outputs(self, x: np.ndarray) -> dict[str, NDArray[Any]]:
        values = leaf_values(self._forest, x, self._domain_sizes)
        sums = np.zeros((len(x), len(self._class_trees)), dtype=np.float64)
        for k, indices in enumerate(self._class_trees):
            for t in indices:
                sums[:, k] += values[:, t]
        if self.classes is None:
            return {"prediction": self._unify.regression(sums[:, 0])}
        probs = self._unify.probabilities(sums)
        best = labels(probs, self._unify.prior, self._unify.threshold, x)
        out: dict[str, NDArray[Any]] = {"prediction": np.asarray(self.classes, dtype=object)[best]}
        for i, c in enumerate(self.classes):
            out[f"probability_{c}"] = probs[:, i].astype(np.float64)
        return out


def _level(levels: dict[str, int], column: str, value: Any, na: Any) -> float:
    """``EnumEncoder.encodeCatValue``: the level's index, else that of ``"<column>.<value>"``;
    NaN for a missing value or an unseen level (``na``: :func:`~scorer.table.pandas_na`)."""
    if value is None or (isinstance(value, float) and value != value) or value is na:
        return np.nan
    text = value if isinstance(value, str) else str(value)
    index = levels.get(text)
    if index is None:
        index = levels.get(f"{column}.{text}")
    return np.nan if index is None else float(index)
