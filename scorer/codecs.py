"""Request bodies to tables and tables to response bodies. No HTTP framework in here.

Accepted request bodies (``decode``):

* JSON (``application/json``; also sniffed when the client sent no or a generic type):
  pandas ``to_json`` orients ``split`` / ``records`` / ``columns``, a columnar object
  ``{"col": [..]}``, one flat object ``{"col": value}`` meaning one row, and MLflow's
  envelopes ``dataframe_split`` / ``dataframe_records`` / ``instances`` / ``inputs``, each with
  MLflow's inference ``params`` beside it if the client sends them (they travel in ``Table.params``).
* ``text/csv``: with a header row, or without one (the schema's column order); see "CSV headers" below.
* JSON Lines (``application/jsonlines``; ``application/jsonl``, ``application/x-jsonlines``): one JSON
  object ``{column: value}`` per line, or one array per line in the schema's column order.
* Parquet (``application/vnd.apache.parquet``) and Arrow IPC stream or file
  (``application/vnd.apache.arrow.stream`` / ``.file``); also sniffed by their magic bytes.

Parquet and Arrow bodies are held to ``Limits`` (rows, columns, decoded size) read from their
metadata before they are decoded, and to their expanded size before they are converted
(:mod:`scorer._columnar_limits`); they become a Table by :meth:`Table.from_arrow`, and Arrow and
Parquet replies are made by :meth:`Table.to_arrow`, without a DataFrame in between where the types allow.

Responses (``encode``): ``{"predictions": [...]}`` JSON by default, or CSV / JSON Lines / Arrow /
Parquet when the ``Accept`` header asks for it. NaN and infinities always become ``null``.

pandas and pyarrow are imported by the codecs that use them, on first use: JSON bodies and JSON
answers of a model that scores columns need neither.

CSV headers (RFC 4180's ``header=present|absent`` parameter):

* Request: ``header=present`` or ``header=absent`` decides. Without it (SageMaker Batch Transform sends a
  bare ``text/csv``, and each of its mini-batches after the first has no header line), a bundle with an
  input schema has its first line read as a header when that line names every schema column (in any
  order, extra columns allowed), and also when its number of fields is not the schema's (so a header
  that lacks a column is still answered 422 naming it). Otherwise (as many fields as the schema has
  columns, not all of them schema names) the body is headerless, in the schema's column order. The
  one ambiguity: a data row whose values are exactly the column names (an all-text schema) is read as
  a header and not scored; a client that may send one says ``header=absent``. Without a schema the
  first line is always the header.
* Response: ``text/csv; header=absent`` is one line per row and no header line, written by Arrow's CSV
  writer as ``scorer batch`` writes its CSV files (strings quoted, ``true``/``false``), so its lines are
  byte for byte the data lines of ``scorer batch --keep-columns none``. ``text/csv; header=present``
  (and plain ``text/csv`` on ``/predict``) keeps the header line (written by pandas, as before).
  ``application/jsonlines`` is one JSON object ``{column: value}`` per row and line, for one output
  column too, again as ``scorer batch`` writes ``.jsonl``. Which form a plain ``text/csv`` ``Accept``
  gets is the caller's choice (:func:`negotiate`'s ``csv``): ``/invocations`` answers headerless.

Everything above is dispatched on the tables at the end of each section: :data:`DECODERS` (request
media type -> decoder; :data:`ALIASES` and :data:`SNIFFED` lead to them), :data:`JSON_SHAPES` and
:data:`ENVELOPES` (the JSON bodies), :data:`ENCODERS` and :data:`ACCEPT_RANGES` (``Accept`` ->
response media type). :mod:`scorer.serving.openapi` builds the HTTP API's description from the same tables,
so a codec or envelope added here is documented without further edits.
"""

from __future__ import annotations

import csv as pycsv
import dataclasses
import io
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from scorer._columnar_limits import Limits, check_expanded, read_arrow, read_parquet
from scorer.errors import MalformedBody, NotAcceptable, UnsupportedMediaType
from scorer.settings import Settings
from scorer.table import Table

if TYPE_CHECKING:  # imported by the codecs that need them: JSON in and out needs neither
    import pandas as pd
    import pyarrow as pa

JSON = "application/json"
CSV = "text/csv"
#: CSV without a header line: one line per row (SageMaker Batch Transform's ``AssembleWith=Line``).
CSV_LINES = "text/csv; header=absent"
JSONL = "application/jsonlines"
PARQUET = "application/vnd.apache.parquet"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
ARROW_FILE = "application/vnd.apache.arrow.file"

