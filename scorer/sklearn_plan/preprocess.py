"""scikit-learn's preprocessing steps compiled to numpy: what scikit-learn 1.9.1's own ``transform`` answers.

Encoders (OneHotEncoder, OrdinalEncoder, TargetEncoder) match a cell to ``categories_`` as scikit-learn's
``_check_unknown``/``_encode`` do: numeric categories by float equality (NaN matches a NaN category,
infinity raises as ``check_array`` does), other categories by Python equality and hashing, NaN by
``is_scalar_nan`` and ``None`` only by ``None``. Every encoder then reads one table per input column,
built at compile time from the fitted private attributes ``transform`` itself reads (infrequent grouping,
``_drop_idx_after_grouping``, ``_missing_indices``), indexed by the matched category, with one extra
entry for an unknown value: one-hot output positions, ordinal codes, or target encodings.

Scalers do scikit-learn's arithmetic in its order on float64 (``X -= mean_; X /= scale_``), so the
numbers are bit-for-bit the same. SimpleImputer fills from ``statistics_`` on float64 or object blocks
and appends its MissingIndicator columns. FunctionTransformer is compiled only for the identity or a
known unary numpy ufunc, matched by identity.

OneHotEncoder and OrdinalEncoder with a ``dtype`` other than float64 compile only when every value the
step can output is exact in that dtype; ``apply`` still answers float64 and the op's ``out_dtype``
names the step's own output dtype, for a caller that must know what a downstream step computes in.
"""

from __future__ import annotations

import math
from itertools import repeat
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from scorer.sklearn_plan.base import Array, InvalidData, Op, State, Unsupported, compiler, op, step_name

# ------------------------------------------------------------------------------------------ shared helpers

_EXACT_INT = 2**53  # integers beyond this do not survive the pipeline's float64 blocks


def _width(step: str, X: Array, n_features: int) -> None:
    if X.ndim != 2 or X.shape[1] != n_features:
        raise InvalidData(f"{step}: the block has {X.shape[-1]} columns, the step expects {n_features}")


def _floats(step: str, X: Array, allow_nan: bool) -> Array:
    """The block as scikit-learn's ``check_array(dtype=float64)`` makes it: object cells converted by
    numpy (None -> NaN), infinity (and NaN unless allowed) rejected."""
    if X.dtype != np.float64:
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError):
            raise InvalidData(f"{step}: a value that is not a number") from None
    if allow_nan:
        if np.isinf(X).any():
            bad = int(np.flatnonzero(np.isinf(X).any(axis=0))[0])
            raise InvalidData(f"{step}: infinity in column {bad}")
    elif not np.isfinite(X).all():
        bad = int(np.flatnonzero(~np.isfinite(X).all(axis=0))[0])
        raise InvalidData(f"{step}: NaN or infinity in column {bad}")
    return X


def _is_nan(value: Any) -> bool:
    """scikit-learn's ``is_scalar_nan``: a real, non-integral NaN."""
    return isinstance(value, (float, np.floating)) and value != value


def _tag(step: str, value: Any) -> list[Any]:
    """A category or statistic as JSON with its type (the stored form keeps str apart from int and float)."""
    if value is None:
        return ["none"]
    if isinstance(value, (bool, np.bool_)):
        return ["bool", bool(value)]
    if isinstance(value, (int, np.integer)):
        return ["int", int(value)]
    if isinstance(value, (float, np.floating)):
        return ["float", float(value).hex()]
    if isinstance(value, str):
        return ["str", str(value)]
    raise Unsupported(f"{step}: a category or fill value of type {type(value).__name__}")


def _untag(tagged: Sequence[Any]) -> Any:
    kind = tagged[0]
    if kind == "none":
        return None
    if kind == "bool":
        return bool(tagged[1])
    if kind == "int":
        return int(tagged[1])
    if kind == "float":
        return float.fromhex(tagged[1])
    if kind == "str":
        return str(tagged[1])
    raise ValueError(f"unknown stored value type {kind!r}")


