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


# --- the Open Inference Protocol's requests -------------------------------------------------------------

tensor = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b", "s", "x", "m"]),
     "shape": st.lists(st.integers(-1, 4), min_size=0, max_size=3) | json_values,
     "datatype": st.sampled_from(["FP64", "FP32", "INT64", "INT8", "UINT64", "BOOL", "BYTES", "FP16", "X"])},
    optional={"data": json_values, "parameters": st.fixed_dictionaries(
        {}, optional={"binary_data_size": st.integers(-2, 40) | json_values})})
_ELEMENTS = {"FP64": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-5, 5) | st.none(),
             "INT64": st.integers(-2**63, 2**63 - 1), "BOOL": st.booleans(), "BYTES": st.text(max_size=6)}


@st.composite
def valid_tensors(draw: st.DrawFn) -> list[dict]:  # type: ignore[type-arg]
    """One tensor per column, well formed: the same row count, data of the datatype (nested or flat)."""
    rows = draw(st.integers(0, 4))
    tensors = []
    for name in draw(st.lists(st.sampled_from(["a", "b", "s", "x"]), min_size=1, max_size=4, unique=True)):
        datatype = draw(st.sampled_from(list(_ELEMENTS)))
        data = draw(st.lists(_ELEMENTS[datatype], min_size=rows, max_size=rows))
        nested = draw(st.booleans())
        tensors.append({"name": name, "datatype": datatype, "shape": [rows, 1] if nested else [rows],
                        "data": [[v] for v in data] if nested else data})
    return tensors


infer_request = st.fixed_dictionaries(
    {"inputs": valid_tensors() | st.lists(tensor, max_size=4) | json_values},
    optional={"id": json_values, "parameters": st.dictionaries(st.sampled_from(["binary_data_output", "p"]),
                                                              json_values, max_size=2),
              "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["y", "z"])}), max_size=2) | json_values})


@given(request=infer_request, binary=st.binary(max_size=48), header=st.booleans() | st.none())
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_inference_request_is_a_table_or_a_4xx(request: dict, binary: bytes, header: bool | None) -> None:  # type: ignore[type-arg]
    """Any JSON header (valid or not), any binary data after it, any header length: a Table whose columns
    are the inputs (then coerced to the schema), or one of our 4xx errors."""
    from scorer import open_inference

    head = json.dumps(request).encode()
    body = head + binary if header is not None else head
    length = None if header is None else (len(head) if header else len(body) + 1)
    try:
        table, answer = open_inference.read_request(body, length, list(SCHEMA.columns), ["y"])
        SCHEMA.coerce(table)
        assert answer.outputs is None or set(answer.outputs) <= {"y"}
    except RequestError as exc:
        assert 400 <= http_status(exc) < 500
