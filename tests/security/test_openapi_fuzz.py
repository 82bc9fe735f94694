"""schemathesis against a real server: every operation in its OpenAPI description, fed generated
requests that fit the document (positive) and requests that violate it (negative), is answered
without a 5xx, with a status code, media type, headers and body that the document describes for
that operation; schemathesis' deterministic coverage phase finds nothing either; the document lists
exactly the server's routes, and the answers outside it (an undocumented method, an unknown path)
are the documented error body."""

from __future__ import annotations

import subprocess
import sys

import jsonschema_rs  # schemathesis' own validator (one of its dependencies)
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):  # type: ignore[no-untyped-def]
    from conftest import run_server  # type: ignore[import-not-found]

    root = tmp_path_factory.mktemp("bundle") / "sum"
    (root / "artifacts").mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "custom_preprocess.py").write_text(
        "import scorer\n"
        "class CustomPreprocessor(scorer.CustomPreprocessor):\n"
        "    input_schema = {'a': 'float', 'b': 'int', 's': 'string'}\n"
        "    def predict(self, df):\n"
        "        return (df['a'] + df['b']).rename('sum')\n"
    )
    with run_server(root, log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_answer_matches_the_document(fuzzed_server, mode: GenerationMode) -> None:  # type: ignore[no-untyped-def]
    """Every operation in /openapi.json, 60 generated cases each (bodies, headers and media types that
    fit the document, or that violate it), against the live server: each answer is not a 5xx, and its
    status code, Content-Type, headers and body are the ones the document describes for that operation
    (schemathesis' status_code, content_type, response_headers and response_schema conformance checks)."""
    # from_dict, not from_url: schemathesis skips the path its document came from, and /openapi.json is fuzzed too
    schema = schemathesis.openapi.from_dict(requests.get(fuzzed_server.url + "/openapi.json", timeout=10).json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /predict", "POST /invocations", "GET /health", "GET /ready",
                                               "GET /ping", "GET /metadata", "GET /metrics", "GET /openapi.json"}
    seen: dict[str, set[int]] = {}
    for operation in operations:
        if mode == GenerationMode.NEGATIVE and not operation.body and not list(operation.iter_parameters()):
            continue  # nothing in the request to violate (GET /health and the like)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=fuzzed_server.url, timeout=30)
            seen.setdefault(case.operation.label, set()).add(response.status_code)
            case.validate_response(response, checks=CHECKS)

        run()
    print(mode, {label: sorted(codes) for label, codes in seen.items()})
    if mode == GenerationMode.POSITIVE:
        assert 200 in seen["POST /predict"], seen
    else:
        assert seen["POST /predict"] & {400, 415, 422}, seen


def test_document_lists_exactly_the_routes_and_other_answers_are_its_error_body(fuzzed_server) -> None:  # type: ignore[no-untyped-def]
    """The document's paths and methods are exactly the server's routes; every other method on those
    paths is 405 with an ``Allow`` header naming the documented method, and an unknown path is 404,
    both with a body that validates against the document's ``Error`` schema."""
    from scorer.serving.routes import ROUTES

    document = requests.get(fuzzed_server.url + "/openapi.json", timeout=10).json()
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    served = {(route.path, method) for route in ROUTES for method in route.methods or () if method != "HEAD"}
    assert documented == served, (documented ^ served)
    error_body = jsonschema_rs.Draft4Validator({**document["components"]["schemas"]["Error"],
                                                "components": document["components"]})
    for path, item in document["paths"].items():
        for method in METHODS:
            if method.lower() in item:
                continue
            r = requests.request(method, fuzzed_server.url + path, timeout=10)
            assert r.status_code == 405, (method, path, r.status_code, r.text)
            assert {m.strip() for m in r.headers["Allow"].split(",")} - {"HEAD"} == {m.upper() for m in item}
            error_body.validate(r.json())
            assert r.json()["error"] == "method_not_allowed" and r.headers["X-Request-ID"] == r.json()["request_id"]
    r = requests.get(fuzzed_server.url + "/no-such-route", timeout=10)
    assert r.status_code == 404, r.text
    error_body.validate(r.json())
    assert r.json()["error"] == "not_found"


def test_coverage_phase_finds_nothing(fuzzed_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """schemathesis' deterministic coverage phase (boundary values, each documented media type, missing
    and wrong-typed fields, undocumented methods) run by its own CLI against the live server: no 5xx,
    every status, media type, header and body as documented, and every undocumented method a 405 with
    Allow (unsupported_method)."""
    checks = ",".join(c.__name__ for c in CHECKS) + ",unsupported_method"
    result = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", fuzzed_server.url + "/openapi.json",
                             "--phases", "coverage", "--checks", checks, "--no-color"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)  # it writes .schemathesis/
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