#: Other names clients use for the media types of :data:`DECODERS` and :data:`ENCODERS`.
ALIASES = {
    "text/json": JSON,
    "application/csv": CSV,
    "application/x-parquet": PARQUET,
    "application/parquet": PARQUET,
    "application/x-arrow": ARROW_STREAM,
    "application/vnd.apache.arrow": ARROW_STREAM,
    "application/jsonl": JSONL,
    "application/x-jsonlines": JSONL,
}
#: Types clients send when they did not choose one (requests' data=str, curl -d): look at the bytes.
SNIFFED = ("", "application/x-www-form-urlencoded", "text/plain", "application/octet-stream")


def media_type(header: str | None) -> tuple[str, dict[str, str]]:
    """``'Text/CSV; header=absent'`` -> ``('text/csv', {'header': 'absent'})``."""
    if not header:
        return "", {}
    main, *params = header.split(";")
    mt = main.strip().lower()
    mt = ALIASES.get(mt, mt)
    if mt.endswith("+json"):
        mt = JSON
    parsed = {}
    for p in params:
        key, _, value = p.partition("=")
        parsed[key.strip().lower()] = value.strip().strip('"').lower()
    return mt, parsed


def decode(body: bytes, content_type: str | None, columns: Sequence[str] | None = None, *,
           limits: Limits | None = None) -> Table:
    """Parse a request body into a Table. ``columns`` (the schema's order) serve headerless rows.
    Parquet and Arrow bodies beyond ``limits`` (default: the default settings') raise
    PayloadTooLarge before they are decoded."""
    mt, params = media_type(content_type)
    if mt in SNIFFED:
        mt = _sniff(body)
    decoder = DECODERS.get(mt)
    if decoder is None:
        raise UnsupportedMediaType(f"unsupported Content-Type {content_type!r}; send one of: {', '.join(DECODERS)}")
    try:
        return decoder.read(body, params, columns, limits)
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"the {mt} body is not valid UTF-8 (byte {exc.start})") from None


def is_columnar(body: bytes, content_type: str | None) -> bool:
    """Whether ``decode`` would read the body as Parquet or Arrow (never raises)."""
    mt, _ = media_type(content_type)
    if mt in SNIFFED:
        try:
            mt = _sniff(body)
        except UnsupportedMediaType:
            return False
    decoder = DECODERS.get(mt)
    return decoder is not None and decoder.columnar


def _sniff(body: bytes) -> str:
    head = body.lstrip()[:1]
    if body[:4] == b"PAR1":
        return PARQUET
    if body[:6] == b"ARROW1":
        return ARROW_FILE
    if body[:4] == b"\xff\xff\xff\xff":
        return ARROW_STREAM
    if head in (b"{", b"[") or not head:
        return JSON
    raise UnsupportedMediaType(
        "could not tell the body's format: set Content-Type to application/json, text/csv, "
        f"{PARQUET} or {ARROW_STREAM}"
    )


def _without_data(message: str) -> str:
    """Arrow's parse errors end with the offending row (``...got 4: <row>``): error bodies and logs
    must not carry request data, so keep only the description."""
    message = re.sub(r"invalid value '.*'", "invalid value", message, flags=re.S)
    head, sep, _ = message.partition(": ")
    if sep and re.match(r"CSV parse error$|Expected \d+ columns", head) is None:
        return message if len(message) <= 200 else message[:200] + "..."
    match = re.match(r"(CSV parse error: )?(.*?got \d+( columns)?)", message)
    return match.group(0) if match else head


# --- JSON ---------------------------------------------------------------------------------


def _decode_json(body: bytes, params: dict[str, str], columns: Sequence[str] | None) -> Table:
    if not body.strip():
        raise MalformedBody("request body is empty; send a JSON table")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        hint = ""
        if body.lstrip()[:1] == b"{" and b'"' not in body[:64]:
            hint = ' (keys and strings must be in double quotes: {"feature1": 1.0, "feature2": "text"}; check the shell quoting)'
        elif "after document" in str(exc) and b"\n" in body.strip():
            hint = f" (one JSON value per line? send Content-Type: {JSONL})"
        raise MalformedBody(f"request body is not valid JSON: {exc}{hint}") from None
    return table_from_json(obj, columns)


