"""HTTP behaviour through the in-process ASGI client: the input-format matrix, response formats,
the error matrix and the operational endpoints. Every prediction is compared with the core's
own in-process ``score`` of the same table."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from scorer import codecs
from scorer.core import Scorer
from scorer.serving.app import create_app
from scorer.settings import Settings

pytestmark = pytest.mark.fast


def client_for(scorer: Scorer, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(**settings), scorer=scorer), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def spam(example_bundles: dict[str, Path]) -> Scorer:
    return Scorer.load(example_bundles["spam"])


@pytest.fixture(scope="module")
def tabular(example_bundles: dict[str, Path]) -> Scorer:
    return Scorer.load(example_bundles["tabular"])


@pytest.fixture(scope="module")
def spam_client(spam: Scorer) -> Iterator[TestClient]:
    with client_for(spam) as client:
        yield client


@pytest.fixture(scope="module")
def tabular_client(tabular: Scorer) -> Iterator[TestClient]:
    with client_for(tabular) as client:
        yield client


def sample_frame(scorer: Scorer, build_module: object, n: int = 7) -> pd.DataFrame:
    columns = list(scorer.schema.columns) if scorer.schema else []
    maker = build_module.make_spam_frame if "feature2" in columns else build_module.make_tabular_frame  # type: ignore[attr-defined]
    return maker(n, 123)[columns].reset_index(drop=True)


def expected_predictions(scorer: Scorer, df: pd.DataFrame) -> list[object]:
    return json.loads(codecs.json_predictions(scorer.score(df)))["predictions"]


def _arrow_bytes(df: pd.DataFrame, *, file: bool = False) -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_file(sink, table.schema) if file else pa.ipc.new_stream(sink, table.schema)
    with writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


def request_bodies(df: pd.DataFrame) -> dict[str, tuple[bytes, str | None]]:
    """Each way a real client sends the same table: (body, Content-Type)."""
    records = json.loads(df.to_json(orient="records"))
    split = json.loads(df.to_json(orient="split"))
    split.pop("index")
    columnar = {c: json.loads(df[c].to_json(orient="values")) for c in df.columns}
    jt = "application/json"
    return {
        "pandas split": (df.to_json(orient="split").encode(), jt),
        "pandas records": (df.to_json(orient="records").encode(), jt),
        "pandas columns": (df.to_json(orient="columns").encode(), jt),
        "columnar lists": (json.dumps(columnar).encode(), jt),
        "mlflow dataframe_split": (json.dumps({"dataframe_split": split}).encode(), jt),
        "mlflow dataframe_records": (json.dumps({"dataframe_records": records}).encode(), jt),
        "mlflow instances": (json.dumps({"instances": records}).encode(), jt),
        "mlflow instances rows": (json.dumps({"instances": split["data"]}).encode(), jt),
        "mlflow inputs": (json.dumps({"inputs": columnar}).encode(), jt),
        "split, no content type": (df.to_json(orient="split").encode(), None),
        "split, json charset": (df.to_json(orient="split").encode(), "application/json; charset=utf-8"),
        "csv": (df.to_csv(index=False).encode(), "text/csv"),
        "csv headerless": (df.to_csv(index=False, header=False).encode(), "text/csv; header=absent"),
        "parquet": (_parquet_bytes(df), "application/vnd.apache.parquet"),
        "parquet, sniffed": (_parquet_bytes(df), "application/octet-stream"),
        "arrow stream": (_arrow_bytes(df), "application/vnd.apache.arrow.stream"),
        "arrow file": (_arrow_bytes(df, file=True), "application/vnd.apache.arrow.file"),
    }


FORMATS = list(request_bodies(pd.DataFrame({"a": [1.0]})))


@pytest.mark.parametrize("bundle", ["spam", "tabular"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_input_format_scores_like_in_process(bundle: str, fmt: str, request: pytest.FixtureRequest,
                                                   build_module: object) -> None:
    """Each accepted request format gives exactly the core's in-process predictions for the same rows."""
    scorer: Scorer = request.getfixturevalue(bundle)
    client: TestClient = request.getfixturevalue(f"{bundle}_client")
    df = sample_frame(scorer, build_module)
    body, content_type = request_bodies(df)[fmt]
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/predict", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected_predictions(scorer, df)}


def test_one_flat_object_is_one_row(spam_client: TestClient, spam: Scorer) -> None:
    """The vendor's single-row body {"feature1": 1.0, "feature2": "this is spam", "feature3": 2.0} scores as one row."""
    row = {"feature1": 1.0, "feature2": "this is spam", "feature3": 2.0}
    response = spam_client.post("/predict", json=row)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions == expected_predictions(spam, pd.DataFrame([row]))
    assert len(predictions) == 1 and predictions[0]["prediction"] == "spam"


