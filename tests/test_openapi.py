"""The OpenAPI document cannot drift from the server: it is served by the app itself, its paths and
methods are the app's routes, its request and response media types are exactly the codec tables'
(aliases, sniffed types and Accept ranges named), every JSON shape and envelope the codecs accept is
in its request schema, each operation's error statuses are those of the errors it raises, and the
bearer/token schemes apply exactly when a token is configured."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from scorer import codecs
from scorer.errors import HTTP_STATUS, ClientDisconnected, ScorerError, http_status
from scorer.serving.http_errors import MLFLOW_ERROR_CODES
from scorer.serving import openapi
from scorer.serving.app import create_app
from scorer.settings import Settings

pytestmark = pytest.mark.fast

COLUMNS = {"a": "float", "b": "int"}
PROTECTED = {"/predict", "/invocations", "/metadata", "/metrics", "/openapi.json", "/admin/reload",
             "/v2/models/{name}", "/v2/models/{name}/versions/{version}", "/v2/models/{name}/infer",
             "/v2/models/{name}/versions/{version}/infer", "/v1/models", "/v1/models/{name}",
             "/v1/models/{name}:predict"}


def _routes(app: Any) -> set[tuple[str, str]]:
    return {(r.path, m) for r in app.routes for m in r.methods or () if m != "HEAD"}


def _served(token: str = "") -> tuple[Any, dict[str, Any]]:
    """The app and the document it serves (no bundle loaded: rows untyped)."""
    app = create_app(Settings(auth_token=token))
    with TestClient(app) as client:
        response = client.get("/openapi.json", headers={"Authorization": f"Bearer {token}"} if token else {})
    assert response.status_code == 200, response.text
    return app, response.json()


def _tree(klass: type[ScorerError]) -> list[type[ScorerError]]:
    return [klass, *(k for sub in klass.__subclasses__() for k in _tree(sub))]


def _refs(schema: Any) -> set[str]:
    """Every component name reachable by $ref from ``schema`` (inside the document's components)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    found.add(value.rsplit("/", 1)[-1])
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return found


@pytest.mark.parametrize("token", ["", "s3cret"], ids=["open", "token"])
def test_paths_and_methods_are_the_apps_routes(token: str) -> None:
    app, document = _served(token)
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    assert documented == _routes(app), documented ^ _routes(app)
    assert {"/predict", "/invocations", "/health", "/ready", "/ping", "/metadata", "/metrics",
            "/openapi.json"} <= {path for path, _ in documented}


def test_a_route_without_a_description_is_an_error_not_an_omission() -> None:
    class Route:
        path, methods = "/new-route", {"GET"}

    with pytest.raises(LookupError, match="route /new-route has no description"):
        openapi.document([Route()])


def test_a_json_shape_without_a_schema_is_an_error_not_an_omission(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = codecs.JsonShape("new", "a shape nobody described", lambda obj: False, lambda obj, columns: None)  # type: ignore[arg-type,return-value]
    monkeypatch.setattr(codecs, "JSON_SHAPES", (*codecs.JSON_SHAPES, shape))
    with pytest.raises(LookupError, match="JSON shapes \\[.new.\\] of scorer.codecs have no JSON Schema"):
        openapi.document([], COLUMNS)


def test_request_and_response_media_types_are_the_codec_tables() -> None:
    app = create_app(Settings())
    document = openapi.document(app.routes, COLUMNS)
    for path in ("/predict", "/invocations"):
        operation = document["paths"][path]["post"]
        body = operation["requestBody"]
        assert list(body["content"]) == list(codecs.DECODERS)
        for mt, decoder in codecs.DECODERS.items():
            schema = body["content"][mt]["schema"]
            assert schema == ({"$ref": "#/components/schemas/Body"} if mt == codecs.JSON else
                              {"type": "string", "format": "binary"} if decoder.binary else {"type": "string"})
            for name in decoder.params or {}:
                assert f"`{mt}; {name}=" in body["description"]
        for alias, mt in codecs.ALIASES.items():
            assert f"`{alias}` as `{mt}`" in body["description"]
        for sniffed in codecs.SNIFFED:
            assert (f"`{sniffed}`" if sniffed else "none") in body["description"]
        assert list(operation["responses"]["200"]["content"]) == list(codecs.ENCODERS)
        for accept_range, mt in codecs.ACCEPT_RANGES.items():
            assert f"`{accept_range}` means `{mt}`" in operation["description"]


@pytest.mark.parametrize("columns", [COLUMNS, None], ids=["schema", "no-schema"])
def test_every_json_shape_and_envelope_is_in_the_request_schema(columns: dict[str, str] | None) -> None:
    """Body = Table or one of the envelopes; Table = every JSON shape (positional rows only with an
    input schema to name their columns); each envelope's value is the shapes it takes."""
    schemas = openapi.document(create_app(Settings()).routes, columns)["components"]["schemas"]
    body = schemas["Body"]["anyOf"]
    assert body[0] == {"$ref": "#/components/schemas/Table"}
    assert [next(iter(e["properties"])) for e in body[1:]] == list(codecs.ENVELOPES)
    shapes = [s for s in codecs.JSON_SHAPES if columns or not s.needs_columns]
    assert [r["$ref"].rsplit("/", 1)[-1] for r in schemas["Table"]["anyOf"]] == [
        openapi._SHAPE_COMPONENTS[s.name] for s in shapes]
    for shape in shapes:
        assert schemas[openapi._SHAPE_COMPONENTS[shape.name]]["description"] == shape.summary
    for envelope_schema, envelope in zip(body[1:], codecs.ENVELOPES.values(), strict=True):
        inner = envelope_schema["properties"][envelope.key]
        expected = {"Table"} if envelope.shapes is None else {
            openapi._SHAPE_COMPONENTS[s.name] for s in shapes if s.name in envelope.shapes}
        assert _refs(inner) == expected, envelope.key
    if columns:
        assert set(schemas["Row"]["properties"]) == set(columns)


@pytest.mark.parametrize("token", ["", "s3cret"], ids=["open", "token"])
def test_error_statuses_come_from_the_errors_each_route_raises(token: str) -> None:
    """Each operation's error answers are the HTTP_STATUS of the error classes it raises (401 only
    behind a configured token), each with the Error body; together they cover every status of
    HTTP_STATUS except 499 (a client that has gone reads nothing)."""
    _, document = _served(token)
    seen: set[int] = set()
    for path, item in document["paths"].items():
        spec = openapi.OPERATIONS[path]
        for operation in item.values():
            statuses = {int(s) for s in operation["responses"] if s != "200"}
            expected = {http_status(k.__new__(k)) for klass in spec.raises for k in _tree(klass)
                        if not issubclass(k, ClientDisconnected)}
            if token and path in PROTECTED:
                expected.add(401)
            assert statuses == expected, (path, statuses, expected)
            for status in statuses:
                answer = operation["responses"][str(status)]["content"][codecs.JSON]["schema"]["allOf"]
                if spec.protocol:  # the inference protocols' shape: the message in "error", our code in "code"
                    assert answer[0] == {"$ref": "#/components/schemas/ProtocolError"}
                    assert set(answer[1]["properties"]["code"]["enum"]) == set(openapi.error_codes(status))
                    continue
                assert answer[0] == {"$ref": "#/components/schemas/Error"}
                assert set(answer[1]["properties"]["error"]["enum"]) == set(openapi.error_codes(status))
                assert answer[1]["properties"]["error_code"]["enum"] == [MLFLOW_ERROR_CODES[status]]
            seen |= statuses
    # 409 (a rejected reload) comes only from POST /admin/reload, which exists only with a token.
    assert seen == set(HTTP_STATUS.values()) - {499} - (set() if token else {401, 409}), seen


@pytest.mark.parametrize("token", ["", "s3cret"], ids=["open", "token"])
def test_the_bearer_scheme_applies_exactly_when_a_token_is_configured(token: str) -> None:
    _, document = _served(token)
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <token>"}
    assert schemes["token"]["in"] == "header" and schemes["token"]["name"] == "token"
    for path, item in document["paths"].items():
        for operation in item.values():
            if token and path in PROTECTED:
                assert operation["security"] == [{"bearer": []}, {"token": []}], path
                assert "401" in operation["responses"]
            else:
                assert "security" not in operation and "401" not in operation["responses"], path