def _check_width(step: Any) -> int:
    n = getattr(step, "n_features_in_", None)
    if not isinstance(n, (int, np.integer)):
        raise Unsupported(f"{step_name(step)}: not fitted (no n_features_in_)")
    return int(n)


# ------------------------------------------------------------------------------------- category matching


class _Categories:
    """One input column's ``categories_``, matched as scikit-learn matches them: ``codes`` gives the
    category's index, or ``size`` for a value that is not a category."""

    def __init__(self, numeric: Array | None, values: list[Any]) -> None:
        self.numeric = numeric  # float64 categories (NaN last) when the fitted column was numeric
        self.values = values  # the categories as Python objects
        self.size = len(values)
        self.nan_code = next((i for i, v in enumerate(values) if _is_nan(v)), -1)
        self.lookup = {v: i for i, v in enumerate(values) if not _is_nan(v)}
        if numeric is not None:
            self.sorted = numeric[~np.isnan(numeric)]

    @classmethod
    def fitted(cls, step: str, categories: Array) -> _Categories:
        if categories.dtype.kind in "biuf":
            if (
                categories.dtype.kind in "iu"
                and categories.size
                and int(np.abs(categories).max()) > _EXACT_INT
            ):
                raise Unsupported(f"{step}: integer categories beyond 2**53 do not survive float64")
            numeric = categories.astype(np.float64)
            return cls(numeric, [float(v) for v in numeric])
        if categories.dtype.kind not in "OU":
            raise Unsupported(f"{step}: categories of dtype {categories.dtype}")
        values = [str(v) if isinstance(v, np.str_) else v for v in categories.tolist()]
        for v in values:
            _tag(step, v)
        return cls(None, values)

    def state(self, step: str) -> tuple[Any, Array | None]:
        if self.numeric is not None:
            return "numeric", self.numeric
        return [_tag(step, v) for v in self.values], None

    @classmethod
    def stored(cls, meta: Any, array: Array | None) -> _Categories:
        if meta == "numeric":
            assert array is not None
            numeric = np.asarray(array, dtype=np.float64)
            return cls(numeric, [float(v) for v in numeric])
        return cls(None, [_untag(t) for t in meta])

    def codes(self, step: str, column: int, cells: Array) -> Array:
        if self.numeric is not None and cells.dtype == np.float64:
            if np.isinf(cells).any():
                raise InvalidData(f"{step}: infinity in column {column}")
            known = self.sorted
            if known.size:
                at = np.minimum(np.searchsorted(known, cells), known.size - 1)
                codes = np.where(known[at] == cells, at, self.size)
            else:
                codes = np.full(cells.shape[0], self.size, dtype=np.intp)
            if self.nan_code >= 0:
                codes[np.isnan(cells)] = self.nan_code
            return codes
        values = cells.tolist()
        get, missing = self.lookup.get, self.size
        try:
            codes = np.fromiter(map(get, values, repeat(missing)), dtype=np.intp, count=len(values))
        except TypeError:
            raise InvalidData(f"{step}: a value that cannot be a category in column {column}") from None
        misses = np.flatnonzero(codes == missing)
        if misses.size:  # NaN is no dict key (nan != nan): found here, in one pass over the misses
            if cells.dtype == np.float64:
                nan = np.isnan(cells[misses])
            else:
                nan = np.fromiter(map(_is_nan, [values[i] for i in misses.tolist()]), dtype=bool)
            if self.nan_code >= 0:
                codes[misses[nan]] = self.nan_code
            if self.numeric is not None:
                for i in misses[~nan].tolist():
                    v = values[i]
                    if v is None and self.nan_code >= 0:
                        codes[i] = self.nan_code  # a numeric column's missing value
                    elif isinstance(v, (float, np.floating)) and math.isinf(v):
                        raise InvalidData(f"{step}: infinity in column {column}")
        return codes


