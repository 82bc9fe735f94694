"""The OpenAPI 3.0 description of the HTTP API (``GET /openapi.json``), with the loaded bundle's
input columns when it has a schema."""

from __future__ import annotations

from typing import Any

from scorer._version import __version__

_JSON_TYPES = {"float": {"type": "number"}, "int": {"type": "integer"}, "bool": {"type": "boolean"},
               "string": {"type": "string"}, "any": {}}


def _error() -> dict[str, Any]:
    return {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def document(columns: dict[str, str] | None = None) -> dict[str, Any]:
    if columns:
        row: dict[str, Any] = {"type": "object", "properties": {c: _JSON_TYPES.get(t, {}) for c, t in columns.items()},
                               "required": list(columns)}
    else:
        row = {"type": "object", "additionalProperties": True}
    split = {"type": "object", "required": ["columns", "data"],
             "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                            "data": {"type": "array", "items": {"type": "array", "items": {}}}}}
    body = {"oneOf": [
        {"$ref": "#/components/schemas/Split"},
        {"type": "array", "items": {"$ref": "#/components/schemas/Row"}},
        {"$ref": "#/components/schemas/Row"},
        {"type": "object", "required": ["dataframe_split"], "properties": {"dataframe_split": {"$ref": "#/components/schemas/Split"}}},
        {"type": "object", "required": ["dataframe_records"],
         "properties": {"dataframe_records": {"type": "array", "items": {"$ref": "#/components/schemas/Row"}}}},
    ]}
    score = {
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": body},
            "text/csv": {"schema": {"type": "string"}},
        }},
        "responses": {
            "200": {"description": "one prediction per input row", "content": {
                "application/json": {"schema": {"type": "object", "required": ["predictions"],
                                                "properties": {"predictions": {"type": "array", "items": {}}}}}}},
            **{code: _error() for code in ("400", "401", "406", "408", "413", "415", "422", "500", "503", "504")},
        },
    }
    simple = {"responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}},
                            "503": _error()}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "scorer", "version": __version__,
                 "description": "Score tables with a model bundle: POST rows, get one prediction per row."},
        "paths": {
            "/predict": {"post": {"operationId": "predict", **score}},
            "/invocations": {"post": {"operationId": "invocations", **score}},
            "/health": {"get": {"operationId": "health", "responses": {"200": simple["responses"]["200"]}}},
            "/ready": {"get": {"operationId": "ready", **simple}},
            "/ping": {"get": {"operationId": "ping", **simple}},
            "/metadata": {"get": {"operationId": "metadata", **simple}},
        },
        "components": {"schemas": {
            "Row": row,
            "Split": split,
            "Error": {"type": "object", "required": ["error", "message"],
                      "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                                     "request_id": {"type": "string"}, "columns": {"type": "array", "items": {"type": "string"}}}},
        }},
    }
