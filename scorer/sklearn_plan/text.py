"""Text vectorizers compiled: CountVectorizer, TfidfVectorizer and TfidfTransformer, as scikit-learn's
``transform`` computes them, to sparse rows (:class:`~scorer.sklearn_plan.sparse.SparseRows`).

The word analyzer is replicated step by step from scikit-learn's ``_VectorizerMixin``: ``str.lower``
when ``lowercase``, the accent stripping (``'ascii'``, ``'unicode'``), ``re.findall`` with the fitted
``token_pattern``, stop words removed, then word n-grams joined by one space, longest last. Each known
term counts once per occurrence; ``binary`` makes counts 1; TF-IDF takes ``log(tf) + 1`` when
``sublinear_tf``, multiplies by ``idf_`` and divides each row by its l2 (or l1) norm. A document that
is not a string is refused as scikit-learn refuses it (``None.lower()`` raises there).

Callable analyzers, tokenizers and preprocessors, the char analyzers, file inputs and dtypes other than
float64 (or integer counts) are Unsupported.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import numpy as np

from scorer.sklearn_plan.base import Array, InvalidData, Op, State, Unsupported, compiler, op
from scorer.sklearn_plan.sparse import SparseRows


def _strip_unicode(s: str) -> str:
    try:
        s.encode("ASCII", errors="strict")
        return s
    except UnicodeEncodeError:
        normalized = unicodedata.normalize("NFKD", s)
        return "".join([c for c in normalized if not unicodedata.combining(c)])


def _strip_ascii(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ASCII", "ignore").decode("ASCII")


_STRIP = {None: None, "unicode": _strip_unicode, "ascii": _strip_ascii}


@op
class TextCounts(Op):
    """Term counts (CountVectorizer), optionally with TF-IDF weighting and normalisation (TfidfVectorizer)."""

    kind = "text_counts"
    one_dimensional = True  # scikit-learn gives it one column as 1-D (a column named by a string)
    sparse_output = True

    def __init__(self, meta: dict[str, Any], idf: Array | None) -> None:
        self.meta = meta
        self.idf = idf
        self.vocabulary = {term: i for i, term in enumerate(meta["terms"])}
        self.pattern = re.compile(meta["token_pattern"])
        self.strip = _STRIP[meta["strip_accents"]]
        self.stop_words = frozenset(meta["stop_words"]) if meta["stop_words"] is not None else None
        self.min_n, self.max_n = meta["ngram_range"]

    def state(self) -> State:
        return self.meta, ({"idf": self.idf} if self.idf is not None else {})

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, Array]) -> TextCounts:
        return cls(meta, arrays.get("idf"))

    def _ngrams(self, doc: Any) -> list[str]:
        if not isinstance(doc, str):  # scikit-learn: np.nan is refused, anything else fails on .lower()
            raise InvalidData(f"{self.meta['step']}: a document is not a string")
        if self.meta["lowercase"]:
            doc = doc.lower()
        if self.strip is not None:
            doc = self.strip(doc)
        tokens: list[str] = self.pattern.findall(doc)
        if self.stop_words is not None:
            tokens = [w for w in tokens if w not in self.stop_words]
        min_n, max_n = self.min_n, self.max_n
        if max_n == 1:
            return tokens if min_n == 1 else []
        original = tokens
        grams = list(original) if min_n == 1 else []
        start = 2 if min_n == 1 else min_n
        join = " ".join
        for n in range(start, min(max_n + 1, len(original) + 1)):
            for i in range(len(original) - n + 1):
                grams.append(join(original[i:i + n]))
        return grams

    def apply(self, X: Array) -> Any:
        docs = X[:, 0] if X.ndim == 2 else X
        vocabulary = self.vocabulary
        indptr = [0]
        indices: list[int] = []
        counts: list[int] = []
        for doc in docs:
            found: dict[int, int] = {}
            for gram in self._ngrams(doc):
                j = vocabulary.get(gram)
                if j is not None:
                    found[j] = found.get(j, 0) + 1
            keys = sorted(found)
            indices.extend(keys)
            counts.extend(found[k] for k in keys)
            indptr.append(len(indices))
        ptr = np.asarray(indptr, dtype=np.int64)
        cols = np.asarray(indices, dtype=np.int64)
        data = np.asarray(counts, dtype=np.float64)
        if self.meta["binary"]:
            data[:] = 1.0
        return _tfidf(SparseRows(ptr, cols, data, len(vocabulary)), self.meta.get("tfidf"), self.idf)


def _tfidf(x: SparseRows, tfidf: dict[str, Any] | None, idf: Array | None) -> SparseRows:
    """TfidfTransformer.transform on counts (nothing when ``tfidf`` is None)."""
    if tfidf is None:
        return x
    data = x.data.copy()
    if tfidf["sublinear_tf"]:
        np.log(data, data)
        data += 1.0
    if idf is not None:
        data *= idf[x.indices]
    norm = tfidf["norm"]
    if norm is not None:
        rows = x.rows()
        n = x.shape[0]
        sums = np.bincount(rows, weights=data * data if norm == "l2" else np.abs(data), minlength=n)
        scale = np.sqrt(sums) if norm == "l2" else sums
        nonzero = scale[rows] != 0.0
        data[nonzero] /= scale[rows][nonzero]
    return SparseRows(x.indptr, x.indices, data, x.width)


@op
class Tfidf(Op):
    """TfidfTransformer after a CountVectorizer (on sparse counts)."""

    kind = "tfidf"
    sparse_output = True
    accepts_sparse = True

    def __init__(self, meta: dict[str, Any], idf: Array | None) -> None:
        self.meta, self.idf = meta, idf

    def state(self) -> State:
        return self.meta, ({"idf": self.idf} if self.idf is not None else {})

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, Array]) -> Tfidf:
        return cls(meta, arrays.get("idf"))

    def apply(self, X: Any) -> Any:
        if not isinstance(X, SparseRows):
            X = SparseRows.of_dense(X)
        return _tfidf(X, self.meta, self.idf)


def _tfidf_meta(t: Any) -> dict[str, Any]:
    if t.norm not in (None, "l1", "l2"):
        raise Unsupported(f"{type(t).__name__}(norm={t.norm!r}): not a known norm")
    return {"sublinear_tf": bool(t.sublinear_tf), "norm": t.norm}


def _idf(t: Any) -> Array | None:
    return np.asarray(t.idf_, dtype=np.float64) if getattr(t, "use_idf", False) and hasattr(t, "idf_") else None


@compiler("sklearn.feature_extraction.text.CountVectorizer", "sklearn.feature_extraction.text.TfidfVectorizer")
def compile_vectorizer(v: Any) -> Op:
    name = type(v).__name__
    for param in ("preprocessor", "tokenizer"):
        if getattr(v, param) is not None:
            raise Unsupported(f"{name}({param}=...): a callable")
    if callable(v.analyzer) or v.analyzer != "word":
        raise Unsupported(f"{name}(analyzer={v.analyzer!r}): only the word analyzer")
    if v.input != "content":
        raise Unsupported(f"{name}(input={v.input!r}): only documents given as content")
    if v.strip_accents not in _STRIP:
        raise Unsupported(f"{name}(strip_accents={v.strip_accents!r})")
    dtype = np.dtype(v.dtype)
    if not (dtype == np.float64 or name == "CountVectorizer" and dtype.kind in "iu"):  # counts are exact as floats
        raise Unsupported(f"{name}(dtype={dtype.name}): only float64 (or integer counts)")
    pattern = re.compile(v.token_pattern)
    if pattern.groups > 1:
        raise Unsupported(f"{name}(token_pattern=...): more than one group")
    vocabulary = v.vocabulary_
    terms = [""] * len(vocabulary)
    for term, i in vocabulary.items():
        terms[int(i)] = str(term)
    stop = v.get_stop_words()
    meta: dict[str, Any] = {
        "step": name, "terms": terms, "token_pattern": v.token_pattern, "lowercase": bool(v.lowercase),
        "strip_accents": v.strip_accents, "stop_words": sorted(stop) if stop is not None else None,
        "ngram_range": [int(v.ngram_range[0]), int(v.ngram_range[1])], "binary": bool(v.binary),
    }
    idf = None
    if name == "TfidfVectorizer":
        meta["tfidf"] = _tfidf_meta(v._tfidf)
        idf = _idf(v._tfidf)
    return TextCounts(meta, idf)


@compiler("sklearn.feature_extraction.text.TfidfTransformer")
def compile_tfidf(t: Any) -> Op:
    return Tfidf(_tfidf_meta(t), _idf(t))
