"""Schema.coerce (lossless coercion to the input schema) and infer_schema on real fitted models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from scorer.codecs import decode as decode_table
from scorer.errors import SchemaError
from scorer.schema import Schema as _Schema
from scorer.schema import infer_schema
from scorer.table import Table

pytestmark = pytest.mark.fast


class Schema(_Schema):
    """The real Schema, with the coerced Table returned as a DataFrame for the assertions below."""

    def coerce(self, data):  # type: ignore[no-untyped-def, override]
        return super().coerce(data).to_frame()


def decode(*args: object) -> pd.DataFrame:
    return decode_table(*args).to_frame()  # type: ignore[arg-type]


def coerce_one(kind: str, values: list, dtype: object = None) -> pd.Series:
    """Coerce a one-column frame ``x`` to ``kind`` and return the column."""
    return Schema({"x": kind}).coerce(pd.DataFrame({"x": pd.Series(values, dtype=dtype)}))["x"]


# --- columns ---------------------------------------------------------------------------------


def test_missing_columns_are_all_listed() -> None:
    """Every missing column is named in one SchemaError, in schema order, and in ``.columns``."""
    schema = Schema({"a": "float", "b": "float", "c": "string"})
    with pytest.raises(SchemaError) as info:
        schema.coerce(pd.DataFrame({"b": [1.0]}))
    assert info.value.columns == ["a", "c"]
    assert "a" in info.value.message and "c" in info.value.message


def test_extra_columns_dropped_by_default() -> None:
    """Columns not in the schema are dropped silently by default."""
    out = Schema({"a": "float"}).coerce(pd.DataFrame({"zzz": ["junk"], "a": [1.0]}))
    assert list(out.columns) == ["a"]


def test_extra_columns_rejected_when_configured() -> None:
    """extra_columns="reject" names every unexpected column."""
    schema = Schema({"a": "float"}, extra_columns="reject")
    with pytest.raises(SchemaError) as info:
        schema.coerce(pd.DataFrame({"a": [1.0], "x": [1], "y": [2]}))
    assert info.value.columns == ["x", "y"]


def test_duplicate_columns_rejected() -> None:
    """A table with the same column twice is refused, naming it."""
    df = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["a", "a", "b"])
    with pytest.raises(SchemaError) as info:
        Schema({"a": "float", "b": "float"}).coerce(df)
    assert info.value.columns == ["a"]


def test_output_in_schema_order_with_range_index() -> None:
    """Output columns follow the schema order and the index is a fresh RangeIndex."""
    df = pd.DataFrame({"c": ["x", "y"], "b": [1, 2], "a": [0.5, 1.5]}, index=[10, 20])
    out = Schema({"a": "float", "b": "int", "c": "string"}).coerce(df)
    assert list(out.columns) == ["a", "b", "c"]
    assert isinstance(out.index, pd.RangeIndex)
    assert list(out.index) == [0, 1]
    assert out["b"].tolist() == [1, 2]


# --- float -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int64", "int32", "float32"])
def test_float_from_numeric_dtypes(dtype: str) -> None:
    """Integer and float32 inputs become float64 with the same values."""
    s = coerce_one("float", [1, 2, 3], dtype=dtype)
    assert s.dtype == np.float64
    assert s.tolist() == [1.0, 2.0, 3.0]


def test_float_from_numeric_strings() -> None:
    """Numeric strings, with surrounding whitespace, parse as numbers."""
    s = coerce_one("float", ["1.5", " 2 ", "-3e2"])
    assert s.dtype == np.float64
    assert s.tolist() == [1.5, 2.0, -300.0]


def test_float_rejects_text_naming_column_row_value() -> None:
    """A non-numeric string is refused; the message names the column, the row and the expected type but
    never the value, which only the opt-in detail (``describe(echo=True)``) quotes."""
    df = pd.DataFrame({"price": ["1.0", "2.0", "abc"]})
    with pytest.raises(SchemaError) as info:
        Schema({"price": "float"}).coerce(df)
    msg = info.value.message
    assert msg == "column 'price': row 2: a str value is not a number"
    assert "abc" not in msg and "abc" not in info.value.detail
    assert "'abc'" in info.value.describe(echo=True)
    assert info.value.columns == ["price"]


def test_float_rejects_boolean_column() -> None:
    """A boolean column is not silently turned into 0.0/1.0."""
    with pytest.raises(SchemaError, match="boolean"):
        coerce_one("float", [True, False])


def test_float_rejects_boolean_mixed_in_objects() -> None:
    """A boolean hidden among numbers in an object column is refused, naming its row."""
    with pytest.raises(SchemaError, match="row 1"):
        coerce_one("float", [1.0, True], dtype=object)


def test_float_keeps_missing_as_nan() -> None:
    """None among numeric strings becomes NaN, not an error."""
    s = coerce_one("float", ["1", None])
    assert s.iloc[0] == 1.0 and np.isnan(s.iloc[1])


# --- int -------------------------------------------------------------------------------------


def test_int_from_int32() -> None:
    """int32 becomes int64."""
    s = coerce_one("int", [1, 2], dtype="int32")
    assert s.dtype == np.int64 and s.tolist() == [1, 2]


def test_int_from_integral_floats_and_strings() -> None:
    """Integral floats and integer strings become int64."""
    assert coerce_one("int", [1.0, 2.0]).dtype == np.int64
    s = coerce_one("int", ["7", " 8 "])
    assert s.dtype == np.int64 and s.tolist() == [7, 8]


@pytest.mark.parametrize("missing", [None, np.nan])
def test_int_with_missing_values_stays_float_nan(missing: object) -> None:
    """Ints with a missing value become float64 with NaN, as pandas represents them."""
    s = coerce_one("int", [1, missing, 3], dtype=object)
    assert s.dtype == np.float64
    assert s.iloc[0] == 1.0 and np.isnan(s.iloc[1]) and s.iloc[2] == 3.0


def test_int_rejects_fraction() -> None:
    """1.5 is not an integer: refused, naming the row (the value only in the opt-in detail)."""
    with pytest.raises(SchemaError) as info:
        coerce_one("int", [1.0, 1.5])
    assert "row 1" in info.value.message and "1.5" not in info.value.message
    assert "1.5" in info.value.describe(echo=True)


@pytest.mark.parametrize("value", [1e20, 1e19, np.inf, -np.inf])
def test_int_rejects_out_of_range_float(value: float) -> None:
    """An integral float outside int64 (or infinity) is refused, not wrapped to a different integer."""
    with pytest.raises(SchemaError, match="row 0"):
        coerce_one("int", [value, 2.0])


def test_int_rejects_uint64_overflow() -> None:
    """A uint64 value above int64's range is refused, not wrapped to a negative number."""
    with pytest.raises(SchemaError):
        coerce_one("int", np.array([2**64 - 1, 1], dtype=np.uint64))