class _TableOp(Op):
    """An encoder: every input column's category (or unknown) indexes one row of a flat table."""

    step: str
    columns: list[_Categories]
    unknown_error: bool

    def _bases(self) -> Array:
        return np.cumsum([0] + [c.size + 1 for c in self.columns[:-1]]).astype(np.intp)

    def _codes(self, X: Array) -> Array:
        """(n, k) indexes into the flat table: column base + category index (unknown: the last)."""
        _width(self.step, X, len(self.columns))
        codes = np.empty(X.shape, dtype=np.intp)
        for j, cats in enumerate(self.columns):
            cj = cats.codes(self.step, j, X[:, j])
            if self.unknown_error and (cj == cats.size).any():
                raise InvalidData(f"{self.step}: unknown category in column {j}")
            codes[:, j] = cj
        codes += self.bases
        return codes

    bases: Array

    def _categories_state(self) -> tuple[list[Any], dict[str, Array]]:
        metas: list[Any] = []
        arrays: dict[str, Array] = {}
        for j, cats in enumerate(self.columns):
            meta, array = cats.state(self.step)
            metas.append(meta)
            if array is not None:
                arrays[f"categories_{j}"] = array
        return metas, arrays

    @staticmethod
    def _categories_stored(meta: dict[str, Any], arrays: dict[str, Array]) -> list[_Categories]:
        return [
            _Categories.stored(m, arrays.get(f"categories_{j}")) for j, m in enumerate(meta["categories"])
        ]


def _fitted_categories(step: Any) -> list[_Categories]:
    name = step_name(step)
    n = _check_width(step)
    cats = list(step.categories_)
    if len(cats) != n:
        raise Unsupported(f"{name}: {len(cats)} category lists for {n} features")
    return [_Categories.fitted(name, np.asarray(c)) for c in cats]


def _exact_in(dtype: Any, values: Array) -> bool:
    cast = np.asarray(values).astype(dtype).astype(np.float64)
    return bool(np.array_equal(cast, values, equal_nan=True))


# ------------------------------------------------------------------------------------------ OneHotEncoder


@op
class OneHotOp(_TableOp):
    """OneHotEncoder: each column's table holds the output position of its category (or -1: all zeros)."""

    kind: ClassVar[str] = "sklearn.OneHotEncoder"

    def __init__(
        self,
        columns: list[_Categories],
        positions: Array,
        n_out: int,
        unknown_error: bool,
        out_dtype: str = "float64",
        step: str = "OneHotEncoder",
    ) -> None:
        self.step, self.columns, self.unknown_error = step, columns, unknown_error
        self.positions, self.n_out, self.out_dtype = positions, n_out, out_dtype
        self.bases = self._bases()

    def apply(self, X: Array) -> Array:
        pos = self.positions[self._codes(X)]
        out = np.zeros((X.shape[0], self.n_out), dtype=np.float64)
        rows, cols = np.nonzero(pos >= 0)
        out[rows, pos[rows, cols]] = 1.0
        return out

    def state(self) -> State:
        cats, arrays = self._categories_state()
        arrays["positions"] = self.positions
        meta = {
            "categories": cats,
            "n_out": self.n_out,
            "unknown_error": self.unknown_error,
            "out_dtype": self.out_dtype,
        }
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, Array]) -> OneHotOp:
        return cls(
            cls._categories_stored(meta, arrays),
            np.asarray(arrays["positions"], dtype=np.intp),
            int(meta["n_out"]),
            bool(meta["unknown_error"]),
            str(meta["out_dtype"]),
        )


