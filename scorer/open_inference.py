"""The Open Inference Protocol's REST messages (KServe V2, also Triton's and MLServer's), as tables.
No HTTP framework in here: :mod:`scorer.serving.inference` serves these over HTTP.

A table travels as **one input tensor per column**, named by the column: shape ``[n]`` or ``[n, 1]``,
datatype FP64/FP32/INT64/.../BOOL/BYTES (the input schema's types: :data:`SCHEMA_DATATYPES`). One input
of shape ``[n, k]`` whose name is not a column stands for the schema's ``k`` columns in order, as
KServe's scikit-learn server takes a feature matrix. The answer has **one output tensor per output
column**, shape ``[n]``, its datatype by the column's dtype.

Tensor data comes as JSON (``data``: flat or nested, row-major) or in the **binary tensor data
extension** (Triton's, which ``tritonclient`` uses by default): the body is the JSON header, its length
in the ``Inference-Header-Content-Length`` header, then each binary input's raw bytes in input order,
its size in the input's ``parameters.binary_data_size``: little-endian fixed-width values, or for
BYTES each element as a 4-byte little-endian length and its bytes. Outputs are binary when the request
asks for them (``outputs[i].parameters.binary_data``, or ``parameters.binary_data_output`` for all).

The request's ``id`` is echoed; its ``parameters`` other than the extension's are the request's
params (:mod:`scorer.serving.inference` says what happens to them). Nothing here echoes tensor values
into an error message.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from scorer.errors import MalformedBody
from scorer.table import Table

#: Datatype name -> numpy dtype of its binary (little-endian) form; BYTES has its own layout.
NUMERIC: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
DATATYPES = (*NUMERIC, "BYTES")
#: The input schema's column types as tensor datatypes (what ``/v2/models/{name}`` advertises).
SCHEMA_DATATYPES = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES", "any": "BYTES"}
#: Request parameters that belong to the binary tensor extension, not to the model.
RESERVED_PARAMETERS = frozenset({"binary_data_output", "binary_data", "binary_data_size"})
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ("binary_tensor_data",)


@dataclass(frozen=True, slots=True)
class InferRequest:
    """What the answer needs to know of the request besides its rows."""

    id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] | None = None  # the output columns asked for, in order; None: all
    binary: frozenset[str] = frozenset()  # outputs to send as binary data
    binary_all: bool = False  # parameters.binary_data_output


def read_request(body: bytes, header_length: int | None, columns: Sequence[str] | None,
                 output_columns: Sequence[str] | None) -> tuple[Table, InferRequest]:
    """An inference request's rows (one column per input) and what its answer must look like."""
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise MalformedBody(f"Inference-Header-Content-Length {header_length} is outside the body's "
                                f"{len(body)} bytes")
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        head, binary = body, memoryview(b"")
    try:
        obj = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedBody("the inference request must be a JSON object with \"inputs\"")
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise MalformedBody("the inference request needs \"inputs\": a non-empty list of tensors")
    offset = 0
    tensors: list[tuple[str, list[int], Any]] = []
    for i, tensor in enumerate(inputs):
        name, shape, values, used = _read_input(i, tensor, binary, offset)
        offset += used
        tensors.append((name, shape, values))
    if offset != len(binary):
        raise MalformedBody(f"the body has {len(binary) - offset} bytes of binary data that no input claims")
    table = _table(tensors, columns)
    return table, _answer_shape(obj, output_columns)


