"""The Open Inference Protocol's and KServe V1's routes in-process: every bad request is a 4xx in the
protocols' error shape (``{"error": message, "code", "request_id"}``) naming its cause and never a
value of the request; the shapes a table may take (one tensor per column, an ``[n, k]`` matrix, JSON
or binary data) score as ``/predict`` does. The platforms' own clients are in tests/test_protocols.py."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from starlette.testclient import TestClient

from scorer.core import Scorer
from scorer.serving.app import create_app
from scorer.settings import Settings

pytestmark = pytest.mark.fast
SECRET = "SECRET-VALUE-7731"


@pytest.fixture(scope="module")
def spam(example_bundles: dict[str, Path]) -> Scorer:
    return Scorer.load(example_bundles["spam"])


@pytest.fixture(scope="module")
def client(spam: Scorer) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(), scorer=spam), raise_server_exceptions=False) as client:
        yield client


def _tensors(frame: pd.DataFrame) -> list[dict[str, Any]]:
    types = {"float64": "FP64", "int64": "INT64"}
    return [{"name": c, "shape": [len(frame)], "datatype": types.get(str(frame[c].dtype), "BYTES"),
             "data": frame[c].tolist()} for c in frame.columns]


def _frame(example_bundles: dict[str, Path]) -> pd.DataFrame:
    return pd.read_csv(example_bundles["spam"] / "sample.csv")


def _expected(client: TestClient, frame: pd.DataFrame) -> list[dict[str, Any]]:
    answer = client.post("/predict", content=frame.to_json(orient="split", index=False),
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    predictions: list[dict[str, Any]] = answer.json()["predictions"]
    return predictions


def _outputs(answer: Any) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    names = list(outputs)
    return [dict(zip(names, row, strict=True)) for row in zip(*outputs.values(), strict=True)]


def test_json_tensors_nested_shapes_and_v1_rows_score_like_predict(client: TestClient,
                                                                   example_bundles: dict[str, Path]) -> None:
    frame = _frame(example_bundles)
    expected = _expected(client, frame)
    assert _outputs(client.post("/v2/models/spam/infer", json={"inputs": _tensors(frame)})) == expected
    nested = [{**t, "shape": [len(frame), 1], "data": [[v] for v in t["data"]]} for t in _tensors(frame)]
    assert _outputs(client.post("/v2/models/spam/infer", json={"inputs": nested})) == expected
    rows = json.loads(frame.to_json(orient="values"))
    v1 = client.post("/v1/models/spam:predict", json={"instances": rows})
    assert v1.status_code == 200 and v1.json() == {"predictions": expected}
    records = client.post("/v1/models/spam:predict", json={"instances": frame.to_dict(orient="records")})
    assert records.json() == {"predictions": expected}
    assert client.get("/v1/models/spam").json() == {"name": "spam", "ready": True}
    assert client.get("/v1/models").json() == {"models": ["spam"]}


def test_a_matrix_tensor_is_the_schema_columns_in_order(example_bundles: dict[str, Path]) -> None:
    """KServe's scikit-learn server takes one [n, k] tensor; so do we, as the schema's k columns."""
    tabular = Scorer.load(example_bundles["tabular"])
    with TestClient(create_app(Settings(), scorer=tabular), raise_server_exceptions=False) as client:
        _check_matrix(client, example_bundles)


def _check_matrix(client: TestClient, example_bundles: dict[str, Path]) -> None:
    sample = json.loads((example_bundles["tabular"] / "manifest.json").read_text())["sample_input"]
    frame = pd.DataFrame(sample["data"], columns=sample["columns"])
    numeric = [c for c in frame.columns if frame[c].dtype.kind == "f"]
    expected = _expected(client, frame)
    # All columns as one BYTES matrix would lose the floats' type: numbers stay per column, the text as a matrix
    # is refused (its width is not the schema's).
    matrix = {"name": "x", "shape": [len(frame), len(frame.columns)], "datatype": "BYTES",
              "data": [str(v) for row in frame.itertuples(index=False) for v in row]}
    refused = client.post("/v2/models/tabular/infer", json={"inputs": [matrix, *_tensors(frame[["c0"]])]})
    assert refused.status_code == 400 and "a column's tensor is [rows]" in refused.json()["error"]
    as_one = {"name": "x", "shape": [len(frame), len(frame.columns)], "datatype": "BYTES",
              "data": [v if isinstance(v, str) else repr(v) for row in frame.itertuples(index=False) for v in row]}
    answer = client.post("/v2/models/tabular/infer", json={"inputs": [as_one]})
    assert _outputs(answer) == expected  # numeric text is coerced to the schema's floats, exactly
    assert numeric  # the example has float columns: the coercion above was exercised


BAD = [
    ("not json", b"{inputs", {}, 400, "not valid JSON"),
    ("no inputs", orjson.dumps({"inputs": []}), {}, 400, "non-empty list"),
    ("bad datatype", orjson.dumps({"inputs": [{"name": "feature1", "shape": [1], "datatype": "FP128",
                                               "data": [1.0]}]}), {}, 400, "datatype"),
    ("count mismatch", orjson.dumps({"inputs": [{"name": "feature1", "shape": [2], "datatype": "FP64",
                                                 "data": [1.0]}]}), {}, 400, "1 values for shape [2]"),
    ("text in a number tensor", orjson.dumps({"inputs": [{"name": "feature1", "shape": [1], "datatype": "FP64",
                                                          "data": [SECRET]}]}), {}, 400, "is a str, not FP64"),
    ("negative shape", orjson.dumps({"inputs": [{"name": "f", "shape": [-1], "datatype": "FP64", "data": []}]}),
     {}, 400, "non-negative"),
    ("header past the body", b"{}", {"Inference-Header-Content-Length": "99"}, 400, "outside the body"),
    ("header length not a number", b"{}", {"Inference-Header-Content-Length": "x"}, 400, "byte count"),
    ("binary past the body", orjson.dumps({"inputs": [{"name": "feature1", "shape": [2], "datatype": "FP64",
                                                       "parameters": {"binary_data_size": 16}}]}) + b"\0" * 8,
     "header", 400, "runs past"),
    ("unclaimed bytes", orjson.dumps({"inputs": [{"name": "feature1", "shape": [1], "datatype": "FP64",
                                                  "data": [1.0]}]}) + SECRET.encode(), "header", 400, "no input claims"),
    ("truncated BYTES", orjson.dumps({"inputs": [{"name": "feature2", "shape": [2], "datatype": "BYTES",
                                                  "parameters": {"binary_data_size": 9}}]})
     + struct.pack("<I", 5) + SECRET.encode()[:5], "header", 400, "ends after 1 of 2"),
    ("BYTES not UTF-8", orjson.dumps({"inputs": [{"name": "feature2", "shape": [1], "datatype": "BYTES",
                                                  "parameters": {"binary_data_size": 6}}]})
     + struct.pack("<I", 2) + b"\xff\xfe", "header", 400, "not UTF-8"),
    ("different row counts", orjson.dumps({"inputs": [
        {"name": "feature1", "shape": [1], "datatype": "FP64", "data": [1.0]},
        {"name": "feature3", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}]}), {}, 400, "different row counts"),
    ("duplicate inputs", orjson.dumps({"inputs": [
        {"name": "feature1", "shape": [1], "datatype": "FP64", "data": [1.0]},
        {"name": "feature1", "shape": [1], "datatype": "FP64", "data": [2.0]}]}), {}, 400, "duplicate input"),
    ("unknown output", orjson.dumps({"inputs": [{"name": "feature1", "shape": [1], "datatype": "FP64",
                                                 "data": [1.0]}], "outputs": [{"name": "nope"}]}), {}, 400,
     "unknown output"),
    ("missing columns", orjson.dumps({"inputs": [{"name": "feature1", "shape": [1], "datatype": "FP64",
                                                  "data": [1.0]}]}), {}, 422, "missing required column"),
    ("string column given numbers", orjson.dumps({"inputs": [
        {"name": "feature1", "shape": [1], "datatype": "BYTES", "data": [SECRET]},
        {"name": "feature2", "shape": [1], "datatype": "BYTES", "data": ["x"]},
        {"name": "feature3", "shape": [1], "datatype": "FP64", "data": [1.0]}]}), {}, 422, "feature1"),
]


@pytest.mark.parametrize(("body", "headers", "status", "cause"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_inference_requests_are_4xx_naming_the_cause(client: TestClient, body: bytes, headers: Any, status: int,
                                                         cause: str) -> None:
    if headers == "header":
        headers = {"Inference-Header-Content-Length": str(body.index(b"}]}") + 3)}
    answer = client.post("/v2/models/spam/infer", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert set(error) - {"columns"} == {"error", "code", "request_id"} and cause in error["error"], error
    assert ("columns" in error) == (status == 422)
    assert SECRET not in answer.text and SECRET[:5] not in answer.text
    assert error["request_id"] == answer.headers["X-Request-ID"]


def test_names_versions_and_v1_bodies(client: TestClient, spam: Scorer, example_bundles: dict[str, Path]) -> None:
    frame = _frame(example_bundles)
    body = {"inputs": _tensors(frame.head(2))}
    unknown = client.post("/v2/models/other/infer", json=body)
    assert unknown.status_code == 404 and unknown.json()["code"] == "model_not_found"
    assert "'spam'" in unknown.json()["error"]
    assert client.post(f"/v2/models/spam/versions/{spam.version_label}/infer", json=body).status_code == 200
    assert client.post("/v2/models/spam/versions/0.0.0/infer", json=body).status_code == 404
    assert client.get("/v2/models/other").status_code == 404
    assert client.get("/v2/models/spam/versions/0.0.0/ready").status_code == 404
    assert client.get("/v2/models/spam/ready").json() == {"name": "spam", "ready": True}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    v1 = client.post("/v1/models/spam:predict", json={"rows": [[1.0, "x", 2.0]]})
    assert v1.status_code == 400 and "instances" in v1.json()["error"]
    assert client.post("/v1/models/other:predict", json={"instances": [[1.0, "x", 2.0]]}).status_code == 404
    wrong_method = client.get("/v2/models/spam/infer")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"
    assert client.get("/v1/models/spam:predict").status_code == 405


def test_model_name_setting_and_token(spam: Scorer, example_bundles: dict[str, Path]) -> None:
    with TestClient(create_app(Settings(model_name="fraud", auth_token="t0k"), scorer=spam),
                    raise_server_exceptions=False) as client:
        _check_name_and_token(client, example_bundles)


def _check_name_and_token(client: TestClient, example_bundles: dict[str, Path]) -> None:
    body = {"inputs": _tensors(_frame(example_bundles).head(1))}
    assert client.post("/v2/models/fraud/infer", json=body).status_code == 401
    assert client.get("/v2/models/fraud").status_code == 401
    assert client.get("/v2/health/ready").status_code == 200  # probes need no token
    auth = {"Authorization": "Bearer t0k"}
    assert client.post("/v2/models/fraud/infer", json=body, headers=auth).status_code == 200
    assert client.post("/v2/models/spam/infer", json=body, headers=auth).status_code == 404
    assert client.get("/v2/models/fraud", headers=auth).json()["name"] == "fraud"


def test_predict_errors_carry_mlflow_error_codes(client: TestClient) -> None:
    """/predict and /invocations errors name MLflow's error code, one MLflow maps back to the same status."""
    from mlflow.exceptions import ERROR_CODE_TO_HTTP_STATUS

    for body, content_type, status in [(b"{", "application/json", 400), (b'{"feature1": [1]}', "application/json", 422),
                                       (b"x", "image/png", 415)]:
        answer = client.post("/invocations", content=body, headers={"Content-Type": content_type})
        assert answer.status_code == status
        code = answer.json()["error_code"]
        assert ERROR_CODE_TO_HTTP_STATUS[code] == 400, (status, code)  # MLflow's client-error codes are all 400
    not_found = client.get("/nope")
    assert not_found.status_code == 404 and ERROR_CODE_TO_HTTP_STATUS[not_found.json()["error_code"]] == 404


def test_protocol_paths_are_scoring_paths_labelled_by_their_template() -> None:
    """The layers that treat scoring requests apart (drain's Connection: close, payload logging, tracing)
    see the protocols' inference routes as scoring routes; metrics and spans name them by template."""
    from scorer.serving.routes import is_scoring_path, path_label

    for path in ("/predict", "/invocations", "/v2/models/m/infer", "/v2/models/m/versions/3/infer",
                 "/v1/models/m:predict"):
        assert is_scoring_path(path), path
    for path in ("/v2/models/m", "/v2/models/m/ready", "/v1/models/m", "/health", "/v2/health/ready"):
        assert not is_scoring_path(path), path
    assert path_label("/v2/models/fraud/infer") == "/v2/models/{name}/infer"
    assert path_label("/v2/models/fraud/versions/7/infer") == "/v2/models/{name}/versions/{version}/infer"
    assert path_label("/v1/models/fraud:predict") == "/v1/models/{name}:predict"
    assert path_label("/v1/models/fraud") == "/v1/models/{name}"
    assert path_label("/predict") == "/predict" and path_label("/nope/v2") == "other"
