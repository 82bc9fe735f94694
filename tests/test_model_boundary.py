"""One coercion path at the model boundary: the same table sent as a JSON body or an Arrow body, or
read by ``scorer batch`` from a Parquet, JSON-lines or CSV file, reaches the model as the same frame
(same values, dtypes and Python types) and gives the same outputs; a bad value is refused with the
same message (a 422 online, a rejected row offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings

from scorer import codecs
from scorer.batch import chunks, worker
from scorer.core import Scorer
from scorer.errors import SchemaError
from scorer.batch.files import read_chunks
from scorer.table import Table

pytestmark = pytest.mark.fast

# The model shows what it was given: per column the values (repr), the dtype and the Python types.
SHOW_INPUT = """
import pandas as pd
import scorer

class CustomPreprocessor(scorer.CustomPreprocessor):
    def predict(self, df):
        out = {}
        for c in df.columns:
            out[c] = [repr(v) for v in df[c].tolist()]
            out[c + ":dtype"] = [str(df[c].dtype)] * len(df)
            out[c + ":type"] = [type(v).__name__ for v in df[c].to_numpy()]
        return pd.DataFrame(out)
"""

TYPED = {"f": "float", "fi": "float", "i": "int", "b": "bool", "s": "string", "si": "string", "x": "any"}
TEXT = {"f": "float", "i": "int", "b": "bool", "s": "string"}
ARROW_TYPES = {"f": pa.float64(), "fi": pa.int64(), "i": pa.int64(), "b": pa.bool_(), "s": pa.string(),
               "si": pa.int64(), "x": pa.string()}
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _bundle(root: Path, schema: dict[str, str]) -> Scorer:
    (root / "artifacts").mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "custom_preprocess.py").write_text(SHOW_INPUT)
    (root / "manifest.json").write_text(json.dumps({"input_schema": schema}))
    return Scorer.load(root)


@pytest.fixture(scope="module")
def typed(tmp_path_factory: pytest.TempPathFactory) -> Scorer:
    return _bundle(tmp_path_factory.mktemp("typed") / "b", TYPED)


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Scorer:
    return _bundle(tmp_path_factory.mktemp("text") / "b", TEXT)


def online(scorer: Scorer, body: bytes, media: str) -> list[dict[str, Any]] | str:
    """What a request gets: the model's output rows, or the 422's message."""
    try:
        table = scorer.prepare(codecs.decode(body, media, list(scorer.schema.columns)))
    except SchemaError as exc:
        return exc.message
    return Table.from_output(scorer.predict(table)).to_arrow().to_pylist()


def offline(scorer: Scorer, path: Path, fmt: str, chunk_rows: int) -> list[tuple[list[dict[str, Any]], list[tuple[int, str]]]]:
    """Per chunk of ``scorer batch``: the output rows and the rejected rows (row, reason)."""
    worker.use(scorer)
    results = []
    for chunk in read_chunks(path, fmt, chunk_rows):
        result = chunks.score_chunk(chunk, "none", first_error_only=False)
        assert result.error is None, result.error
        rows = [] if result.table is None else result.table.to_pylist()
        results.append((rows, [(bad.row, bad.reason) for bad in result.bad]))
    return results


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def write(table: pa.Table, records: list[dict[str, Any]], directory: Path) -> dict[str, Path]:
    paths = {"parquet": directory / "in.parquet", "jsonl": directory / "in.jsonl"}
    pq.write_table(table, paths["parquet"])
    paths["jsonl"].write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return paths


# --- valid tables: nulls, ints in float columns, ints in string columns ---------------------------

SAFE_INT = st.integers(-(2**53), 2**53)  # ints with nulls travel as float64 in Arrow: exact up to 2**53
TYPED_VALUES = {
    "f": st.none() | st.floats(allow_nan=False, allow_infinity=False),
    "fi": st.none() | SAFE_INT,
    "i": st.none() | SAFE_INT,
    "b": st.booleans(),
    "s": st.none() | st.text(max_size=5),
    "si": st.none() | SAFE_INT,
    "x": st.text(max_size=5),  # "any" passes values through: an all-null Arrow string column stays NaN
}


@st.composite
def typed_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 8))
    return [{c: draw(values) for c, values in TYPED_VALUES.items()} for _ in range(n)]


@HYPOTHESIS
@given(rows=typed_rows())
def test_valid_table_reaches_the_model_the_same_way_on_every_path(typed: Scorer, rows: list[dict[str, Any]],
                                                                  tmp_path: Path) -> None:
    columns = {c: [r[c] for r in rows] for c in TYPED}
    table = pa.table({c: pa.array(v, ARROW_TYPES[c]) for c, v in columns.items()})
    want = online(typed, orjson.dumps(columns), codecs.JSON)
    assert isinstance(want, list), want
    assert online(typed, orjson.dumps(rows), codecs.JSON) == want  # records
    assert online(typed, _ipc(table), codecs.ARROW_STREAM) == want
    for fmt, path in write(table, rows, tmp_path).items():
        assert offline(typed, path, fmt, chunk_rows=1000) == [(want, [])], fmt


def test_nulls_and_ints_in_float_columns_as_the_model_sees_them(typed: Scorer) -> None:
    """The examples behind the property, spelled out: ints with a null are float64 with NaN, ints in a
    float column are floats, ints in a string column are their decimal text (null stays None)."""
    columns = {"f": [1.5, None], "fi": [1, 2], "i": [3, None], "b": [True, False], "s": ["a", "b"],
               "si": [7, None], "x": ["p", "q"]}
    (row0, row1) = online(typed, orjson.dumps(columns), codecs.JSON)
    assert (row0["f"], row1["f"], row0["f:dtype"]) == ("1.5", "nan", "float64")
    assert (row0["fi"], row0["fi:dtype"]) == ("1.0", "float64")
    assert (row0["i"], row1["i"], row0["i:dtype"]) == ("3.0", "nan", "float64")
    assert (row0["si"], row1["si"], row0["si:type"], row1["si:type"]) == ("'7'", "None", "str", "NoneType")
    table = pa.table({c: pa.array(v, ARROW_TYPES[c]) for c, v in columns.items()})
    assert online(typed, _ipc(table), codecs.ARROW_STREAM) == [row0, row1]


def test_a_string_column_of_only_nulls_is_none_as_from_json(typed: Scorer) -> None:
    """Arrow nulls in a string column reach the model as None, as JSON nulls do, also when every value is null."""
    columns = {"f": [1.0, 2.0], "fi": [1, 2], "i": [3, 4], "b": [True, False], "s": [None, None], "si": [7, 8],
               "x": ["p", "q"]}
    want = online(typed, orjson.dumps(columns), codecs.JSON)
    assert [(r["s"], r["s:type"]) for r in want] == [("None", "NoneType")] * 2
    table = pa.table({c: pa.array(v, ARROW_TYPES[c]) for c, v in columns.items()})
    assert online(typed, _ipc(table), codecs.ARROW_STREAM) == want


def test_timestamps_reach_the_model_the_same_way_from_arrow_bodies_and_files(tmp_path: Path) -> None:
    """Timestamps have no schema type: an ``any`` column passes them through, as datetime64."""
    scorer = _bundle(tmp_path / "ts", {"t": "any", "f": "float"})
    table = pa.table({"t": pa.array([0, 86_400_000_000, None], pa.timestamp("us")), "f": [1.0, 2.0, 3.0]})
    want = online(scorer, _ipc(table), codecs.ARROW_STREAM)
    assert [r["t:dtype"] for r in want] == ["datetime64[us]"] * 3
    pq.write_table(table, tmp_path / "in.parquet")
    assert offline(scorer, tmp_path / "in.parquet", "parquet", chunk_rows=1000) == [(want, [])]


# --- text: numbers, booleans and junk as strings, one row at a time --------------------------------

TRICKY = ["1", "1.5", "-2", "1e3", " 7", "nan", "NaN", "inf", "-inf", "TRUE", "true", "True", "FALSE", "0", "1",
          "0x10", "abc", "", "+1", "5.", ".5", "1_0", "1.0", "9223372036854775808", "٣"]
TEXT_VALUE = st.sampled_from(TRICKY) | st.integers().map(str) | st.floats(allow_nan=False).map(repr)


@st.composite
def text_rows(draw: st.DrawFn) -> list[dict[str, str]]:
    n = draw(st.integers(1, 4))
    return [{c: draw(TEXT_VALUE) for c in TEXT} for _ in range(n)]


def reason(message: str) -> str:
    """An online 422 message as a rejected row's reason (which names the row apart)."""
    column, _, rest = message.partition(": row 0: ")
    return f"{column}: {rest}" if rest else message


