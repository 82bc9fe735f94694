"""Property-based: whatever bytes or JSON a client sends, decoding and schema coercion either give a
table or raise one of our 4xx errors (never anything that would become a 500), and the server
answers every such body with a 4xx or a 200."""

from __future__ import annotations

import io
import json

import hypothesis.strategies as st
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from scorer import codecs
from scorer.errors import RequestError, http_status
from scorer.schema import Schema

pytestmark = pytest.mark.fast

MEDIA = ["application/json", "text/csv", "text/csv; header=absent", "application/vnd.apache.parquet",
         "application/vnd.apache.arrow.stream", "application/vnd.apache.arrow.file", "application/octet-stream", None]
SCHEMA = Schema({"a": "float", "b": "int", "s": "string", "x": "any"})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["a", "b", "s", "x", "columns", "data",
                                                                                  "dataframe_split", "inputs"]), inner, max_size=4),
    max_leaves=20,
)


def decode_and_coerce(body: bytes, media: str | None) -> None:
    try:
        table = codecs.decode(body, media, list(SCHEMA.columns))
        SCHEMA.coerce(table)
    except RequestError as exc:
        assert 400 <= http_status(exc) < 500


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300), media=st.sampled_from(MEDIA))
def test_any_bytes_are_a_table_or_a_4xx(body: bytes, media: str | None) -> None:
    decode_and_coerce(body, media)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_any_json_is_a_table_or_a_4xx(value: object) -> None:
    decode_and_coerce(json.dumps(value).encode(), "application/json")


def _binary_bodies() -> dict[str, bytes]:
    frame = pd.DataFrame({"a": [1.5, None, 3.0], "b": [1, 2, 3], "s": ["x", None, "z"], "x": [True, False, True]})
    bodies = {}
    for media in ("application/vnd.apache.parquet", "application/vnd.apache.arrow.stream",
                  "application/vnd.apache.arrow.file"):
        bodies[media] = codecs.encode(frame, media)
    return bodies


BINARY = _binary_bodies()


@settings(max_examples=200, deadline=None)
@given(media=st.sampled_from(sorted(BINARY)), cut=st.floats(0, 1), flip=st.integers(0, 10_000))
def test_truncated_or_corrupted_binary_tables_are_a_table_or_a_4xx(media: str, cut: float, flip: int) -> None:
    body = bytearray(BINARY[media][: max(1, int(len(BINARY[media]) * cut))])
    if flip < len(body):
        body[flip] ^= 0xFF
    decode_and_coerce(bytes(body), media)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6), st.text(max_size=6)), max_size=5))
def test_any_csv_cells_are_a_table_or_a_4xx(rows: list[tuple[str, str, str]]) -> None:
    buf = io.StringIO()
    pd.DataFrame(rows, columns=["a", "b", "s"]).to_csv(buf, index=False)
    decode_and_coerce(buf.getvalue().encode(), "text/csv")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values, media=st.sampled_from(["application/json", "text/csv", None]))
def test_server_never_answers_5xx_to_a_body(sum_app, value: object, media: str | None) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(value).encode()
    headers = {"Content-Type": media} if media else {}
    response = sum_app.post("/predict", content=body, headers=headers)
    assert response.status_code == 200 or 400 <= response.status_code < 500, (response.status_code, response.text)
    assert sum_app.get("/health").status_code == 200


SUM_CODE = """
import scorer
class CustomPreprocessor(scorer.CustomPreprocessor):
    input_schema = {"a": "float", "b": "float"}
    def predict(self, df):
        return (df["a"] + df["b"]).rename("sum")
"""


@pytest.fixture(scope="module")
def sum_app(tmp_path_factory):  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    from scorer.core import Scorer
    from scorer.serving.app import create_app
    from scorer.settings import Settings

    root = tmp_path_factory.mktemp("bundle") / "sum"
    (root / "artifacts").mkdir(parents=True)
    (root / "code").mkdir()
    (root / "code" / "custom_preprocess.py").write_text(SUM_CODE)
    with TestClient(create_app(Settings(), scorer=Scorer.load(root)), raise_server_exceptions=False) as client:
        yield client
