"""Compiled text vectorizers (scorer/sklearn_plan/text.py) against scikit-learn's own transform."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from scorer.sklearn_plan.base import InvalidData, Unsupported, compiler_for
from scorer.sklearn_plan.sparse import SparseRows
from scorer.sklearn_plan.text import TextCounts

pytestmark = pytest.mark.fast

WORDS = ["free", "win", "prize", "call", "now", "meeting", "lunch", "tomorrow", "the", "and", "café", "naïve",
         "résumé", "Über", "ＦＵＬＬ", "x", "42", "a_b", "don't", "e-mail"]


def _docs(rng: np.random.Generator, n: int) -> list[str]:
    docs = []
    for _ in range(n):
        k = int(rng.integers(0, 12))
        words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), k)]
        if rng.random() < 0.3:
            words = [w.upper() for w in words]
        docs.append(rng.choice([" ", "  ", ", ", "\n"]).join(words))
    return docs + ["", "nothing known here", "FREE free Free fReE"]


def _dense(x: Any) -> np.ndarray:
    return x.dense() if isinstance(x, SparseRows) else np.asarray(x)


VARIANTS = [
    dict(ngram_range=(1, 1)), dict(ngram_range=(1, 2), sublinear_tf=True), dict(ngram_range=(2, 3)),
    dict(norm="l1"), dict(norm=None), dict(use_idf=False), dict(binary=True, smooth_idf=False),
    dict(stop_words="english"), dict(stop_words=["the", "and"]), dict(strip_accents="unicode"),
    dict(strip_accents="ascii"), dict(lowercase=False), dict(token_pattern=r"(?u)\b\w+\b"), dict(min_df=2, max_df=0.9),
    dict(max_features=7, ngram_range=(1, 2)),
]


@pytest.mark.parametrize(("kind", "params"), list(itertools.product(["tfidf", "count"], VARIANTS)))
def test_vectorizers_transform_as_scikit_learn_does(kind: str, params: dict[str, Any]) -> None:
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    if kind == "count":
        params = {k: v for k, v in params.items() if k not in ("norm", "use_idf", "sublinear_tf", "smooth_idf")}
    rng = np.random.default_rng(hash(repr(params)) % 2**32)
    vectorizer = (TfidfVectorizer if kind == "tfidf" else CountVectorizer)(**params).fit(_docs(rng, 200))
    compiled = compiler_for(vectorizer)(vectorizer)
    docs = _docs(rng, 300)
    expected = vectorizer.transform(docs).toarray()
    got = _dense(compiled.apply(np.array(docs, dtype=object).reshape(-1, 1)))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    meta, arrays = compiled.state()
    again = TextCounts.from_state(meta, arrays)
    np.testing.assert_array_equal(_dense(again.apply(np.array(docs, dtype=object).reshape(-1, 1))), got)


def _counts(x: SparseRows) -> tuple[list[int], list[int], list[float]]:
    return x.indptr.tolist(), x.indices.tolist(), x.data.tolist()


@pytest.mark.parametrize("params", VARIANTS)
def test_both_ways_of_counting_agree_with_scikit_learn(params: dict[str, Any]) -> None:
    """Batches are counted with numbered n-grams, a few documents one by one: both give scikit-learn's counts
    (sorted columns per row, as its CSR output), also on batches of one document and of empty ones."""
    from sklearn.feature_extraction.text import CountVectorizer

    params = {k: v for k, v in params.items() if k not in ("norm", "use_idf", "sublinear_tf", "smooth_idf", "binary")}
    rng = np.random.default_rng(hash(repr(params)) % 2**32 + 1)
    vectorizer = CountVectorizer(**params).fit(_docs(rng, 200))
    compiled = compiler_for(vectorizer)(vectorizer)
    assert isinstance(compiled, TextCounts)
    for docs in (_docs(rng, 150), ["free win free win"], ["", ""]):
        expected = vectorizer.transform(docs)
        expected.sort_indices()
        batched = compiled.counts_batched(np.array(docs, dtype=object))
        assert batched is not None
        assert _counts(batched) == (expected.indptr.tolist(), expected.indices.tolist(), expected.data.tolist())
        assert _counts(compiled.counts_per_document(np.array(docs, dtype=object))) == _counts(batched)


def test_tokens_with_spaces_are_counted_document_by_document() -> None:
    """A token pattern that matches spaces makes joined n-grams ambiguous ("a b" is a token and a bigram):
    such a batch is counted as scikit-learn counts it, by joining, and still agrees with it."""
    from sklearn.feature_extraction.text import CountVectorizer

    docs = ["free win now", "free", "win now free win", "now now", "lunch free win"] * 4
    vectorizer = CountVectorizer(token_pattern=r"free win|\w+", ngram_range=(1, 2)).fit(docs)
    assert "free win" in vectorizer.vocabulary_
    compiled = compiler_for(vectorizer)(vectorizer)
    assert isinstance(compiled, TextCounts)
    batch = np.array(docs, dtype=object)
    assert compiled.counts_batched(batch) is None
    expected = vectorizer.transform(docs)
    expected.sort_indices()
    np.testing.assert_array_equal(_dense(compiled.apply(batch)), expected.toarray())
    spaceless = np.array(["win now free", "lunch now"] * 5, dtype=object)
    got = compiled.counts_batched(spaceless)
    assert got is not None
    np.testing.assert_array_equal(got.dense(), vectorizer.transform(list(spaceless)).toarray())


def test_tfidf_transformer_after_counts_in_a_pipeline() -> None:
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    rng = np.random.default_rng(3)
    counts = CountVectorizer(ngram_range=(1, 2)).fit(_docs(rng, 200))
    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts.transform(_docs(rng, 200)))
    docs = _docs(rng, 100)
    x = compiler_for(counts)(counts).apply(np.array(docs, dtype=object))
    got = _dense(compiler_for(tfidf)(tfidf).apply(x))
    np.testing.assert_allclose(got, tfidf.transform(counts.transform(docs)).toarray(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("document", [None, np.nan, 3.5])
def test_what_scikit_learn_refuses_is_refused(document: Any) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer().fit(["free prize", "lunch tomorrow"])
    with pytest.raises((ValueError, AttributeError)):
        vectorizer.transform(["free", document])
    with pytest.raises(InvalidData):
        compiler_for(vectorizer)(vectorizer).apply(np.array(["free", document], dtype=object))


def test_callables_and_char_analyzers_are_unsupported() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    for vectorizer in (TfidfVectorizer(analyzer="char_wb"), TfidfVectorizer(tokenizer=str.split),
                       TfidfVectorizer(dtype=np.float32)):
        vectorizer.fit(["free prize", "lunch tomorrow"])
        with pytest.raises(Unsupported):
            compiler_for(vectorizer)(vectorizer)


def test_sparse_rows_stack_and_multiply_like_dense_matrices() -> None:
    rng = np.random.default_rng(0)
    a = np.where(rng.random((7, 5)) < 0.4, rng.normal(size=(7, 5)), 0.0)
    b = np.where(rng.random((7, 3)) < 0.5, rng.normal(size=(7, 3)), 0.0)
    a[2] = 0.0
    stacked = SparseRows.hstack([SparseRows.of_dense(a), SparseRows.of_dense(b)])
    np.testing.assert_array_equal(stacked.dense(), np.hstack([a, b]))
    w = rng.normal(size=(8, 2))
    np.testing.assert_allclose(stacked.dot(w), np.hstack([a, b]) @ w, rtol=1e-14, atol=1e-15)
