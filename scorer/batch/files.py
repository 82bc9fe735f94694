"""Streaming table files in and out: CSV (.csv, .csv.gz), Parquet, JSON Lines, Arrow IPC/Feather.

Readers yield :class:`Chunk` s of exactly ``chunk_rows`` rows (the last may be shorter), each
with the 0-based data-row number of every row in its file, so a bad row can be reported by
file and row (and line, for CSV and JSON Lines) and chunk boundaries never depend on the
reader's block sizes. Malformed records (a CSV row with the wrong number of fields, a JSON
line that does not parse) are not dropped silently: they come back as :class:`BadRow` s.

CSV is read with every column as text: the scoring core converts model columns losslessly
(and reports the rows it cannot convert), and other columns (ids) pass through exactly as
written. Writers are deterministic: the same rows give the same bytes.

Memory: the CSV reader holds about 32 blocks of :data:`CSV_BLOCK_BYTES` (Arrow's streaming reader
reads that far ahead whatever its thread settings), and a :class:`Chunk` pickles (to a worker
process) only its own rows, never the buffers of the block it was sliced from.
"""

from __future__ import annotations

import csv as pycsv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal, cast

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from scorer.errors import ReadError

FORMATS = ("csv", "csv.gz", "parquet", "jsonl", "arrow")
_SUFFIXES = {".csv": "csv", ".csv.gz": "csv.gz", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
             ".ndjson": "jsonl", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}
# Arrow's streaming CSV reader keeps ~32 blocks read ahead: 8 MiB blocks held ~290 MiB, 1 MiB blocks
# ~36 MiB, and read a 265 MB file at least as fast (2.9 s vs 3.9 s).
CSV_BLOCK_BYTES = 1 << 20
_OUT_SUFFIX = {"csv": ".csv", "csv.gz": ".csv.gz", "parquet": ".parquet", "jsonl": ".jsonl", "arrow": ".arrow"}
# an object is read through a buffer of this size: one ranged GET per 8 MiB, whatever the reader's own reads.
# Measured on SeaweedFS, a 136 MB CSV object uploaded in parts: 1 MiB reads cost the store 8.7 CPU s and took
# 8.6 s, 8 MiB reads 1.7 s and 1.7 s (S3's own guidance: ranged GETs of 8-16 MB).
OBJECT_READ_BYTES = 8 << 20


@dataclass(frozen=True)
class InputFile:
    """One input file: a local path (``fs`` None), or an object in a store (its pyarrow filesystem and its
    ``bucket/key``). ``size`` and ``mtime_ns`` are what the listing said: the file's fingerprint for resume."""

    path: str
    size: int
    mtime_ns: int
    fs: pafs.FileSystem | None = field(default=None, compare=False, repr=False)

    @classmethod
    def local(cls, path: Path) -> InputFile:
        st = path.stat()
        return cls(str(path), st.st_size, st.st_mtime_ns)

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def uri(self) -> str:
        """The local path, or ``s3://bucket/key``: how messages name the file."""
        return self.path if self.fs is None else f"{self.fs.type_name}://{self.path}"

    def stream(self, compression: Literal["detect"] | None = None) -> pa.NativeFile:
        """The file read front to back (``compression="detect"``: by its name)."""
        if self.fs is None:
            return pa.input_stream(self.path) if compression == "detect" else pa.OSFile(self.path, "rb")
        return self.fs.open_input_stream(self.path, compression=compression, buffer_size=OBJECT_READ_BYTES)

    def random_access(self) -> pa.NativeFile:
        """The file, seekable (Parquet footers, Arrow IPC files); a local file is memory-mapped."""
        if self.fs is None:
            return pa.memory_map(self.path)
        return self.fs.open_input_file(self.path)


def as_input(source: Path | InputFile) -> InputFile:
    return source if isinstance(source, InputFile) else InputFile.local(source)


@dataclass(frozen=True)
class BadRow:
    row: int  # 0-based data row in the file
    reason: str
    line: int | None = None  # 1-based physical line, for text formats
    values: dict[str, Any] | None = None

    def as_json(self, file: str, *, where: bool = True) -> dict[str, Any]:
        """The row's entry in the rejects; ``where=False`` leaves out row and line (the Spark engine scores
        batches, not files, so it knows neither)."""
        entry: dict[str, Any] = {"file": file}
        if where:
            entry["row"] = self.row
            if self.line is not None:
                entry["line"] = self.line
        entry["reason"] = self.reason
        entry["values"] = self.values
        return entry