def test_invocations_is_the_same_handler(spam_client: TestClient) -> None:
    """POST /invocations (SageMaker/MLflow path) answers exactly like /predict."""
    body = {"dataframe_records": [{"feature1": 0.5, "feature2": "lunch tomorrow?", "feature3": 1.0}]}
    assert spam_client.post("/invocations", json=body).json() == spam_client.post("/predict", json=body).json()


@pytest.mark.parametrize("accept", ["text/csv", "application/vnd.apache.arrow.stream", "application/vnd.apache.parquet"])
def test_accept_returns_the_table_in_that_format(accept: str, tabular_client: TestClient, tabular: Scorer,
                                                 build_module: object) -> None:
    """Accept: CSV / Arrow / Parquet returns the prediction table itself, equal to in-process scoring."""
    df = sample_frame(tabular, build_module, 5)
    response = tabular_client.post("/predict", content=df.to_json(orient="split"),
                                   headers={"Content-Type": "application/json", "Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(accept)
    got = codecs.decode(response.content, accept).to_frame()
    want = tabular.score(df)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)


def test_empty_table_gives_empty_predictions(spam_client: TestClient) -> None:
    """Zero rows in, zero predictions out (200, no error)."""
    response = spam_client.post("/predict", json={"columns": ["feature1", "feature2", "feature3"], "data": []})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": []}


NAN_MODEL = """
    import numpy as np
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        def predict(self, df):
            return np.array([np.nan, np.inf, -np.inf, 1.5][: len(df)])
"""


def test_nan_and_inf_outputs_become_null(bundle_factory) -> None:  # type: ignore[no-untyped-def]
    """A model returning NaN/inf yields valid JSON with null, never a 500."""
    scorer = Scorer.load(bundle_factory("nan", code=NAN_MODEL))
    with client_for(scorer) as client:
        response = client.post("/predict", json=[{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}])
    assert response.status_code == 200
    json.loads(response.text, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert response.json() == {"predictions": [None, None, None, 1.5]}


# --- the error matrix ---------------------------------------------------------------------------

VENDOR_CURL_BODY = b"{feature1: 1.0,feature2: this is spam,feature3: 2.0}"


@pytest.mark.parametrize(
    ("name", "body", "headers", "status", "error", "in_message"),
    [
        ("vendor curl quoting", VENDOR_CURL_BODY, {"Content-Type": "application/json"}, 400, "malformed_body", "not valid JSON"),
        ("NaN literal", b'{"feature1": NaN, "feature2": "x", "feature3": 1}', {"Content-Type": "application/json"}, 400, "malformed_body", "not valid JSON"),
        ("deep nesting", b"[" * 100_000, {"Content-Type": "application/json"}, 400, "malformed_body", "not valid JSON"),
        ("huge integer", b'{"feature1": 1' + b"0" * 100_000 + b"}", {"Content-Type": "application/json"}, 400, "malformed_body", "not valid JSON"),
        ("empty body", b"", {"Content-Type": "application/json"}, 400, "malformed_body", "empty"),
        ("bad csv", b"feature1,feature2\n1,2,3,4\n", {"Content-Type": "text/csv"}, 400, "malformed_body", "CSV"),
        ("bad parquet", b"PAR1 this is not parquet", {"Content-Type": "application/vnd.apache.parquet"}, 400, "malformed_body", "Parquet"),
        ("xml", b"<row/>", {"Content-Type": "application/xml"}, 415, "unsupported_media_type", "application/xml"),
        ("accept xml", b'{"feature1": 1, "feature2": "x", "feature3": 2}', {"Accept": "application/xml"}, 406, "not_acceptable", "application/xml"),
        ("missing columns", b'{"feature2": "hello"}', {"Content-Type": "application/json"}, 422, "schema_error", "feature1, feature3"),
        ("uncoercible value", b'{"feature1": "abc", "feature2": "x", "feature3": 2}', {"Content-Type": "application/json"}, 422, "schema_error", "'feature1'"),
    ],
)
def test_error_matrix(spam_client: TestClient, name: str, body: bytes, headers: dict[str, str], status: int,
                      error: str, in_message: str) -> None:
    """Each bad request gets its documented 4xx, a clear message, and the uniform error body."""
    response = spam_client.post("/predict", content=body, headers=headers)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == error
    assert in_message in payload["message"]
    assert payload["request_id"] == response.headers["x-request-id"]
    assert set(payload) <= {"error", "message", "error_code", "request_id", "columns"}
    assert "Traceback" not in response.text


def test_schema_error_names_missing_columns(spam_client: TestClient) -> None:
    """A 422 lists exactly the missing columns, in a machine-readable field too."""
    response = spam_client.post("/predict", json=[{"feature2": "hi"}])
    assert response.status_code == 422
    assert response.json()["columns"] == ["feature1", "feature3"]


def test_body_over_limit_is_413(spam: Scorer) -> None:
    """A body larger than max_body_bytes is refused with 413 from its Content-Length."""
    with client_for(spam, max_body_bytes=1000) as client:
        body = json.dumps([{"feature1": 1.0, "feature2": "x" * 2000, "feature3": 1.0}])
        response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert f"request body of {len(body)} bytes" in response.json()["message"]  # the Content-Length, not a count


def test_too_many_rows_is_413(spam: Scorer) -> None:
    """More rows than max_request_rows in one request is refused with 413."""
    with client_for(spam, max_request_rows=3) as client:
        rows = [{"feature1": 1.0, "feature2": "x", "feature3": 1.0}] * 4
        response = client.post("/predict", json=rows)
    assert response.status_code == 413


def test_model_exception_is_500_with_class_and_message(sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """A model that raises gives 500 naming the exception class, not its text (which can quote request
    data), and no traceback."""
    with client_for(Scorer.load(sum_bundle())) as client:
        response = client.post("/predict", json={"a": 666, "b": 1})
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "model_error"
    assert body["message"] == "model raised ValueError in predict"
    assert "poison row" not in response.text and "Traceback" not in response.text and "File " not in response.text


def test_unknown_route_and_method(spam_client: TestClient) -> None:
    """404 and 405 use the same error body."""
    missing = spam_client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    response = spam_client.get("/predict")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"
    for r in (missing, response):
        assert set(r.json()) == {"error", "message", "error_code", "request_id"} and r.json()["request_id"] == r.headers["x-request-id"]


def test_not_ready_is_503(tmp_path: Path, bundle_factory) -> None:  # type: ignore[no-untyped-def]
    """Before the bundle has loaded, /ready, /ping, /metadata and /predict are 503; /health is 200."""
    slow = bundle_factory("slow", code="""
        import time, scorer
        class CustomPreprocessor(scorer.CustomPreprocessor):
            def load(self, artifacts_dir):
                time.sleep(3)
            def predict(self, df):
                return [0] * len(df)
    """)
    with TestClient(create_app(Settings(bundle=str(slow))), raise_server_exceptions=False) as client:
        assert client.get("/health").status_code == 200
        for path in ("/ready", "/ping", "/metadata"):
            response = client.get(path)
            assert response.status_code == 503, path
            assert response.json()["error"] == "not_ready"
        response = client.post("/predict", json={"x": 1})
        assert response.status_code == 503 and response.headers["retry-after"]


# --- operational endpoints -------------------------------------------------------------------------


def test_health_ready_metadata(spam_client: TestClient, spam: Scorer) -> None:
    """Loaded: health/ready/ping are 200 and /metadata describes the bundle."""
    for path in ("/health", "/ready", "/ping"):
        assert spam_client.get(path).status_code == 200
    meta = spam_client.get("/metadata").json()
    assert meta["digest"] == f"sha256:{spam.bundle.digest}"
    assert meta["name"] and meta["version"] and meta["scorer_version"]
    assert [c["name"] for c in meta["input_schema"]] == ["feature1", "feature2", "feature3"]
    assert meta["output_columns"] == ["prediction", "probability_ham", "probability_spam"]


def test_request_id_is_echoed(spam_client: TestClient) -> None:
    """A client's X-Request-ID comes back in the header and in error bodies."""
    response = spam_client.post("/predict", content=b"{", headers={"X-Request-ID": "abc-123", "Content-Type": "application/json"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["request_id"] == "abc-123"


def test_metrics_exposes_counts_latency_batches_and_load_time(tabular: Scorer, build_module: object) -> None:
    """/metrics is Prometheus text with request counts by status, latency and batch-size histograms, load time."""
    with client_for(tabular) as client:
        df = sample_frame(tabular, build_module, 3)
        assert client.post("/predict", content=df.to_json(orient="split")).status_code == 200
        assert client.post("/predict", content=b"{").status_code == 400
        text = client.get("/metrics").text
    assert 'scorer_requests_total{path="/predict",status="200"} 1.0' in text
    assert 'scorer_requests_total{path="/predict",status="400"} 1.0' in text
    assert 'scorer_request_duration_seconds_bucket{le="0.005",path="/predict"}' in text
    assert "scorer_batch_rows_sum 3.0" in text
    assert "scorer_batch_requests_count 1.0" in text
    load = [line for line in text.splitlines() if line.startswith("scorer_model_load_seconds ")]
    assert load and float(load[0].split()[1]) > 0
    assert np.isfinite(float(load[0].split()[1]))
