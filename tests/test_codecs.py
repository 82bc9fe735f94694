"""Request bodies to tables (decode), Accept negotiation, and tables to response bodies (encode)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scorer.codecs import (
    ARROW_FILE,
    ARROW_STREAM,
    CSV,
    JSON,
    PARQUET,
    encode,
    json_predictions,
    negotiate,
)
from scorer.codecs import decode as decode_table
from scorer.errors import MalformedBody, NotAcceptable, UnsupportedMediaType


def decode(*args: object) -> pd.DataFrame:
    """The decoded request as a DataFrame (decode itself returns the light columnar Table)."""
    return decode_table(*args).to_frame()  # type: ignore[arg-type]

FRAME = pd.DataFrame({"a": [1.0, 2.5], "s": ["x", "y"]})


def assert_frame(df: pd.DataFrame, expected: pd.DataFrame = FRAME) -> None:
    """Same columns, same values, row by row (dtype backends may differ)."""
    assert list(df.columns) == list(expected.columns)
    assert df.astype(object).values.tolist() == expected.astype(object).values.tolist()


def strict_json(body: bytes) -> object:
    """Parse as RFC 8259 JSON: NaN / Infinity literals are an error."""

    def refuse(name: str) -> object:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(body, parse_constant=refuse)


def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def arrow_file(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# --- decode: JSON shapes ---------------------------------------------------------------------


@pytest.mark.parametrize("orient", ["split", "records", "columns"])
def test_decode_pandas_orients(orient: str) -> None:
    """pandas ``to_json`` output in split / records / columns orient decodes back to the frame."""
    assert_frame(decode(FRAME.to_json(orient=orient).encode(), JSON))


def test_decode_one_flat_object_is_one_row() -> None:
    """``{"col": value}`` is one row."""
    assert_frame(decode(b'{"a": 1.0, "s": "x"}', JSON), FRAME.iloc[:1])


def test_decode_columnar_dict_of_lists() -> None:
    """``{"col": [values]}`` is a column per key."""
    assert_frame(decode(b'{"a": [1.0, 2.5], "s": ["x", "y"]}', JSON))


@pytest.mark.parametrize(
    "body",
    [
        b'{"dataframe_split": {"columns": ["a", "s"], "data": [[1.0, "x"], [2.5, "y"]]}}',
        b'{"dataframe_records": [{"a": 1.0, "s": "x"}, {"a": 2.5, "s": "y"}]}',
        b'{"instances": [{"a": 1.0, "s": "x"}, {"a": 2.5, "s": "y"}]}',
        b'{"inputs": {"a": [1.0, 2.5], "s": ["x", "y"]}}',
        b'{"inputs": [{"a": 1.0, "s": "x"}, {"a": 2.5, "s": "y"}]}',
    ],
    ids=["dataframe_split", "dataframe_records", "instances-records", "inputs-columnar", "inputs-records"],
)
def test_decode_mlflow_envelopes(body: bytes) -> None:
    """MLflow's serving envelopes decode to the same frame."""
    assert_frame(decode(body, JSON))


def test_decode_instances_rows_use_schema_columns() -> None:
    """``instances`` as lists of values take the schema's column names."""
    assert_frame(decode(b'{"instances": [[1.0, "x"], [2.5, "y"]]}', JSON, ["a", "s"]))


def test_decode_rows_without_columns_refused() -> None:
    """Lists of values with no known schema cannot be named: MalformedBody."""
    with pytest.raises(MalformedBody):
        decode(b"[[1.0, 2.0]]", JSON)


def test_decode_json_with_charset() -> None:
    """``application/json; charset=utf-8`` is JSON."""
    assert_frame(decode(FRAME.to_json(orient="records").encode(), "application/json; charset=utf-8"))


# --- decode: CSV, Parquet, Arrow -------------------------------------------------------------


def test_decode_csv_with_header() -> None:
    """CSV with a header row decodes, numbers as numbers."""
    assert_frame(decode(b"a,s\n1.0,x\n2.5,y\n", CSV))


def test_decode_csv_header_absent_uses_columns() -> None:
    """``text/csv; header=absent`` takes the schema's column order."""
    df = decode(b"1.0,x\n2.5,y\n", "text/csv; header=absent", ["a", "s"])
    assert_frame(df)


def test_decode_csv_header_absent_without_columns_refused() -> None:
    """Headerless CSV with no known schema is MalformedBody."""
    with pytest.raises(MalformedBody, match="header"):
        decode(b"1.0,x\n", "text/csv; header=absent")


@pytest.mark.parametrize("content_type", [PARQUET, "application/x-parquet"])
def test_decode_parquet(content_type: str) -> None:
    """A Parquet body written by pyarrow decodes."""
    assert_frame(decode(parquet(pa.Table.from_pandas(FRAME)), content_type))