def table_from_json(obj: Any, columns: Sequence[str] | None = None) -> Table:
    """Any of the accepted JSON shapes (already parsed) to a Table of plain lists: an envelope of
    :data:`ENVELOPES` (its only key), else the first of :data:`JSON_SHAPES` that the value has."""
    if isinstance(obj, dict):
        present = [k for k in ENVELOPES if k in obj]
        if present:
            key = present[0]
            extra = sorted(k for k in obj if k not in (key, PARAMS))
            if extra:
                raise MalformedBody(f"the {key!r} envelope must be the only key besides {PARAMS!r}; "
                                    f"unsupported key(s): {extra}")
            table = ENVELOPES[key].parse(obj[key], columns)
            if PARAMS not in obj:
                return table
            params = obj[PARAMS]
            if not isinstance(params, dict):
                raise MalformedBody(f"{PARAMS!r} must be a JSON object of parameter names and values")
            return dataclasses.replace(table, params=params) if params else table
        if not obj:
            raise MalformedBody("request body is an empty JSON object; send at least one row")
    elif not isinstance(obj, list):
        raise MalformedBody(f"JSON body must be an object or an array, not {type(obj).__name__}")
    for shape in JSON_SHAPES:
        if shape.matches(obj):
            return shape.parse(obj, columns)
    if isinstance(obj, list):
        raise MalformedBody("a JSON array must hold only objects (records) or only arrays (rows)")
    raise MalformedBody(
        "JSON object mixes scalars, lists and objects; send one row {col: value}, columns "
        '{col: [values]}, records [{col: value}, ...] or pandas split {"columns": [...], "data": [[...]]}'
    )


def _from_rows(names: list[Any], rows: list[Any]) -> Table:
    width = len(names)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise MalformedBody(f"row {i} has {got} values for {width} columns")
    keys = [str(c) for c in names]
    if len(set(keys)) != len(keys):
        raise MalformedBody(f"duplicate column names: {sorted({k for k in keys if keys.count(k) > 1})}")
    transposed = list(zip(*rows, strict=True)) if rows else [() for _ in keys]
    return Table(dict(zip(keys, transposed, strict=True)), len(rows))  # columns as tuples


def _from_split(obj: Any) -> Table:
    if not isinstance(obj, dict) or not isinstance(obj.get("columns"), list) or not isinstance(obj.get("data"), list):
        raise MalformedBody('split JSON must be {"columns": [...], "data": [[...], ...]}')
    return _from_rows(obj["columns"], obj["data"])


def _from_records(rows: Any, columns: Sequence[str] | None) -> Table:
    if not isinstance(rows, list):
        raise MalformedBody("records must be a JSON array of objects")
    if not rows:
        return Table({c: [] for c in columns or []}, 0)
    if all(isinstance(r, dict) for r in rows):
        names = dict.fromkeys(k for r in rows for k in r)  # union of keys, first-seen order
        return Table({str(n): [r.get(n) for r in rows] for n in names}, len(rows))
    if all(isinstance(r, list) for r in rows):
        if not columns:
            raise MalformedBody("rows without column names need a model with a known input schema; send objects instead")
        for i, r in enumerate(rows):
            if len(r) != len(columns):
                raise MalformedBody(f"row {i} has {len(r)} values; the input schema has {len(columns)} columns")
        return _from_rows(list(columns), rows)
    raise MalformedBody("a JSON array must hold only objects (records) or only arrays (rows)")


def _from_columns_orient(obj: dict[str, Any]) -> Table:
    first = next(iter(obj.values()))
    index = list(first)
    for name, col in obj.items():
        if list(col) != index:
            raise MalformedBody(f"columns-oriented JSON: column {name!r} has different row keys than the first column")
    return Table({str(name): list(col.values()) for name, col in obj.items()}, len(index))


def _from_columnar(obj: dict[str, list[Any]], columns: Sequence[str] | None) -> Table:
    lengths = {len(v) for v in obj.values()}
    if len(lengths) != 1:
        raise MalformedBody(f"columnar JSON: columns have different lengths {sorted(lengths)}")
    return Table(obj, lengths.pop())


def _is_split(obj: Any) -> bool:
    return isinstance(obj, dict) and "data" in obj and "columns" in obj


def _values(obj: Any, kind: type | tuple[type, ...]) -> bool:
    return all(isinstance(v, kind) for v in (obj.values() if isinstance(obj, dict) else obj))


