"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), optional: ``--grpc-port``.

Why an extra: grpcio is a large native wheel that most deployments (REST only) never use, so the
default install does without it and never imports this module. ``pip install 'scorer[grpc]'``
(grpcio and protobuf) and ``--grpc-port N`` (``SCORER_GRPC_PORT``) serve gRPC on port N of the same
host, beside HTTP, in the same process and event loop (a ``grpc.aio`` server started and stopped by
the app's lifespan, :mod:`scorer.serving.app`). Its messages: :mod:`scorer.serving._oip_grpc`.

Served: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer, as the HTTP
routes of :mod:`scorer.serving.inference` answer them: the same model name (``--model-name``, else the
bundle's) and version checks, readiness (not loaded, or shutting down: ServerReady and ModelReady say
false), the bearer token for ModelMetadata and ModelInfer (``authorization: Bearer <t>`` or ``token``
metadata). ModelInfer takes each input tensor's data from ``raw_input_contents`` (what
``tritonclient.grpc`` sends) or from its typed ``contents``, turns the request into the REST form
(JSON header and binary tensor data) and reads it with :func:`scorer.open_inference.read_request`, so
both protocols check requests alike and say the same things; the rows queue with the HTTP requests'
coalescer (they share model calls), and the answer's tensors are
:func:`scorer.open_inference.write_response`'s, sent in ``raw_output_contents``. The trailing metadata
carries ``x-request-id`` and, on an answer, ``x-model-version`` and ``x-model-digest`` (and ``warning``
when params were ignored). Not served: the model repository RPCs, streaming, Triton's extensions
(statistics, shared memory, ...), TLS (terminate it in front), tracing spans.

Errors: our HTTP status mapped to a gRPC status code in :data:`GRPC_CODES` (the one place), the
message the HTTP answer's ``error`` (:func:`scorer.serving.http_errors.error_parts`: no request values
unless ``--echo-bad-values``). A request bigger than ``max_body_bytes`` is refused by grpc itself
(RESOURCE_EXHAUSTED, as 413 maps).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
import grpc.aio
import numpy as np
import orjson

from scorer import open_inference
from scorer._logging import request_id
from scorer._version import __version__
from scorer.core import Scorer
from scorer.errors import MalformedBody, NotReady, RequestTimeout
from scorer.serving._oip_grpc import grpc_predict_v2_pb2 as pb
from scorer.serving.auth import check_token
from scorer.serving.http_errors import error_parts
from scorer.serving.inference import check_model, metadata_of, read_infer
from scorer.serving.predict import DECODE_OFFLOAD_BYTES, ENCODE_OFFLOAD_ROWS
from scorer.serving.state import ServerState
from scorer.settings import Settings
from scorer.table import Table

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"

#: Our HTTP status -> the gRPC status code of the same error. The only place they meet.
GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    406: grpc.StatusCode.INVALID_ARGUMENT,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

