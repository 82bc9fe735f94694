"""Text vectorizers compiled: CountVectorizer, TfidfVectorizer and TfidfTransformer, as scikit-learn's
``transform`` computes them, to sparse rows (:class:`~scorer.sklearn_plan.sparse.SparseRows`).

The word analyzer is replicated step by step from scikit-learn's ``_VectorizerMixin``: ``str.lower``
when ``lowercase``, the accent stripping (``'ascii'``, ``'unicode'``), ``re.findall`` with the fitted
``token_pattern``, stop words removed, then word n-grams joined by one space, longest last. Each known
term counts once per occurrence; ``binary`` makes counts 1; TF-IDF takes ``log(tf) + 1`` when
``sublinear_tf``, multiplies by ``idf_`` and divides each row by its l2 (or l1) norm. A document that
is not a string is refused as scikit-learn refuses it (``None.lower()`` raises there).

Counting is where the time goes, so a batch of documents is counted without joining n-grams: tokens
and the vocabulary's terms become numbers, and numpy finds and counts the batch's known n-grams at once
(:meth:`TextCounts.counts_batched`; 10,000 documents of the text example in half scikit-learn's time).
A few documents, or a batch whose tokens hold spaces, are counted one by one, by joining, as
scikit-learn counts them.

Callable analyzers, tokenizers and preprocessors, the char analyzers, file inputs and dtypes other than
float64 (or integer counts) are Unsupported.
"""

from __future__ import annotations

import functools
import itertools
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
        tokens = self._tokens(doc)
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
        if len(docs) >= BATCH_DOCS:
            counted = self.counts_batched(docs)
            if counted is not None:
                return self._weighted(counted)
        return self._weighted(self.counts_per_document(docs))

    def _weighted(self, x: SparseRows) -> SparseRows:
        if self.meta["binary"]:
            x = SparseRows(x.indptr, x.indices, np.ones_like(x.data), x.width)
        return _tfidf(x, self.meta.get("tfidf"), self.idf)

    def _tokens(self, doc: Any) -> list[str]:
        if not isinstance(doc, str):  # scikit-learn: np.nan is refused, anything else fails on .lower()
            raise InvalidData(f"{self.meta['step']}: a document is not a string")
        if self.meta["lowercase"]:
            doc = doc.lower()
        if self.strip is not None:
            doc = self.strip(doc)
        tokens: list[str] = self.pattern.findall(doc)
        if self.stop_words is not None:
            tokens = [w for w in tokens if w not in self.stop_words]
        return tokens

    def counts_batched(self, docs: Any) -> SparseRows | None:
        """Term counts of every document at once: each token becomes the number of a token that occurs
        in some vocabulary term, and each n-gram a number made of its tokens' numbers, looked up in the
        vocabulary's sorted n-gram numbers; (document, term) pairs are counted with numpy. None when
        the batch cannot be counted this way (a token holds a space, so joined n-grams are ambiguous;
        or the n-gram numbers would not fit in 64 bits): :meth:`counts_per_document` counts it then."""
        grams = self._gram_index
        if grams is None:
            return None
        tokens: list[str] = []
        lengths = np.empty(len(docs), dtype=np.intp)
        for i, doc in enumerate(docs):
            found = self._tokens(doc)
            tokens.extend(found)
            lengths[i] = len(found)
        if " ".join(tokens).count(" ") != max(len(tokens) - 1, 0):
            return None  # a token with a space in it: its n-grams are not the tokens' numbers
        n = len(docs)
        ids = np.fromiter(map(grams.token_id.get, tokens, itertools.repeat(-1)), dtype=np.int64, count=len(tokens))
        doc_of = np.repeat(np.arange(n, dtype=np.int64), lengths)
        found_docs: list[Array] = []
        found_terms: list[Array] = []
        for g in range(self.min_n, self.max_n + 1):
            keys, terms = grams.keys[g - 1], grams.terms[g - 1]
            m = ids.size - g + 1
            if m <= 0 or not keys.size:
                continue
            key = ids[:m].copy()
            ok = (key >= 0) & (doc_of[:m] == doc_of[g - 1:g - 1 + m])
            for k in range(1, g):
                nxt = ids[k:k + m]
                ok &= nxt >= 0
                key *= grams.base
                key += nxt
            at = np.flatnonzero(ok)
            key = key[at]
            where = np.minimum(np.searchsorted(keys, key), keys.size - 1)
            hit = keys[where] == key
            found_docs.append(doc_of[at[hit]])
            found_terms.append(terms[where[hit]])
        width = len(self.vocabulary)
        pairs = np.concatenate(found_docs) * width + np.concatenate(found_terms) if found_docs else np.empty(0, np.int64)
        unique, counts = np.unique(pairs, return_counts=True)
        rows, columns = np.divmod(unique, width)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return SparseRows(indptr, columns.astype(np.int64), counts.astype(np.float64), width)

    @functools.cached_property
    def _gram_index(self) -> _GramIndex | None:
        """Built on the first batch that uses it."""
        return _GramIndex.of(self.meta["terms"], self.max_n)

    def counts_per_document(self, docs: Any) -> SparseRows:
        """Term counts document by document, each n-gram joined and looked up as scikit-learn does."""
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
        return SparseRows(ptr, cols, data, len(vocabulary))


#: Batches of at least this many documents are counted by :meth:`TextCounts.counts_batched` (its dozen
#: numpy calls cost more than the per-document loop on a few documents).
BATCH_DOCS = 8


class _GramIndex:
    """The vocabulary's terms as numbers: every token that occurs in a term gets a number below
    ``base``, and an n-gram of tokens ``t1 .. tn`` the number ``(..(t1 * base + t2) * base ..) + tn``;
    ``keys[n - 1]`` holds the sorted numbers of the n-token terms and ``terms[n - 1]`` their columns."""

    def __init__(self, token_id: dict[str, int], base: int, keys: list[Array], terms: list[Array]) -> None:
        self.token_id, self.base, self.keys, self.terms = token_id, base, keys, terms

    @staticmethod
    def of(vocabulary_terms: list[str], max_n: int) -> _GramIndex | None:
        token_id: dict[str, int] = {}
        split = [term.split(" ") for term in vocabulary_terms]
        for parts in split:
            for part in parts:
                token_id.setdefault(part, len(token_id))
        base = max(len(token_id), 1)
        if base ** max_n >= 1 << 62:
            return None
        by_length: list[list[tuple[int, int]]] = [[] for _ in range(max_n)]
        for column, parts in enumerate(split):
            if len(parts) > max_n:
                continue  # a term no n-gram of space-free tokens can make
            key = 0
            for part in parts:
                key = key * base + token_id[part]
            by_length[len(parts) - 1].append((key, column))
        keys: list[Array] = []
        terms: list[Array] = []
        for found in by_length:
            pairs = np.array(sorted(found), dtype=np.int64).reshape(-1, 2)
            keys.append(pairs[:, 0].copy())
            terms.append(pairs[:, 1].copy())
        return _GramIndex(token_id, base, keys, terms)


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