@compiler("sklearn.preprocessing.OneHotEncoder")
def compile_one_hot(step: Any) -> OneHotOp:
    name = step_name(step)
    columns = _fitted_categories(step)
    dtype = np.dtype(step.dtype)
    if dtype.kind not in "biuf":
        raise Unsupported(f"{name}(dtype={dtype}): not a numeric output")
    if not _exact_in(dtype, np.array([0.0, 1.0])):
        raise Unsupported(f"{name}(dtype={dtype}): 0 and 1 are not exact in it")
    handle = step.handle_unknown
    if handle not in ("error", "ignore", "infrequent_if_exist", "warn"):
        raise Unsupported(f"{name}(handle_unknown={handle!r}): not a known option")
    infrequent = bool(getattr(step, "_infrequent_enabled", False))
    mappings = step._default_to_infrequent_mappings if infrequent else [None] * len(columns)
    infrequent_idx = step._infrequent_indices if infrequent else [None] * len(columns)
    drops = step._drop_idx_after_grouping
    widths = list(step._n_features_outs)
    positions: list[int] = []
    offset = 0
    for j, cats in enumerate(columns):
        mapping = mappings[j]
        drop = None if drops is None or drops[j] is None else int(drops[j])

        def place(grouped: int) -> int:
            if drop is not None and grouped == drop:
                return -1
            return offset + grouped - (1 if drop is not None and grouped > drop else 0)

        if mapping is not None and len(mapping) != cats.size:
            raise Unsupported(f"{name}: infrequent mapping of column {j} does not cover its categories")
        table = [place(int(mapping[c]) if mapping is not None else c) for c in range(cats.size)]
        if handle in ("infrequent_if_exist", "warn") and infrequent_idx[j] is not None:
            assert mapping is not None
            table.append(place(int(np.max(mapping))))
        else:
            table.append(-1)
        used = {p for p in table if p >= 0}
        if used != set(range(offset, offset + widths[j])):
            raise Unsupported(f"{name}: column {j}'s output positions do not match _n_features_outs")
        positions.extend(table)
        offset += widths[j]
    return OneHotOp(columns, np.array(positions, dtype=np.intp), offset, handle == "error", str(dtype), name)


# ----------------------------------------------------------------------------------------- OrdinalEncoder


@op
class OrdinalOp(_TableOp):
    """OrdinalEncoder: each column's table holds the code of its category, then the unknown value."""

    kind: ClassVar[str] = "sklearn.OrdinalEncoder"

    def __init__(
        self,
        columns: list[_Categories],
        values: Array,
        unknown_error: bool,
        out_dtype: str = "float64",
        step: str = "OrdinalEncoder",
    ) -> None:
        self.step, self.columns, self.unknown_error = step, columns, unknown_error
        self.values, self.out_dtype = values, out_dtype
        self.bases = self._bases()

    def apply(self, X: Array) -> Array:
        out: Array = self.values[self._codes(X)]
        return out

    def state(self) -> State:
        cats, arrays = self._categories_state()
        arrays["values"] = self.values
        return {"categories": cats, "unknown_error": self.unknown_error, "out_dtype": self.out_dtype}, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, Array]) -> OrdinalOp:
        return cls(
            cls._categories_stored(meta, arrays),
            np.asarray(arrays["values"], dtype=np.float64),
            bool(meta["unknown_error"]),
            str(meta["out_dtype"]),
        )


@compiler("sklearn.preprocessing.OrdinalEncoder")
def compile_ordinal(step: Any) -> OrdinalOp:
    name = step_name(step)
    columns = _fitted_categories(step)
    dtype = np.dtype(step.dtype)
    if dtype.kind not in "iuf":
        raise Unsupported(f"{name}(dtype={dtype}): not a numeric output")
    handle = step.handle_unknown
    if handle not in ("error", "use_encoded_value"):
        raise Unsupported(f"{name}(handle_unknown={handle!r}): not a known option")
    infrequent = bool(getattr(step, "_infrequent_enabled", False))
    mappings = step._default_to_infrequent_mappings if infrequent else [None] * len(columns)
    missing = dict(step._missing_indices)
    values: list[float] = []
    for j, cats in enumerate(columns):
        mapping = mappings[j]
        codes = np.array(
            [int(mapping[c]) if mapping is not None and c != missing.get(j) else c for c in range(cats.size)]
            + [0],
            dtype=np.int64,
        )
        table = codes.astype(dtype)
        if j in missing:
            table[missing[j]] = step.encoded_missing_value
        if handle == "use_encoded_value":
            table[-1] = step.unknown_value
        floats = table.astype(np.float64)
        if dtype != np.float64:
            wanted = codes.astype(np.float64)
            if j in missing:
                wanted[missing[j]] = float(step.encoded_missing_value)
            if handle == "use_encoded_value":
                wanted[-1] = float(step.unknown_value)
            if not np.array_equal(floats, wanted, equal_nan=True):
                raise Unsupported(f"{name}(dtype={dtype}): the codes are not exact in it")
        if handle == "error":
            floats[-1] = np.nan  # never read: an unknown raises
        values.extend(floats.tolist())
    return OrdinalOp(columns, np.array(values, dtype=np.float64), handle == "error", str(dtype), name)