#: A tensor datatype -> the ``InferTensorContents`` field its typed values come in (FP16: raw only).
CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC status code of an HTTP status (a 4xx without its own: INVALID_ARGUMENT; else INTERNAL)."""
    return GRPC_CODES.get(status, grpc.StatusCode.INVALID_ARGUMENT if 400 <= status < 500 else grpc.StatusCode.INTERNAL)


def address(settings: Settings) -> str:
    host = settings.host
    return f"[{host}]:{settings.grpc_port}" if ":" in host else f"{host}:{settings.grpc_port}"


Context: TypeAlias = Any  # grpc.aio.ServicerContext (grpcio ships no types)
Method = Callable[[Any, Context], Awaitable[Any]]


async def start(state: ServerState) -> grpc.aio.Server:
    """Start serving gRPC on ``grpc_port`` in the running event loop; the caller stops it (with its grace)."""
    settings = state.settings
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),  # one process serves the port: a second one must fail to bind, not share it
    ])
    service = _Service(state)
    handlers: dict[str, tuple[Method, Any]] = {
        "ServerLive": (service.server_live, pb.ServerLiveRequest),
        "ServerReady": (service.server_ready, pb.ServerReadyRequest),
        "ModelReady": (service.model_ready, pb.ModelReadyRequest),
        "ServerMetadata": (service.server_metadata, pb.ServerMetadataRequest),
        "ModelMetadata": (service.model_metadata, pb.ModelMetadataRequest),
        "ModelInfer": (service.model_infer, pb.ModelInferRequest),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        name: grpc.unary_unary_rpc_method_handler(service.wrap(name, method), request_deserializer=kind.FromString,
                                                  response_serializer=lambda message: message.SerializeToString())
        for name, (method, kind) in handlers.items()
    }),))
    server.add_insecure_port(address(settings))
    await server.start()
    log.info("serving the Open Inference Protocol over gRPC on %s", address(settings))
    return server


class _Service:
    """The RPCs; each one raises our errors, and :meth:`wrap` answers them with a status code."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def wrap(self, name: str, method: Method) -> Method:
        label = f"/{SERVICE}/{name}"

        async def rpc(request: Any, context: Context) -> Any:
            metadata = _metadata(context)
            rid = metadata.get("x-request-id", "")[:128] or uuid.uuid4().hex
            token = request_id.set(rid)
            started = time.perf_counter()
            status = 200
            try:
                return await method(request, context)
            except asyncio.CancelledError:  # the client cancelled, or its deadline passed
                status = 499
                raise
            except Exception as exc:  # noqa: BLE001 - every error is answered with a status code
                status, body, _ = error_parts(exc, echo=self.state.settings.echo_bad_values, protocol=True)
                await context.abort(grpc_code(status), orjson.loads(body)["error"], (("x-request-id", rid),))
                raise  # not reached: abort raises
            finally:
                self.state.metrics.observe_request(label, status, time.perf_counter() - started)
                request_id.reset(token)

        return rpc

    async def server_live(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest,
                           context: Context) -> pb.ServerReadyResponse:
        try:
            self.state.ready()
        except NotReady:
            return pb.ServerReadyResponse(ready=False)
        return pb.ServerReadyResponse(ready=True)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        try:
            scorer, _ = self.state.ready()
        except NotReady:
            return pb.ModelReadyResponse(ready=False)
        check_model(self.state, scorer, request.name, request.version or None)
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(self, request: pb.ServerMetadataRequest,
                              context: Context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="scorer", version=__version__)

    async def model_metadata(self, request: pb.ModelMetadataRequest,
                             context: Context) -> pb.ModelMetadataResponse:
        self._check_token(context)  # before the load check, as the HTTP route
        scorer, _ = self.state.loaded()
        name = check_model(self.state, scorer, request.name, request.version or None)
        meta = metadata_of(scorer, name)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]])

    async def model_infer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        state = self.state
        version = state.hold()  # scored, and answered, by the version serving now (as an HTTP request)
        try:
            scorer, coalescer = version.scorer, version.coalescer
            self._check_token(context)
            name = check_model(state, scorer, request.model_name, request.model_version or None)
            if request.ByteSize() > DECODE_OFFLOAD_BYTES:  # as a big HTTP body: decoded in the model thread
                rows, infer, extra = await coalescer.offload(_read, request, scorer, state.settings)
            else:
                rows, infer, extra = _read(request, scorer, state.settings)
            future = coalescer.enqueue(rows)
            try:  # on timeout the future is cancelled: if its batch has not started, it is never scored
                result = await asyncio.wait_for(future, state.settings.request_timeout_s)
            except TimeoutError:
                raise RequestTimeout("the request was not answered within the request timeout") from None
            label = scorer.version_label
            if len(result) > ENCODE_OFFLOAD_ROWS:
                response = await coalescer.offload(_response, result, infer, name, label)
            else:
                response = _response(result, infer, name, label)
            context.set_trailing_metadata((
                ("x-request-id", request_id.get() or ""),
                *((k.decode(), v.decode("latin-1")) for k, v in (*version.headers, *extra))))
            return response
        finally:
            version.release()

    def _check_token(self, context: Context) -> None:
        metadata = _metadata(context)
        check_token(self.state.settings.auth_token, metadata.get("authorization"), metadata.get("token"))


def _metadata(context: Context) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def _read(request: pb.ModelInferRequest, scorer: Scorer, settings: Settings
          ) -> tuple[Table, open_inference.InferRequest, list[tuple[bytes, bytes]]]:
    """The request's prepared rows, what its answer must look like, and the extra metadata (ignored params)."""
    body, length = _as_rest(request)
    return read_infer(body, length, scorer, settings)


def _as_rest(request: pb.ModelInferRequest) -> tuple[bytes, int]:
    """The request in the REST form: JSON header, then every input's data as binary tensor data."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise MalformedBody(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for i, tensor in enumerate(request.inputs):
        if raw:
            if tensor.HasField("contents"):
                raise MalformedBody(f"input {tensor.name!r} has contents, but the request sends raw_input_contents")
            blob = raw[i]
        else:
            blob = _contents(tensor)
        inputs.append({"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
                       "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    header: dict[str, Any] = {"inputs": inputs}
    if request.id:
        header["id"] = request.id
    if request.parameters:
        header["parameters"] = {k: _parameter(v) for k, v in request.parameters.items()}
    if request.outputs:
        header["outputs"] = [{"name": o.name} for o in request.outputs]
    head = orjson.dumps(header)
    return b"".join((head, *blobs)), len(head)


def _contents(tensor: pb.ModelInferRequest.InferInputTensor) -> bytes:
    """A tensor's typed ``contents`` as the binary tensor data of its datatype."""
    datatype, name = tensor.datatype, tensor.name
    field = CONTENTS.get(datatype)
    if field is None:
        if datatype == "FP16":
            raise MalformedBody(f"input {name!r}: FP16 data comes in raw_input_contents only")
        return b""  # an unknown datatype: read_request names it
    values = getattr(tensor.contents, field)
    count = math.prod(tensor.shape)
    if len(values) != count:
        raise MalformedBody(f"input {name!r} has {len(values)} values for shape {list(tensor.shape)}")
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in values)
    try:
        return np.asarray(values, dtype=open_inference.NUMERIC[datatype]).tobytes()
    except (OverflowError, ValueError):
        raise MalformedBody(f"input {name!r}: a value is out of the range of {datatype}") from None


def _parameter(value: pb.InferParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice is not None else None


def _response(result: Table, infer: open_inference.InferRequest, name: str, version: str) -> pb.ModelInferResponse:
    """The answer: :func:`open_inference.write_response`'s tensors, their data in ``raw_output_contents``."""
    payload, length = open_inference.write_response(result, dataclasses.replace(infer, binary_all=True), name, version)
    head = orjson.loads(payload if length is None else payload[:length])
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=infer.id or "")
    offset = length or 0
    for output in head["outputs"]:
        size = output["parameters"]["binary_data_size"]
        response.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
        response.raw_output_contents.append(payload[offset:offset + size])
        offset += size
    return response
