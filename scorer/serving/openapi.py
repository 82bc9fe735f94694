"""The OpenAPI 3.0 description of the HTTP API (``GET /openapi.json``), with the loaded bundle's
input columns when it has a schema.

Generated, not written: the paths and methods are the running app's routes (a route without an
entry in :data:`OPERATIONS` is an error, not a silent omission); request media types, JSON shapes
and envelopes, response media types and ``Accept`` ranges come from the tables
:mod:`scorer.codecs` dispatches on; the error statuses of each operation from the error classes it
raises and :data:`scorer.errors.HTTP_STATUS`. A JSON shape added to the codecs needs its JSON Schema
here (:func:`_shape_schemas`): until it has one, building the document fails. Error bodies are
``{error, message, error_code, request_id}`` (plus ``columns`` for missing columns) and nothing else; the
``error`` codes each status can carry come from the same mapping, ``error_code`` from
:data:`scorer.serving.http_errors.MLFLOW_ERROR_CODES`. On the inference protocols' routes they are
``{error, code, request_id}``, ``error`` the message.

Authentication: the ``bearer`` (``Authorization: Bearer <token>``) and ``token`` (the vendor's
``token: <token>`` header) schemes are always in ``components.securitySchemes``; when the server has
a token configured, the operations behind it carry ``security`` (either scheme) and a 401 answer,
and without one they carry neither (the server cannot answer 401 then). ``HEAD`` on the ``GET``
routes (answered as HTTP defines it: the ``GET`` answer without its body) is not listed.

tests/security/test_openapi_fuzz.py checks the live server's answers against this document, and
tests/test_openapi.py that the document and the codec tables cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from scorer import codecs, open_inference
from scorer._version import __version__
from scorer.serving.http_errors import MLFLOW_ERROR_CODES
from scorer.errors import (
    HTTP_STATUS,
    BundleError,
    ClientDisconnected,
    ModelError,
    ModelNotFound,
    NotReady,
    RequestError,
    ReloadRejected,
    RequestTimeout,
    ScorerClientError,
    ScorerError,
    Unauthorized,
)
from scorer.serving.sagemaker import CSV_LINES_PATHS

_JSON_TYPES = {"float": {"type": "number"}, "int": {"type": "integer"}, "bool": {"type": "boolean"},
               "string": {"type": "string"}, "any": {}}
_BINARY = {"type": "string", "format": "binary"}
_TEXT = {"type": "string"}
_REQUEST_ID = {"X-Request-ID": {"description": "the request's id: the one sent in X-Request-ID, else a new one",
                                "required": True, "schema": {"type": "string"}}}
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "enum": ["Bearer"]}}},
    503: {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}},
}
# Errors raised outside ScorerError: routing (404, 405) and anything unexpected (500).
_OTHER_CODES = {404: ["not_found"], 405: ["method_not_allowed"], 500: ["internal_error"]}
# Errors no client reads: the client has gone before its answer is sent.
_UNREAD = (ClientDisconnected,)
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <token>"},
    "token": {"type": "apiKey", "in": "header", "name": "token", "description": "the vendor's token: <token> header"},
}
# The JSON_SHAPES of scorer.codecs -> the component that describes each.
_SHAPE_COMPONENTS = {"split": "Split", "records": "Records", "rows": "Rows", "columns": "ColumnsOrient",
                     "columnar": "Columnar", "object": "Row"}


class RouteLike(Protocol):
    """What the document needs of a route (a Starlette ``Route`` has it)."""

    path: str
    methods: set[str] | None


def _subclasses(klass: type[ScorerError]) -> list[type[ScorerError]]:
    return [klass, *(s for sub in klass.__subclasses__() for s in _subclasses(sub))]


def error_codes(status: int) -> list[str]:
    """Every ``error`` code an answer with this status can carry."""
    codes = {k.code for k in _subclasses(ScorerError)
             if _status_of(k) == status and not issubclass(k, ScorerClientError)}  # the client's, never answered
    codes |= set(_OTHER_CODES.get(status, []))
    return sorted(codes)


def _status_of(klass: type[ScorerError]) -> int:
    return next(HTTP_STATUS[c] for c in klass.__mro__ if c in HTTP_STATUS)


def _statuses(raises: Iterable[type[ScorerError]]) -> list[int]:
    """The statuses the error classes ``raises`` (and their subclasses) answer with."""
    return sorted({_status_of(k) for klass in raises for k in _subclasses(klass) if not issubclass(k, _UNREAD)})


def _error(status: int, protocol: bool = False) -> dict[str, Any]:
    if protocol:
        schema = {"allOf": [{"$ref": "#/components/schemas/ProtocolError"},
                            {"type": "object", "properties": {"code": {"type": "string", "enum": error_codes(status)}}}]}
    else:
        schema = {"allOf": [{"$ref": "#/components/schemas/Error"}, {"type": "object", "properties": {
            "error": {"type": "string", "enum": error_codes(status)},
            "error_code": {"type": "string", "enum": [MLFLOW_ERROR_CODES.get(status, "INTERNAL_ERROR")]}}}]}
    return {"description": "error", "headers": {**_REQUEST_ID, **_ERROR_HEADERS.get(status, {})},
            "content": {codecs.JSON: {"schema": schema}}}


def _ok(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": _REQUEST_ID, "content": content}


def _status_body(value: str) -> dict[str, Any]:
    return {codecs.JSON: {"schema": {"type": "object", "required": ["status"], "additionalProperties": False,
                                     "properties": {"status": {"type": "string", "enum": [value]}}}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _media_schema(mt: str, binary: bool, json: dict[str, Any]) -> dict[str, Any]:
    return json if mt == codecs.JSON else _BINARY if binary else _TEXT


def _listing(names: Iterable[str]) -> str:
    return ", ".join(f"`{n}`" if n else "none" for n in names)


def _score() -> dict[str, Any]:
    """POST /predict and /invocations: every decoder's media type in, every encoder's out."""
    content = {}
    for mt, decoder in codecs.DECODERS.items():
        content[mt] = {"schema": _media_schema(mt, decoder.binary, _ref("Body"))}
    aliases = {alias: mt for alias, mt in codecs.ALIASES.items() if mt in codecs.DECODERS}
    request = {"required": True, "content": content, "description": (
        "A table in any of these media types. Also accepted: "
        + "; ".join(f"`{alias}` as `{mt}`" for alias, mt in aliases.items())
        + "; any `+json` type as JSON; and with Content-Type " + _listing(codecs.SNIFFED)
        + " the format is told from the body's first bytes. Media type parameters: "
        + "; ".join(f"`{mt}; {name}=...`: {meaning}" for mt, d in codecs.DECODERS.items()
                    for name, meaning in (d.params or {}).items()) + ".")}
    ok = {mt: {"schema": _media_schema(mt, encoder.binary, _ref("Predictions"))} for mt, encoder in codecs.ENCODERS.items()}
    ranges = "; ".join(f"`{r}` means `{mt}`" for r, mt in codecs.ACCEPT_RANGES.items())
    lines = ", ".join(f"`{p}`" for p in sorted(CSV_LINES_PATHS))
    return {"description": f"Score a table. `Accept` picks the answer's media type (q-values honoured; default "
                           f"`{codecs.JSON}`; {ranges}); one it cannot produce is 406. A plain `{codecs.CSV}` answer "
                           f"has a header line, except on {lines} (SageMaker Batch Transform), where it is "
                           f"`{codecs.CSV_LINES}`; `header=present` or `header=absent` in `Accept` chooses.",
            "requestBody": request,
            "ok": _ok("one prediction per input row, as JSON or in the media type Accept asks for", ok)}


@dataclass(frozen=True)
class Operation:
    """What the document says about one route: its answer and the errors it raises."""

    summary: str
    ok: Callable[[], dict[str, Any]]  # the 200 answer (and a requestBody, for the scoring routes)
    raises: tuple[type[ScorerError], ...] = ()
    protected: bool = False  # behind the token when one is configured
    protocol: bool = False  # errors in the inference protocols' shape


_SCORE = Operation("score a table", _score, (RequestError, ModelError, NotReady, RequestTimeout), protected=True)
_READY = Operation("200 once the bundle is loaded, 503 before",
                   lambda: {"ok": _ok("the bundle is loaded", _status_body("ready"))}, (NotReady,))

def _json_ok(description: str, schema: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    return lambda: {"ok": _ok(description, {codecs.JSON: {"schema": schema}})}


def _infer() -> dict[str, Any]:
    binary = ("With the binary tensor data extension, the body is the JSON header (its length in "
              "`Inference-Header-Content-Length`) followed by the binary inputs' bytes.")
    return {"description": "Score a table sent as one tensor per column (Open Inference Protocol). " + binary,
            "requestBody": {"required": True, "content": {
                codecs.JSON: {"schema": _ref("InferRequest")}, "application/octet-stream": {"schema": _BINARY}}},
            "ok": _ok("one output tensor per output column; binary outputs follow the JSON header", {
                codecs.JSON: {"schema": _ref("InferResponse")}, "application/octet-stream": {"schema": _BINARY}})}


def _predict_v1() -> dict[str, Any]:
    body = {"type": "object", "required": ["instances"], "properties": {"instances": {"type": "array", "items": {
        "description": "a row: a list in the input schema's column order, or {column: value}"}}}}
    return {"requestBody": {"required": True, "content": {codecs.JSON: {"schema": body}}},
            "ok": _ok("one prediction per instance", {codecs.JSON: {"schema": _ref("Predictions")}})}


_V2_SCORE = Operation("score a table (Open Inference Protocol)", _infer,
                      (RequestError, ModelError, NotReady, RequestTimeout), protected=True, protocol=True)
_V2_MODEL = Operation("the model's metadata (Open Inference Protocol)", _json_ok("the model", _ref("ModelMetadata")),
                      (NotReady, BundleError, ModelNotFound), protected=True, protocol=True)
_V2_READY = Operation("200 once the model is loaded, 503 before", _json_ok("the model is ready", {
    "type": "object", "required": ["name", "ready"], "properties": {"name": {"type": "string"},
                                                                   "ready": {"type": "boolean"}}}),
    (NotReady, ModelNotFound), protocol=True)

#: Every route's description, by path.
OPERATIONS: dict[str, Operation] = {
    "/predict": _SCORE,
    "/invocations": _SCORE,
    "/health": Operation("200 while the process is alive",
                         lambda: {"ok": _ok("the process is alive", _status_body("ok"))}),
    "/version": Operation("the server's version, as text (MLflow's scoring server route)",
                          lambda: {"ok": _ok("the version", {"text/plain": {"schema": _TEXT}})}),
    "/ready": _READY,
    "/ping": _READY,
    "/metadata": Operation("the loaded bundle", lambda: {"ok": _ok("the loaded bundle", {
        codecs.JSON: {"schema": _ref("Metadata")}})}, (NotReady, BundleError), protected=True),
    "/metrics": Operation("Prometheus text exposition", lambda: {"ok": _ok("Prometheus text exposition", {
        "text/plain": {"schema": _TEXT}})}, protected=True),
    "/admin/reload": Operation("check the model source now; swap in a new version if it passes its checks",
                               lambda: {"ok": _ok("checked (one process): loaded or unchanged", {codecs.JSON: {
                                   "schema": _ref("Reload")}})},
                               (NotReady, BundleError, ReloadRejected), protected=True),
    "/execution-parameters": Operation(
        "SageMaker Batch Transform's execution parameters: the defaults this server asks a job for",
        lambda: {"ok": _ok("derived from the settings workers and max_body_bytes", {codecs.JSON: {"schema": {
            "type": "object", "additionalProperties": False,
            "required": ["MaxConcurrentTransforms", "BatchStrategy", "MaxPayloadInMB"],
            "properties": {"MaxConcurrentTransforms": {"type": "integer", "minimum": 1},
                           "BatchStrategy": {"type": "string", "enum": ["MULTI_RECORD"]},
                           "MaxPayloadInMB": {"type": "integer", "minimum": 1, "maximum": 100}}}}})}),
    "/openapi.json": Operation("this document", lambda: {"ok": _ok("this document", {
        codecs.JSON: {"schema": {"type": "object", "required": ["openapi", "paths"]}}})}, protected=True),
    "/v2": Operation("server metadata (Open Inference Protocol)", _json_ok("the server", {
        "type": "object", "required": ["name", "version", "extensions"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}}}}), protocol=True),
    "/v2/health/live": Operation("200 while the process is alive", _json_ok("alive", {
        "type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}}), protocol=True),
    "/v2/health/ready": Operation("200 once the bundle is loaded, 503 before", _json_ok("ready", {
        "type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}}), (NotReady,),
        protocol=True),
    "/v2/models/{name}": _V2_MODEL,
    "/v2/models/{name}/versions/{version}": _V2_MODEL,
    "/v2/models/{name}/ready": _V2_READY,
    "/v2/models/{name}/versions/{version}/ready": _V2_READY,
    "/v2/models/{name}/infer": _V2_SCORE,
    "/v2/models/{name}/versions/{version}/infer": _V2_SCORE,
    "/v1/models": Operation("the served model's name (KServe V1)", _json_ok("the models", {
        "type": "object", "required": ["models"], "properties": {"models": {"type": "array", "items": {
            "type": "string"}}}}), (NotReady, BundleError), protected=True, protocol=True),
    "/v1/models/{name}": Operation("the model's readiness (KServe V1)", _json_ok("the model is ready", {
        "type": "object", "required": ["name", "ready"], "properties": {
            "name": {"type": "string"}, "ready": {"type": "boolean"}}}), (NotReady, ModelNotFound),
        protected=True, protocol=True),
    "/v1/models/{name}:predict": Operation("score instances (KServe V1)", _predict_v1,
                                           (RequestError, ModelError, NotReady, RequestTimeout), protected=True,
                                           protocol=True),
}


def _operation(operation_id: str, path: str, spec: Operation, auth: bool) -> dict[str, Any]:
    parts = spec.ok()
    statuses = _statuses(spec.raises) + ([_status_of(Unauthorized)] if spec.protected and auth else [])
    operation: dict[str, Any] = {"operationId": operation_id, "summary": spec.summary}
    if "description" in parts:
        operation["description"] = parts["description"]
    if "requestBody" in parts:
        operation["requestBody"] = parts["requestBody"]
    params = re.findall(r"{(\w+)}", path)
    if params:
        operation["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                   for p in params]
    operation["responses"] = {"200": parts["ok"], **{str(status): _error(status, spec.protocol)
                                                     for status in sorted(set(statuses))}}
    if spec.protected and auth:
        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
    return operation


def _shape_schemas(columns: dict[str, str] | None) -> dict[str, dict[str, Any]]:
    """The JSON Schema of each of codecs.JSON_SHAPES, rows typed by ``columns`` when known."""
    if columns:
        types = {c: _JSON_TYPES.get(t, {}) for c, t in columns.items()}
        row: dict[str, Any] = {"type": "object", "properties": types, "required": list(columns)}
        columnar: dict[str, Any] = {"type": "object", "required": list(columns), "properties": {
            c: {"type": "array", "items": t} for c, t in types.items()}}
        by_index: dict[str, Any] = {"type": "object", "required": list(columns), "properties": {
            c: {"type": "object", "additionalProperties": t} for c, t in types.items()}}
        rows: dict[str, Any] = {"type": "array", "items": {"type": "array", "minItems": len(columns),
                                                           "maxItems": len(columns)}}
    else:
        row = {"type": "object", "additionalProperties": True}
        columnar = {"type": "object", "additionalProperties": {"type": "array"}}
        by_index = {"type": "object", "additionalProperties": {"type": "object"}}
        rows = {}
    return {
        "split": {"type": "object", "required": ["columns", "data"],
                  "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                                 "data": {"type": "array", "items": {"type": "array", "items": {}}}}},
        "records": {"type": "array", "items": _ref("Row")},
        "rows": rows,
        "columns": by_index,
        "columnar": columnar,
        "object": row,
    }


def _schemas(columns: dict[str, str] | None) -> dict[str, Any]:
    shapes = _shape_schemas(columns)
    undescribed = [s.name for s in codecs.JSON_SHAPES if s.name not in shapes or s.name not in _SHAPE_COMPONENTS]
    if undescribed:
        raise LookupError(f"JSON shapes {undescribed} of scorer.codecs have no JSON Schema in scorer.serving.openapi")
    usable = [s for s in codecs.JSON_SHAPES if columns or not s.needs_columns]
    components: dict[str, Any] = {}
    for shape in usable:
        components[_SHAPE_COMPONENTS[shape.name]] = {**shapes[shape.name], "description": shape.summary}

    def envelope(env: codecs.Envelope) -> dict[str, Any]:
        inner: dict[str, Any]
        if env.shapes is None:
            inner = _ref("Table")
        else:
            refs = [_ref(_SHAPE_COMPONENTS[s.name]) for s in usable if s.name in env.shapes]
            inner = refs[0] if len(refs) == 1 else {"anyOf": refs}
        return {"type": "object", "required": [env.key], "additionalProperties": False, "properties": {env.key: inner}}

    return {
        **components,
        "Table": {"anyOf": [_ref(_SHAPE_COMPONENTS[s.name]) for s in usable]},
        "Body": {"anyOf": [_ref("Table"), *(envelope(e) for e in codecs.ENVELOPES.values())]},
        "Predictions": {"type": "object", "required": ["predictions"], "additionalProperties": False,
                        "properties": {"predictions": {"type": "array", "items": {
                            "nullable": True, "description": "a scalar (one output column) or {column: value}"}}}},
        "Metadata": {"type": "object", "additionalProperties": False,
                     "required": ["name", "version", "description", "digest", "custom_code", "input_schema",
                                  "output_columns", "scorer_version", "load_seconds"],
                     "properties": {
                         "name": {"type": "string"},
                         "version": {"type": "string", "nullable": True},
                         "description": {"type": "string", "nullable": True},
                         "digest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
                         "custom_code": {"type": "boolean"},
                         "input_schema": {"type": "array", "nullable": True, "items": {
                             "type": "object", "required": ["name", "type"],
                             "properties": {"name": {"type": "string"}, "type": {"type": "string"}}}},
                         "output_columns": {"type": "array", "nullable": True, "items": {"type": "string"}},
                         "scorer_version": {"type": "string"},
                         "load_seconds": {"type": "number", "minimum": 0},
                         "model_version": {"type": "string"},
                         "source": {"type": "object", "nullable": True, "description": "what the source "
                                    "named was resolved to: uri, kind, and for a registry name, version, alias or "
                                    "stage, run_id, source"},
                         "scoring": {"type": "object", "nullable": True, "description": "a Spark pipeline "
                                     "or H2O MOJO: the path scoring it (native or jvm); a scikit-learn model: plan "
                                     "or scikit-learn (and the stored plan's folder, cache); why, and what the "
                                     "verification compared (rows, difference, or why it was skipped)"},
                         "mlflow": {"type": "object", "nullable": True, "description": "an MLflow model: "
                                    "the flavor it is loaded by, run_id, model_id, mlflow_version"},
                         "reload": {"type": "object", "nullable": True, "description": "reload attempts: "
                                    "interval_s, attempts (by result), last_attempt, last_loaded_at, registry_stale_s"},
                     }},
        "Reload": {"type": "object", "required": ["result"],
                   "properties": {"result": {"type": "string", "enum": ["loaded", "unchanged", "requested"]},
                                  "model_version": {"type": "string"}, "digest": {"type": "string"}}},
        **_protocol_schemas(),
        "ProtocolError": {"type": "object", "required": ["error", "code", "request_id"], "additionalProperties": False,
                          "properties": {"error": {"type": "string", "description": "the message"},
                                         "code": {"type": "string"}, "request_id": {"type": "string"},
                                         "columns": {"type": "array", "items": {"type": "string"},
                                                     "description": "the missing columns (422 only)"}}},
        "Error": {"type": "object", "required": ["error", "message", "error_code", "request_id"],
                  "additionalProperties": False,
                  "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                                 "error_code": {"type": "string", "description": "MLflow's error code for the status"},
                                 "request_id": {"type": "string"},
                                 "columns": {"type": "array", "items": {"type": "string"},
                                             "description": "the missing columns (422 only)"}}},
    }


def _protocol_schemas() -> dict[str, Any]:
    datatype = {"type": "string", "enum": list(open_inference.DATATYPES)}
    shape = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2}
    tensor: dict[str, Any] = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
        "name": {"type": "string"}, "shape": shape, "datatype": datatype,
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
        "data": {"type": "array", "items": {}, "description": "row-major values, flat or nested"}}}
    return {
        "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "parameters": {"type": "object"},
            "inputs": {"type": "array", "minItems": 1, "items": tensor},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "parameters": {"type": "object", "properties": {
                    "binary_data": {"type": "boolean"}}}}}}}},
        "InferResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "outputs": {"type": "array", "items": {**tensor, "properties": {**tensor["properties"], "shape": {
                "type": "array", "items": {"type": "integer"}}}}}}},
        "ModelMetadata": {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
                          "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {
                              "type": "string"}}, "platform": {"type": "string"},
                              "inputs": {"type": "array", "items": {"type": "object"}},
                              "outputs": {"type": "array", "items": {"type": "object"}}}},
    }


def document(routes: Iterable[RouteLike], columns: dict[str, str] | None = None, *,
             auth: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of ``routes`` (the app's): every route with every answer it can
    give; request rows typed by ``columns`` (the bundle's input schema) when known, else any object;
    ``auth``: a token is configured (see the module docstring)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        spec = OPERATIONS.get(route.path)
        if spec is None:
            raise LookupError(f"route {route.path} has no description in scorer.serving.openapi.OPERATIONS")
        methods = sorted(m.lower() for m in route.methods or () if m != "HEAD")
        name = re.sub(r"[^A-Za-z0-9]+", "_", route.path.strip("/").split(".")[0]).strip("_")
        for method in methods:
            operation_id = name if len(methods) == 1 else f"{name}_{method}"
            paths.setdefault(route.path, {})[method] = _operation(operation_id, route.path, spec, auth)
    return {
        "openapi": "3.0.3",
        "info": {"title": "scorer", "version": __version__,
                 "description": "Score tables with a model bundle: POST rows, get one prediction per row."},
        "paths": paths,
        "components": {"schemas": _schemas(columns), "securitySchemes": SECURITY_SCHEMES},
    }