@dataclass(frozen=True)
class JsonShape:
    """One table shape a JSON body (or an envelope's value) may take."""

    name: str
    summary: str
    matches: Callable[[Any], bool]  # tried in table order; the first that matches parses
    parse: Callable[[Any, Sequence[str] | None], Table]
    needs_columns: bool = False  # only with a model whose input schema names the columns


@dataclass(frozen=True)
class Envelope:
    """MLflow's ``{key: value}`` wrapper: the body's only key, its value parsed by ``parse``."""

    key: str
    parse: Callable[[Any, Sequence[str] | None], Table]
    shapes: tuple[str, ...] | None  # the JSON_SHAPES names the value may take; None: any JSON body


#: The unwrapped JSON bodies, in the order they are recognised.
JSON_SHAPES: tuple[JsonShape, ...] = (
    JsonShape("split", 'pandas orient="split": {"columns": [...], "data": [[...], ...]}',
              _is_split, lambda obj, columns: _from_split(obj)),
    JsonShape("records", 'pandas orient="records": [{column: value}, ...]',
              lambda obj: isinstance(obj, list) and _values(obj, dict), _from_records),
    JsonShape("rows", "[[value, ...], ...] in the input schema's column order",
              lambda obj: isinstance(obj, list) and _values(obj, list), _from_records, needs_columns=True),
    JsonShape("columns", 'pandas orient="columns": {column: {index: value}}',
              lambda obj: isinstance(obj, dict) and _values(obj, dict), lambda obj, columns: _from_columns_orient(obj)),
    JsonShape("columnar", "{column: [values]}", lambda obj: isinstance(obj, dict) and _values(obj, list), _from_columnar),
    JsonShape("object", "one row: {column: value}",
              lambda obj: isinstance(obj, dict) and not any(isinstance(v, dict | list) for v in obj.values()),
              lambda obj, columns: Table({k: [v] for k, v in obj.items()}, 1)),
)

#: MLflow's key for inference parameters beside an envelope: ``{"dataframe_split": ..., "params": {...}}``.
PARAMS = "params"

#: The MLflow envelopes, by key.
ENVELOPES: dict[str, Envelope] = {e.key: e for e in (
    Envelope("dataframe_split", lambda inner, columns: _from_split(inner), ("split",)),
    Envelope("dataframe_records", _from_records, ("records", "rows")),
    Envelope("instances", table_from_json, None),
    Envelope("inputs", table_from_json, None),
)}


# --- binary and CSV -------------------------------------------------------------------------


def _decode_csv(body: bytes, params: dict[str, str], columns: Sequence[str] | None) -> Table:
    import pyarrow as pa
    from pyarrow import csv

    if not body.strip():
        raise MalformedBody("CSV body is empty; send a header line and rows")
    header = params.get("header")
    if header not in (None, "present", "absent"):
        raise UnsupportedMediaType("text/csv's header parameter must be 'present' or 'absent'")
    if header is None and columns:
        header = "present" if _is_header(_first_record(body), columns) else "absent"
    read = csv.ReadOptions()
    if header == "absent":
        if not columns:
            raise MalformedBody("headerless CSV needs a model with a known input schema; send a header line")
        read = csv.ReadOptions(column_names=list(columns))
    try:
        table = csv.read_csv(io.BytesIO(body), read_options=read)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise MalformedBody(f"CSV could not be parsed: {_without_data(str(exc))}") from None
    return _from_arrow(table)


def _first_record(body: bytes) -> list[str]:
    """The fields of the body's first non-blank CSV record (read lazily: a quoted field may span lines)."""
    text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8-sig", newline="")
    try:
        return next((row for row in pycsv.reader(text) if row), [])
    except pycsv.Error as exc:
        raise MalformedBody(f"CSV could not be parsed: the first line: {exc}") from None


def _is_header(fields: list[str], columns: Sequence[str]) -> bool:
    """Whether a bare ``text/csv`` body's first record is its header (see the module docstring)."""
    return set(columns) <= set(fields) or len(fields) != len(columns)


def _decode_jsonl(body: bytes, columns: Sequence[str] | None) -> Table:
    rows = []
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise MalformedBody(f"JSON Lines: line {number} is not valid JSON: {exc}") from None
    if not rows:
        raise MalformedBody("JSON Lines body is empty; send one JSON object per line")
    if not (all(isinstance(r, dict) for r in rows) or all(isinstance(r, list) for r in rows)):
        raise MalformedBody("JSON Lines: every line must be a JSON object {column: value}, or every line an array "
                            "in the input schema's column order")
    return _from_records(rows, columns)


