"""The bytes a Parquet body's pages decompress to, read from their page headers.

A Parquet reader allocates each page at the ``uncompressed_page_size`` of its page header (and
fails if the page decompresses to anything else); the column chunk sizes in the footer are not
checked against the pages by pyarrow, so a footer can understate them. :func:`decompressed_bytes`
walks each column chunk's pages the way pyarrow's page reader does (from the dictionary or first
data page, through ``total_compressed_size`` bytes, until the chunk's values are seen) and adds up
their headers' uncompressed sizes, without decompressing anything.

Page headers are Thrift compact-protocol structs; pyarrow does not expose them, so they are read
here with a ~40-line reader (:class:`_Compact`): every read is bounds-checked, nesting is limited,
and anything malformed raises :class:`ValueError`. A Thrift library would need the generated
Parquet classes beside it (not published on their own) for the same three fields.
"""

from __future__ import annotations

from typing import Any

_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT, _UUID = range(14)
_DEPTH = 16
# PageHeader: 1 type, 2 uncompressed_page_size, 3 compressed_page_size, 5 data_page_header,
# 8 data_page_header_v2 (both with num_values as field 1); page types 0 DATA_PAGE, 3 DATA_PAGE_V2.
_UNCOMPRESSED, _COMPRESSED, _DATA_V1, _DATA_V2 = 2, 3, 5, 8


class _Compact:
    """Thrift compact protocol reader over ``buf[pos:]``: structs as {field id: value}, with
    integers as ints, nested structs as dicts and everything else skipped (None)."""

    def __init__(self, buf: bytes | memoryview, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise ValueError("a Parquet page header runs past the end of the body")
        self.pos += 1
        return self.buf[self.pos - 1]

    def varint(self) -> int:
        result = 0
        for shift in range(0, 70, 7):
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
        raise ValueError("a Parquet page header has an over-long integer")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError("a Parquet page header runs past the end of the body")
        self.pos += n

    def struct(self, depth: int = 0) -> dict[int, Any]:
        if depth > _DEPTH:
            raise ValueError("a Parquet page header is nested too deeply")
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
        if kind in (_BYTE, _DOUBLE, _UUID, _BINARY):
            self.skip({_BYTE: 1, _DOUBLE: 8, _UUID: 16}.get(kind) or self.varint())
        elif kind in (_LIST, _SET):
            header = self.byte()
            size = header >> 4 if header >> 4 != 15 else self.varint()
            for _ in range(size):  # each element takes at least a byte: bounded by the buffer
                self.value(_element(header & 0x0F), depth + 1)
        elif kind == _MAP:
            size = self.varint()
            types = self.byte() if size else 0
            for _ in range(size):
                self.value(_element(types >> 4), depth + 1)
                self.value(_element(types & 0x0F), depth + 1)
        else:
            raise ValueError("a Parquet page header has an unknown field type")
        return None


def _element(kind: int) -> int:
    """In lists and maps a boolean is a byte of its own."""
    return _BYTE if kind in (_TRUE, _FALSE) else kind


def decompressed_bytes(body: bytes, metadata: Any) -> int:
    """Sum of ``uncompressed_page_size`` over every page the reader will read, for a
    ``pyarrow.parquet.FileMetaData`` of ``body``. Raises ValueError on malformed headers or ranges."""
    view = memoryview(body)
    total = 0
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        for j in range(group.num_columns):
            chunk = group.column(j)
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
                start = chunk.dictionary_page_offset
            end = start + chunk.total_compressed_size
            if start < 0 or not start <= end <= len(body):
                raise ValueError("a Parquet column chunk lies outside the body")
            total += _chunk_bytes(view[:end], start, chunk.num_values)
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
