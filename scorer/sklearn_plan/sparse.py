"""Rows of mostly-zero features (a text vectorizer's output) without scipy: compressed sparse rows in
numpy arrays, as many as a plan needs: stacking beside dense blocks, a product with a dense weight
matrix (what a linear model does with them), and a dense copy when the width is small.

The product sums each row's entries in column order, as scipy's CSR product does for sorted indices;
either way the sums agree to within a few ulps, far inside the plans' 1e-12 contract.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scorer.sklearn_plan.base import Array

#: Widest sparse block made dense for a step that needs dense input (rows x width floats).
DENSE_LIMIT = 50_000_000


@dataclass(frozen=True)
class SparseRows:
    """CSR: row ``i``'s entries are ``data[indptr[i]:indptr[i+1]]`` at columns ``indices[...]`` (sorted)."""

    indptr: Array  # int64, n_rows + 1
    indices: Array  # int64
    data: Array  # float64
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.indptr) - 1, self.width

    def rows(self) -> Array:
        """The row of every stored entry."""
        return np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))

    def dot(self, weights: Array) -> Array:
        """``self @ weights`` for a dense (width, m) matrix: a dense (n_rows, m) float64 matrix."""
        n = self.shape[0]
        rows = self.rows()
        out = np.empty((n, weights.shape[1]), dtype=np.float64)
        for j in range(weights.shape[1]):
            out[:, j] = np.bincount(rows, weights=self.data * weights[self.indices, j], minlength=n)
        return out

    def dense(self) -> Array:
        n, width = self.shape
        if n * width > DENSE_LIMIT:
            raise MemoryError(f"a sparse block of {n} x {width} is too wide to make dense")
        out = np.zeros((n, width), dtype=np.float64)
        out[self.rows(), self.indices] = self.data
        return out

    @staticmethod
    def of_dense(x: Array) -> SparseRows:
        x = np.asarray(x, dtype=np.float64)
        rows, cols = np.nonzero(x)
        indptr = np.zeros(x.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=x.shape[0]), out=indptr[1:])
        return SparseRows(indptr, cols.astype(np.int64), x[rows, cols], x.shape[1])

    @staticmethod
    def hstack(blocks: list[SparseRows]) -> SparseRows:
        """Blocks side by side (same rows), columns offset by the widths before them."""
        if len(blocks) == 1:
            return blocks[0]
        n = blocks[0].shape[0]
        counts = sum(np.diff(b.indptr) for b in blocks)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        rows = np.concatenate([b.rows() for b in blocks])
        offsets = np.cumsum([0] + [b.width for b in blocks[:-1]])
        cols = np.concatenate([b.indices + off for b, off in zip(blocks, offsets, strict=True)])
        data = np.concatenate([b.data for b in blocks])
        order = np.lexsort((cols, rows))
        return SparseRows(indptr, cols[order], data[order], sum(b.width for b in blocks))
