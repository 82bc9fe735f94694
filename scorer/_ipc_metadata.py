"""What an Arrow IPC body will cost to decode, read from its metadata alone.

:func:`stream_plan` and :func:`file_plan` walk an IPC stream's messages (or an IPC file's footer
blocks, the messages ``open_file`` decodes) and return the top-level column count, the rows in
its record batches and the bytes its buffers hold once decompressed, without decompressing or
decoding anything. With LZ4/ZSTD buffer compression each buffer's decompressed length is its
first 8 bytes (-1: stored uncompressed); without compression decoding is zero-copy and the
buffers' lengths are the bytes.

Messages are framed by pyarrow (``MessageReader`` / ``read_message``, which verify the flatbuffer
and the body length). The ``RecordBatch`` header inside (length, buffers, compression) and the
file footer are not exposed by pyarrow, so they are read here with a ~30-line flatbuffer reader
(:class:`_Table`) instead of the ``flatbuffers`` runtime package: that package neither verifies
offsets nor checks bounds (nor do Arrow's generated Python bindings, which are not published),
so it would need the same checks wrapped around it; here every read is checked to lie inside
the buffer and every vector to fit in it, so malformed metadata raises :class:`ValueError`,
never reads outside the data nor loops on a forged length.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pyarrow as pa

# Message.fbs: Message = {version, header_type, header, bodyLength, ...}; RecordBatch = {length,
# nodes, buffers, compression, ...}; DictionaryBatch = {id, data, isDelta}; File.fbs: Footer =
# {version, schema, dictionaries, recordBatches}; Schema = {endianness, fields, ...}.
_MESSAGE_HEADER, _RECORD_BATCH_LENGTH, _RECORD_BATCH_BUFFERS, _RECORD_BATCH_COMPRESSION = 2, 0, 2, 3
_DICTIONARY_DATA, _FOOTER_SCHEMA, _FOOTER_DICTIONARIES, _FOOTER_BATCHES, _SCHEMA_FIELDS = 1, 1, 2, 3, 1
_BUFFER = struct.Struct("<qq")  # offset, length
_BLOCK = struct.Struct("<qi4xq")  # offset, metaDataLength, bodyLength


@dataclass
class Plan:
    """Columns, rows and decoded bytes an IPC body announces."""

    columns: int = 0
    rows: int = 0
    decoded_bytes: int = 0


class _Table:
    """A flatbuffer table at ``pos`` in ``buf``; fields by their index in the schema."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - _read(buf, "<i", pos)
        self.vtable_size = _read(buf, "<H", self.vtable)

    def _field(self, index: int) -> int:
        slot = 4 + 2 * index
        offset = _read(self.buf, "<H", self.vtable + slot) if slot + 2 <= self.vtable_size else 0
        return self.pos + offset if offset else 0

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        at = self._field(index)
        return _read(self.buf, fmt, at) if at else default

    def _target(self, index: int) -> int:
        at = self._field(index)
        return at + _read(self.buf, "<I", at) if at else 0

    def table(self, index: int) -> _Table | None:
        at = self._target(index)
        return _Table(self.buf, at) if at else None

    def vector_length(self, index: int, item_size: int) -> int:
        at = self._target(index)
        if not at:
            return 0
        length = _read(self.buf, "<I", at)
        if at + 4 + length * item_size > len(self.buf):
            raise ValueError("a metadata vector runs past its buffer")
        return length

    def structs(self, index: int, layout: struct.Struct) -> list[tuple[int, ...]]:
        length = self.vector_length(index, layout.size)
        start = self._target(index) + 4
        return [layout.unpack_from(self.buf, start + i * layout.size) for i in range(length)]


def _read(buf: bytes | memoryview, fmt: str, pos: int) -> int:
    if pos < 0 or pos + struct.calcsize(fmt) > len(buf):
        raise ValueError("a metadata offset points outside its buffer")
    return int(struct.unpack_from(fmt, buf, pos)[0])


def _add_message(plan: Plan, message: pa.ipc.Message) -> None:
    """Count a record batch's rows and any record or dictionary batch's decoded buffer bytes."""
    if message.type not in ("record batch", "dictionary"):
        return
    metadata = message.metadata.to_pybytes()
    header = _Table(metadata, _read(metadata, "<I", 0)).table(_MESSAGE_HEADER)
    if header is not None and message.type == "dictionary":
        header = header.table(_DICTIONARY_DATA)
    if header is None:
        raise ValueError("a batch message has no header")
    if message.type == "record batch":
        rows = header.scalar(_RECORD_BATCH_LENGTH, "<q")
        if rows < 0:
            raise ValueError("a record batch has a negative length")
        plan.rows += rows
    compressed = header.table(_RECORD_BATCH_COMPRESSION) is not None
    body = memoryview(message.body) if message.body is not None else memoryview(b"")
    for offset, length in header.structs(_RECORD_BATCH_BUFFERS, _BUFFER):
        if offset < 0 or length < 0 or offset + length > len(body):
            raise ValueError("a buffer lies outside its message body")
        if not compressed or length == 0:
            plan.decoded_bytes += length
            continue
        if length < 8:
            raise ValueError("a compressed buffer is shorter than its length prefix")
        decompressed = _read(body, "<q", offset)
        if decompressed < -1:
            raise ValueError("a compressed buffer announces a negative length")
        plan.decoded_bytes += length - 8 if decompressed == -1 else decompressed


def stream_plan(body: bytes) -> Plan:
    """The plan of every message an IPC stream reader will decode (up to end-of-stream).
    Raises ``ValueError`` / ``pa.ArrowException`` / ``OSError`` on malformed metadata."""
    reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(body))
    try:
        first = reader.read_next_message()
    except StopIteration:
        raise ValueError("the Arrow IPC stream has no schema message") from None
    if first.type != "schema":  # read_schema on any other message crashes the process (pyarrow 26)
        raise ValueError(f"the Arrow IPC stream starts with a {first.type} message, not its schema")
    plan = Plan(columns=len(pa.ipc.read_schema(first)))
    for message in reader:
        _add_message(plan, message)
    return plan


def file_plan(body: bytes) -> Plan:
    """The plan of an IPC file: its footer's schema and the dictionary and record batch blocks
    that ``open_file`` decodes, each checked to be exactly the message the block describes."""
    if len(body) < 10 or body[-6:] != b"ARROW1":
        raise ValueError("not an Arrow IPC file (no trailing magic)")
    footer_size = _read(body, "<i", len(body) - 10)
    if not 0 < footer_size <= len(body) - 10:
        raise ValueError("the Arrow IPC file footer size is out of range")
    footer_bytes = body[len(body) - 10 - footer_size : len(body) - 10]
    footer = _Table(footer_bytes, _read(footer_bytes, "<I", 0))
    schema = footer.table(_FOOTER_SCHEMA)
    plan = Plan(columns=schema.vector_length(_SCHEMA_FIELDS, 4) if schema is not None else 0)
    data = pa.py_buffer(body)
    for index in (_FOOTER_DICTIONARIES, _FOOTER_BATCHES):
        for offset, metadata_length, body_length in footer.structs(index, _BLOCK):
            if not 0 <= offset < len(body):
                raise ValueError("a footer block points outside the file")
            stream = pa.BufferReader(data.slice(offset))
            message = pa.ipc.read_message(stream)
            size = message.body.size if message.body is not None else 0
            if size != body_length or stream.tell() != metadata_length + body_length:
                raise ValueError("a footer block does not match the message it points at")
            _add_message(plan, message)
    return plan
