"""A Parquet body's column chunks and the bytes its pages decompress to, read from its footer
and page headers without pyarrow's metadata objects and without decompressing anything.

A Parquet reader allocates each page at the ``uncompressed_page_size`` of its page header (and
fails if the page decompresses to anything else); the column chunk sizes in the footer are not
checked against the pages by pyarrow, so a footer can understate them. :func:`decompressed_bytes`
walks each column chunk's pages the way pyarrow's page reader does (from the dictionary or first
data page, through ``total_compressed_size`` bytes, until the chunk's values are seen) and adds up
their headers' uncompressed sizes.

The footer and page headers are Thrift compact-protocol structs, read here with a ~50-line reader
(:class:`_Compact`) rather than pyarrow's metadata objects: ``RowGroupMetaData.column(i)`` aborts
the whole process (an uncaught C++ exception) on some corrupted footers that ``read_table``
reports as an error. Every read here is bounds-checked, nesting is limited, every list element
takes at least a byte, and anything malformed raises :class:`ValueError`. A Thrift library would
need the generated Parquet classes beside it (not published on their own) for these few fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT, _UUID = range(14)
_DEPTH = 16
_FIXED_SIZES = {_BYTE: 1, _DOUBLE: 8, _UUID: 16}
# PageHeader: 1 type, 2 uncompressed_page_size, 3 compressed_page_size, 5 data_page_header,
# 8 data_page_header_v2 (both with num_values as field 1); page types 0 DATA_PAGE, 3 DATA_PAGE_V2.
_UNCOMPRESSED, _COMPRESSED, _DATA_V1, _DATA_V2 = 2, 3, 5, 8
# FileMetaData: 2 schema, 3 num_rows, 4 row_groups; RowGroup: 1 columns, 3 num_rows; ColumnChunk: 3 meta_data;
# ColumnMetaData: 1 type, 4 codec (0: uncompressed), 5 num_values, 6 total_uncompressed_size, 7 total_compressed_size,
# 9 data_page_offset, 11 dictionary_page_offset.
FIXED_LEN_BYTE_ARRAY, INT96 = 7, 1  # physical types
_UNCOMPRESSED_CODEC = 0


@dataclass(frozen=True, slots=True)
class Chunk:
    """One column chunk as the footer describes it: its leaf column and where its pages lie."""

    leaf: int
    physical_type: int
    compressed: bool
    num_values: int
    uncompressed_size: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Footer:
    num_rows: int
    row_group_rows: list[int]
    chunks: list[Chunk]


class _Compact:
    """Thrift compact protocol reader over ``buf[pos:]``: structs as {field id: value}, with
    integers as ints, nested structs as dicts and everything else skipped (None)."""

    def __init__(self, buf: bytes | memoryview, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def byte(self) -> int:
        pos = self.pos
        if pos >= len(self.buf):
            raise ValueError("Parquet metadata runs past the end of the body")
        self.pos = pos + 1
        return self.buf[pos]

    def varint(self) -> int:
        buf, pos, end = self.buf, self.pos, min(len(self.buf), self.pos + 10)
        result = shift = 0
        while pos < end:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                self.pos = pos
                return result
            shift += 7
        raise ValueError("Parquet metadata has an over-long or truncated integer")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError("Parquet metadata runs past the end of the body")
        self.pos += n

    def struct(self, depth: int = 0) -> dict[int, Any]:
        if depth > _DEPTH:
            raise ValueError("Parquet metadata is nested too deeply")
        fields: dict[int, Any] = {}
        field = 0
        while (header := self.byte()) != _STOP:
            delta, kind = header >> 4, header & 0x0F
            field = field + delta if delta else self.zigzag()
            fields[field] = self.value(kind, depth)
        return fields

    def value(self, kind: int, depth: int) -> Any:
        if kind in (_TRUE, _FALSE):
            return kind == _TRUE
        if kind in (_I16, _I32, _I64):
            return self.zigzag()
        if kind == _STRUCT:
            return self.struct(depth + 1)
        if kind in _FIXED_SIZES:
            self.skip(_FIXED_SIZES[kind])
        elif kind == _BINARY:
            self.skip(self.varint())
        elif kind in (_LIST, _SET):
            header = self.byte()
            size = header >> 4 if header >> 4 != 15 else self.varint()
            # each element takes at least a byte, so a forged size ends at the buffer's end
            return [self.value(_element(header & 0x0F), depth + 1) for _ in range(size)]
        elif kind == _MAP:
            size = self.varint()
            types = self.byte() if size else 0
            for _ in range(size):
                self.value(_element(types >> 4), depth + 1)
                self.value(_element(types & 0x0F), depth + 1)
        else:
            raise ValueError("Parquet metadata has an unknown field type")
        return None


def _element(kind: int) -> int:
    """In lists and maps a boolean is a byte of its own."""
    return _BYTE if kind in (_TRUE, _FALSE) else kind


def read_footer(body: bytes) -> Footer:
    """The footer's row counts and column chunks. Raises ValueError if it is malformed."""
    if len(body) < 12 or body[-4:] != b"PAR1":
        raise ValueError("not a Parquet file (no trailing magic)")
    size = int.from_bytes(body[-8:-4], "little")
    if not 0 < size <= len(body) - 12:
        raise ValueError("the Parquet footer size is out of range")
    meta = _Compact(memoryview(body)[: len(body) - 8], len(body) - 8 - size).struct()
    groups = meta.get(4) or []
    chunks = []
    for group in _structs(groups):
        for leaf, column in enumerate(_structs(group.get(1) or [])):
            data = _structs([column.get(3)])[0]  # ColumnMetaData: absent only in encrypted columns
            start = _int(data, 9)
            if 11 in data and 0 < _int(data, 11) < start:
                start = _int(data, 11)
            chunks.append(Chunk(leaf, _int(data, 1), _int(data, 4) != _UNCOMPRESSED_CODEC, _int(data, 5), _int(data, 6),
                                start, start + _int(data, 7)))
    return Footer(_int(meta, 3), [_int(group, 3) for group in _structs(groups)], chunks)


