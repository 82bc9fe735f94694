"""Scoring code for the spam bundle (the vendor's two-pickle layout).

artifacts/first_model.pkl   fitted TfidfVectorizer (applied to the cleaned ``feature2`` text)
artifacts/second_model.pkl  fitted LogisticRegression on [tf-idf | feature1 | feature3]

Input columns and output columns are declared in the bundle's ``manifest.json``.
"""

from __future__ import annotations

import pathlib

import joblib
import numpy as np
import pandas as pd

import scorer
from first_code import build_features, clean_text

OUTPUT_COLUMNS = ["prediction", "probability_ham", "probability_spam"]


class CustomPreprocessor(scorer.CustomPreprocessor):
    def load(self, artifacts_dir: pathlib.Path) -> None:
        artifacts_dir = pathlib.Path(artifacts_dir)
        self.vectorizer = joblib.load(artifacts_dir / "first_model.pkl")
        self.model = joblib.load(artifacts_dir / "second_model.pkl")
        self.classes = np.asarray([str(c) for c in self.model.classes_], dtype=object)
        if sorted(self.classes) != ["ham", "spam"]:
            raise ValueError(f"second_model.pkl has unexpected classes {list(self.classes)}")

    def preprocess(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(feature2=clean_text(df["feature2"]))

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        proba = self.model.predict_proba(build_features(df, self.vectorizer))
        out = pd.DataFrame(
            proba, columns=[f"probability_{c}" for c in self.classes], index=df.index
        )
        out.insert(0, "prediction", self.classes[proba.argmax(axis=1)])
        return out[OUTPUT_COLUMNS]
