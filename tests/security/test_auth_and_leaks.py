"""Security against a real server process: optional token auth on scoring and metadata (health stays
open), and neither error bodies nor logs echo request data."""

from __future__ import annotations

import requests

SECRET = "4111-1111-1111-1111-card-number"


def test_token_required_on_scoring_not_on_health(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """With SCORER_AUTH_TOKEN set: /predict, /invocations, /metadata and /metrics need the token, as
    `Authorization: Bearer` or the vendor's `token` header; /health, /ready and /ping stay open."""
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
        for path in ("/metadata", "/metrics"):
            assert requests.get(server.url + path).status_code == 401
            assert requests.get(server.url + path, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
            assert requests.get(server.url + path, headers={"token": "s3cret-token"}).status_code == 200
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
    assert "poison row" in model_raises.json()["message"]
    for r in responses:
        assert SECRET not in r.text, r.text
        assert "Traceback" not in r.text
        assert set(r.json()) <= {"error", "message", "request_id", "columns"} and r.json()["message"], r.text
    assert SECRET not in log