@dataclass
class Chunk:
    table: pa.Table
    rows: np.ndarray  # file row number of each row of ``table``
    bad: list[BadRow] = field(default_factory=list)  # malformed records met while reading this chunk
    lines: np.ndarray | None = None  # 1-based physical line of each row, for text formats
    json_columns: frozenset[str] = frozenset()  # JSON Lines columns of mixed types, held as JSON text

    def line_of(self, position: int) -> int | None:
        return None if self.lines is None else int(self.lines[position])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "table": table_to_ipc(self.table)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, table=table_from_ipc(state["table"]))


def table_to_ipc(table: pa.Table) -> bytes:
    """``table`` as an Arrow IPC stream holding only its own rows. Pickling a slice of a table directly
    carries its parent's whole buffers (a 65,536-row chunk of 3.4 MiB pickled to 10-20 MiB)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_ipc(data: bytes) -> pa.Table:
    with pa.ipc.open_stream(data) as reader:
        return reader.read_all()


def detect_format(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, fmt in sorted(_SUFFIXES.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    return None


def output_name(rel: PurePosixPath, in_fmt: str, out_fmt: str) -> PurePosixPath:
    """``a/b.csv.gz`` scored to parquet -> ``a/b.parquet``; the same format keeps the name."""
    if in_fmt == out_fmt:
        return rel
    name = rel.name
    for suffix, fmt in _SUFFIXES.items():
        if fmt == in_fmt and name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return rel.with_name(name + _OUT_SUFFIX[out_fmt])


# --- readers --------------------------------------------------------------------------------------


def read_chunks(source: Path | InputFile, fmt: str, chunk_rows: int) -> Iterator[Chunk]:
    """Stream ``source`` as chunks of ``chunk_rows`` rows."""
    src = as_input(source)
    reader = {"csv": _read_csv, "csv.gz": _read_csv, "parquet": _read_parquet, "jsonl": _read_jsonl,
              "arrow": _read_arrow}[fmt]
    try:
        yield from _rechunk(reader(src, chunk_rows), chunk_rows)
    except (pa.ArrowException, OSError, UnicodeDecodeError, pycsv.Error) as exc:
        raise ReadError(f"{_where(src)}: cannot be read as {fmt}: {_reason(exc)}") from exc


def _where(src: InputFile) -> str:
    """A local file by its name (as before), an object by its URI (the store may be what failed)."""
    return src.name if src.fs is None else src.uri


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and "AWS Error" in str(exc):
        from scorer import object_store

        return object_store.cause(exc)[1]
    return str(exc)


def input_schema(source: Path | InputFile, fmt: str) -> pa.Schema:
    """The columns of a file, without reading its rows (CSV columns are text, as read_chunks reads them)."""
    src = as_input(source)
    try:
        if fmt in ("csv", "csv.gz"):
            return pa.schema([(n, pa.string()) for n in _csv_header(src)])
        if fmt == "parquet":
            return pq.read_schema(src.path if src.fs is None else src.random_access())
        if fmt == "arrow":
            with src.random_access() as f:
                try:
                    return pa.ipc.open_file(f).schema
                except pa.ArrowInvalid:
                    f.seek(0)
                    return pa.ipc.open_stream(f).schema
        return pa.schema([])  # JSON Lines: columns come from records; an empty file has none
    except (pa.ArrowException, OSError) as exc:
        raise ReadError(f"{_where(src)}: cannot be read as {fmt}: {_reason(exc)}") from exc


def _rechunk(pieces: Iterator[Chunk], chunk_rows: int) -> Iterator[Chunk]:
    tables: list[pa.Table] = []
    rows: list[np.ndarray] = []
    lines: list[np.ndarray] | None = []
    bad: list[BadRow] = []
    held = 0
    for piece in pieces:
        bad.extend(piece.bad)
        if piece.table.num_rows:
            tables.append(_as_json_text(piece.table, piece.json_columns))
            rows.append(piece.rows)
            lines = None if lines is None or piece.lines is None else [*lines, piece.lines]
            held += piece.table.num_rows
        while held >= chunk_rows:
            table = _concat(tables)
            all_rows = np.concatenate(rows)
            all_lines = np.concatenate(lines) if lines else None
            yield Chunk(table.slice(0, chunk_rows), all_rows[:chunk_rows], bad,
                        None if all_lines is None else all_lines[:chunk_rows], _json_fields(table))
            tables, rows, bad = [table.slice(chunk_rows)], [all_rows[chunk_rows:]], []
            lines = None if all_lines is None else [all_lines[chunk_rows:]]
            held -= chunk_rows
    if held or bad:
        table = _concat(tables) if tables else pa.table({})
        yield Chunk(table, np.concatenate(rows) if rows else np.empty(0, dtype=np.int64), bad,
                    np.concatenate(lines) if lines else None, _json_fields(table))


_JSON_TEXT = {b"scorer.json_text": b"1"}


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Pieces of one file may differ in inferred types (JSON Lines: null vs string, int vs double);
    a column whose types cannot be promoted (a string in a float column) becomes JSON text everywhere."""
    if len(tables) == 1:
        return tables[0]
    names = dict.fromkeys(n for t in tables for n in t.column_names)
    json_names = {n for t in tables for n in _json_fields(t)}
    conflicting = {n for n in names if len({t.schema.field(n).type for t in tables if n in t.column_names}) > 1}
    try:
        if not json_names:
            return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    to_text = frozenset(json_names | conflicting)
    return pa.concat_tables([_as_json_text(t, to_text) for t in tables], promote_options="permissive")


