"""Feature helpers for the spam bundle.

Shared by the serving code (``custom_preprocess.py``) and by ``bundles/build.py``, which
trains the models with exactly these functions, so training and scoring see the same
features.

Nothing from this module is pickled into the artifacts: the vectorizer is a plain
``TfidfVectorizer`` fitted on text that has already been through :func:`clean_text`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp

TEXT_COLUMN = "feature2"
NUMERIC_COLUMNS = ("feature1", "feature3")
# Missing numerics are imputed with a constant (LogisticRegression cannot take NaN).
NUMERIC_FILL_VALUE = 0.0

_URL_RE = re.compile(r"(?:https?://|www\.)\S+")
_EMAIL_RE = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")
_NUMBER_RE = re.compile(r"\d+(?:[.,:]\d+)*")
_PUNCT_RE = re.compile(r"[^\w\s]|_")
_SPACE_RE = re.compile(r"\s+")


def clean_one(text: object) -> str:
    """Normalise one message: case, unicode form, URLs, e-mail addresses, digits, whitespace."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or text is pd.NA:
        return ""
    t = unicodedata.normalize("NFKC", str(text)).lower()
    t = _URL_RE.sub(" urltoken ", t)
    t = _EMAIL_RE.sub(" emailtoken ", t)
    t = _NUMBER_RE.sub(" numtoken ", t)
    t = _PUNCT_RE.sub(" ", t)
    return _SPACE_RE.sub(" ", t).strip()


def clean_text(series: pd.Series | Iterable[object]) -> pd.Series:
    """Clean a column of messages. Returns an object-dtype Series aligned with the input."""
    s = series if isinstance(series, pd.Series) else pd.Series(list(series))
    return pd.Series([clean_one(t) for t in s], index=s.index, name=s.name, dtype=object)


def build_features(df: pd.DataFrame, vectorizer) -> sp.csr_matrix:
    """Model input: tf-idf of the (already cleaned) text, then ``feature1`` and ``feature3``."""
    text = vectorizer.transform(df[TEXT_COLUMN].tolist())
    numeric = (
        df[list(NUMERIC_COLUMNS)]
        .apply(pd.to_numeric, errors="coerce")
        .to_numpy(dtype=np.float64, na_value=np.nan)
    )
    numeric = np.where(np.isfinite(numeric), numeric, NUMERIC_FILL_VALUE)
    return sp.hstack([text, sp.csr_matrix(numeric)], format="csr", dtype=np.float64)