@HYPOTHESIS
@given(rows=text_rows())
def test_text_values_are_accepted_or_refused_the_same_way_on_every_path(text: Scorer, rows: list[dict[str, str]],
                                                                        tmp_path: Path) -> None:
    """Each row alone: a JSON body, an Arrow body and a one-row chunk of a CSV, Parquet or JSON-lines file
    give the same model input, or the same refusal (the 422's message is the rejected row's reason)."""
    table = pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in TEXT})
    paths = write(table, rows, tmp_path)
    paths["csv"] = tmp_path / "in.csv"
    pacsv.write_csv(table, paths["csv"])
    per_path = {fmt: offline(text, path, fmt, chunk_rows=1) for fmt, path in paths.items()}
    for i, row in enumerate(rows):
        want = online(text, orjson.dumps({c: [v] for c, v in row.items()}), codecs.JSON)
        assert online(text, _ipc(table.slice(i, 1)), codecs.ARROW_STREAM) == want
        expected = (want, []) if isinstance(want, list) else ([], [(i, reason(want))])
        for fmt, results in per_path.items():
            assert results[i] == expected, (fmt, row)


def test_text_arrow_would_parse_but_the_schema_refuses_is_refused_offline_too(text: Scorer, tmp_path: Path) -> None:
    """Arrow's own cast reads TRUE, nan and 0x10; the schema does not, and a file's text column must not
    either: the row is rejected with the message a request gets."""
    rows = [{"f": "nan", "i": "1", "b": "true", "s": "a"}, {"f": "1", "i": "0x10", "b": "true", "s": "a"},
            {"f": "1", "i": "1", "b": "TRUE", "s": "a"}, {"f": "1.5", "i": "2", "b": "0", "s": "b"}]
    path = tmp_path / "in.csv"
    pacsv.write_csv(pa.Table.from_pylist(rows), path)
    [(good, bad)] = offline(text, path, "csv", chunk_rows=1000)
    assert bad == [(0, "column 'f': a str value is not a number"), (1, "column 'i': a str value is not a integer"),
                   (2, "column 'b': a str value is not a boolean")]
    assert [(r["f"], r["i"], r["b"]) for r in good] == [("1.5", "2", "False")]
    assert online(text, orjson.dumps(rows[0]), codecs.JSON) == "column 'f': row 0: a str value is not a number"