def _json_fields(table: pa.Table) -> frozenset[str]:
    return frozenset(f.name for f in table.schema if f.metadata and f.metadata.get(b"scorer.json_text"))


def _as_json_text(table: pa.Table, names: frozenset[str]) -> pa.Table:
    """Columns ``names`` as JSON text (strings quoted), marked so they can be decoded back exactly."""
    for name in names:
        if name in table.column_names and name not in _json_fields(table):
            i = table.schema.get_field_index(name)
            table = table.set_column(i, pa.field(name, pa.string(), metadata=_JSON_TEXT),
                                     _json_text(table.column(name).to_pylist()))
    return table


def _json_text(values: list[Any]) -> pa.StringArray:
    # orjson writes floats in their shortest round-trip form: the text parses back to the same value
    return pa.array([None if v is None else orjson.dumps(v).decode() for v in values], pa.string())


def decode_json_text(table: pa.Table) -> pa.Table:
    """Columns held as JSON text back to typed columns (text only where the values still mix types)."""
    for name in _json_fields(table):
        i = table.schema.get_field_index(name)
        texts = table.column(name).to_pylist()
        values = orjson.loads("[" + ",".join("null" if t is None else t for t in texts) + "]")
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            array = pa.array([v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values],
                             pa.string())
        table = table.set_column(i, name, array)
    return table


def _csv_header(src: InputFile) -> list[str]:
    with src.stream("detect") as raw:
        # a NativeFile is a binary file object; pyarrow-stubs do not say it has the io protocol
        first = io.TextIOWrapper(cast(BinaryIO, raw), encoding="utf-8", newline="").readline()
    if not first.strip():
        raise ReadError(f"{_where(src)}: empty CSV file (no header line)")
    return next(pycsv.reader([first]))


def _read_csv(src: InputFile, chunk_rows: int) -> Iterator[Chunk]:
    names = _csv_header(src)
    skipped: list[BadRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> Literal["skip", "error"]:
        line = row.number
        skipped.append(BadRow(row=(line - 2) if line else -1, line=line,
                              reason=f"malformed CSV row: expected {row.expected_columns} fields, got {row.actual_columns}",
                              values={"text": row.text[:1000]}))
        return "skip"

    stream = src.stream("detect")
    reader = pacsv.open_csv(
        cast(BinaryIO, stream),  # a NativeFile: pyarrow-stubs list only paths and IO objects here
        read_options=pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                             strings_can_be_null=True, quoted_strings_can_be_null=False),
    )
    next_line = 2  # the first data row is physical line 2
    with reader:
        for batch in reader:
            bad, skipped[:] = list(skipped), []
            total = batch.num_rows + len(bad)
            lines = np.arange(next_line, next_line + total, dtype=np.int64)
            if bad:
                lines = lines[~np.isin(lines, [b.line for b in bad if b.line is not None])]
            next_line += total
            yield Chunk(pa.Table.from_batches([batch]), lines - 2, bad, lines)
        if skipped:
            yield Chunk(pa.table({n: pa.array([], pa.string()) for n in names}), np.empty(0, dtype=np.int64), list(skipped))


def _read_parquet(src: InputFile, chunk_rows: int) -> Iterator[Chunk]:
    start = 0
    with pq.ParquetFile(src.path if src.fs is None else src.random_access()) as pf:
        for batch in pf.iter_batches(batch_size=chunk_rows):
            yield Chunk(pa.Table.from_batches([batch]), np.arange(start, start + batch.num_rows), [])
            start += batch.num_rows