# ------------------------------------------------------------------------------------------ TargetEncoder


@op
class TargetOp(_TableOp):
    """TargetEncoder at predict time: ``encodings_`` by category, ``target_mean_`` for an unknown; a
    multiclass target gives ``n_classes`` columns per feature (feature-major, as scikit-learn lays them)."""

    kind: ClassVar[str] = "sklearn.TargetEncoder"

    def __init__(
        self,
        columns: list[_Categories],
        values: Array,
        features: Array,
        starts: Array,
        step: str = "TargetEncoder",
    ) -> None:
        self.step, self.columns, self.unknown_error = step, columns, False
        self.values, self.features, self.starts = values, features, starts
        self.bases = self._bases()

    def apply(self, X: Array) -> Array:
        codes = self._codes(X) - self.bases  # category index within each column
        out: Array = self.values[codes[:, self.features] + self.starts]
        return out

    def state(self) -> State:
        cats, arrays = self._categories_state()
        arrays.update(values=self.values, features=self.features, starts=self.starts)
        return {"categories": cats}, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, Array]) -> TargetOp:
        return cls(
            cls._categories_stored(meta, arrays),
            np.asarray(arrays["values"], dtype=np.float64),
            np.asarray(arrays["features"], dtype=np.intp),
            np.asarray(arrays["starts"], dtype=np.intp),
        )


@compiler("sklearn.preprocessing.TargetEncoder")
def compile_target(step: Any) -> TargetOp:
    name = step_name(step)
    columns = _fitted_categories(step)
    if getattr(step, "_infrequent_enabled", False):
        raise Unsupported(f"{name}: infrequent categories")
    target_type = step.target_type_
    encodings = [np.asarray(e, dtype=np.float64) for e in step.encodings_]
    if target_type == "multiclass":
        n_classes = len(step.classes_)
        means = np.asarray(step.target_mean_, dtype=np.float64).reshape(-1)
        if means.size != n_classes:
            raise Unsupported(f"{name}: target_mean_ does not hold one mean per class")
    elif target_type in ("binary", "continuous"):
        n_classes = 1
        means = np.asarray([float(step.target_mean_)])
    else:
        raise Unsupported(f"{name}: target type {target_type!r}")
    if len(encodings) != len(columns) * n_classes:
        raise Unsupported(f"{name}: {len(encodings)} encodings for {len(columns)} features")
    values: list[float] = []
    features, starts = [], []
    for e, encoding in enumerate(encodings):
        feature = e // n_classes
        if encoding.shape != (columns[feature].size,):
            raise Unsupported(f"{name}: encoding {e} does not cover its feature's categories")
        features.append(feature)
        starts.append(len(values))
        values.extend(encoding.tolist())
        values.append(float(means[e % n_classes]))
    return TargetOp(
        columns,
        np.array(values, dtype=np.float64),
        np.array(features, dtype=np.intp),
        np.array(starts, dtype=np.intp),
        name,
    )


# ---------------------------------------------------------------------------------------------- scalers