def _read_input(i: int, tensor: Any, binary: memoryview, offset: int) -> tuple[str, list[int], Any, int]:
    if not isinstance(tensor, dict):
        raise MalformedBody(f"input {i} is not a JSON object")
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str) or not name:
        raise MalformedBody(f"input {i} has no \"name\"")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise MalformedBody(f"input {name!r}: \"shape\" must be [rows] or [rows, columns] of non-negative integers")
    if datatype not in DATATYPES:
        raise MalformedBody(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    count = math.prod(shape)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise MalformedBody(f"input {name!r}: \"parameters\" must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise MalformedBody(f"input {name!r} has both \"data\" and binary data")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise MalformedBody(f"input {name!r}: binary_data_size {size!r} runs past the body's binary data")
        return name, shape, _from_binary(name, datatype, binary[offset:offset + size], count), size
    if "data" not in tensor:
        raise MalformedBody(f"input {name!r} has neither \"data\" nor binary_data_size")
    values = _flatten(tensor["data"])
    if len(values) != count:
        raise MalformedBody(f"input {name!r} has {len(values)} values for shape {shape}")
    _check_json_values(name, datatype, values)
    return name, shape, values, 0


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            flat.append(v)
        else:
            stack.pop()
    return flat


#: The Python types a JSON decoder gives for each datatype's values (exact types: a bool is no number here).
_JSON_TYPES = {"BYTES": frozenset({str}), "BOOL": frozenset({bool}), "FP": frozenset({int, float}),
               "INT": frozenset({int})}


def _check_json_values(name: str, datatype: str, values: list[Any]) -> None:
    """JSON tensor values must be of the tensor's datatype (null stands for a missing value)."""
    kind = datatype if datatype in ("BYTES", "BOOL") else "FP" if datatype.startswith("FP") else "INT"
    allowed = _JSON_TYPES[kind] | {type(None)}
    for row, v in enumerate(values):
        if type(v) not in allowed:
            raise MalformedBody(f"input {name!r}: element {row} is a {type(v).__name__}, not {datatype}")


def _from_binary(name: str, datatype: str, raw: memoryview, count: int) -> NDArray[Any]:
    if datatype != "BYTES":
        dtype = NUMERIC[datatype]
        if len(raw) != count * dtype.itemsize:
            raise MalformedBody(f"input {name!r}: {len(raw)} bytes of binary data for {count} {datatype} values")
        values = np.frombuffer(raw, dtype=dtype)
        return values.astype(np.float64) if datatype in ("FP16", "FP32") else values.astype(dtype.newbyteorder("="))
    out = np.empty(count, dtype=object)
    pos, n = 0, len(raw)
    for k in range(count):
        if pos + 4 > n:
            raise MalformedBody(f"input {name!r}: binary BYTES data ends after {k} of {count} elements")
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > n:
            raise MalformedBody(f"input {name!r}: binary BYTES element {k} runs past its data")
        try:
            out[k] = bytes(raw[pos:pos + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedBody(f"input {name!r}: BYTES element {k} is not UTF-8 text") from None
        pos += length
    if pos != n:
        raise MalformedBody(f"input {name!r}: {n - pos} bytes of binary data after its {count} elements")
    return out


def _table(tensors: list[tuple[str, list[int], Any]], columns: Sequence[str] | None) -> Table:
    names = [name for name, _, _ in tensors]
    if len(set(names)) != len(names):
        raise MalformedBody(f"duplicate input names: {sorted({n for n in names if names.count(n) > 1})}")
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][1][1] != 1 and tensors[0][0] not in (columns or ()):
        return _matrix(*tensors[0], columns)
    rows = {shape[0] for _, shape, _ in tensors}
    if len(rows) != 1:
        raise MalformedBody(f"inputs have different row counts {sorted(rows)}; send one tensor per column, each [rows]")
    for name, shape, _ in tensors:
        if len(shape) == 2 and shape[1] != 1:
            raise MalformedBody(f"input {name!r} has shape {shape}: a column's tensor is [rows] or [rows, 1]")
    return Table({name: values for name, _, values in tensors}, rows.pop())


def _matrix(name: str, shape: list[int], values: Any, columns: Sequence[str] | None) -> Table:
    """One ``[n, k]`` tensor: the input schema's ``k`` columns, in order."""
    n, k = shape
    if not columns or len(columns) != k:
        have = f"{len(columns)} columns" if columns else "no known columns"
        raise MalformedBody(f"input {name!r} of shape {shape} is a matrix, but the input schema has {have}; "
                            "send one tensor per column")
    if isinstance(values, np.ndarray):
        matrix = values.reshape(n, k)
        return Table({c: matrix[:, j] for j, c in enumerate(columns)}, n)
    return Table({c: values[j::k] for j, c in enumerate(columns)}, n)


def _answer_shape(obj: dict[str, Any], output_columns: Sequence[str] | None) -> InferRequest:
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise MalformedBody("the request's \"id\" must be a string")
    parameters = obj.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise MalformedBody("the request's \"parameters\" must be an object")
    binary_all = parameters.get("binary_data_output") is True
    params = {k: v for k, v in parameters.items() if k not in RESERVED_PARAMETERS}
    wanted = obj.get("outputs")
    if wanted is None:
        return InferRequest(rid, params, None, frozenset(), binary_all)
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted):
        raise MalformedBody("\"outputs\" must be a list of {\"name\": ...} objects")
    names = tuple(o["name"] for o in wanted)
    if output_columns is not None:
        unknown = [n for n in names if n not in output_columns]
        if unknown:
            raise MalformedBody(f"unknown output(s) {unknown}; the model's outputs are {list(output_columns)}")
    binary = frozenset(o["name"] for o in wanted if (o.get("parameters") or {}).get("binary_data") is True)
    return InferRequest(rid, params, names, binary, binary_all)


def datatype_of(values: NDArray[Any]) -> str:
    """The tensor datatype an output column is sent as: by its dtype; an object column (labels as
    Python objects) by what it holds: all bools BOOL, all ints INT64, all numbers FP64, else BYTES."""
    kind = values.dtype.kind
    if kind == "O":
        items = values.tolist()
        held = {type(v) for v in items if v is not None}
        complete = len(held) > 0 and None not in items
        if complete and held <= {bool}:
            return "BOOL"
        if complete and held <= {int}:
            return "INT64"
        if held and held <= {int, float}:
            return "FP64"
        return "BYTES"
    if kind == "b":
        return "BOOL"
    if kind in "iuf":
        name = {"i": "INT", "u": "UINT", "f": "FP"}[kind] + str(values.dtype.itemsize * 8)
        return name if name in NUMERIC else "FP64"
    return "BYTES"


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v.item() if isinstance(v, np.generic) and not isinstance(v, np.str_) else str(v)


def write_response(result: Table, request: InferRequest, model_name: str, model_version: str) -> tuple[bytes, int | None]:
    """The inference response: its body and, when it carries binary data, the JSON header's length."""
    names = list(request.outputs) if request.outputs is not None else list(result.columns)
    missing = [n for n in names if n not in result.columns]
    if missing:
        raise MalformedBody(f"the model did not return output(s) {missing}; it returned {list(result.columns)}")
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in names:
        values = np.asarray(result.columns[name])
        datatype = datatype_of(values)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [result.n_rows]}
        if values.dtype.kind == "O" and datatype != "BYTES":
            values = values.astype(NUMERIC[datatype])
        if request.binary_all or name in request.binary:
            blob = _to_binary(values, datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            tensor["data"] = [_text(v) for v in values.tolist()]
        else:
            tensor["data"] = values  # orjson: numpy arrays natively; NaN and inf become null
        outputs.append(tensor)
    answer: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        answer["id"] = request.id
    answer["outputs"] = outputs
    head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return b"".join((head, *blobs)), len(head)


def _to_binary(values: NDArray[Any], datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(values, dtype=NUMERIC[datatype]).tobytes()
    parts = []
    for v in values.tolist():
        text = _text(v)
        data = b"" if text is None else text.encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def model_metadata(name: str, version: str, input_types: dict[str, str] | None,
                   output_types: dict[str, str] | None) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs by the input schema, outputs by the answer to the bundle's sample
    input (none listed for a bundle without one: their types are not known before a request)."""
    return {
        "name": name,
        "versions": [version],
        "platform": "scorer",
        "inputs": [{"name": c, "datatype": SCHEMA_DATATYPES.get(t, "BYTES"), "shape": [-1]}
                   for c, t in (input_types or {}).items()],
        "outputs": [{"name": c, "datatype": t, "shape": [-1]} for c, t in (output_types or {}).items()],
    }