def test_int_from_json_float_literals_via_decode() -> None:
    """A JSON body with integral float literals for an int column gives the same integers."""
    df = decode(b'{"x": [1.0, 2e3, -7.0]}', "application/json")
    s = Schema({"x": "int"}).coerce(df)["x"]
    assert s.dtype == np.int64 and s.tolist() == [1, 2000, -7]


# --- string ----------------------------------------------------------------------------------


def test_string_from_ints() -> None:
    """Integers in a string column become their decimal text."""
    s = coerce_one("string", [123, 7], dtype=object)
    assert s.tolist() == ["123", "7"]


def test_string_rejects_floats() -> None:
    """Floats are not turned into strings (1.5 -> '1.5' would guess a format)."""
    with pytest.raises(SchemaError, match="not a string"):
        coerce_one("string", [1.5, 2.0])


def test_string_keeps_none_as_missing() -> None:
    """None in a string column stays missing (not the text 'None')."""
    s = coerce_one("string", ["a", None], dtype=object)
    assert s.iloc[0] == "a"
    assert pd.isna(s.iloc[1])
    s = coerce_one("string", [5, None], dtype=object)
    assert s.iloc[0] == "5" and pd.isna(s.iloc[1])


def test_string_from_json_ints_with_null() -> None:
    """JSON records with ints and a null in a string column give '123' and a missing value."""
    df = decode(b'[{"s": 123}, {"s": null}]', "application/json")
    s = Schema({"s": "string"}).coerce(df)["s"]
    assert s.iloc[0] == "123" and pd.isna(s.iloc[1])


# --- bool and any ----------------------------------------------------------------------------


def test_bool_accepts_true_false_0_1_text() -> None:
    """true/false, 0/1 and "true"/"false" map to booleans."""
    s = coerce_one("bool", [True, False, 0, 1, "true", "false", "1", "0"], dtype=object)
    assert s.dtype == bool
    assert s.tolist() == [True, False, False, True, True, False, True, False]


def test_bool_rejects_other_text() -> None:
    """'yes' is not a boolean: refused naming the row and type (the value only in the opt-in detail)."""
    with pytest.raises(SchemaError, match="row 1: a str value is not a boolean") as info:
        coerce_one("bool", ["true", "yes"])
    assert "yes" not in info.value.message and "'yes'" in info.value.describe(echo=True)


def test_any_passes_through() -> None:
    """An "any" column is handed on unchanged, whatever it holds."""
    values = [1, "two", {"three": 3}, None]
    s = coerce_one("any", values, dtype=object)
    assert s.tolist() == values


# --- infer_schema ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame() -> tuple[pd.DataFrame, list[int]]:
    X = pd.DataFrame({
        "age": [20.0, 30.0, 40.0, 50.0],
        "n": [1, 2, 3, 4],
        "city": ["a", "b", "a", "c"],
        "text": ["spam eggs", "ham", "spam", "eggs ham"],
    })
    return X, [0, 1, 0, 1]


