"""Request bodies to tables (decode), Accept negotiation, and tables to response bodies (encode)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scorer._columnar_limits import expanded_nbytes
from scorer.codecs import (
    ARROW_FILE,
    ARROW_STREAM,
    CSV,
    JSON,
    PARQUET,
    Limits,
    encode,
    json_predictions,
    negotiate,
)
from scorer.codecs import decode as decode_table
from scorer.errors import MalformedBody, NotAcceptable, PayloadTooLarge, UnsupportedMediaType
from scorer.table import Table

pytestmark = pytest.mark.fast

LIMITS = Limits(max_rows=1_000_000, max_columns=10_000, max_bytes=64 << 20)  # the server's defaults


def decode(*args: object, limits: Limits = LIMITS) -> pd.DataFrame:
    """The decoded request as a DataFrame (decode itself returns the light columnar Table)."""
    return decode_table(*args, limits=limits).to_frame()  # type: ignore[arg-type]

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
    return parquet_with(table)


def parquet_with(table: pa.Table, **options: object) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)  # type: ignore[arg-type]
    return sink.getvalue().to_pybytes()


def ipc_with(table: pa.Table, *, file: bool = False, compression: str | None = None, max_chunksize: int | None = None,
             extra_batches: int = 0) -> bytes:
    """An IPC stream or file, optionally with compressed buffers, several batches, repeated batches."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with (pa.ipc.new_file if file else pa.ipc.new_stream)(sink, table.schema, options=options) as writer:
        for _ in range(1 + extra_batches):
            writer.write_table(table, max_chunksize=max_chunksize)
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


# --- decode: columnar limits (rows, columns, decoded size) ----------------------------------

MIB = 1 << 20
SMALL = Limits(max_rows=1000, max_columns=10, max_bytes=8 * MIB)


def one_big_string(rows: int, size: int = MIB) -> pa.DictionaryArray:
    """``rows`` references to one ``size``-byte string: small dictionary-encoded, big expanded."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array(["x" * size]))


def too_large(body: bytes, content_type: str, limits: Limits = SMALL) -> str:
    with pytest.raises(PayloadTooLarge) as info:
        decode_table(body, content_type, limits=limits)
    assert "\n" not in info.value.message
    return info.value.message


def test_parquet_dictionary_expansion_is_refused_before_expanding() -> None:
    """100 rows of one 1 MiB string (~1 KiB of zstd Parquet, 100 MiB as a plain column): its expanded
    size is counted on the dictionary, over the 8 MiB cap: 413 naming max_body_bytes."""
    body = parquet_with(pa.table({"s": one_big_string(100)}), store_schema=False, compression="zstd")
    assert len(body) < 20_000
    message = too_large(body, PARQUET)
    assert "decode to 104858400 bytes" in message and "max_body_bytes" in message


def test_parquet_plain_pages_over_the_cap_are_refused_from_the_footer() -> None:
    """Plain-encoded, compressed strings whose uncompressed pages exceed the cap: refused from the
    column chunks' sizes in the footer."""
    table = pa.table({"s": pa.array(["y" * MIB] * 10)})
    body = parquet_with(table, use_dictionary=False, compression="zstd")
    assert len(body) < 100_000
    assert "read from the Parquet footer" in too_large(body, PARQUET)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value >> 7 else 0))
        value >>= 7
        if not value:
            return bytes(out)


def test_parquet_footer_understating_its_pages_is_refused_from_the_page_headers() -> None:
    """A footer whose column chunk claims 1,000 uncompressed bytes for pages that decompress to
    20 MiB (the reader trusts each page header, not the footer): refused from the page headers,
    before any page is decompressed."""
    body = parquet_with(pa.table({"s": pa.array(["w" * MIB] * 20)}), use_dictionary=False, compression="zstd",
                        store_schema=False)
    claimed = pq.ParquetFile(pa.BufferReader(body)).metadata.row_group(0).column(0).total_uncompressed_size
    true_size = _varint(claimed << 1)  # Thrift compact: zigzag varint
    lie = bytearray(_varint(1000 << 1))
    lie = bytes(b | 0x80 for b in lie) + b"\x80" * (len(true_size) - len(lie) - 1) + b"\x00"  # same length, over-long
    footer_start = len(body) - 8 - int.from_bytes(body[-8:-4], "little")
    at = body.index(true_size, footer_start)
    lying = body[:at] + lie + body[at + len(true_size) :]
    assert pq.ParquetFile(pa.BufferReader(lying)).metadata.row_group(0).column(0).total_uncompressed_size == 1000
    message = too_large(lying, PARQUET)
    assert "read from the Parquet page headers" in message and "max_body_bytes" in message