def _read_arrow(src: InputFile, chunk_rows: int) -> Iterator[Chunk]:
    start = 0
    batches: Iterator[pa.RecordBatch]
    with src.random_access() as source:
        try:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            batches = iter(pa.ipc.open_stream(source))
        for batch in batches:
            yield Chunk(pa.Table.from_batches([batch]), np.arange(start, start + batch.num_rows), [])
            start += batch.num_rows


def _lines(f: Any) -> Iterator[bytes]:
    """The lines of a binary stream (each with its ``\\n``), read in blocks: pyarrow's streams have no
    efficient line iterator of their own."""
    rest = b""
    while block := f.read(OBJECT_READ_BYTES):
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        for part in parts:
            yield part + b"\n"
    if rest:
        yield rest


def _read_jsonl(src: InputFile, chunk_rows: int) -> Iterator[Chunk]:
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    lines: list[int] = []
    bad: list[BadRow] = []
    row = 0
    with (open(src.path, "rb") if src.fs is None else src.stream()) as fh:
        for lineno, line in enumerate(fh if src.fs is None else _lines(fh), 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON Lines record must be an object, not {type(record).__name__}")
            except ValueError as exc:
                bad.append(BadRow(row=row, line=lineno, reason=f"malformed JSON line: {exc}",
                                  values={"text": line[:1000].decode("utf-8", "replace")}))
            else:
                records.append(record)
                rows.append(row)
                lines.append(lineno)
            row += 1
            if len(records) >= chunk_rows:
                yield Chunk(_records_table(records), np.asarray(rows, dtype=np.int64), bad, np.asarray(lines))
                records, rows, lines, bad = [], [], [], []
    if records or bad:
        yield Chunk(_records_table(records), np.asarray(rows, dtype=np.int64), bad, np.asarray(lines, dtype=np.int64))


def _records_table(records: list[dict[str, Any]]) -> pa.Table:
    names = list(dict.fromkeys(k for r in records for k in r))
    fields, arrays = [], []
    for name in names:
        values = [r.get(name) for r in records]
        try:
            arrays.append(pa.array(values))
            fields.append(pa.field(name, arrays[-1].type))
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types in one column (1 and "x"): JSON text
            arrays.append(_json_text(values))
            fields.append(pa.field(name, pa.string(), metadata=_JSON_TEXT))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# --- writers --------------------------------------------------------------------------------------


class HashingSink(io.RawIOBase):
    """A binary sink that counts and hashes (sha256) what goes through it to ``raw``: an output's size and
    digest for the manifest without reading it back (from an object store, that would be a second download).
    Closing it leaves ``raw`` open: the writers close what they were given, ``raw``'s owner commits it."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self.raw = raw
        self.size = 0
        self._sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._sha.update(view)
        self.raw.write(view)
        self.size += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        if not self.closed and not self.raw.closed:  # (the raw file may be committed before this is collected)
            self.raw.flush()

    def sha256(self) -> str:
        return self._sha.hexdigest()


class Writer:
    """Writes tables of one schema to ``sink`` (a :class:`HashingSink`) in ``fmt``; the first table fixes
    the schema. ``close`` closes the format's writer, never ``sink``'s own raw file (its owner commits it)."""

    def __init__(self, sink: HashingSink, fmt: str) -> None:
        self.sink = sink
        self.fmt = fmt
        self.schema: pa.Schema | None = None
        self._stream: Any = None
        self._writer: Any = None

    def write(self, table: pa.Table) -> None:
        if self.schema is None:
            self._open(table.schema)
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        if self.fmt == "jsonl":
            self.sink.write(_jsonl_bytes(table))
        else:
            self._writer.write_table(table)

    def _open(self, schema: pa.Schema) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown output format {self.fmt!r}")
        self.schema = schema
        if self.fmt == "jsonl":
            return
        self._stream = pa.PythonFile(self.sink, mode="w")
        if self.fmt == "csv.gz":
            self._stream = pa.CompressedOutputStream(self._stream, "gzip")
        if self.fmt == "parquet":
            self._writer = pq.ParquetWriter(self._stream, schema)
        elif self.fmt == "arrow":
            self._writer = pa.ipc.new_file(self._stream, schema)
        else:
            self._writer = pacsv.CSVWriter(self._stream, schema)

    def close(self) -> None:
        if self.schema is None:  # nothing written at all: still a valid (empty) file
            self._open(pa.schema([]))
        if self._writer is not None:
            self._writer.close()
        if self._stream is not None:
            self._stream.close()


def _jsonl_bytes(table: pa.Table) -> bytes:
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    names = table.column_names
    return b"".join(orjson.dumps(dict(zip(names, row, strict=True)), default=str) + b"\n"
                    for row in zip(*columns, strict=True))
