"""``Table``: the light columnar form a request travels in between decoding and the model.

Building a pandas DataFrame per request costs ~0.5 ms and coercing it column by column
several more; a dict of numpy arrays costs microseconds. Requests are decoded and checked as
Tables on the event loop; the model thread concatenates a batch per column and builds one
DataFrame per model call. Custom code only ever sees DataFrames.

Neither pandas nor pyarrow is imported here until a function needs it: a server whose model scores
columns (:class:`ColumnarModel`) answers JSON without either. :func:`is_frame`, :func:`is_series` and
:func:`pandas_na` ask about pandas objects without importing pandas (no object is one before it is).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeGuard, runtime_checkable

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# A column: a numpy array, or a plain list/tuple straight from a JSON decoder.
Column: TypeAlias = NDArray[Any] | Sequence[Any]
# ``na_value`` for ``Series.to_numpy``: None is valid, but pandas' stubs do not list it.
NONE: Any = None
_NOT_NA = object()  # what pandas_na() gives while pandas is not imported: no value is it


def is_frame(obj: object) -> TypeGuard[pd.DataFrame]:
    """``isinstance(obj, pd.DataFrame)``, without importing pandas."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(obj, pandas.DataFrame)


def is_series(obj: object) -> TypeGuard[pd.Series]:
    """``isinstance(obj, pd.Series)``, without importing pandas."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(obj, pandas.Series)


def pandas_na() -> Any:
    """``pd.NA`` when pandas is imported, else an object no value is: ``v is pandas_na()`` is
    ``v is pd.NA`` without importing pandas."""
    pandas = sys.modules.get("pandas")
    return pandas.NA if pandas is not None else _NOT_NA


def frame_from_arrays(names: list[str], arrays: Sequence[NDArray[Any]], n_rows: int) -> pd.DataFrame:
    """``pd.DataFrame`` from equal-length numpy columns, without copies or dtype inference.

    Uses pandas' internal ``_from_arrays`` (4x faster than the dict constructor for a 20-column
    one-row frame, the per-call overhead that matters when serving); falls back to the public
    constructor if a pandas release drops it.
    """
    import pandas as pd

    index = pd.RangeIndex(n_rows)
    from_arrays = getattr(pd.DataFrame, "_from_arrays", None)
    if from_arrays is not None:
        try:
            frame: pd.DataFrame = from_arrays(arrays, columns=names, index=index, verify_integrity=False)
            return frame
        except TypeError:  # pragma: no cover - a future pandas
            pass
    return pd.DataFrame({n: pd.Series(a, index=index, dtype=a.dtype, copy=False) for n, a in zip(names, arrays, strict=True)},
                        index=index)


@runtime_checkable
class ColumnarModel(Protocol):
    """A model that scores numpy columns directly (the natively compiled Spark pipelines and H2O
    MOJOs): the server hands it a batch's Table as it is, skipping the DataFrame round trip that
    costs more than the model itself on a one-row request. ``predict_columns`` returns exactly the
    columns ``Table.from_output(model.predict(frame))`` gives for the same rows."""

    def predict_columns(self, columns: Mapping[str, NDArray[Any]], n_rows: int) -> dict[str, NDArray[Any]]: ...


@dataclass(frozen=True, slots=True)
class Table:
    """Named columns of equal length: numpy arrays, or plain lists straight from a decoder; and the
    request's ``params`` (MLflow's ``params``, the Open Inference Protocol's ``parameters``), for a
    model that takes them."""

    columns: Mapping[str, Column]
    n_rows: int
    params: Mapping[str, Any] | None = None

    def __len__(self) -> int:
        return self.n_rows

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> Table:
        return cls({str(c): df.iloc[:, i].to_numpy() for i, c in enumerate(df.columns)}, len(df))

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Table:
        """Exactly the arrays ``Table.from_frame(table.to_pandas())`` gives, without building the
        DataFrame where a column allows: numbers, booleans and strings without nulls (and numbers
        with nulls, as float64 with NaN) are converted by Arrow directly; the other columns (nulls in
        strings or booleans, dates, dictionaries, nested and extension types) still go through
        ``to_pandas``, together, so their values and dtypes are pandas' own. May raise
        ``NotImplementedError`` for types pandas cannot hold. A table with pandas metadata (a file
        pandas wrote) is converted by ``to_pandas`` as a whole, which the metadata steers. Column names
        must be unique (ValueError)."""
        if len(set(table.column_names)) != table.num_columns:
            raise ValueError("duplicate column names")
        if table.schema.metadata and b"pandas" in table.schema.metadata:
            return cls.from_frame(table.to_pandas())
        direct: dict[str, NDArray[Any] | None] = {
            name: _direct_numpy(table.column(i)) for i, name in enumerate(table.column_names)}
        rest = [i for i, name in enumerate(table.column_names) if direct[name] is None]
        if rest:
            frame = table.select(rest).to_pandas()
            for j, i in enumerate(rest):
                direct[table.column_names[i]] = frame.iloc[:, j].to_numpy()
        return cls({str(n): v for n, v in direct.items() if v is not None}, table.num_rows)

    def to_arrow(self) -> pa.Table:
        """The Arrow table ``pa.Table.from_pandas(self.to_frame(), preserve_index=False)`` gives
        (NaN as null, the same inferred types and the same pandas schema metadata), without the
        DataFrame: columns are converted one by one and the metadata, which depends only on the
        names and types, is computed once per output signature."""
        import pyarrow as pa

        names = [str(n) for n in self.columns]
        arrays = [pa.array(np.asarray(v), from_pandas=True) for v in self.columns.values()]
        key = (tuple(names), tuple(np.asarray(v).dtype.str for v in self.columns.values()),
               tuple(a.type for a in arrays))
        metadata = _PANDAS_METADATA.get(key)
        if metadata is None:
            table = pa.Table.from_pandas(self.to_frame(), preserve_index=False)
            if len(_PANDAS_METADATA) < 64:
                _PANDAS_METADATA[key] = table.schema.metadata
            return table
        return pa.Table.from_arrays(arrays, names=names, metadata=metadata)

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame sharing the arrays; object (string) columns stay ``object``, as models trained
        on pandas < 3 frames expect (pandas 3 would otherwise infer its ``str`` dtype, which costs
        ~0.3 ms per call and makes scikit-learn's encoders slower)."""
        return frame_from_arrays(list(self.columns), [np.asarray(v) for v in self.columns.values()], self.n_rows)

    @classmethod
    def from_output(cls, df: pd.DataFrame) -> Table:
        """A model's output frame as plain numpy columns, once per batch in the model thread: strings
        and other extension/object columns become object arrays with ``None`` for missing values,
        so that slicing per request and encoding cost no pandas work."""
        import pandas as pd

        columns: dict[str, NDArray[Any]] = {}
        for i, name in enumerate(df.columns):
            s = df.iloc[:, i]
            if s.dtype == object or isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
                columns[str(name)] = s.to_numpy(dtype=object, na_value=NONE)
            else:
                columns[str(name)] = s.to_numpy()
        return cls(columns, len(df))

    def slice(self, start: int, stop: int) -> Table:
        """Rows ``start:stop`` (views, no copy)."""
        if start == 0 and stop == self.n_rows:
            return self
        return Table({n: v[start:stop] for n, v in self.columns.items()}, stop - start, self.params)

    def __getitem__(self, name: str) -> NDArray[Any]:
        return np.asarray(self.columns[name])

    def signature(self) -> tuple[Any, ...]:
        """Column names and dtypes (``list`` for plain lists), and the params: only Tables with equal
        signatures are scored together."""
        names, dtypes = tuple(self.columns), tuple([getattr(v, "dtype", list) for v in self.columns.values()])
        if self.params is None:
            return names, dtypes
        return names, dtypes, json.dumps(self.params, sort_keys=True, default=str)

    @staticmethod
    def concat(tables: Sequence[Table]) -> Table:
        if len(tables) == 1:
            return tables[0]
        names = list(tables[0].columns)
        return Table(
            {n: np.concatenate([np.asarray(t.columns[n]) for t in tables]) for n in names},
            sum(t.n_rows for t in tables), tables[0].params,  # a batch's tables have equal signatures: equal params
        )


_PANDAS_METADATA: dict[tuple[Any, ...], Any] = {}  # output signature -> from_pandas' schema metadata


def _direct_numpy(column: pa.ChunkedArray[Any]) -> NDArray[Any] | None:
    """A column as numpy without pandas, or None when only pandas gives its exact form. Numbers without
    nulls in one chunk are views of the Arrow buffers (read-only, as pandas' own views are)."""
    import pyarrow as pa

    t = column.type
    # Arrow types whose numpy form (with ``to_numpy``) is exactly what ``to_pandas`` then ``Series.to_numpy``
    # gives: ints become float64 with NaN when they have nulls, in both.
    if pa.types.is_integer(t) or pa.types.is_float32(t) or pa.types.is_float64(t) or (column.null_count == 0 and (
            pa.types.is_boolean(t) or pa.types.is_string(t) or pa.types.is_large_string(t))):
        if column.num_chunks == 1:
            return column.chunk(0).to_numpy(zero_copy_only=False)
        return column.to_numpy()  # concatenated: a new array
    return None
