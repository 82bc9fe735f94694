"""PlanModel: a compiled plan with the interface of the scikit-learn model it replaces.

It answers what :class:`scorer.model.DefaultModel` answers for the same rows (``prediction``, then
``probability_<class>`` per class for a classifier), as a DataFrame from :meth:`PlanModel.predict` and as
numpy columns from :meth:`PlanModel.predict_columns` (:class:`scorer.table.ColumnarModel`: no DataFrame
on the server's path). The labels keep the dtype scikit-learn's ``classes_`` had (strings as objects).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from scorer.preprocessor import CustomPreprocessor
from scorer.sklearn_plan.base import Array, InvalidData
from scorer.sklearn_plan.pipeline import Plan
from scorer.table import frame_from_arrays

if TYPE_CHECKING:
    import pandas as pd


class PlanModel(CustomPreprocessor):
    def __init__(self, plan: Plan, labels: Array | None, input_schema: dict[str, str] | None) -> None:
        self.plan = plan
        self.labels = None if labels is None else (labels.astype(object) if labels.dtype.kind == "U" else labels)
        self.classes = None if labels is None else labels.tolist()
        self.input_schema = input_schema
        self.output_columns = (["prediction"] + [f"probability_{c}" for c in self.classes]
                               if self.classes is not None else None)
        self.scoring: dict[str, Any] | None = None

    def load(self, artifacts_dir: Path) -> None:
        """Nothing to load: the plan is built."""

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        columns = {name: df[name].to_numpy() for name in self.plan.inputs if name in df.columns}
        out = self.predict_columns(columns, len(df))
        return frame_from_arrays(list(out), list(out.values()), len(df))

    def predict_columns(self, columns: Mapping[str, NDArray[Any]], n_rows: int) -> dict[str, NDArray[Any]]:
        missing = [name for name in self.plan.inputs if name not in columns]
        if missing:
            raise InvalidData(f"the pipeline needs column {missing[0]!r}, which the input lacks")
        answer = self.plan.run(columns, n_rows)
        if self.labels is None:
            return {"prediction": answer}
        prediction = self.labels[answer.argmax(axis=1)]
        assert self.output_columns is not None
        return dict(zip(self.output_columns,
                        [prediction, *(np.ascontiguousarray(answer[:, i]) for i in range(answer.shape[1]))],
                        strict=True))
