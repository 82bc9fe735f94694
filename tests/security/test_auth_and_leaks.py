"""Security against a real server process: optional token auth on scoring, metadata, metrics and the
OpenAPI document (health stays open), and neither error bodies nor logs echo request data, not even
a short value, unless the operator opts in with --echo-bad-values."""

from __future__ import annotations

import requests

# Short enough that the old 20-character cut-off returned it whole.
SECRET = "4111-1111-1111-1111"


def test_token_required_on_scoring_not_on_health(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """With SCORER_AUTH_TOKEN set: /predict, /invocations, /metadata, /metrics and /openapi.json (it names
    the input columns and types) need the token, as `Authorization: Bearer` or the vendor's `token`
    header; /health, /ready and /ping stay open."""
    with live_server(sum_bundle(), env={"SCORER_AUTH_TOKEN": "s3cret-token"}) as server:
        row = {"a": 1.0, "b": 2.0}
        for path in ("/predict", "/invocations"):
            missing = requests.post(server.url + path, json=row)
            assert missing.status_code == 401 and missing.json()["error"] == "unauthorized", missing.text
            assert missing.headers["WWW-Authenticate"] == "Bearer"
            assert requests.post(server.url + path, json=row, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert requests.post(server.url + path, json=row, headers={"token": "s3cret-token-and-more"}).status_code == 401
            bearer = requests.post(server.url + path, json=row, headers={"Authorization": "Bearer s3cret-token"})
            assert bearer.status_code == 200 and bearer.json()["predictions"][0]["sum"] == 3.0
            vendor = requests.post(server.url + path, json=row, headers={"token": "s3cret-token"})
            assert vendor.status_code == 200
        for path in ("/metadata", "/metrics", "/openapi.json"):
            refused = requests.get(server.url + path)
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized", (path, refused.text)
            assert '"a"' not in refused.text
            assert requests.get(server.url + path, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
            assert requests.get(server.url + path, headers={"token": "s3cret-token"}).status_code == 200
        document = requests.get(server.url + "/openapi.json", headers={"token": "s3cret-token"}).json()
        assert set(document["components"]["schemas"]["Row"]["properties"]) == {"a", "b"}
        for path in ("/health", "/ready", "/ping"):
            assert requests.get(server.url + path).status_code == 200
        log = server.log()
    assert "s3cret-token" not in log


def test_errors_and_logs_never_echo_request_data(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """Bodies that fail to parse, fail the schema or make the model raise: the 4xx/5xx body names the
    problem but never contains the submitted data, and neither does the server log."""
    with live_server(sum_bundle(), "--log-level", "debug") as server:
        bad_json = requests.post(server.url + "/predict", data='{"a": "' + SECRET + '", b: 1}',
                                 headers={"Content-Type": "application/json"})
        bad_csv = requests.post(server.url + "/predict", data=f"a,b\n{SECRET},1,2,3\n", headers={"Content-Type": "text/csv"})
        unknown_column = requests.post(server.url + "/predict", json={SECRET: 1.0, "b": 2.0})
        bad_value = requests.post(server.url + "/predict", json={"a": SECRET, "b": 2.0})
        model_raises = requests.post(server.url + "/predict", json={"a": 666.0, "b": 2.0})  # the model raises
        responses = [bad_json, bad_csv, unknown_column, bad_value, model_raises]
        log = server.log()
    assert [r.status_code for r in responses] == [400, 400, 422, 422, 500], [r.text for r in responses]
    assert [r.json()["error"] for r in responses] == ["malformed_body"] * 2 + ["schema_error"] * 2 + ["model_error"]
    assert model_raises.json()["message"] == "model raised ValueError in predict"  # not its text: "poison row"
    assert "poison row" not in log
    for r in responses:
        assert SECRET not in r.text, r.text
        assert "Traceback" not in r.text
        assert set(r.json()) <= {"error", "message", "error_code", "request_id", "columns"} and r.json()["message"], r.text
    assert SECRET not in log


LEAKY_MODEL = """
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "string"}

        def predict(self, df):
            raise ValueError(f"cannot score customer {df['b'].iloc[0]}")
"""


def test_model_exception_text_stays_out_of_bodies_and_logs(bundle_factory, live_server) -> None:  # type: ignore[no-untyped-def]
    """A model whose exception quotes the row it failed on: the 500 body and the log name the exception
    class (model_error, "ValueError") but not its text; with --echo-bad-values (development) both
    carry it, and a 422 quotes the offending value."""
    bundle = bundle_factory("leaky", code=LEAKY_MODEL)
    with live_server(bundle) as server:
        r = requests.post(server.url + "/predict", json={"a": 1.0, "b": SECRET})
        log = server.log()
    assert r.status_code == 500 and r.json()["error"] == "model_error", r.text
    assert r.json()["message"] == "model raised ValueError in predict"
    assert SECRET not in r.text and SECRET not in log
    assert "ValueError" in log
    with live_server(bundle, "--echo-bad-values") as server:
        r = requests.post(server.url + "/predict", json={"a": 1.0, "b": SECRET})
        bad = requests.post(server.url + "/predict", json={"a": SECRET, "b": "x"})
        log = server.log()
    assert r.status_code == 500 and f"cannot score customer {SECRET}" in r.json()["message"], r.text
    assert f"cannot score customer {SECRET}" in log
    assert bad.status_code == 422 and SECRET in bad.json()["message"], bad.text