def _structs(values: Any) -> list[dict[int, Any]]:
    if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
        raise ValueError("a Parquet footer struct is missing or of another type")
    return values


def _int(struct: dict[int, Any], field: int) -> int:
    value = struct.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("a Parquet footer field is missing or negative")
    return value


def decompressed_bytes(body: bytes, footer: Footer) -> int:
    """Sum of ``uncompressed_page_size`` over every page the reader will decompress (the pages of
    chunks stored uncompressed count at their stored size). Raises ValueError on malformed page
    headers or chunk ranges."""
    view = memoryview(body)
    total = 0
    for chunk in footer.chunks:
        if not chunk.start <= chunk.end <= len(body):
            raise ValueError("a Parquet column chunk lies outside the body")
        if chunk.compressed:
            total += _chunk_bytes(view[: chunk.end], chunk.start, chunk.num_values)
        else:  # pages are used in place: they cannot hold more than their bytes
            total += chunk.end - chunk.start
    return total


def _chunk_bytes(chunk: memoryview, pos: int, num_values: int) -> int:
    total = seen = 0
    while pos < len(chunk) and seen < num_values:
        reader = _Compact(chunk, pos)
        header = reader.struct()
        uncompressed, compressed = header.get(_UNCOMPRESSED), header.get(_COMPRESSED)
        if not isinstance(uncompressed, int) or not isinstance(compressed, int) or uncompressed < 0 or compressed < 0:
            raise ValueError("a Parquet page header has no valid sizes")
        total += uncompressed
        data = header.get(_DATA_V1) or header.get(_DATA_V2)
        if isinstance(data, dict) and isinstance(data.get(1), int):
            seen += max(0, data[1])
        pos = reader.pos + compressed
    return total
