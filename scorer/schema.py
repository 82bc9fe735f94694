"""Input schema: which columns a model needs, and lossless coercion of incoming tables to it.

A schema is an ordered mapping ``column -> type`` with types from :data:`COLUMN_TYPES`.
It comes from the bundle manifest, else the custom class's ``input_schema``, else it is
inferred from a scikit-learn model (``feature_names_in_`` plus what its ColumnTransformer
does with each column). Coercion only makes changes that lose nothing: int32 -> int64,
numeric strings -> numbers, integral floats -> ints (ints with missing values stay float
with NaN, as pandas itself represents them), ints -> strings for string columns. Anything
else is a :class:`~scorer.errors.SchemaError` naming the column, the row and the expected type
(never the value, unless the operator opts in to echoing it).

Every cast between what arrives and what the model gets is here, so requests and ``scorer batch``
share one coercion path: :meth:`Schema.narrow_arrow` is the Arrow half for tables read from files
(columns dropped and text cast in Arrow, only where the result is what ``coerce`` gives), and
:meth:`Schema.coerce` the numpy half for every Table or DataFrame. The common columns (numbers, and
text that is all strings) are coerced in numpy alone; pandas is imported only for the careful path
(mixed values, the ones that need parsing, bad rows to name).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from scorer.errors import SchemaError
from scorer.table import NONE, Table

if TYPE_CHECKING:  # imported where used: JSON requests of a columnar model are coerced without them
    import pandas as pd
    import pyarrow as pa

COLUMN_TYPES = ("float", "int", "bool", "string", "any")

# Text that Arrow's cast turns into exactly what ``coerce`` would make of it. Arrow's cast accepts more
# (``TRUE``, ``nan``, ``0x10``) that ``coerce`` refuses, so only columns whose every value matches are
# cast in Arrow; the rest go to ``coerce``, which names the bad row.
@functools.cache
def _arrow_casts() -> dict[str, tuple[pa.DataType, str]]:
    import pyarrow as pa

    return {
        "float": (pa.float64(), r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"),
        "int": (pa.int64(), r"^-?[0-9]+$"),
        "bool": (pa.bool_(), r"^(true|false|True|False|1|0)$"),
    }


class Schema:
    """An ordered ``{column: type}``; ``coerce`` turns an incoming DataFrame into exactly that."""

    def __init__(self, columns: Mapping[str, str], *, extra_columns: str = "drop") -> None:
        self.columns = dict(columns)
        self.extra_columns = extra_columns

    def __repr__(self) -> str:
        return f"Schema({self.columns!r})"

    def as_json(self) -> list[dict[str, str]]:
        return [{"name": n, "type": t} for n, t in self.columns.items()]

    def coerce(self, data: Table | pd.DataFrame) -> Table:
        """Exactly the schema's columns, in its order, as numpy arrays of its types."""
        if not isinstance(data, Table):  # a DataFrame
            if data.columns.has_duplicates:
                dup = sorted({str(c) for c in data.columns[data.columns.duplicated()]})
                raise SchemaError(f"duplicate column(s): {', '.join(dup)}", columns=dup)
            data = Table.from_frame(data)
        present = data.columns
        missing = [c for c in self.columns if c not in present]
        if missing:
            raise SchemaError(f"missing required column(s): {', '.join(missing)}", columns=missing)
        if self.extra_columns == "reject":
            extra = [str(c) for c in present if c not in self.columns]
            if extra:
                raise SchemaError(f"unexpected column(s): {', '.join(extra)}", columns=extra)
        out = self._fast_floats(present, data.n_rows)
        for name, kind in self.columns.items():
            if name in out:
                continue
            values = present[name]
            fast = _fast_column(values, kind)
            out[name] = fast if fast is not None else _coerce_column(name, _series(values), kind)
        return Table(out, data.n_rows)


    def narrow_arrow(self, table: pa.Table, text_columns: Collection[str] = ()) -> pa.Table:
        """The Arrow half of :meth:`coerce`, for tables read from files: columns the schema drops anyway
        (ids, text passed through) are left out, and text columns the schema wants as numbers or
        booleans are cast in Arrow when every value is one :meth:`coerce` would accept as the same
        value. Everything else is left for :meth:`coerce` (``text_columns``: JSON text kept as text)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        names = table.column_names
        if (self.extra_columns == "drop" and len(set(names)) == len(names)
                and all(name in names for name in self.columns)):
            table = table.select([name for name in names if name in self.columns])
        casts = _arrow_casts()
        for name, kind in self.columns.items():
            if (kind in casts and name in table.column_names and name not in text_columns
                    and pa.types.is_string(table.schema.field(name).type)):
                target, pattern = casts[kind]
                column = table.column(name)
                if pc.all(pc.match_substring_regex(column, pattern)).as_py() is False:
                    continue
                try:
                    converted = pc.cast(column, target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
                table = table.set_column(table.schema.get_field_index(name), name, converted)
        return table

    def _fast_floats(self, present: Mapping[str, Any], n_rows: int) -> dict[str, np.ndarray]:
        """All float columns that arrived as JSON lists, converted in one numpy call (a one-row request
        has many short columns; one call per column dominated its cost). Empty if any value needs the
        careful path (strings, booleans, None mixed in: the per-column code then explains)."""
        names = [n for n, kind in self.float_columns if not isinstance(present[n], np.ndarray)]
        if len(names) < 2 or n_rows == 0:
            return {}
        lists = [present[n] for n in names]
        for values in lists:
            for v in values:
                t = type(v)
                if t is not float and t is not int:
                    return {}
        try:
            matrix = np.array(lists, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            return {}
        return {n: matrix[i] for i, n in enumerate(names)}

    @property
    def float_columns(self) -> list[tuple[str, str]]:
        cached = self.__dict__.get("_float_columns")
        if cached is None:
            cached = self.__dict__["_float_columns"] = [(n, k) for n, k in self.columns.items() if k == "float"]
        return cached


def _series(values: Any) -> pd.Series:
    """A column for the careful path; a list straight from JSON keeps its Python objects (None stays
    None) for exact error messages."""
    import pandas as pd

    return pd.Series(values, dtype=None if isinstance(values, np.ndarray) else object)


def _fast_column(values: Any, kind: str) -> np.ndarray | None:
    """The common, unambiguous cases in microseconds; None means "take the careful path"."""
    if isinstance(values, np.ndarray):
        k = values.dtype.kind
        if kind == "float" and k in "fiu" and not (k == "u" and values.dtype.itemsize == 8):
            return values.astype(np.float64, copy=False)
        if kind == "int" and k in "i":
            return values.astype(np.int64, copy=False)
        if kind == "string" and k == "O" and all(v is None or isinstance(v, str) for v in values):
            return values  # strings and None: what the careful path returns for them, without pandas
        return None
    if kind == "float":
        if any(type(v) is bool or type(v) is str for v in values):
            return None
        try:
            floats = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            return None
        return floats if floats.ndim == 1 else None  # lists in the cells: the careful path names the row
    if kind == "int":
        if not all(type(v) is int for v in values):
            return None
        try:
            return np.asarray(values, dtype=np.int64)
        except OverflowError:
            return None
    if kind == "string":
        if all(type(v) is str or v is None for v in values):  # None: missing, as the careful path keeps it
            return np.asarray(values, dtype=object) if values else np.empty(0, dtype=object)
        return None
    return None


_ECHO_CHARS = 200  # with --echo-bad-values, how much of an offending value is quoted


def _bad(name: str, series: pd.Series, mask: np.ndarray, expected: str) -> SchemaError:
    """The first offending row, named by column, row and expected type; its value only as ``data_detail``
    (errors and logs never quote submitted values unless the operator opts in)."""
    pos = int(np.flatnonzero(mask)[0])
    value = series.iloc[pos]
    problem = f"a {type(value).__name__} value is not a {expected}"
    text = repr(value)
    return SchemaError(
        f"column {name!r}: row {pos}: {problem}",
        columns=[name],
        detail=problem,
        data_detail=f"got {text if len(text) <= _ECHO_CHARS else text[:_ECHO_CHARS] + '...'}",
    )


def _to_numeric(name: str, s: pd.Series, expected: str) -> pd.Series:
    """Numbers stay numbers; strings that parse as numbers become numbers; anything else is an error."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(s):
        raise SchemaError(f"column {name!r}: got booleans, expected {expected}", columns=[name])
    if pd.api.types.is_numeric_dtype(s):
        return s
    values = s.astype(object)
    is_bool = values.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
    if is_bool.any():
        raise _bad(name, s, is_bool, expected)
    converted = pd.to_numeric(values.map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce")
    failed = converted.isna().to_numpy() & values.notna().to_numpy() & (values.map(lambda v: v != "")).to_numpy()
    if failed.any():
        raise _bad(name, s, failed, expected)
    return converted


def _coerce_column(name: str, s: pd.Series, kind: str) -> Any:
    import pandas as pd

    if kind == "any":
        return s.infer_objects().to_numpy()
    if kind == "float":
        s = _to_numeric(name, s, "number")
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    if kind == "int":
        s = _to_numeric(name, s, "integer")
        if pd.api.types.is_integer_dtype(s) and not s.hasnans:
            if pd.api.types.is_unsigned_integer_dtype(s):
                too_big = s.to_numpy() > np.iinfo(np.int64).max
                if too_big.any():
                    raise _bad(name, s, too_big, "64-bit integer")
            return s.to_numpy(dtype=np.int64)
        as_float = s.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = ~np.isnan(as_float)
        with np.errstate(invalid="ignore"):
            not_int = finite & ((np.floor(as_float) != as_float) | (np.abs(as_float) >= 2.0**63))
        if not_int.any():
            raise _bad(name, s, not_int, "64-bit integer")
        if finite.all():
            return as_float.astype(np.int64)
        return as_float  # ints with missing values: float64 with NaN, as pandas reads them
    if kind == "bool":
        if pd.api.types.is_bool_dtype(s) and not s.hasnans:
            return s.to_numpy(dtype=bool)
        # 1 and 0 (and 1.0, 0.0) hash like True and False, so these keys cover them too
        mapping = {True: True, False: False, "true": True, "false": False, "True": True, "False": False,
                   "1": True, "0": False}
        values = s.astype(object)
        ok = values.map(lambda v: _hashable(v) and v in mapping).to_numpy(dtype=bool)
        if not ok.all():
            raise _bad(name, s, ~ok, "boolean")
        return values.map(mapping).to_numpy(dtype=bool)
    if kind == "string":
        if pd.api.types.is_float_dtype(s):
            # JSON ints with a null arrive as float64 ([123, null] -> [123.0, NaN]): integral values
            # are the ints the client sent; anything fractional is not a string.
            as_float = s.to_numpy(dtype=np.float64, na_value=np.nan)
            finite = np.isfinite(as_float)
            with np.errstate(invalid="ignore"):
                fractional = ~np.isnan(as_float) & (~finite | (np.floor(as_float) != as_float))
            if fractional.any():
                raise _bad(name, s, fractional, "string")
            return np.array([str(int(v)) if f else None for v, f in zip(as_float, finite, strict=True)], dtype=object)
        objects = s.to_numpy(dtype=object, na_value=NONE) if not s.dtype == object else s.to_numpy()
        inferred = pd.api.types.infer_dtype(objects, skipna=True)
        if inferred == "string":
            return objects
        if inferred == "empty":  # only missing values: None, as when some are strings (pandas 3 reads NaN)
            return np.full(len(objects), None, dtype=object)
        ok = np.fromiter(
            (v is None or isinstance(v, str) or _is_nan(v) or (isinstance(v, int | np.integer) and not isinstance(v, bool))
             for v in objects), dtype=bool, count=len(objects))
        if not ok.all():
            raise _bad(name, s, ~ok, "string")
        return np.array([str(v) if isinstance(v, int | np.integer) else (None if _is_nan(v) else v) for v in objects],
                        dtype=object)
    raise SchemaError(f"column {name!r}: unknown schema type {kind!r}", columns=[name])


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def _is_nan(v: Any) -> bool:
    return isinstance(v, float | np.floating) and np.isnan(v)


# --- inference from scikit-learn models -------------------------------------------------------

_TEXT_VECTORIZERS = ("TfidfVectorizer", "CountVectorizer", "HashingVectorizer")
_ENCODERS = ("OneHotEncoder", "OrdinalEncoder", "TargetEncoder")


def infer_schema(model: Any) -> dict[str, str] | None:
    """Best-effort schema from a fitted scikit-learn estimator; None when it has no column names."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return None
    names = [str(n) for n in names]
    transformer = _find_column_transformer(model)
    if transformer is None:
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        categorical = getattr(final, "is_categorical_", None)
        if categorical is not None and np.any(categorical):
            return dict.fromkeys(names, "any")
        return dict.fromkeys(names, "float")
    kinds = dict.fromkeys(names, "any")
    for _, trans, cols in transformer.transformers_:
        cols = _column_names(cols, names)
        if trans in ("drop", "passthrough"):
            continue
        first = trans.steps[0][1] if hasattr(trans, "steps") else trans
        cls = type(first).__name__
        if cls in _TEXT_VECTORIZERS:
            kinds.update(dict.fromkeys(cols, "string"))
        elif cls in _ENCODERS and hasattr(first, "categories_"):
            for col, cats in zip(cols, first.categories_, strict=False):
                kinds[col] = "string" if np.asarray(cats).dtype.kind in "OUST" else "float"
        elif cls in _ENCODERS:
            continue
        else:
            kinds.update(dict.fromkeys(cols, "float"))
    return kinds


def _find_column_transformer(model: Any) -> Any:
    if type(model).__name__ == "ColumnTransformer":
        return model
    for _, step in getattr(model, "steps", []):
        found = _find_column_transformer(step)
        if found is not None:
            return found
    return None


def _column_names(cols: Any, names: list[str]) -> list[str]:
    if isinstance(cols, str):
        return [cols]
    if callable(cols):
        return []
    cols = list(np.asarray(cols).ravel()) if not isinstance(cols, list) else cols
    if cols and isinstance(cols[0], bool | np.bool_):
        return [n for n, keep in zip(names, cols, strict=False) if keep]
    return [names[int(c)] if isinstance(c, int | np.integer) else str(c) for c in cols]
