"""The runtime library a bundle's ``custom_preprocess.py`` extends.

A bundle's ``code/custom_preprocess.py`` (or ``custom_preprocess.py`` at the bundle root)
defines ``class CustomPreprocessor(scorer.CustomPreprocessor)``::

    import pathlib
    import joblib
    import pandas as pd
    import scorer
    from first_code import clean_text          # helpers in code/ import like this

    class CustomPreprocessor(scorer.CustomPreprocessor):
        def load(self, artifacts_dir: pathlib.Path) -> None:
            self.vectorizer = joblib.load(artifacts_dir / "first_model.pkl")
            self.model = joblib.load(artifacts_dir / "second_model.pkl")

        def preprocess(self, df: pd.DataFrame) -> pd.DataFrame:
            return df.assign(text=df["text"].map(clean_text))

        def predict(self, df: pd.DataFrame):
            return self.model.predict(self.vectorizer.transform(df["text"]))

Contract:

* ``load(artifacts_dir)`` is called exactly once, before any scoring.
* ``predict(df)`` receives a *batch*: rows from one or many requests (or one chunk of a
  file), already checked against the input schema. It returns a DataFrame, Series,
  ndarray or list with exactly one row per input row. A 1-D result becomes the column
  ``prediction``; a 2-D array becomes ``prediction_0 .. prediction_k``.
* ``preprocess(df)`` and ``postprocess(predictions, df)`` are optional hooks; by default
  they return their input unchanged. ``postprocess`` receives the predictions already as
  a DataFrame and the (preprocessed) input batch.
* Each row's result must depend only on that row: scorer coalesces concurrent requests
  into one ``predict`` call and splits the result back.
* ``predict(df, params=None)``, a ``predict`` with a ``params`` argument, receives a request's
  inference params (MLflow's ``{"dataframe_split": ..., "params": {...}}``, the Open Inference
  Protocol's request ``parameters``) as a dict: requests with different params are never batched
  together, so a call's params are every row's. Without that argument, params are ignored and the
  answer carries ``Warning: 299 scorer "params ignored: ..."``.
* Optional attributes ``input_schema`` (``{"column": "float" | "int" | "bool" |
  "string" | "any"}``) and ``output_columns`` describe the interface when the bundle has
  no manifest: set them in the class body, or on ``self`` in ``load``.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # ``import scorer`` does not import pandas: a model that scores columns never needs it
    import pandas as pd


class CustomPreprocessor:
    """Base class for a bundle's custom scoring code. Override :meth:`load` and :meth:`predict`."""

    # Read from the instance once load() has run: a subclass sets them in its body, or in load().
    input_schema: dict[str, str] | None = None
    output_columns: list[str] | None = None

    def load(self, artifacts_dir: pathlib.Path) -> None:
        """Load model files from ``artifacts_dir``. Called once."""

    def preprocess(self, df: pd.DataFrame) -> pd.DataFrame:
        """Transform a validated input batch before :meth:`predict`. Default: unchanged."""
        return df

    def predict(self, df: pd.DataFrame) -> Any:
        """Score a batch; return one row per input row."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict(df)")

    def postprocess(self, predictions: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
        """Transform the predictions DataFrame. Default: unchanged."""
        return predictions