def _columnar_limits(limits: Limits | None) -> Limits:
    """The limits a Parquet or Arrow body is held to: the caller's, else the default settings'."""
    return limits if limits is not None else Limits.of(Settings())


def _decode_parquet(body: bytes, limits: Limits | None) -> Table:
    """Footer checked first; string columns read dictionary-encoded, measured, then made plain."""
    import pyarrow as pa

    limits = _columnar_limits(limits)
    try:
        table, to_plain = read_parquet(body, limits)
    except (pa.ArrowException, OSError) as exc:
        raise MalformedBody(f"Parquet body could not be read: {exc}") from None
    return _from_arrow(table, limits, to_plain)


def _decode_arrow(body: bytes, limits: Limits | None) -> Table:
    """An IPC file (by its magic) or stream, checked from its metadata first."""
    import pyarrow as pa

    limits = _columnar_limits(limits)
    try:
        table = read_arrow(body, limits)
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise MalformedBody(f"Arrow IPC body could not be read: {exc}") from None
    return _from_arrow(table, limits)


def _from_arrow(table: pa.Table, limits: Limits | None = None,
                to_plain: Callable[[pa.Table], pa.Table] | None = None) -> Table:
    """A client's Arrow table as a Table. It is untrusted: its buffers are fully validated first (a
    corrupted IPC body otherwise crashed the process when read), then held to ``limits`` (its size
    with dictionaries, run-end encodings and views expanded; then made plain by ``to_plain`` if
    given), and its pandas metadata (JSON that ``to_pandas`` interprets) is dropped; pandas' index
    columns are dropped by name instead."""
    import pyarrow as pa

    try:
        table.validate(full=True)
    except (pa.ArrowException, ValueError) as exc:
        raise MalformedBody(f"the Arrow data is corrupt: {exc}") from None
    if limits is not None:
        check_expanded(table, limits)
    if to_plain is not None:
        try:
            table = to_plain(table)
            table.validate(full=True)
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise MalformedBody(f"the Parquet data could not be read: {exc}") from None
    names = table.column_names
    if len(set(names)) != len(names):
        raise MalformedBody(f"duplicate column names: {sorted({n for n in names if names.count(n) > 1})}")
    index = [n for n in names if re.fullmatch(r"__index_level_\d+__", n)]
    if index:
        table = table.drop_columns(index)
    try:
        return Table.from_arrow(table.replace_schema_metadata(None))
    except NotImplementedError as exc:  # types pandas cannot hold (unions, float16 categories): not a 500
        raise MalformedBody(f"the Arrow data cannot be converted: {exc}") from None


@dataclass(frozen=True)
class Decoder:
    """How one request media type becomes a Table."""

    read: Callable[[bytes, dict[str, str], Sequence[str] | None, Limits | None], Table]  # body, params, columns, limits
    binary: bool  # raw bytes (else text)
    columnar: bool = False  # held to Limits before decoding; decoded off the event loop
    params: dict[str, str] | None = None  # media type parameters it reads: name -> meaning


#: Request media type -> decoder (the order is the one error messages list them in).
DECODERS: dict[str, Decoder] = {
    JSON: Decoder(lambda body, params, columns, limits: _decode_json(body, params, columns), binary=False),
    CSV: Decoder(lambda body, params, columns, limits: _decode_csv(body, params, columns), binary=False,
                 params={"header": "'absent': no header line, the columns are the input schema's, in order; "
                                   "'present': the first line is the header; without it, with an input schema, the "
                                   "first line is the header when it names every schema column or has another "
                                   "number of fields than the schema has columns"}),
    JSONL: Decoder(lambda body, params, columns, limits: _decode_jsonl(body, columns), binary=False),
    PARQUET: Decoder(lambda body, params, columns, limits: _decode_parquet(body, limits), binary=True, columnar=True),
    ARROW_STREAM: Decoder(lambda body, params, columns, limits: _decode_arrow(body, limits), binary=True, columnar=True),
    ARROW_FILE: Decoder(lambda body, params, columns, limits: _decode_arrow(body, limits), binary=True, columnar=True),
}