@op
class AffineOp(Op):
    """The scalers: ``X -= shift`` then ``X /= scale`` (Standard, Robust, MaxAbs), or ``X *= scale``
    then ``X += shift`` (MinMax), then an optional clip, in float64, each step as scikit-learn orders it."""

    kind: ClassVar[str] = "sklearn.scaler"

    def __init__(
        self,
        step: str,
        order: str,
        n_features: int,
        shift: Array | None,
        scale: Array | None,
        clip: tuple[float, float] | None = None,
    ) -> None:
        self.step, self.order, self.n_features = step, order, n_features
        self.shift, self.scale, self.clip = shift, scale, clip

    def apply(self, X: Array) -> Array:
        _width(self.step, X, self.n_features)
        out = np.array(_floats(self.step, X, allow_nan=True), dtype=np.float64, copy=True)
        if self.order == "subtract_divide":
            if self.shift is not None:
                out -= self.shift
            if self.scale is not None:
                out /= self.scale
        else:
            assert self.scale is not None and self.shift is not None
            out *= self.scale
            out += self.shift
        if self.clip is not None:
            np.clip(out, self.clip[0], self.clip[1], out=out)
        return out

    def state(self) -> State:
        arrays = {k: v for k, v in (("shift", self.shift), ("scale", self.scale)) if v is not None}
        clip = None if self.clip is None else [float(self.clip[0]).hex(), float(self.clip[1]).hex()]
        return {"step": self.step, "order": self.order, "n_features": self.n_features, "clip": clip}, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, Array]) -> AffineOp:
        clip = meta["clip"]
        return cls(
            str(meta["step"]),
            str(meta["order"]),
            int(meta["n_features"]),
            arrays.get("shift"),
            arrays.get("scale"),
            None if clip is None else (float.fromhex(clip[0]), float.fromhex(clip[1])),
        )


def _vector(step: Any, attr: str, n: int) -> Array:
    value = getattr(step, attr, None)
    array = np.asarray(value)
    if value is None or array.shape != (n,) or array.dtype != np.float64:
        raise Unsupported(f"{step_name(step)}: {attr} is not a float64 vector of its {n} features")
    return array.copy()


@compiler("sklearn.preprocessing.StandardScaler")
def compile_standard(step: Any) -> AffineOp:
    n = _check_width(step)
    return AffineOp(
        step_name(step),
        "subtract_divide",
        n,
        _vector(step, "mean_", n) if step.with_mean else None,
        _vector(step, "scale_", n) if step.with_std else None,
    )


@compiler("sklearn.preprocessing.RobustScaler")
def compile_robust(step: Any) -> AffineOp:
    n = _check_width(step)
    return AffineOp(
        step_name(step),
        "subtract_divide",
        n,
        _vector(step, "center_", n) if step.with_centering else None,
        _vector(step, "scale_", n) if step.with_scaling else None,
    )


@compiler("sklearn.preprocessing.MaxAbsScaler")
def compile_max_abs(step: Any) -> AffineOp:
    n = _check_width(step)
    clip = (-1.0, 1.0) if step.clip else None
    return AffineOp(step_name(step), "subtract_divide", n, None, _vector(step, "scale_", n), clip)


@compiler("sklearn.preprocessing.MinMaxScaler")
def compile_min_max(step: Any) -> AffineOp:
    n = _check_width(step)
    low, high = step.feature_range
    clip = (float(low), float(high)) if step.clip else None
    return AffineOp(
        step_name(step), "multiply_add", n, _vector(step, "min_", n), _vector(step, "scale_", n), clip
    )


# ---------------------------------------------------------------------------------------------- imputer