def test_infer_scaler_and_onehot(frame: tuple[pd.DataFrame, list[int]]) -> None:
    """Scaled numeric columns infer float, one-hot encoded text columns infer string."""
    X, y = frame
    model = Pipeline([
        ("ct", ColumnTransformer([
            ("num", StandardScaler(), ["age", "n"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ])),
        ("lr", LogisticRegression()),
    ]).fit(X[["age", "n", "city"]], y)
    assert infer_schema(model) == {"age": "float", "n": "float", "city": "string"}


def test_infer_tfidf_in_column_transformer(frame: tuple[pd.DataFrame, list[int]]) -> None:
    """A TfidfVectorizer column infers string."""
    X, y = frame
    model = Pipeline([
        ("ct", ColumnTransformer([("txt", TfidfVectorizer(), "text"), ("num", StandardScaler(), ["age"])])),
        ("lr", LogisticRegression()),
    ]).fit(X[["text", "age"]], y)
    assert infer_schema(model) == {"text": "string", "age": "float"}


def test_infer_bare_estimator_on_dataframe(frame: tuple[pd.DataFrame, list[int]]) -> None:
    """A bare estimator fitted on a DataFrame infers float for every column, in order."""
    X, y = frame
    schema = infer_schema(LogisticRegression().fit(X[["n", "age"]], y))
    assert schema == {"n": "float", "age": "float"}
    assert list(schema) == ["n", "age"]


def test_infer_none_without_feature_names(frame: tuple[pd.DataFrame, list[int]]) -> None:
    """A model fitted on a numpy array has no column names: no schema."""
    X, y = frame
    assert infer_schema(LogisticRegression().fit(X[["age", "n"]].to_numpy(), y)) is None


# --- the JSON fast path agrees with the careful path -------------------------------------------

_EQUIVALENCE_CASES = [
    ("float", [1.0, 2.5]), ("float", [1, 2]), ("float", [1.0, None]), ("float", ["1.5", " 2 "]), ("float", ["abc"]),
    ("float", [True, 1.0]), ("float", [10**30, 1]), ("float", [None, None]),
    ("int", [1, 2]), ("int", [1, None]), ("int", [1.0, 2.0]), ("int", [1.5]), ("int", [2**70]), ("int", [True]),
    ("int", ["7", "8"]),
    ("string", ["a", "b"]), ("string", ["a", None]), ("string", [123, "x"]), ("string", [123, None]), ("string", [1.5]),
    ("string", [{"a": 1}]), ("bool", [True, False]), ("bool", [0, 1]), ("bool", ["true", "false"]), ("bool", ["maybe"]),
    ("any", [1, "x", None]),
]


@pytest.mark.parametrize(("kind", "values"), _EQUIVALENCE_CASES, ids=[f"{k}-{v!r}" for k, v in _EQUIVALENCE_CASES])
def test_json_lists_coerce_like_dataframes(kind: str, values: list) -> None:
    """A column straight from JSON (a list) gives the same values, dtype and errors as the same column
    in a DataFrame: the microsecond fast path never changes semantics."""
    schema = _Schema({"x": kind})

    def run(data: object) -> object:
        try:
            out = schema.coerce(data).columns["x"]  # type: ignore[arg-type]
            return np.asarray(out)
        except SchemaError as exc:
            return ("error", exc.message)

    from_list = run(Table({"x": values}, len(values)))
    from_frame = run(pd.DataFrame({"x": pd.Series(values, dtype=object)}))
    if isinstance(from_list, tuple) or isinstance(from_frame, tuple):
        assert from_list == from_frame
    else:
        assert from_list.dtype == from_frame.dtype
        np.testing.assert_array_equal(from_list, from_frame)


@pytest.mark.parametrize("kind", ["float", "int"])
@pytest.mark.parametrize("cells", [[[1, 2]], [[], None], [[None, None]], [1.0, [2.0]]], ids=repr)
def test_list_in_a_number_cell_is_a_schema_error(kind: str, cells: list) -> None:
    """A JSON list where a number belongs (``[{"a": [1, 2]}]``) is a SchemaError naming the column and
    row, as from a DataFrame, never a 2-d column that fails later as a 500."""
    for data in (Table({"x": cells, "y": [1.0] * len(cells)}, len(cells)),
                 pd.DataFrame({"x": pd.Series(cells, dtype=object), "y": [1.0] * len(cells)})):
        with pytest.raises(SchemaError, match="column 'x': row [01]: a list value is not a") as info:
            _Schema({"x": kind, "y": "float"}).coerce(data)
        assert info.value.columns == ["x"]


def test_list_in_a_number_cell_of_a_request_is_a_schema_error() -> None:
    """The bodies schemathesis found answered 500: records and positional rows with a list in a float cell."""
    schema = _Schema({"a": "float", "b": "int", "s": "string"})
    for body in (b'[{"a": [1, 2], "b": 0, "s": ""}]', b'{"inputs": [{"a": [null, null], "b": 0, "s": ""}]}'):
        with pytest.raises(SchemaError, match="column 'a'"):
            schema.coerce(decode_table(body, "application/json", list(schema.columns)))
    with pytest.raises(SchemaError, match="column 'a'"):
        schema.coerce(decode_table(b'[[[], null, null]]', "application/json", list(schema.columns)))