@pytest.mark.parametrize(("table", "word"), [
    (pa.table({"a": np.zeros(1001)}), "1001 rows exceed the limit of 1000"),
    (pa.table({f"c{i}": [1] for i in range(11)}), "11 columns exceed the limit of 10"),
], ids=["rows", "columns"])
def test_parquet_rows_and_columns_are_counted_from_the_footer(table: pa.Table, word: str) -> None:
    message = too_large(parquet(table), PARQUET)
    assert word in message and "read from the Parquet footer" in message


@pytest.mark.parametrize("file", [False, True], ids=["stream", "file"])
def test_arrow_compressed_buffers_over_the_cap_are_refused_from_metadata(file: bool) -> None:
    """zstd-compressed IPC buffers are counted at their decompressed length (read from each buffer's
    prefix), before anything is decompressed."""
    table = pa.table({"s": pa.array(["z" * MIB] * 10)})
    body = ipc_with(table, file=file, compression="zstd")
    assert len(body) < 10_000
    message = too_large(body, ARROW_FILE if file else ARROW_STREAM)
    assert "read from the Arrow IPC metadata" in message and "max_body_bytes" in message


@pytest.mark.parametrize("file", [False, True], ids=["stream", "file"])
def test_arrow_rows_are_counted_from_the_batches(file: bool) -> None:
    body = ipc_with(pa.table({"a": np.zeros(600)}), file=file, max_chunksize=300, extra_batches=1)
    message = too_large(body, ARROW_STREAM)
    assert "1200 rows exceed the limit of 1000" in message and "Arrow IPC metadata" in message


@pytest.mark.parametrize("column", [
    one_big_string(100),
    pa.RunEndEncodedArray.from_arrays([100], ["r" * MIB]),
], ids=["dictionary", "run-end-encoded"])
@pytest.mark.parametrize("file", [False, True], ids=["stream", "file"])
def test_arrow_encoded_columns_are_measured_expanded(column: pa.Array, file: bool) -> None:
    """An uncompressed IPC body decodes zero-copy, but 100 references to a 1 MiB value expand to
    100 MiB: refused after validation, before to_pandas."""
    body = ipc_with(pa.table({"s": column}), file=file)
    message = too_large(body, ARROW_STREAM)
    assert "before expanding" in message and "max_body_bytes" in message


def test_arrow_string_view_sharing_one_buffer_is_measured_expanded() -> None:
    """String views may all point at one long value: counted at their lengths, not their buffers."""
    value = pa.py_buffer(b"v" * MIB)
    view = np.array([MIB, int.from_bytes(b"vvvv", "little"), 0, 0], dtype=np.int32).tobytes()  # length, prefix, buffer 0
    shared = pa.Array.from_buffers(pa.string_view(), 20, [None, pa.py_buffer(view * 20), value])
    body = ipc_with(pa.table({"s": shared}))
    assert len(body) < 2 * MIB
    assert "before expanding" in too_large(body, ARROW_STREAM)


def test_expanded_nbytes_counts_values_as_numpy_and_python_hold_them() -> None:
    table = pa.table({
        "f": pa.array([1.0, 2.0, None]),                       # 3 x 8
        "b": pa.array([True, False, True]),                    # 3 x 1
        "s": pa.array(["ab", None, "cde"]),                    # 5 + 3 x 8
        "d": pa.array(["xyz", "xyz", None]).dictionary_encode(),  # 3 + 8, 3 + 8, null 8
        "l": pa.array([[1, 2], [], None], pa.list_(pa.int32())),  # 3 x 8 + 2 x 4
        "r": pa.RunEndEncodedArray.from_arrays([2, 3], ["aa", "b"]),  # (2 + 8) x 2 + (1 + 8)
    })
    assert expanded_nbytes(table) == 24 + 3 + (5 + 24) + (11 + 11 + 8) + (24 + 8) + (20 + 9)


def test_valid_columnar_bodies_keep_their_types() -> None:
    """Parquet strings (read dictionary-encoded to be measured) come back as plain strings and nested
    columns as before; Arrow dictionary columns give their values."""
    table = pa.table({"a": [1.0, 2.5], "s": ["x", None], "l": [["p", "q"], []], "st": [{"k": "v"}, {"k": None}],
                      "c": pa.array(["u", "u"]).dictionary_encode()})
    frame = decode(parquet_with(table, store_schema=False), PARQUET)
    assert frame["s"][0] == "x" and pd.isna(frame["s"][1]) and frame["s"].dtype == object
    assert [list(v) for v in frame["l"]] == [["p", "q"], []]
    assert frame["st"].tolist() == [{"k": "v"}, {"k": None}]
    assert frame["c"].tolist() == ["u", "u"]
    from_arrow = decode(arrow_stream(table), ARROW_STREAM)
    assert from_arrow["c"].tolist() == ["u", "u"] and from_arrow["a"].tolist() == [1.0, 2.5]
    assert from_arrow["s"][0] == "x" and pd.isna(from_arrow["s"][1])