@op
class ImputeOp(Op):
    """SimpleImputer: cells equal to ``missing_values`` (NaN: ``X != X``) take the column's statistic;
    columns without a statistic are dropped (unless ``keep_empty_features``); then the MissingIndicator's
    columns. ``objects`` says the step works on an object block (fitted on one): statistics are tagged
    Python values and the output is object."""

    kind: ClassVar[str] = "sklearn.SimpleImputer"

    def __init__(
        self,
        step: str,
        n_features: int,
        missing: Any,
        to_float: bool,
        objects: bool,
        keep: Array,
        statistics: list[Any],
        indicator: Array | None,
    ) -> None:
        self.step, self.n_features, self.missing = step, n_features, missing
        self.to_float, self.objects, self.keep = to_float, objects, keep
        self.statistics, self.indicator = statistics, indicator
        self.numbers = np.array(statistics, dtype=np.float64) if not objects else None
        self.row = np.empty(len(statistics), dtype=object)
        self.row[:] = statistics

    def _mask(self, X: Array) -> Array:
        if _is_nan(self.missing):
            if X.dtype == object:
                mask: Array = X != X
            else:
                mask = np.isnan(X)
            return mask
        if X.dtype != object and not isinstance(self.missing, (int, float)):
            raise InvalidData(f"{self.step}: a numeric block with a non-numeric missing_values")
        mask = np.asarray(X == self.missing, dtype=bool)
        if mask.shape != X.shape:
            mask = np.zeros(X.shape, dtype=bool)
        return mask

    def apply(self, X: Array) -> Array:
        _width(self.step, X, self.n_features)
        allow_nan = _is_nan(self.missing)
        if self.to_float:
            X = _floats(self.step, X, allow_nan)
        elif self.objects:
            if X.dtype != object:
                X = X.astype(object)
            if not allow_nan and (X != X).any():
                raise InvalidData(f"{self.step}: NaN in a column (missing_values is not NaN)")
        elif X.dtype == np.float64:
            X = _floats(self.step, X, allow_nan)
        elif not allow_nan and (X != X).any():
            raise InvalidData(f"{self.step}: NaN in a column (missing_values is not NaN)")
        mask = self._mask(X)
        kept, kept_mask = X[:, self.keep], mask[:, self.keep]
        if X.dtype == object:
            out = np.where(kept_mask, self.row, kept)
        else:
            assert self.numbers is not None
            out = np.where(kept_mask, self.numbers, kept)
        if self.indicator is None:
            return out
        stacked: Array = np.hstack((out, mask[:, self.indicator]))
        return stacked

    def state(self) -> State:
        arrays = {"keep": self.keep}
        if self.indicator is not None:
            arrays["indicator"] = self.indicator
        meta = {
            "step": self.step,
            "n_features": self.n_features,
            "missing": _tag(self.step, self.missing),
            "to_float": self.to_float,
            "objects": self.objects,
            "statistics": [_tag(self.step, v) for v in self.statistics],
        }
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, Array]) -> ImputeOp:
        indicator = arrays.get("indicator")
        return cls(
            str(meta["step"]),
            int(meta["n_features"]),
            _untag(meta["missing"]),
            bool(meta["to_float"]),
            bool(meta["objects"]),
            np.asarray(arrays["keep"], dtype=np.intp),
            [_untag(t) for t in meta["statistics"]],
            None if indicator is None else np.asarray(indicator, dtype=np.intp),
        )


@compiler("sklearn.impute.SimpleImputer")
def compile_simple_imputer(step: Any) -> ImputeOp:
    name = step_name(step)
    n = _check_width(step)
    strategy = step.strategy
    if strategy not in ("mean", "median", "most_frequent", "constant"):
        raise Unsupported(f"{name}(strategy={strategy!r}): only mean, median, most_frequent and constant")
    missing = step.missing_values
    if not (missing is None or isinstance(missing, (str, int, float, np.integer, np.floating))) or isinstance(
        missing, (bool, np.bool_)
    ):
        raise Unsupported(
            f"{name}(missing_values={type(missing).__name__}): only NaN, None, a number or a string"
        )
    if isinstance(missing, (np.integer, np.floating)):
        missing = missing.item()
    fit_dtype, fill_dtype = np.dtype(step._fit_dtype), np.dtype(step._fill_dtype)
    if fit_dtype.kind not in "iufO" or fill_dtype.kind not in "iufO":
        raise Unsupported(f"{name}: fitted on dtype {fit_dtype}")
    if fill_dtype.kind == "f" and fill_dtype != np.float64:
        raise Unsupported(f"{name}: fitted on {fill_dtype}, which the float64 plan would not compute in")
    statistics = np.asarray(step.statistics_)
    if statistics.shape != (n,):
        raise Unsupported(f"{name}: statistics_ do not cover its {n} features")
    if step.keep_empty_features:
        keep = np.arange(n)
    else:
        empty = (
            statistics != statistics
            if statistics.dtype == object
            else np.isnan(statistics.astype(np.float64))
        )
        keep = np.flatnonzero(~np.asarray(empty, dtype=bool))
    objects = fit_dtype.kind == "O"
    if objects:
        values = [statistics[i] for i in keep]
        values = [v.item() if isinstance(v, np.generic) else v for v in values]
    else:
        cast = statistics[keep].astype(fill_dtype)
        if fill_dtype.kind in "iu" and cast.size and int(np.abs(cast).max()) > _EXACT_INT:
            raise Unsupported(f"{name}: integer statistics beyond 2**53 do not survive float64")
        values = cast.astype(np.float64).tolist()
    indicator = None
    if step.add_indicator:
        ind = step.indicator_
        if ind.features != "missing-only" or ind.error_on_new or not ind._precomputed:
            raise Unsupported(f"{name}(add_indicator=True): an indicator not fitted by the imputer")
        indicator = np.asarray(ind.features_, dtype=np.intp)
    for v in values:
        _tag(name, v)
    _tag(name, missing)
    return ImputeOp(
        name,
        n,
        missing,
        strategy in ("mean", "median"),
        objects,
        np.asarray(keep, dtype=np.intp),
        values,
        indicator,
    )