@pytest.mark.parametrize("content_type", [ARROW_STREAM, ARROW_FILE])
@pytest.mark.parametrize("writer", [arrow_stream, arrow_file], ids=["stream", "file"])
def test_decode_arrow(content_type: str, writer) -> None:
    """Arrow IPC stream and file bodies decode under either Arrow media type."""
    assert_frame(decode(writer(pa.Table.from_pandas(FRAME)), content_type))


# --- decode: sniffing ------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "", "application/x-www-form-urlencoded", "text/plain"])
def test_sniff_json_when_type_missing_or_generic(content_type: str | None) -> None:
    """A JSON body with no or a generic Content-Type (curl -d) is read as JSON."""
    assert_frame(decode(FRAME.to_json(orient="records").encode(), content_type))


def test_sniff_parquet_under_octet_stream() -> None:
    """``application/octet-stream`` with Parquet magic bytes is read as Parquet."""
    assert_frame(decode(parquet(pa.Table.from_pandas(FRAME)), "application/octet-stream"))


@pytest.mark.parametrize("writer", [arrow_stream, arrow_file], ids=["stream", "file"])
def test_sniff_arrow_without_content_type(writer) -> None:
    """Arrow stream and file bodies are recognised by their bytes."""
    assert_frame(decode(writer(pa.Table.from_pandas(FRAME)), None))


def test_sniff_unknown_bytes_unsupported() -> None:
    """Bytes that are none of our formats, untyped, are 415 not a guess."""
    with pytest.raises(UnsupportedMediaType):
        decode(b"a,s\n1,x\n", None)


# --- decode: errors --------------------------------------------------------------------------


def test_vendor_curl_body_unquoted_keys() -> None:
    """The shell-mangled curl body is MalformedBody saying it is not valid JSON, with a quoting hint."""
    body = b"{feature1: 1.0,feature2: this is spam,feature3: 2.0}"
    with pytest.raises(MalformedBody) as info:
        decode(body, "application/x-www-form-urlencoded")
    assert "not valid JSON" in info.value.message
    assert "double quotes" in info.value.message


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_infinity_literals_refused(literal: bytes) -> None:
    """NaN / Infinity are not JSON: MalformedBody."""
    with pytest.raises(MalformedBody):
        decode(b'{"a": [1.0, ' + literal + b"]}", JSON)


def test_deep_nesting_is_malformed_not_recursion_error() -> None:
    """100,000 nested brackets give MalformedBody (a RecursionError would be a 500)."""
    with pytest.raises(MalformedBody):
        decode(b"[" * 100_000, JSON)
    with pytest.raises(MalformedBody):
        decode(b"[" * 100_000 + b"]" * 100_000, JSON)


def test_million_digit_integer_refused() -> None:
    """A million-digit integer is MalformedBody."""
    with pytest.raises(MalformedBody):
        decode(b'{"a": [1' + b"0" * 1_000_000 + b"]}", JSON)


@pytest.mark.parametrize("content_type", [JSON, None, CSV])
def test_empty_body(content_type: str | None) -> None:
    """An empty body is MalformedBody, whatever the type."""
    with pytest.raises(MalformedBody, match="empty"):
        decode(b"", content_type)


def test_empty_json_object_refused() -> None:
    """``{}`` has no rows: MalformedBody."""
    with pytest.raises(MalformedBody):
        decode(b"{}", JSON)


def test_split_row_of_wrong_width() -> None:
    """A split row with more values than columns names the row."""
    with pytest.raises(MalformedBody, match="row 1"):
        decode(b'{"columns": ["a", "b"], "data": [[1, 2], [1, 2, 3]]}', JSON)


def test_columnar_lists_of_different_lengths() -> None:
    """Columnar JSON whose lists differ in length is MalformedBody."""
    with pytest.raises(MalformedBody, match="different lengths"):
        decode(b'{"a": [1, 2], "b": [1]}', JSON)


def test_envelope_with_extra_key() -> None:
    """An envelope must be alone; an extra key is named in the error."""
    with pytest.raises(MalformedBody, match="params"):
        decode(b'{"instances": [{"a": 1}], "params": {"x": 1}}', JSON)


def test_json_scalar_body_refused() -> None:
    """A bare JSON scalar is not a table."""
    with pytest.raises(MalformedBody):
        decode(b"42", JSON)


def test_xml_unsupported() -> None:
    """``application/xml`` is 415."""
    with pytest.raises(UnsupportedMediaType):
        decode(b"<rows/>", "application/xml")


