"""The OpenAPI 3.0 description of the HTTP API (``GET /openapi.json``), with the loaded bundle's
input columns when it has a schema.

Guarantee: every route the server serves is described, with every status code, media type, header
and body shape it can answer (tests/security/test_openapi_fuzz.py checks the live server's answers
against this document). Error bodies are ``{error, message, request_id}`` (plus ``columns`` for
missing columns) and nothing else; the ``error`` codes each status can carry come from
:data:`scorer.errors.HTTP_STATUS`, the one mapping the server uses.
"""

from __future__ import annotations

from typing import Any

from scorer._version import __version__
from scorer.errors import HTTP_STATUS, ScorerError

_JSON_TYPES = {"float": {"type": "number"}, "int": {"type": "integer"}, "bool": {"type": "boolean"},
               "string": {"type": "string"}, "any": {}}
_SCORE_ERRORS = ("400", "401", "406", "408", "413", "415", "422", "500", "503", "504")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_REQUEST_ID = {"X-Request-ID": {"description": "the request's id: the one sent in X-Request-ID, else a new one",
                                "required": True, "schema": {"type": "string"}}}
_ERROR_HEADERS = {
    "401": {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "enum": ["Bearer"]}}},
    "503": {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}},
}
# Errors raised outside ScorerError: routing (404, 405) and anything unexpected (500).
_OTHER_CODES = {404: ["not_found"], 405: ["method_not_allowed"], 500: ["internal_error"]}


def _subclasses(klass: type[ScorerError]) -> list[type[ScorerError]]:
    return [klass, *(s for sub in klass.__subclasses__() for s in _subclasses(sub))]


def error_codes(status: int) -> list[str]:
    """Every ``error`` code an answer with this status can carry."""
    codes = {k.code for k in _subclasses(ScorerError) if _status_of(k) == status} | set(_OTHER_CODES.get(status, []))
    return sorted(codes)


def _status_of(klass: type[ScorerError]) -> int:
    return next(HTTP_STATUS[c] for c in klass.__mro__ if c in HTTP_STATUS)  # type: ignore[index]


def _error(status: str) -> dict[str, Any]:
    schema = {"allOf": [{"$ref": "#/components/schemas/Error"},
                        {"type": "object", "properties": {"error": {"type": "string", "enum": error_codes(int(status))}}}]}
    return {"description": "error", "headers": {**_REQUEST_ID, **_ERROR_HEADERS.get(status, {})},
            "content": {"application/json": {"schema": schema}}}


def _ok(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": _REQUEST_ID, "content": content}


def _status_body(value: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"type": "object", "required": ["status"], "additionalProperties": False,
                                            "properties": {"status": {"type": "string", "enum": [value]}}}}}


def _schemas(columns: dict[str, str] | None) -> dict[str, Any]:
    if columns:
        row: dict[str, Any] = {"type": "object", "properties": {c: _JSON_TYPES.get(t, {}) for c, t in columns.items()},
                               "required": list(columns)}
        by_column: dict[str, Any] = {"type": "object", "required": list(columns), "properties": {
            c: {"type": "array", "items": _JSON_TYPES.get(t, {})} for c, t in columns.items()}}
        positional = [{"type": "array", "items": {"type": "array", "minItems": len(columns), "maxItems": len(columns)}}]
    else:
        row = {"type": "object", "additionalProperties": True}
        by_column = {"type": "object", "additionalProperties": {"type": "array"}}
        positional = []

    def envelope(key: str, inner: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "required": [key], "additionalProperties": False, "properties": {key: inner}}

    table = {"anyOf": [
        {"$ref": "#/components/schemas/Split"},
        {"type": "array", "items": {"$ref": "#/components/schemas/Row"}},
        *positional,
        {"$ref": "#/components/schemas/Row"},
        by_column,
    ]}
    return {
        "Row": row,
        "Split": {"type": "object", "required": ["columns", "data"],
                  "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                                 "data": {"type": "array", "items": {"type": "array", "items": {}}}}},
        "Table": table,
        "Body": {"anyOf": [
            {"$ref": "#/components/schemas/Table"},
            envelope("dataframe_split", {"$ref": "#/components/schemas/Split"}),
            envelope("dataframe_records", {"type": "array", "items": {"$ref": "#/components/schemas/Row"}}),
            envelope("instances", {"$ref": "#/components/schemas/Table"}),
            envelope("inputs", {"$ref": "#/components/schemas/Table"}),
        ]},
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
                     }},
        "Error": {"type": "object", "required": ["error", "message", "request_id"], "additionalProperties": False,
                  "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                                 "request_id": {"type": "string"},
                                 "columns": {"type": "array", "items": {"type": "string"},
                                             "description": "the missing columns (422 only)"}}},
    }


def document(columns: dict[str, str] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document: every route with every answer it can give; request rows typed by
    ``columns`` (the bundle's input schema) when known, else any object."""
    score = {
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Body"}},
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": _BINARY,
            "application/vnd.apache.arrow.stream": _BINARY,
            "application/vnd.apache.arrow.file": _BINARY,
        }},
        "responses": {
            "200": _ok("one prediction per input row, as JSON or in the format Accept asks for", {
                "application/json": {"schema": {"$ref": "#/components/schemas/Predictions"}},
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": _BINARY,
                "application/vnd.apache.arrow.stream": _BINARY,
            }),
            **{code: _error(code) for code in _SCORE_ERRORS},
        },
    }
    ready = {"responses": {"200": _ok("the bundle is loaded", _status_body("ready")), "503": _error("503")}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "scorer", "version": __version__,
                 "description": "Score tables with a model bundle: POST rows, get one prediction per row."},
        "paths": {
            "/predict": {"post": {"operationId": "predict", **score}},
            "/invocations": {"post": {"operationId": "invocations", **score}},
            "/health": {"get": {"operationId": "health", "responses": {"200": _ok("the process is alive", _status_body("ok"))}}},
            "/ready": {"get": {"operationId": "ready", **ready}},
            "/ping": {"get": {"operationId": "ping", **ready}},
            "/metadata": {"get": {"operationId": "metadata", "responses": {
                "200": _ok("the loaded bundle", {"application/json": {"schema": {"$ref": "#/components/schemas/Metadata"}}}),
                "401": _error("401"), "503": _error("503")}}},
            "/metrics": {"get": {"operationId": "metrics", "responses": {
                "200": _ok("Prometheus text exposition", {"text/plain": {"schema": {"type": "string"}}}),
                "401": _error("401")}}},
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {
                "200": _ok("this document", {"application/json": {"schema": {"type": "object",
                                                                               "required": ["openapi", "paths"]}}})}}},
        },
        "components": {"schemas": _schemas(columns)},
    }