# ---------------------------------------------------------------------------------- FunctionTransformer

#: The unary numpy ufuncs a FunctionTransformer may name, by the name they are stored under.
UFUNCS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        np.log1p,
        np.log,
        np.log2,
        np.log10,
        np.exp,
        np.expm1,
        np.exp2,
        np.sqrt,
        np.cbrt,
        np.square,
        np.absolute,
        np.fabs,
        np.negative,
        np.positive,
        np.sign,
        np.floor,
        np.ceil,
        np.rint,
        np.trunc,
        np.sin,
        np.cos,
        np.tan,
        np.arcsin,
        np.arccos,
        np.arctan,
        np.sinh,
        np.cosh,
        np.tanh,
        np.arcsinh,
        np.arccosh,
        np.arctanh,
    )
}


@op
class FunctionOp(Op):
    """FunctionTransformer with no function (the identity) or a known ufunc. ``validate`` converts to
    float64 and refuses NaN and infinity, as ``check_array`` does; without it an object block goes
    through numpy's object loop as the step's own call would (a cell it cannot handle: InvalidData)."""

    kind: ClassVar[str] = "sklearn.FunctionTransformer"

    def __init__(
        self, func: str | None, validate: bool, n_features: int | None, step: str = "FunctionTransformer"
    ) -> None:
        self.step, self.func, self.validate, self.n_features = step, func, validate, n_features
        self.ufunc = None if func is None else UFUNCS[func]

    def apply(self, X: Array) -> Array:
        if self.validate:
            if self.n_features is not None:
                _width(self.step, X, self.n_features)
            X = _floats(self.step, X, allow_nan=False)
        if self.ufunc is None:
            return X
        with np.errstate(all="ignore"):
            if X.dtype != object:
                out: Array = self.ufunc(X)
                return out
            try:  # numpy's object loop, as the step itself would run it: a method or operator per cell
                return np.asarray(self.ufunc(X), dtype=object)
            except (TypeError, AttributeError, ValueError, ArithmeticError):
                raise InvalidData(f"{self.step}: {self.func} of a value that is not a number") from None

    def state(self) -> State:
        return {"func": self.func, "validate": self.validate, "n_features": self.n_features}, {}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, Array]) -> FunctionOp:
        func = meta["func"]
        if func is not None and func not in UFUNCS:
            raise ValueError(f"FunctionTransformer: unknown stored function {func!r}")
        n = meta["n_features"]
        return cls(func, bool(meta["validate"]), None if n is None else int(n))


@compiler("sklearn.preprocessing.FunctionTransformer")
def compile_function(step: Any) -> FunctionOp:
    name = step_name(step)
    func = step.func
    if func is None:
        stored = None
    else:
        stored = next((key for key, f in UFUNCS.items() if f is func), None)
        if stored is None:
            label = getattr(func, "__qualname__", None) or type(func).__name__
            raise Unsupported(f"{name}(func={label}): only the identity or a known numpy ufunc")
    if step.kw_args:
        raise Unsupported(f"{name}(kw_args=...): keyword arguments to the function")
    n = getattr(step, "n_features_in_", None)
    return FunctionOp(stored, bool(step.validate), None if n is None else int(n), name)