TYPED = {
    "json": pa.array(['{"x": 1}', None], pa.json_()),
    "uuid": pa.array([b"0123456789abcdef", None], pa.uuid()),
    "large_string": pa.array(["x", None], pa.large_string()),
    "string_view": pa.array(["x", None], pa.string_view()),
    "binary": pa.array([b"x", None]),
    "map": pa.array([[("k", "v")], None], pa.map_(pa.string(), pa.string())),
    "list": pa.array([["p", None], []]),
    "struct": pa.array([{"k": "v", "n": 1}, None]),
    "dictionary": pa.array(["u", None]).dictionary_encode(),
    "decimal": pa.array([1, None], pa.decimal128(38, 2)),
    "date": pa.array([1, None], pa.date32()),
}


@pytest.mark.parametrize("name", sorted(TYPED))
@pytest.mark.parametrize("fmt", ["parquet", "stream", "file"])
def test_columnar_types_decode_as_a_plain_read_does(name: str, fmt: str) -> None:
    """Every column type decodes to the values a plain pyarrow read gives (Parquet strings are read
    dictionary-encoded to be measured and made plain again; extension, view and map columns too)."""
    table = pa.table({"a": [1.0, 2.0], "c": TYPED[name]})
    if fmt == "parquet":
        body, content_type = parquet(table), PARQUET
        plain = pq.read_table(pa.BufferReader(body))
    else:
        body, content_type = ipc_with(table, file=fmt == "file"), ARROW_FILE if fmt == "file" else ARROW_STREAM
        plain = (pa.ipc.open_file if fmt == "file" else pa.ipc.open_stream)(pa.BufferReader(body)).read_all()
    expected = Table.from_frame(plain.replace_schema_metadata(None).to_pandas()).to_frame()
    got = decode(body, content_type)
    assert repr(got["c"].tolist()) == repr(expected["c"].tolist()) and got["c"].dtype == expected["c"].dtype


def test_bodies_within_the_limits_decode() -> None:
    """At the limits exactly: 1000 rows, 10 columns, zstd-compressed Arrow and Parquet."""
    table = pa.table({f"c{i}": np.arange(1000, dtype=float) for i in range(10)})
    for body, content_type in [(parquet_with(table, compression="zstd"), PARQUET),
                               (ipc_with(table, compression="zstd"), ARROW_STREAM),
                               (ipc_with(table, file=True, compression="zstd"), ARROW_FILE)]:
        frame = decode(body, content_type, limits=SMALL)
        assert frame.shape == (1000, 10) and frame["c9"].tolist() == list(np.arange(1000, dtype=float))


def test_an_arrow_file_footer_pointing_elsewhere_is_malformed() -> None:
    """The messages checked are the ones the file reader decodes: a footer block that does not point
    at the start of a whole message is a 400, not a message checked in one place and read in another."""
    body = ipc_with(pa.table({"a": [1.0, 2.0]}), file=True)
    reader = pa.BufferReader(body)
    reader.seek(8)
    pa.ipc.read_message(reader)  # the schema
    batch = reader.tell().to_bytes(8, "little")
    footer_start = len(body) - 10 - int.from_bytes(body[-10:-6], "little")
    at = body.index(batch, footer_start)
    moved = body[:at] + (reader.tell() + 8).to_bytes(8, "little") + body[at + 8 :]
    with pytest.raises(MalformedBody):
        decode_table(moved, ARROW_FILE, limits=SMALL)


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
    """An envelope must be alone but for MLflow's params (kept with the table); another key is named in the error."""
    with pytest.raises(MalformedBody, match="extra"):
        decode(b'{"instances": [{"a": 1}], "extra": {"x": 1}}', JSON)
    table = decode_table(b'{"instances": [{"a": 1}], "params": {"x": 1}}', JSON)
    assert table.params == {"x": 1} and list(table.columns["a"]) == [1]
    with pytest.raises(MalformedBody, match="params"):
        decode(b'{"instances": [{"a": 1}], "params": [1]}', JSON)


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