@pytest.mark.parametrize("body", [b"\x00\x01not parquet", b"PAR1garbagePAR1"])
def test_bad_parquet_bytes(body: bytes) -> None:
    """Bytes that are not Parquet, even with the magic, are MalformedBody."""
    with pytest.raises(MalformedBody):
        decode(body, PARQUET)


def test_bad_arrow_bytes() -> None:
    """Bytes that are not Arrow IPC are MalformedBody."""
    with pytest.raises(MalformedBody):
        decode(b"not arrow at all", ARROW_STREAM)


# --- negotiate -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),
        ("", JSON),
        ("*/*", JSON),
        ("application/json", JSON),
        ("text/csv", CSV),
        (ARROW_STREAM, ARROW_STREAM),
        (ARROW_FILE, ARROW_FILE),
        (PARQUET, PARQUET),
        ("text/csv;q=0.5, application/vnd.apache.parquet", PARQUET),
        ("application/vnd.apache.parquet;q=0.2, text/csv;q=0.9", CSV),
        ("application/json;q=0, text/csv;q=0.1", CSV),
        ("text/html, application/xml, */*;q=0.1", JSON),
    ],
)
def test_negotiate(accept: str | None, expected: str) -> None:
    """Accept picks the best-q format we can produce; none or */* gives JSON."""
    assert negotiate(accept) == expected


@pytest.mark.parametrize("accept", ["application/xml", "text/html, image/png;q=0.5", "application/json;q=0"])
def test_negotiate_unsupported(accept: str) -> None:
    """An Accept listing only formats we cannot produce is NotAcceptable."""
    with pytest.raises(NotAcceptable):
        negotiate(accept)


# --- encode ----------------------------------------------------------------------------------


def test_one_column_gives_list_of_scalars() -> None:
    """One output column encodes as a plain list of values."""
    assert strict_json(json_predictions(pd.DataFrame({"prediction": [1, 0]}))) == {"predictions": [1, 0]}


def test_many_columns_give_objects() -> None:
    """Several output columns encode as one object per row."""
    frame = pd.DataFrame({"prediction": ["spam", "ham"], "probability_spam": [0.9, 0.2]})
    assert strict_json(json_predictions(frame)) == {
        "predictions": [
            {"prediction": "spam", "probability_spam": 0.9},
            {"prediction": "ham", "probability_spam": 0.2},
        ]
    }


def test_nan_and_infinities_become_null() -> None:
    """NaN, inf and -inf encode as null and the body is strict JSON."""
    frame = pd.DataFrame({"p": [np.nan, np.inf, -np.inf, 1.5], "q": np.array([np.nan, 1, 2, 3], dtype=np.float32)})
    out = strict_json(json_predictions(frame))
    assert out == {"predictions": [
        {"p": None, "q": None}, {"p": None, "q": 1.0}, {"p": None, "q": 2.0}, {"p": 1.5, "q": 3.0},
    ]}


def test_nan_in_object_column_becomes_null() -> None:
    """NaN (float and numpy float32) and None in an object column encode as null."""
    frame = pd.DataFrame({"p": pd.Series([float("nan"), np.float32("nan"), None, "x"], dtype=object)})
    assert strict_json(json_predictions(frame)) == {"predictions": [None, None, None, "x"]}


def test_numpy_scalars_serialize() -> None:
    """numpy ints, floats and bools (typed or in object columns) encode as JSON numbers and booleans."""
    frame = pd.DataFrame({
        "i": np.array([1, 2], dtype=np.int32),
        "b": np.array([True, False]),
        "o": pd.Series([np.int64(7), np.bool_(True)], dtype=object),
        "f": pd.Series([np.float64(0.5), np.float32(0.25)], dtype=object),
    })
    assert strict_json(encode(frame, JSON)) == {"predictions": [
        {"i": 1, "b": True, "o": 7, "f": 0.5},
        {"i": 2, "b": False, "o": True, "f": 0.25},
    ]}


@pytest.mark.parametrize("mt", [CSV, ARROW_STREAM, ARROW_FILE, PARQUET])
def test_round_trip_through_decode(mt: str) -> None:
    """CSV, Arrow and Parquet responses decode back to an equal frame."""
    frame = pd.DataFrame({"prediction": ["spam", "ham", "eggs"], "score": [0.9, 0.1, 0.5], "n": [1, 2, 3]})
    back = decode(encode(frame, mt), mt)
    assert_frame(back, frame)
    assert back["n"].dtype.kind == "i" and back["score"].dtype.kind == "f"


def test_csv_missing_value_round_trip() -> None:
    """A NaN in a CSV response comes back as a missing value."""
    back = decode(encode(pd.DataFrame({"p": [1.0, math.nan]}), CSV), CSV)
    assert back["p"].iloc[0] == 1.0 and math.isnan(back["p"].iloc[1])
