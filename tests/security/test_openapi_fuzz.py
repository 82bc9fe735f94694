"""schemathesis against real servers, one without a token and one with (so its document carries the
security requirements and 401 answers): every operation in their OpenAPI description, and for the
scoring routes every request media type the codecs decode, fed generated requests that fit the
document (positive, to the open server) and requests that violate it (negative, to the server with
a token, sent or not), each asking for one of the response media types (or a range, or one nobody
produces), is answered without a 5xx, with a status code, media type, headers and body that the
document describes for that operation; Parquet, Arrow and CSV bodies are generated as real tables
(typed to the bundle's schema or not, whole or cut short) as well as arbitrary bytes, and a 200 is
in the media type asked for and parses as it. schemathesis' deterministic coverage phase finds
nothing either; the document lists exactly the app's routes, and the answers outside it (an
undocumented method, an unknown path) are the documented error body."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import orjson
import jsonschema_rs  # schemathesis' own validator (one of its dependencies)
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import hypothesis
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

from scorer import codecs
from security import openapi_serializers  # noqa: F401 - registers the Parquet and Arrow serializers

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTES = {"POST /predict", "POST /invocations", "GET /health", "GET /version", "GET /ready", "GET /ping", "GET /metadata",
          "GET /metrics", "GET /openapi.json", "GET /execution-parameters",
          # the Open Inference Protocol and KServe V1 (scorer.serving.inference)
          "GET /v2", "GET /v2/health/live", "GET /v2/health/ready", "GET /v2/models/{name}",
          "GET /v2/models/{name}/versions/{version}", "GET /v2/models/{name}/ready",
          "GET /v2/models/{name}/versions/{version}/ready", "POST /v2/models/{name}/infer",
          "POST /v2/models/{name}/versions/{version}/infer", "GET /v1/models", "GET /v1/models/{name}",
          "POST /v1/models/{name}:predict"}
TABLE_ROUTES = {"POST /predict", "POST /invocations"}  # every codec of scorer.codecs, Accept negotiated
# What a client may ask for: every response media type, the ranges, no Accept at all, one nobody produces.
ACCEPTS = [*codecs.ENCODERS, *codecs.ACCEPT_RANGES, None, "image/png"]
TESTS = Path(__file__).resolve().parent.parent


def _bundle(root: Path) -> Path:
    (root / "artifacts").mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "custom_preprocess.py").write_text(
        "import scorer\n"
        "class CustomPreprocessor(scorer.CustomPreprocessor):\n"
        "    input_schema = {'a': 'float', 'b': 'int', 's': 'string'}\n"
        "    def predict(self, df):\n"
        "        return (df['a'] + df['b']).rename('sum')\n"
    )
    return root


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):  # type: ignore[no-untyped-def]
    from conftest import run_server  # type: ignore[import-not-found]

    root = _bundle(tmp_path_factory.mktemp("bundle") / "sum")
    with run_server(root, env={"SCORER_AUTH_TOKEN": TOKEN}, log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):  # type: ignore[no-untyped-def]
    from conftest import run_server  # type: ignore[import-not-found]

    root = _bundle(tmp_path_factory.mktemp("bundle") / "sum")
    with run_server(root, log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server


# --- tables as Parquet, Arrow and CSV bodies --------------------------------------------------

_COLUMN_TYPES = {
    "float": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "int": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "string": (pa.string(), st.text(max_size=6)),
    "bool": (pa.bool_(), st.booleans()),
}


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    """A table whose columns are mostly the schema's (a: float, b: int, s: string), sometimes missing one,
    carrying an extra one or of another type; values sometimes null."""
    rows = draw(st.integers(0, 4))
    names = draw(st.lists(st.sampled_from(["a", "b", "s", "extra"]), unique=True, min_size=0, max_size=4)
                 | st.just(["a", "b", "s"]))
    natural = {"a": "float", "b": "int", "s": "string", "extra": "bool"}
    columns = {}
    for name in names:
        kind = draw(st.sampled_from([natural[name]] * 3 + list(_COLUMN_TYPES)))
        arrow_type, values = _COLUMN_TYPES[kind]
        columns[name] = pa.array(draw(st.lists(st.none() | values, min_size=rows, max_size=rows)), type=arrow_type)
    return pa.table(columns) if columns else pa.table({"a": pa.array([], pa.float64())})


def _encode(table: pa.Table, media: str) -> tuple[bytes, str]:
    """``table`` as a body of ``media`` (CSV with or without its header line), and the Content-Type."""
    sink = io.BytesIO()
    if media == codecs.PARQUET:
        pq.write_table(table, sink)
    elif media in (codecs.ARROW_STREAM, codecs.ARROW_FILE):
        open_writer = pa.ipc.new_stream if media == codecs.ARROW_STREAM else pa.ipc.new_file
        with open_writer(sink, table.schema) as writer:
            writer.write_table(table)
    elif media == codecs.CSV:
        headerless = table.num_columns == 3 and table.column_names == ["a", "b", "s"] and table.num_rows % 2
        pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=not headerless))
        return sink.getvalue(), codecs.CSV + ("; header=absent" if headerless else "")
    elif media == codecs.JSONL:
        return b"".join(orjson.dumps(row) + b"\n" for row in table.to_pylist()), media
    return sink.getvalue(), media


@st.composite
def bodies(draw: st.DrawFn, media: str) -> tuple[bytes, str] | None:
    """None (keep schemathesis' own body), a table encoded as ``media``, or such a body cut short."""
    choice = draw(st.sampled_from(["generated", "table", "table", "truncated"]))
    if choice == "generated":
        return None
    body, content_type = _encode(draw(tables()), media)
    if choice == "truncated":
        body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    return body, content_type


def _media(response: schemathesis.Response) -> str:
    return response.headers["content-type"][0].split(";")[0]


def _check_body(response: schemathesis.Response, accept: str | None) -> None:
    """A 200 answer is in the media type Accept asked for, and parses as it."""
    if response.status_code != 200 or accept is None:
        return
    media = _media(response)
    assert media == codecs.ACCEPT_RANGES.get(accept, accept).split(";")[0], (accept, media)
    data = io.BytesIO(response.content)
    if media == codecs.PARQUET:
        pq.read_table(data)
    elif media == codecs.ARROW_STREAM:
        pa.ipc.open_stream(data).read_all()
    elif media == codecs.ARROW_FILE:
        pa.ipc.open_file(data).read_all()
    elif media == codecs.CSV and response.content.strip():  # headerless: a null of one column is an empty line
        headerless = response.headers["content-type"][0] == codecs.CSV_LINES
        pa_csv.read_csv(data, pa_csv.ReadOptions(autogenerate_column_names=headerless))
    elif media == codecs.JSONL:
        assert all(isinstance(orjson.loads(line), dict) for line in response.content.splitlines())


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_answer_matches_the_document(request, mode: GenerationMode) -> None:  # type: ignore[no-untyped-def]
    """Every operation in /openapi.json, and each request media type of the scoring routes: 25
    generated cases each (bodies, headers and media types that fit the document, or that violate it;
    Parquet, Arrow and CSV bodies also as real tables), against the live server: each answer is not
    a 5xx, and its status code, Content-Type, headers and body are the ones the document describes
    for that operation (schemathesis' status_code, content_type, response_headers and
    response_schema conformance checks); a 200 is in the media type Accept asked for and parses.
    Positive cases go to a server without a token, negative ones to a server with one (they send it
    or not): both forms of the document are fuzzed, each once."""
    with_token = mode == GenerationMode.NEGATIVE
    fuzzed_server = request.getfixturevalue("fuzzed_server" if with_token else "open_server")
    # from_dict, not from_url: schemathesis skips the path its document came from, and /openapi.json is fuzzed too
    document = requests.get(fuzzed_server.url + "/openapi.json", headers=AUTH, timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == ROUTES | ({"POST /admin/reload"} if with_token else set())
    seen: dict[tuple[str, str | None], set[int]] = {}
    for operation in operations:
        media_types: list[str | None] = [None]
        tables = operation.label in TABLE_ROUTES
        if operation.body:
            media_types = [body.media_type for body in operation.body]
            assert set(media_types) == set(codecs.DECODERS) or not tables
        elif mode == GenerationMode.NEGATIVE and not list(operation.iter_parameters()):
            continue  # nothing in the request to violate (GET /health and the like)
        for media in media_types:

            @given(case=operation.as_strategy(generation_mode=mode, media_type=media), data=st.data())
            @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
            def run(case, data) -> None:  # type: ignore[no-untyped-def]
                headers = dict(AUTH) if with_token and data.draw(st.sampled_from([True, True, True, False])) else {}
                accept = None
                if tables:
                    accept = data.draw(st.sampled_from(ACCEPTS))
                    if accept is not None:
                        headers["Accept"] = accept
                    if media != codecs.JSON:
                        table_body = data.draw(bodies(media))
                        if table_body is not None:
                            case.body, headers["Content-Type"] = table_body
                response = case.call(base_url=fuzzed_server.url, headers=headers, timeout=30)
                seen.setdefault((case.operation.label, media), set()).add(response.status_code)
                case.validate_response(response, checks=CHECKS)
                _check_body(response, accept)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                # A GET whose only parameters are path strings, open without a token: no request violates it.
                if mode != GenerationMode.NEGATIVE or operation.body or operation.label.startswith("POST"):
                    raise
    print(mode, {f"{label} {media or ''}": sorted(codes) for (label, media), codes in seen.items()})
    if mode == GenerationMode.POSITIVE:
        assert 200 in seen["POST /predict", codecs.JSON], seen
    else:
        assert seen["POST /predict", codecs.JSON] & {400, 415, 422}, seen
        assert 401 in set().union(*(codes for (label, _), codes in seen.items() if label == "POST /predict")), seen


@pytest.mark.parametrize("path", ["/predict", "/invocations"])
def test_every_request_media_type_with_every_response_media_type(fuzzed_server, path: str) -> None:  # type: ignore[no-untyped-def]
    """Each request media type the codecs decode (a two-row table of the bundle's columns) with each
    response media type they encode and each Accept range: 200, in the media type asked for, parsing
    as it, and conforming to the document (which therefore lists them all); the predictions are right.
    The same table sent under each alias the document names, and under each sniffed type, is scored too."""
    document = requests.get(fuzzed_server.url + "/openapi.json", headers=AUTH, timeout=10).json()
    operation = schemathesis.openapi.from_dict(document)[path]["POST"]
    table = pa.table({"a": [1.5, 2.0], "b": [1, 2], "s": ["x", "y"]})
    for media in codecs.DECODERS:
        for accept in [*codecs.ENCODERS, *codecs.ACCEPT_RANGES]:
            if media == codecs.JSON:
                body: Any = {"dataframe_split": {"columns": table.column_names, "data": [[1.5, 1, "x"], [2.0, 2, "y"]]}}
                content_type = media
            else:
                body, content_type = _encode(table, media)
            case = operation.Case(media_type=media, body=body, headers={**AUTH, "Accept": accept, "Content-Type": content_type})
            response = case.call(base_url=fuzzed_server.url, timeout=30)
            assert response.status_code == 200, (media, accept, response.status_code, response.text)
            case.validate_response(response, checks=CHECKS)
            _check_body(response, accept)
            if _media(response) == codecs.JSON:
                assert response.json() == {"predictions": [2.5, 4.0]}, (media, accept)
    # the other names the document's description gives: aliases, and the types whose body is sniffed (not CSV
    # and JSON Lines: their first bytes do not tell them)
    others = [(alias, mt) for alias, mt in codecs.ALIASES.items()] + [
        (sniffed, mt) for sniffed in codecs.SNIFFED for mt in codecs.DECODERS if mt not in (codecs.CSV, codecs.JSONL)]
    for content_type, mt in others:
        body = orjson.dumps({"columns": table.column_names, "data": [[1.5, 1, "x"], [2.0, 2, "y"]]}) \
            if mt == codecs.JSON else _encode(table, mt)[0]
        headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
        response = requests.post(fuzzed_server.url + path, data=body, headers=headers, timeout=30)
        assert response.status_code == 200, (content_type, mt, response.status_code, response.text)
        assert response.json() == {"predictions": [2.5, 4.0]}, (content_type, mt)


def test_document_lists_exactly_the_routes_and_other_answers_are_its_error_body(fuzzed_server) -> None:  # type: ignore[no-untyped-def]
    """The document's paths and methods are exactly the server's routes; every other method on those
    paths is 405 with an ``Allow`` header naming the documented method, and an unknown path is 404,
    both with a body that validates against the document's ``Error`` schema."""
    from scorer.serving.routes import ADMIN_ROUTES, ROUTES

    document = requests.get(fuzzed_server.url + "/openapi.json", headers=AUTH, timeout=10).json()
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    served = {(route.path, method) for route in [*ROUTES, *ADMIN_ROUTES]  # a token is configured: /admin/reload exists
              for method in route.methods or () if method != "HEAD"}
    assert documented == served, (documented ^ served)
    error_body = jsonschema_rs.Draft4Validator({**document["components"]["schemas"]["Error"],
                                                "components": document["components"]})
    protocol_error = jsonschema_rs.Draft4Validator({**document["components"]["schemas"]["ProtocolError"],
                                                    "components": document["components"]})
    for path, item in document["paths"].items():
        for method in METHODS:
            if method.lower() in item:
                continue
            r = requests.request(method, fuzzed_server.url + path, timeout=10)
            assert r.status_code == 405, (method, path, r.status_code, r.text)
            assert {m.strip() for m in r.headers["Allow"].split(",")} - {"HEAD"} == {m.upper() for m in item}
            if path.startswith(("/v2", "/v1/")):  # the inference protocols' shape: the message in "error"
                protocol_error.validate(r.json())
                assert r.json()["code"] == "method_not_allowed"
            else:
                error_body.validate(r.json())
                assert r.json()["error"] == "method_not_allowed"
            assert r.headers["X-Request-ID"] == r.json()["request_id"]
    r = requests.get(fuzzed_server.url + "/no-such-route", timeout=10)
    assert r.status_code == 404, r.text
    error_body.validate(r.json())
    assert r.json()["error"] == "not_found"


def test_coverage_phase_finds_nothing(fuzzed_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """schemathesis' deterministic coverage phase (boundary values, each documented media type, missing
    and wrong-typed fields, missing credentials, undocumented methods) run by its own CLI against the
    live server with a token configured: no 5xx, every status, media type, header and body as
    documented, and every undocumented method a 405 with Allow (unsupported_method)."""
    checks = ",".join(c.__name__ for c in CHECKS) + ",unsupported_method"
    auth = ["--header", f"Authorization: Bearer {TOKEN}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "security.openapi_serializers",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", fuzzed_server.url + "/openapi.json",
                             "--phases", "coverage", "--checks", checks, "--no-color", *auth],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                            check=False)  # it writes .schemathesis/
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
