"""Spark ML feature transformers compiled to numpy: the formulas of Spark 3.5's own ``transform``.

Each compiler reads one saved stage (params and Parquet data, :mod:`.layout`) and returns a
:class:`~.base.Stage`; a param combination without an exact native equivalent raises
:class:`~.base.Unsupported` at compile time, so the pipeline keeps Spark. Every formula is copied from
the Scala class named in its comment (``org.apache.spark.ml.feature.*``, Spark 3.5).

Nulls: a scalar numeric column carries Spark's null as NaN (scorer hands pandas NaN to Spark as
null), so a NaN here behaves as Spark's null does: a Scala UDF over a primitive ``Double`` returns
null for a null input (Bucketizer, OneHotEncoder, IndexToString), ``na.drop`` drops it. A null
vector is a row of NaN: :class:`VectorAssembler` treats an all-NaN row of a vector input as null.

One check happens at transform time: a StringIndexer fed a *numeric* column raises
:class:`~.base.Unsupported` for a double whose Java string (Spark's cast) might equal a label but
cannot be proven to (see :class:`StringIndexerStage`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scorer.spark_native.base import Columns, Compiler, InvalidData, Stage, Unsupported, input_names, output_names
from scorer.spark_native.layout import StageFiles

# ---------------------------------------------------------------------------------------------- helpers


def _double(value: Any) -> float:
    """A DoubleParam as saved: Spark's JSON writes NaN and the infinities as strings
    (``DoubleParam.jValueEncode``: "NaN", "Inf", "-Inf")."""
    if isinstance(value, str):
        special = {"NaN": math.nan, "Inf": math.inf, "-Inf": -math.inf, "Infinity": math.inf, "-Infinity": -math.inf}
        if value in special:
            return special[value]
    return float(value)


def _vector(saved: Any) -> np.ndarray:
    """A saved ``org.apache.spark.ml.linalg.Vector`` (VectorUDT: struct type 0 sparse / 1 dense, size,
    indices, values) as a dense float64 array."""
    if not isinstance(saved, dict) or "values" not in saved:
        raise Unsupported("a saved vector in an unknown layout")
    values = np.asarray(saved.get("values") or [], dtype=np.float64)
    if saved.get("type") == 0:
        dense = np.zeros(int(saved["size"]), dtype=np.float64)
        dense[np.asarray(saved.get("indices") or [], dtype=np.int64)] = values
        return dense
    return values


def _handle_invalid(stage: StageFiles, allowed: Sequence[str]) -> str:
    mode = str(stage.param("handleInvalid", "error"))
    if mode not in allowed:
        raise Unsupported(f"handleInvalid={mode!r}")
    return mode


def _column(uid: str, cols: Columns, name: str) -> np.ndarray:
    if name not in cols:
        raise InvalidData(f"stage {uid}: input column {name!r} is missing")
    return cols[name]


def _scalar(uid: str, cols: Columns, name: str) -> np.ndarray:
    """A numeric scalar input as float64 (Spark casts numeric inputs to DoubleType)."""
    col = _column(uid, cols, name)
    if col.ndim != 1 or col.dtype == object:
        raise InvalidData(f"stage {uid}: column {name!r} is not a numeric scalar column")
    return col.astype(np.float64, copy=False)


def _matrix(uid: str, cols: Columns, name: str, width: int | None = None) -> np.ndarray:
    col = _column(uid, cols, name)
    if col.ndim != 2 or col.dtype == object:
        raise InvalidData(f"stage {uid}: column {name!r} is not a vector column")
    if width is not None and col.shape[1] != width:
        raise InvalidData(f"stage {uid}: column {name!r} has vectors of size {col.shape[1]}, the model expects {width}")
    return col.astype(np.float64, copy=False)


def _pairs(stage: StageFiles) -> tuple[list[str], list[str]]:
    ins, outs = input_names(stage), output_names(stage)
    if not ins or len(ins) != len(outs):
        raise Unsupported(f"{len(ins)} input and {len(outs)} output columns")
    return ins, outs


@dataclass
class _Base:
    uid: str
    inputs: list[str]
    outputs: list[str]


# ----------------------------------------------------------------------------------------- StringIndexer

#: A float of the form Spark's double -> string cast writes as ``<integer>.0``: Java's
#: ``Double.toString`` prints every integer-valued double below 10^7 that way (Cast.castToString).
_PLAIN_INTEGER = 1e7


@dataclass
class StringIndexerStage(_Base):
    """``StringIndexerModel`` (StringIndexer.scala): a label's index in ``labelsArray(i)``.

    handleInvalid: error (null or unseen label -> the SparkException of ``getIndexer``), keep (index
    ``numLabels``), skip (``filterInvalidData``: drop a row whose input is null or unseen in any column).
    A numeric input is cast to string first (``col.cast(StringType)``): an integer-valued double below
    10^7 is ``"<n>.0"`` exactly; any other double whose value a numeric label could spell is
    :class:`Unsupported` (Java 17's ``Double.toString`` digits are not Python's shortest repr).
    """

    labels: list[list[str]] = field(default_factory=list)
    mode: str = "error"

    def __post_init__(self) -> None:
        # numLabels counts every saved entry, nulls included (labelsArray(i).length)
        self.index = [{label: float(i) for i, label in enumerate(labels) if label is not None} for labels in self.labels]
        self.ambiguous: list[set[float]] = []
        for labels in self.labels:
            values: set[float] = set()
            for label in labels:
                if label is None:  # pyspark's from_arrays_of_labels pads short lists with null
                    continue
                if label in ("true", "false"):  # a boolean column cast to string; booleans arrive as 0/1
                    values.update((0.0, 1.0))
                try:
                    values.add(float(label))
                except ValueError:
                    pass
            self.ambiguous.append(values)

    def _as_strings(self, i: int, name: str, col: np.ndarray) -> np.ndarray:
        if col.dtype == object:
            return col
        x = col.astype(np.float64, copy=False)
        out = np.full(x.shape, None, dtype=object)
        finite = np.isfinite(x)
        plain = finite & (np.abs(x) < _PLAIN_INTEGER) & (np.trunc(x) == x) & ~((x == 0) & np.signbit(x))
        ambiguous = self.ambiguous[i]
        if ambiguous & {0.0, 1.0} and any(label in ("true", "false") for label in self.labels[i]):
            raise Unsupported(f"stage {self.uid}: numeric column {name!r} against boolean labels")
        for j in np.flatnonzero(plain):
            out[j] = f"{int(x[j])}.0"
        other = ~plain & ~np.isnan(x)
        if other.any():
            if any(float(v) in ambiguous for v in x[other]):
                raise Unsupported(f"stage {self.uid}: column {name!r}: a double Spark would cast to a label string")
            out[other] = _UNSEEN  # its Java string parses back to a value no label spells: unseen
        return out

    def transform(self, cols: Columns) -> np.ndarray | None:
        present = [i for i, name in enumerate(self.inputs) if name in cols]
        if self.mode == "skip" and len(present) != len(self.inputs):
            missing = self.inputs[next(i for i in range(len(self.inputs)) if i not in present)]
            raise InvalidData(f"stage {self.uid}: input column {missing!r} is missing")
        n = len(next(iter(cols.values()))) if cols else 0
        keep = np.ones(n, dtype=bool)
        results: dict[str, np.ndarray] = {}
        for i in present:  # a missing input column is skipped (StringIndexerModel.transform logs and skips it)
            name = self.inputs[i]
            values = self._as_strings(i, name, cols[name])
            lookup = self.index[i]
            idx = np.array([lookup.get(v, -1.0) if isinstance(v, str) else -1.0 for v in values], dtype=np.float64)
            bad = idx < 0
            if self.mode == "skip":
                keep &= ~bad
            elif bad.any():
                if self.mode == "error":
                    nulls = np.array([v is None for v in values[bad]])
                    what = "a null value" if nulls.any() else "an unseen label"
                    raise InvalidData(f"stage {self.uid}: column {name!r}: {what} (handleInvalid='error')")
                idx[bad] = float(len(self.labels[i]))
            results[self.outputs[i]] = idx
        cols.update(results)
        return keep if self.mode == "skip" else None


_UNSEEN = object()  # a cast value known to be absent from every label


def compile_string_indexer(stage: StageFiles) -> Stage:
    ins, outs = _pairs(stage)
    mode = _handle_invalid(stage, ("error", "skip", "keep"))
    table = stage.table()
    if "labelsArray" in table.column_names:  # Spark 3.x
        labels = [list(x) for x in table.column("labelsArray")[0].as_py()]
    elif "labels" in table.column_names:  # Spark 2.x: one column (StringIndexerModelReader, majorVersion < 3)
        labels = [list(table.column("labels")[0].as_py())]
    else:
        raise Unsupported("no labelsArray or labels in the saved data")
    if len(labels) != len(ins):
        raise Unsupported(f"{len(labels)} label lists for {len(ins)} input columns")
    return StringIndexerStage(stage.uid, ins, outs, labels, mode)


# ---------------------------------------------------------------------------------------- OneHotEncoder


@dataclass
class OneHotEncoderStage(_Base):
    """``OneHotEncoderModel`` (OneHotEncoder.scala, 3.x): ``encoder`` UDF over ``col.cast(DoubleType)``.

    ``idx = label`` when ``0 <= label < categorySize`` else (keep) ``categorySize`` or (error) the
    "Negative value" / "Unseen value" SparkException; the vector has ``getConfigedCategorySizes`` slots
    (``size-1`` with dropLast and not keep, ``size+1`` with keep and not dropLast) and a 1.0 at
    ``idx.toInt`` when ``idx < size``. A null input gives a null vector (a NaN row).
    """

    sizes: list[int] = field(default_factory=list)
    drop_last: bool = True
    mode: str = "error"

    def transform(self, cols: Columns) -> np.ndarray | None:
        keep_invalid = self.mode == "keep"
        results: dict[str, np.ndarray] = {}
        for name, out, orig in zip(self.inputs, self.outputs, self.sizes):
            label = _scalar(self.uid, cols, name)
            if self.drop_last and not keep_invalid:
                size = orig - 1
            elif not self.drop_last and keep_invalid:
                size = orig + 1
            else:
                size = orig
            null = np.isnan(label)
            valid = (label >= 0) & (label < orig)
            invalid = ~valid & ~null
            if invalid.any() and not keep_invalid:
                raise InvalidData(f"stage {self.uid}: column {name!r}: a negative or unseen category (handleInvalid='error')")
            idx = np.where(valid, np.trunc(np.where(valid, label, 0.0)), float(orig))
            vec = np.zeros((len(label), size), dtype=np.float64)
            hot = ~null & (idx < size)
            vec[np.flatnonzero(hot), idx[hot].astype(np.int64)] = 1.0
            vec[null] = np.nan
            results[out] = vec
        cols.update(results)
        return None


def compile_one_hot_encoder(stage: StageFiles) -> Stage:
    ins, outs = _pairs(stage)
    mode = _handle_invalid(stage, ("error", "keep"))
    sizes = [int(s) for s in stage.table().column("categorySizes")[0].as_py()]
    if len(sizes) != len(ins):
        raise Unsupported(f"{len(sizes)} category sizes for {len(ins)} input columns")
    return OneHotEncoderStage(stage.uid, ins, outs, sizes, bool(stage.param("dropLast", True)), mode)


# -------------------------------------------------------------------------------------- VectorAssembler


@dataclass
class VectorAssemblerStage(_Base):
    """``VectorAssembler`` (VectorAssembler.scala ``assemble``): scalars and vectors concatenated.

    error: a null or NaN scalar, or a null vector, raises; keep: NaN stays, a null vector becomes NaNs
    of its length; skip: ``na.drop(inputCols)`` drops rows with a null/NaN scalar or a null vector.
    NaN values inside a (non-null) vector are kept in every mode.
    """

    mode: str = "error"

    def transform(self, cols: Columns) -> np.ndarray | None:
        parts: list[np.ndarray] = []
        bad: np.ndarray | None = None
        for name in self.inputs:
            col = _column(self.uid, cols, name)
            if col.dtype == object:
                raise InvalidData(f"stage {self.uid}: column {name!r} is not numeric")
            part = col.astype(np.float64, copy=False).reshape(len(col), -1)
            missing = np.asarray(np.isnan(part).all(axis=1)) if part.shape[1] else np.zeros(len(part), dtype=bool)
            if self.mode == "error" and missing.any():
                raise InvalidData(f"stage {self.uid}: column {name!r}: a null or NaN value (handleInvalid='error')")
            bad = missing if bad is None else np.logical_or(bad, missing)
            parts.append(part)
        n = len(next(iter(cols.values()))) if cols else 0
        cols[self.outputs[0]] = np.hstack(parts) if parts else np.zeros((n, 0))
        if self.mode == "skip" and bad is not None:
            return ~bad
        return None


def compile_vector_assembler(stage: StageFiles) -> Stage:
    ins = list(stage.param("inputCols") or [])
    out = stage.param("outputCol")
    if not ins or not out:
        raise Unsupported("no inputCols or outputCol")
    return VectorAssemblerStage(stage.uid, ins, [str(out)], _handle_invalid(stage, ("error", "skip", "keep")))


# ----------------------------------------------------------------------------------------------- Imputer


@dataclass
class ImputerStage(_Base):
    """``ImputerModel`` (Imputer.scala): ``when(ic.isNull, surrogate).when(ic === missingValue,
    surrogate).otherwise(ic)`` with ``ic = col.cast(DoubleType)`` (NaN === NaN is true in Spark SQL)."""

    surrogates: list[float] = field(default_factory=list)
    missing: float = math.nan

    def transform(self, cols: Columns) -> np.ndarray | None:
        results = {}
        for name, out, surrogate in zip(self.inputs, self.outputs, self.surrogates):
            x = _scalar(self.uid, cols, name)
            hit = np.isnan(x) | (x == self.missing)
            results[out] = np.where(hit, surrogate, x)
        cols.update(results)
        return None


def compile_imputer(stage: StageFiles) -> Stage:
    ins, outs = _pairs(stage)
    row = stage.rows()[0]
    if any(name not in row for name in ins):
        raise Unsupported("the surrogate data lacks an input column")
    surrogates = [math.nan if row[name] is None else float(row[name]) for name in ins]
    return ImputerStage(stage.uid, ins, outs, surrogates, _double(stage.param("missingValue", "NaN")))


# ----------------------------------------------------------------------------------------------- scalers


@dataclass
class VectorMapStage(_Base):
    """A scaler: one vector column in, ``fn(matrix)`` out (width checked against the model)."""

    width: int = 0
    fn: Callable[[np.ndarray], np.ndarray] = field(default=lambda m: m)

    def transform(self, cols: Columns) -> np.ndarray | None:
        cols[self.outputs[0]] = self.fn(_matrix(self.uid, cols, self.inputs[0], self.width))
        return None


def _one_to_one(stage: StageFiles) -> tuple[list[str], list[str]]:
    ins, outs = [stage.param("inputCol")], [stage.param("outputCol")]
    if not ins[0] or not outs[0]:
        raise Unsupported("no inputCol or outputCol")
    return [str(ins[0])], [str(outs[0])]


def compile_standard_scaler(stage: StageFiles) -> Stage:
    # StandardScalerModel.transform: shift = mean when withMean; scale = 1/std (0.0 where std == 0) when
    # withStd; getTransformFunc: (x - shift) * scale, x - shift, x * scale, or x.
    ins, outs = _one_to_one(stage)
    row = stage.rows()[0]
    std, mean = _vector(row["std"]), _vector(row["mean"])
    with_mean, with_std = bool(stage.param("withMean", False)), bool(stage.param("withStd", True))
    with np.errstate(divide="ignore"):
        scale = np.where(std == 0, 0.0, 1.0 / np.where(std == 0, 1.0, std))

    def fn(m: np.ndarray) -> np.ndarray:
        if with_mean and with_std:
            return np.asarray((m - mean) * scale)
        if with_mean:
            return np.asarray(m - mean)
        if with_std:
            return np.asarray(m * scale)
        return m.copy()

    return VectorMapStage(stage.uid, ins, outs, len(std), fn)


def compile_min_max_scaler(stage: StageFiles) -> Stage:
    # MinMaxScalerModel.transform: scaleArray(i) = (max - min) / range, 0.0 when range == 0; a NaN stays
    # NaN; else (x - originalMin) * scaleArray + min, or (min + max) / 2 for a constant feature.
    ins, outs = _one_to_one(stage)
    row = stage.rows()[0]
    lo, hi = _vector(row["originalMin"]), _vector(row["originalMax"])
    out_min, out_max = _double(stage.param("min", 0.0)), _double(stage.param("max", 1.0))
    scale = out_max - out_min
    constant = (out_min + out_max) / 2
    rng = hi - lo
    scale_array = np.where(rng != 0, scale / np.where(rng != 0, rng, 1.0), 0.0)

    def fn(m: np.ndarray) -> np.ndarray:
        scaled = np.where(scale_array != 0, (m - lo) * scale_array + out_min, constant)
        return np.where(np.isnan(m), m, scaled)

    return VectorMapStage(stage.uid, ins, outs, len(hi), fn)


def compile_max_abs_scaler(stage: StageFiles) -> Stage:
    # MaxAbsScalerModel.transform: scale = 1 / maxAbs (1.0 where maxAbs == 0), then
    # StandardScalerModel.getTransformFunc(shift = empty, scale, withShift = false, withScale = true).
    ins, outs = _one_to_one(stage)
    max_abs = _vector(stage.rows()[0]["maxAbs"])
    scale = np.where(max_abs == 0, 1.0, 1.0 / np.where(max_abs == 0, 1.0, max_abs))
    return VectorMapStage(stage.uid, ins, outs, len(max_abs), lambda m: m * scale)


# --------------------------------------------------------------------------------------------- Bucketizer


def _java_order(x: np.ndarray) -> np.ndarray:
    """Keys ordered as ``java.util.Arrays.binarySearch(double[])`` orders them: -0.0 below 0.0."""
    return np.where((x == 0) & np.signbit(x), -np.finfo(np.float64).smallest_subnormal, x)


@dataclass
class BucketizerStage(_Base):
    """``Bucketizer`` (Bucketizer.scala ``binarySearchForBuckets``) over ``col.cast(DoubleType)``.

    NaN: (keep) bucket ``splits.length - 1``, (error) SparkException; the last split itself goes to
    the last bucket; a value on an inner split goes to the bucket it opens; a value outside the splits
    raises in every mode. skip: ``na.drop(inputCols)`` first. A null input gives null (NaN here).
    """

    splits: list[np.ndarray] = field(default_factory=list)
    mode: str = "error"

    def transform(self, cols: Columns) -> np.ndarray | None:
        inputs = [_scalar(self.uid, cols, name) for name in self.inputs]
        keep = None
        if self.mode == "skip":
            keep = np.ones(len(inputs[0]) if inputs else 0, dtype=bool)
            for x in inputs:
                keep &= ~np.isnan(x)
        results = {}
        for name, out, x, splits in zip(self.inputs, self.outputs, inputs, self.splits):
            if keep is not None:
                x = np.where(keep, x, splits[0])  # rows skip drops: any in-range value, discarded later
            null = np.isnan(x)  # Spark null (a primitive-Double UDF returns null), see module docstring
            bucket = np.searchsorted(_java_order(splits), _java_order(np.where(null, splits[0], x)), side="right") - 1
            bucket = np.where(x == splits[-1], len(splits) - 2, bucket).astype(np.float64)
            outside = ~null & ((bucket < 0) | (bucket > len(splits) - 2))
            if outside.any():
                raise InvalidData(f"stage {self.uid}: column {name!r}: a value outside the Bucketizer's splits")
            results[out] = np.where(null, np.nan, bucket)
        cols.update(results)
        return keep


def _splits(saved: Any) -> np.ndarray:
    splits = np.array([_double(v) for v in saved], dtype=np.float64)
    if len(splits) < 3 or np.isnan(splits).any() or not (np.diff(splits) > 0).all():
        raise Unsupported("splits that are not strictly increasing, or fewer than 3")
    if (np.abs(splits) == np.finfo(np.float64).smallest_subnormal).any():
        raise Unsupported("a split at the smallest subnormal (reserved for the -0.0 ordering)")
    return splits


def compile_bucketizer(stage: StageFiles) -> Stage:
    mode = _handle_invalid(stage, ("error", "skip", "keep"))
    if stage.is_set("inputCol") or not stage.is_set("inputCols"):
        ins, outs = _one_to_one(stage)
        splits = [_splits(stage.param("splits") or [])]
    else:
        ins, outs = _pairs(stage)
        splits = [_splits(s) for s in stage.param("splitsArray") or []]
    if len(splits) != len(ins):
        raise Unsupported(f"{len(splits)} split lists for {len(ins)} input columns")
    return BucketizerStage(stage.uid, ins, outs, splits, mode)


# ------------------------------------------------------------------------------------------ IndexToString


@dataclass
class IndexToStringStage(_Base):
    """``IndexToString`` (StringIndexer.scala): ``idx = index.toInt``; ``labels(idx)`` when
    ``0 <= idx < labels.length`` else the "Unseen index" SparkException. A null index gives null."""

    labels: list[str] = field(default_factory=list)

    def transform(self, cols: Columns) -> np.ndarray | None:
        x = _scalar(self.uid, cols, self.inputs[0])
        null = np.isnan(x)
        idx = np.trunc(np.where(null, 0.0, x))  # Double.toInt truncates toward zero (and saturates)
        valid = (idx >= 0) & (idx < len(self.labels))
        if (~valid & ~null).any():
            raise InvalidData(f"stage {self.uid}: column {self.inputs[0]!r}: an index without a label")
        table = np.array(self.labels + [None], dtype=object)
        cols[self.outputs[0]] = table[np.where(null, len(self.labels), np.where(valid, idx, 0)).astype(np.int64)]
        return None


def compile_index_to_string(stage: StageFiles) -> Stage:
    ins, outs = _one_to_one(stage)
    labels = stage.param("labels")
    if not labels:
        raise Unsupported("labels unset: Spark reads them from the input column's metadata")
    return IndexToStringStage(stage.uid, ins, outs, [str(v) for v in labels])


# ------------------------------------------------------------------------------------------ SQLTransformer

_IDENT = r"(?:[A-Za-z_][A-Za-z0-9_]*|`(?:[^`]|``)+`)"
_ITEM = re.compile(rf"\s*(?P<src>{_IDENT})(?:\s+(?i:AS)\s+(?P<alias>{_IDENT}))?\s*")
_STATEMENT = re.compile(r"\s*(?i:SELECT)\s+(?P<items>.*?)\s+(?i:FROM)\s+__THIS__\s*", re.DOTALL)
#: Words Spark's parser would not read as a bare column reference (or that change the statement).
_KEYWORDS = {
    "select", "from", "as", "where", "distinct", "all", "null", "true", "false", "case", "when", "then",
    "else", "end", "not", "and", "or", "is", "in", "like", "group", "order", "by", "limit", "having",
    "union", "join", "on", "cast", "interval", "current_date", "current_timestamp", "current_user",
}  # fmt: skip


def _unquote(ident: str) -> str:
    if ident.startswith("`"):
        return ident[1:-1].replace("``", "`")
    if ident.lower() in _KEYWORDS:
        raise Unsupported(f"{ident!r} is not a plain column reference")
    return ident


def _split_items(items: str) -> list[str]:
    parts, current, quoted = [], "", False
    for ch in items:
        if ch == "`":
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


@dataclass
class ProjectionStage(_Base):
    """``SQLTransformer`` (SQLTransformer.scala: the statement run over the batch as ``__THIS__``) for
    ``SELECT *|col [AS alias], ... FROM __THIS__``: the result holds exactly the projected columns."""

    items: list[tuple[str | None, str | None]] = field(default_factory=list)  # (source or None for *, alias)

    def transform(self, cols: Columns) -> np.ndarray | None:
        result: dict[str, np.ndarray] = {}
        for src, alias in self.items:
            if src is None:
                new = dict(cols)
            else:
                # Spark resolves column names case-insensitively (spark.sql.caseSensitive=false)
                found = [k for k in cols if k == src] or [k for k in cols if k.lower() == src.lower()]
                if len(found) != 1:
                    raise InvalidData(f"stage {self.uid}: column {src!r} is missing or ambiguous")
                new = {alias or src: cols[found[0]]}  # Spark names the column as the statement spells it
            clash = [k for k in new if k.lower() in {r.lower() for r in result}]
            if clash:
                raise InvalidData(f"stage {self.uid}: the projection yields column {clash[0]!r} twice")
            result.update(new)
        cols.clear()
        cols.update(result)
        return None


def compile_sql_transformer(stage: StageFiles) -> Stage:
    statement = str(stage.param("statement") or "")
    match = _STATEMENT.fullmatch(statement)
    if not match:
        raise Unsupported("the statement is not SELECT <columns> FROM __THIS__")
    items: list[tuple[str | None, str | None]] = []
    for part in _split_items(match.group("items")):
        if "__THIS__" in part:  # Spark replaces every __THIS__ in the statement with the view's name
            raise Unsupported("__THIS__ inside the select list")
        if part.strip() == "*":
            items.append((None, None))
            continue
        item = _ITEM.fullmatch(part)
        if not item:
            raise Unsupported("a select item that is not a column reference with an optional AS alias")
        alias = item.group("alias")
        items.append((_unquote(item.group("src")), _unquote(alias) if alias else None))
    names = [alias or src for src, alias in items if src is not None]
    if len({n.lower() for n in names}) != len(names):
        raise Unsupported("the projection names a column twice")
    inputs = [src for src, _ in items if src is not None]
    outputs = [alias for src, alias in items if src is not None and alias]
    return ProjectionStage(stage.uid, inputs, outputs, items)


# ---------------------------------------------------------------------------------------------- registry

COMPILERS: dict[str, Compiler] = {
    "StringIndexerModel": compile_string_indexer,
    "OneHotEncoderModel": compile_one_hot_encoder,
    "VectorAssembler": compile_vector_assembler,
    "ImputerModel": compile_imputer,
    "StandardScalerModel": compile_standard_scaler,
    "MinMaxScalerModel": compile_min_max_scaler,
    "MaxAbsScalerModel": compile_max_abs_scaler,
    "Bucketizer": compile_bucketizer,
    "IndexToString": compile_index_to_string,
    "SQLTransformer": compile_sql_transformer,
}
