"""Bounded decoding of Parquet and Arrow IPC bodies: rows, columns and decoded size checked from
metadata before the data is decoded, and expanded size checked before it becomes pandas.

Guarantee: a Parquet or Arrow body is refused with :class:`PayloadTooLarge` (one line naming the
limit) unless it has at most ``max_rows`` rows and ``max_columns`` top-level columns and decodes
to at most ``max_bytes`` bytes, where

* before decoding, from the metadata only: a Parquet footer's row and column counts; the sum of
  its column chunks' uncompressed sizes, and of its pages' uncompressed sizes as their headers
  give them, which the reader allocates (:mod:`scorer._parquet_pages`: plain data, dictionary
  pages); the sum of the chunks' value counts times the value width (8 bytes, or a fixed-length
  type's length: fixed-width data, offsets, dictionary indices, nested lists); an Arrow IPC body's
  column count, record batch lengths, and its buffers' sizes once decompressed
  (:mod:`scorer._ipc_metadata`);
* after decoding and full validation, before ``to_pandas``: :func:`expanded_nbytes`, the size of
  every column as if its dictionaries, run-end encodings and views were expanded, is at most
  ``max_bytes``. Parquet string and binary columns are decoded dictionary-encoded, so a small
  dictionary of large values referenced by many rows is measured without being expanded, then
  turned back into plain columns (as a plain read would give) only once measured.

So a body is refused before the memory it would expand to is spent. The Parquet footer is read
here with a small Thrift reader (pyarrow's metadata objects can abort the process) and must agree
with pyarrow's reading of it on rows, row groups and column chunks; a footer crafted so that the
two readings differ in the sizes alone would pass the metadata checks, and then is still refused
after decoding, before ``to_pandas``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from scorer import _parquet_pages
from scorer.errors import MalformedBody, PayloadTooLarge

if TYPE_CHECKING:  # pyarrow is imported by the functions, on the first columnar body: Limits needs none
    import pyarrow as pa

    from scorer.settings import Settings

_WIDE = 8  # bytes counted per value whose decoded width the Parquet metadata leaves open


@dataclass(frozen=True, slots=True)
class Limits:
    """The caps a columnar body is held to (the server's max_request_rows, max_columns, max_body_bytes)."""

    max_rows: int
    max_columns: int
    max_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """``max_request_rows``, ``max_columns`` and ``max_body_bytes`` (the decoded-size cap)."""
        return cls(settings.max_request_rows, settings.max_columns, settings.max_body_bytes)

    def check(self, rows: int, columns: int, decoded_bytes: int, where: str) -> None:
        """Raise PayloadTooLarge naming the first limit exceeded; ``where`` says how it was counted."""
        if rows > self.max_rows:
            raise PayloadTooLarge(f"{rows} rows exceed the limit of {self.max_rows} per request ({where})")
        if columns > self.max_columns:
            raise PayloadTooLarge(f"{columns} columns exceed the limit of {self.max_columns} per request ({where})")
        if decoded_bytes > self.max_bytes:
            raise PayloadTooLarge(
                f"the body would decode to {decoded_bytes} bytes, over the limit of {self.max_bytes} "
                f"(max_body_bytes; {where})"
            )


# --- Parquet ------------------------------------------------------------------------------


def read_parquet(body: bytes, limits: Limits) -> tuple[pa.Table, Callable[[pa.Table], pa.Table]]:
    """The body's table with string/binary columns still dictionary-encoded, and a function giving
    the table a plain read gives (call it after :func:`check_expanded`: it casts the dictionaries
    back, or reads the body again where a type cannot be cast). Raises PayloadTooLarge from the
    footer and page headers, before any page is decompressed; MalformedBody if they are
    unreadable; Arrow errors propagate."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        footer = _parquet_pages.read_footer(body)
    except ValueError as exc:
        raise MalformedBody(f"Parquet body could not be read: {exc}") from None
    rows = max(footer.num_rows, sum(footer.row_group_rows))
    plain = pq.ParquetFile(pa.BufferReader(body))  # pyarrow's own footer checks (its errors are a 400)
    meta, leaves = plain.metadata, plain.metadata.schema
    # The footer as read here must be the footer pyarrow read: same row count, row groups and chunks.
    if (footer.num_rows, len(footer.row_group_rows), len(footer.chunks)) != (
            meta.num_rows, meta.num_row_groups, meta.num_row_groups * meta.num_columns) or any(
            chunk.leaf >= len(leaves) for chunk in footer.chunks):
        raise MalformedBody("Parquet body could not be read: its footer is inconsistent")
    stored = values = 0
    for chunk in footer.chunks:
        stored += chunk.uncompressed_size
        width = (leaves.column(chunk.leaf).length or 0) if chunk.physical_type == _parquet_pages.FIXED_LEN_BYTE_ARRAY else 0
        values += chunk.num_values * max(_WIDE, width, 12 if chunk.physical_type == _parquet_pages.INT96 else 0)
    limits.check(rows, len(plain.schema_arrow), max(stored, values), "read from the Parquet footer")
    try:
        pages = _parquet_pages.decompressed_bytes(body, footer)
    except ValueError as exc:
        raise MalformedBody(f"Parquet body could not be read: {exc}") from None
    limits.check(rows, 0, pages, "read from the Parquet page headers")
    strings = [leaves.column(j).path for j in range(len(leaves)) if leaves.column(j).physical_type == "BYTE_ARRAY"]
    # Extension types (JSON) would ignore read_dictionary: read their storage, dictionary-encoded.
    table = pq.ParquetFile(pa.BufferReader(body), read_dictionary=strings, **_no_extensions()).read()
    schema = plain.schema_arrow

    def to_plain(measured: pa.Table) -> pa.Table:
        if measured.schema == schema:
            return measured
        try:
            return measured.cast(schema)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. to string_view, JSON
            return pq.ParquetFile(pa.BufferReader(body)).read()

    return table, to_plain


@functools.cache
def _no_extensions() -> dict[str, Any]:  # keyword arguments of a ParquetFile
    import inspect

    import pyarrow.parquet as pq

    return {"arrow_extensions_enabled": False} if "arrow_extensions_enabled" in inspect.signature(
        pq.ParquetFile).parameters else {}



# --- Arrow IPC ----------------------------------------------------------------------------


def read_arrow(body: bytes, limits: Limits) -> pa.Table:
    """An Arrow IPC file (``ARROW1`` magic) or stream, checked from its metadata before decoding.
    Raises PayloadTooLarge, MalformedBody (metadata unreadable), or Arrow errors from decoding."""
    import pyarrow as pa

    from scorer import _ipc_metadata

    is_file = body[:6] == b"ARROW1"
    try:
        plan = (_ipc_metadata.file_plan if is_file else _ipc_metadata.stream_plan)(body)
    except (ValueError, pa.ArrowException, OSError, EOFError) as exc:
        raise MalformedBody(f"Arrow IPC body could not be read: {exc}") from None
    limits.check(plan.rows, plan.columns, plan.decoded_bytes, "read from the Arrow IPC metadata")
    opener = pa.ipc.open_file if is_file else pa.ipc.open_stream
    return opener(pa.BufferReader(body)).read_all()


# --- after decoding -----------------------------------------------------------------------


def check_expanded(table: pa.Table, limits: Limits) -> None:
    """PayloadTooLarge unless the (validated) table's expanded size is within ``limits.max_bytes``;
    MalformedBody if it cannot be measured (types no valid body has, such as float dictionary indices)."""
    import pyarrow as pa

    try:
        size = expanded_nbytes(table)
    except (pa.ArrowException, ValueError, TypeError, IndexError, NotImplementedError) as exc:
        raise MalformedBody(f"the Arrow data cannot be measured: {exc}") from None
    limits.check(table.num_rows, table.num_columns, size, "counted after decoding, before expanding")


def expanded_nbytes(table: pa.Table) -> int:
    """Bytes the table's values take once every dictionary, run-end encoding and view is expanded:
    fixed-width values at their width (booleans and nulls at 1 and 8, as numpy holds them),
    variable-width values at their length plus 8 (an offset or pointer). Cost: linear in the
    number of values, allocating at most one integer per dictionary index or run. Types whose
    children may be shared (list views, dense unions, nested dictionary values) are bounded from
    above by their largest element. The table must be validated first."""
    return sum(_array_bytes(chunk) for column in table.columns for chunk in column.chunks)


def _fixed_width(t: pa.DataType) -> int | None:
    import pyarrow as pa

    if pa.types.is_null(t):
        return 8
    if pa.types.is_boolean(t):
        return 1
    try:
        return max(1, t.bit_width // 8)
    except ValueError:
        return None


def _is_binary_like(t: pa.DataType) -> bool:
    import pyarrow as pa

    return (pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t)
            or pa.types.is_large_binary(t) or _is_view(t))


def _is(kind: str, t: pa.DataType) -> bool:
    """``pa.types.is_<kind>(t)``, False where this pyarrow predates the type (view types came in 16)."""
    import pyarrow as pa

    test = getattr(pa.types, "is_" + kind, None)
    return bool(test(t)) if test is not None else False


def _is_view(t: pa.DataType) -> bool:
    return _is("string_view", t) or _is("binary_view", t)


def _lengths(arr: pa.Array[Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Byte length of each value of a binary-like array (0 for nulls), as int64."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if _is_view(arr.type):
        buffer = memoryview(arr.buffers()[1] or b"")  # a view array always has its views buffer
        views = np.frombuffer(buffer, dtype=np.int32).reshape(-1, 4)[arr.offset : arr.offset + len(arr), 0]
        valid = np.ones(len(arr), dtype=bool) if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
        return np.where(valid, views.astype(np.int64), 0)
    if not isinstance(arr, (pa.StringArray, pa.BinaryArray, pa.LargeStringArray, pa.LargeBinaryArray)):
        raise TypeError(f"not a binary-like array: {arr.type}")
    return pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)


def _element_sizes(values: pa.Array[Any]) -> Callable[[np.ndarray[Any, Any] | None, int], int]:
    """A function (which values, how many references) -> bytes those references expand to."""
    width = _fixed_width(values.type)
    if width is not None:
        return lambda _which, count: width * count
    if _is_binary_like(values.type):
        sizes = _lengths(values) + 8
        return lambda which, count: int(sizes[which].sum()) if which is not None else int(sizes.max(initial=0)) * count
    biggest = _array_bytes(values)  # no element is bigger than all of them
    return lambda _which, count: biggest * count


def _array_bytes(arr: pa.Array[Any]) -> int:
    # Dispatch on the array's class: pyarrow makes the class from the type (an extension type's
    # array is an ExtensionArray, a dictionary type's a DictionaryArray, ...).
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    n = len(arr)
    if isinstance(arr, pa.ExtensionArray):
        return _array_bytes(arr.storage)
    if isinstance(arr, pa.DictionaryArray):  # before the fixed widths: a dictionary type has its indices' width
        index_type = arr.type.index_type
        if not pa.types.is_integer(index_type):
            raise MalformedBody(f"dictionary indices of type {index_type} are not valid")
        indices = arr.indices.drop_null().to_numpy(zero_copy_only=False)
        return _element_sizes(arr.dictionary)(indices, len(indices)) + 8 * (n - len(indices))
    width = _fixed_width(t)
    if width is not None:
        return width * n
    if _is_binary_like(t):
        return int(_lengths(arr).sum()) + 8 * n
    if isinstance(arr, pa.RunEndEncodedArray):
        return _run_end_bytes(arr)
    if isinstance(arr, pa.MapArray):  # keys and items of every map (a slice's too: an upper bound)
        return 8 * n + _array_bytes(arr.keys) + _array_bytes(arr.items)
    if isinstance(arr, (pa.ListArray, pa.LargeListArray, pa.FixedSizeListArray)):
        return 8 * n + _array_bytes(arr.flatten())
    # (the list view classes exist from pyarrow 16 on, as their type predicates do)
    if (_is("list_view", t) or _is("large_list_view", t)) and isinstance(arr, (pa.ListViewArray, pa.LargeListViewArray)):
        referenced = int(pc.sum(pc.list_value_length(arr)).as_py() or 0)
        return 8 * n + _element_sizes(arr.values)(None, referenced)
    if isinstance(arr, pa.StructArray):
        return sum(_array_bytes(child) for child in arr.flatten())
    if isinstance(arr, pa.UnionArray):
        children = [arr.field(i) for i in range(t.num_fields)]
        return n + max((_element_sizes(c)(None, n) for c in children), default=0)
    raise MalformedBody(f"columns of type {t} are not accepted")


def _run_end_bytes(arr: pa.RunEndEncodedArray[Any, Any]) -> int:
    """Each run's value counted once per row it covers (the logical length, as run_end_decode would)."""
    start = arr.find_physical_offset()
    count = arr.find_physical_length()
    ends = arr.run_ends.to_numpy(zero_copy_only=False)[start : start + count].astype(np.int64)
    ends = np.clip(ends - arr.offset, 0, len(arr))
    runs = np.diff(ends, prepend=0)
    values = arr.values.slice(start, count)
    width = _fixed_width(values.type)
    if width is not None:
        return width * len(arr)
    if _is_binary_like(values.type):
        return int(((_lengths(values) + 8) * runs).sum())
    return _element_sizes(values)(None, len(arr))