# --- responses ------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    pandas = sys.modules.get("pandas")  # a pandas value exists only once pandas is imported
    if pandas is not None:
        if value is pandas.NA or value is pandas.NaT:
            return None
        if isinstance(value, pandas.Timestamp):
            return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def json_predictions(frame: pd.DataFrame | Table) -> bytes:
    """``{"predictions": [...]}``: scalars for one output column, else one object per row."""
    if not isinstance(frame, Table):
        frame = Table.from_output(frame)
    names = list(frame.columns)
    cols = [np.asarray(v).tolist() for v in frame.columns.values()]
    if len(cols) == 1:
        items: list[Any] = cols[0]
    else:
        items = [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]
    return orjson.dumps({"predictions": items}, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)


def _arrow_table(result: pd.DataFrame | Table) -> pa.Table:
    import pyarrow as pa

    if isinstance(result, Table):
        return result.to_arrow()
    return pa.Table.from_pandas(result, preserve_index=False)


def _encode_csv(result: pd.DataFrame | Table) -> bytes:
    frame = result.to_frame() if isinstance(result, Table) else result
    return frame.to_csv(index=False).encode()


def _encode_csv_lines(result: pd.DataFrame | Table) -> bytes:
    """One line per row, no header line: Arrow's CSV writer, as ``scorer batch`` writes CSV files."""
    import pyarrow as pa
    from pyarrow import csv

    sink = pa.BufferOutputStream()
    csv.write_csv(_arrow_table(result), sink, csv.WriteOptions(include_header=False))
    return sink.getvalue().to_pybytes()


def _encode_jsonl(result: pd.DataFrame | Table) -> bytes:
    """One JSON object per row and line, as ``scorer batch`` writes ``.jsonl`` files."""
    table = _arrow_table(result)
    names = table.column_names
    columns = [column.to_pylist() for column in table.columns]
    return b"".join(orjson.dumps(dict(zip(names, row, strict=True)), default=_json_default) + b"\n"
                    for row in zip(*columns, strict=True))


def _encode_arrow(result: pd.DataFrame | Table, *, file: bool = False) -> bytes:
    import pyarrow as pa

    table = _arrow_table(result)
    sink = pa.BufferOutputStream()
    with (pa.ipc.new_file if file else pa.ipc.new_stream)(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _encode_parquet(result: pd.DataFrame | Table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(_arrow_table(result), sink)
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class Encoder:
    """How a result becomes a response body of one media type."""

    write: Callable[[pd.DataFrame | Table], bytes]
    binary: bool  # raw bytes (else text)


#: Response media type -> encoder (``Accept`` picks one; JSON is the default).
ENCODERS: dict[str, Encoder] = {
    JSON: Encoder(json_predictions, binary=False),
    CSV: Encoder(_encode_csv, binary=False),
    CSV_LINES: Encoder(_encode_csv_lines, binary=False),
    JSONL: Encoder(_encode_jsonl, binary=False),
    ARROW_STREAM: Encoder(_encode_arrow, binary=True),
    ARROW_FILE: Encoder(lambda frame: _encode_arrow(frame, file=True), binary=True),
    PARQUET: Encoder(_encode_parquet, binary=True),
}
#: ``Accept`` ranges and the media type each stands for.
ACCEPT_RANGES = {"*/*": JSON, "application/*": JSON, "text/*": CSV}


def negotiate(accept: str | None, *, csv: str = CSV) -> str:
    """The response media type for an ``Accept`` header (q-values honoured; default JSON). ``csv``: what
    ``text/csv`` (and ``text/*``) without a ``header`` parameter stands for, :data:`CSV` (with a header
    line) or :data:`CSV_LINES`; ``header=present`` / ``header=absent`` choose either way."""
    if not accept:
        return JSON
    choices = []
    for i, part in enumerate(accept.split(",")):
        mt, params = media_type(part)
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 0.0
        if q > 0 and mt:
            choices.append((-q, i, mt, params.get("header")))
    for _, _, mt, header in sorted(choices):
        mt = ACCEPT_RANGES.get(mt, mt)
        if mt == CSV:
            if header not in (None, "present", "absent"):
                raise NotAcceptable("text/csv's header parameter must be 'present' or 'absent'")
            return csv if header is None else CSV if header == "present" else CSV_LINES
        if mt in ENCODERS:
            return mt
    raise NotAcceptable(f"cannot produce any of Accept: {accept!r}; available: {', '.join(ENCODERS)}")


def encode(result: pd.DataFrame | Table, mt: str) -> bytes:
    """The response body; Arrow and Parquet replies are built from a Table's arrays directly."""
    return ENCODERS[mt].write(result)