# --- replies -------------------------------------------------------------------------------------

OUTPUT_VALUES = {
    "float": st.lists(st.none() | st.floats(), min_size=3, max_size=3),
    "int": st.lists(st.integers(-(2**63), 2**63 - 1), min_size=3, max_size=3),
    "bool": st.lists(st.booleans(), min_size=3, max_size=3),
    "string": st.lists(st.none() | st.text(max_size=4), min_size=3, max_size=3),
    "objects": st.lists(st.none(), min_size=3, max_size=3),
}


@settings(max_examples=100, deadline=None)
@given(kinds=st.lists(st.sampled_from(sorted(OUTPUT_VALUES)), min_size=1, max_size=4), data=st.data())
def test_arrow_and_parquet_replies_are_the_bytes_the_dataframe_route_gave(kinds: list[str], data: st.DataObject) -> None:
    frame = pd.DataFrame({f"c{i}": pd.Series(data.draw(OUTPUT_VALUES[k]), dtype=object if k in ("string", "objects")
                                              else None) for i, k in enumerate(kinds)})
    result = Table.from_output(frame)
    for media in (codecs.ARROW_STREAM, codecs.ARROW_FILE, codecs.PARQUET):
        before = pa.Table.from_pandas(result.to_frame(), preserve_index=False)
        for _ in range(2):  # the second time, the metadata comes from the cache
            after = result.to_arrow()
            assert after.equals(before, check_metadata=True)
            assert after.schema.metadata == before.schema.metadata
        got = codecs.encode(result, media)
        assert got == codecs.encode(result.to_frame(), media)


def test_arrow_body_decodes_to_the_arrays_the_pandas_route_gave() -> None:
    table = pa.table({"i": pa.chunked_array([[1, None], [3]], pa.int32()), "u": pa.array([1, 2, 3], pa.uint64()),
                      "f": pa.array([1.5, None, 2.0], pa.float32()), "b": [True, False, True], "bn": [True, None, False],
                      "s": ["a", "b", "c"], "sn": ["a", None, "c"], "l": pa.array(["x", "y", "z"], pa.large_string()),
                      "d": pa.array(["u", "u", None]).dictionary_encode(), "t": pa.array([1, 2, None], pa.timestamp("ms"))})
    got = Table.from_arrow(table)
    want = Table.from_frame(table.to_pandas())
    for name in table.column_names:
        a, b = got[name], want[name]
        assert a.dtype == b.dtype and repr(a.tolist()) == repr(b.tolist()), name
    empty = Table.from_arrow(table.slice(0, 0))
    assert [v.dtype for v in empty.columns.values()] == [v.dtype for v in Table.from_frame(table.slice(0, 0).to_pandas()).columns.values()]
    assert np.asarray(got["s"]).dtype == object
