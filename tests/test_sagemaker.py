"""SageMaker Batch Transform against a real server process: a file cut into mini-batches of whole lines
(at most the MaxPayloadInMB the server's ``GET /execution-parameters`` asks for), each POSTed to
``/invocations`` with the job's ContentType and Accept as Batch Transform sends them, the answers joined
line by line (``AssembleWith=Line``): the ``.out`` is byte for byte ``scorer batch``'s output for the same
file (CSV: its data lines; JSON Lines: the whole file), for bundles with one and with several output
columns. Also: how a bare ``text/csv`` body is told to have a header or not, the headerless and JSON
Lines answers on ``/predict`` and ``/invocations``, and the clear 4xx of bad input on these paths. The
driver is :mod:`batch_transform` (tests/container/test_sagemaker_azure.py drives the image with it).

SageMaker's own local mode (the Python SDK's ``LocalSession``) is not used: it starts the container with
docker-compose, which this machine's Docker lacks, and it needs an AWS region and boto3 session; the
driver below does what its transform job does (read ``/execution-parameters``, split by lines, POST,
join)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from batch_transform import MIB, batch_transform, scorer_batch
from conftest import BundleFactory, LiveServer, run_server
from scorer.serving.sagemaker import execution_parameters
from scorer.settings import Settings

ONE_COLUMN = """
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "float"}

        def predict(self, df):
            return pd.DataFrame({"total": df["a"] + 2 * df["b"]})
"""

TEXT_ONLY = """
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"name": "string", "city": "string"}

        def predict(self, df):
            return pd.DataFrame({"length": df["name"].str.len() + df["city"].str.len()})
"""


# --- bundles and data --------------------------------------------------------------------------------


@pytest.fixture
def one_column(bundle_factory: BundleFactory) -> Path:
    return bundle_factory("one_column", code=ONE_COLUMN)


def frame_for(name: str, rows: int, build_module: object) -> pd.DataFrame:
    if name == "spam":
        return build_module.make_spam_frame(rows, 7)[["feature1", "feature2", "feature3"]]  # type: ignore[attr-defined]
    if name == "tabular":
        frame = build_module.make_tabular_frame(rows, 7)  # type: ignore[attr-defined]
        return frame[[c for c in frame.columns if c != "label"]]
    return pd.DataFrame({"a": [i * 0.25 for i in range(rows)], "b": [(i % 17) - 3.5 for i in range(rows)]})


# About 1.5 to 3 MiB of CSV each: several mini-batches of the 1 MiB the server asks for.
ROWS = {"spam": 40_000, "tabular": 9_000, "one_column": 150_000}


@pytest.mark.parametrize("name", ["spam", "tabular", "one_column"])
def test_batch_transform_out_is_scorer_batch_output(name: str, example_bundles: dict[str, Path], one_column: Path,
                                                    build_module: object, tmp_path: Path) -> None:
    """CSV without a header, CSV whose header only the first mini-batch carries, and JSON Lines, with
    Batch Transform's bare ``text/csv`` / ``application/jsonlines`` in and out: the ``.out`` equals
    ``scorer batch``'s output (CSV: after its header line), every mini-batch answered with one line per
    record; multi-column outputs (spam, tabular: label and probabilities) and one column alike."""
    bundle = one_column if name == "one_column" else example_bundles[name]
    frame = frame_for(name, ROWS[name], build_module)
    with_header = frame.to_csv(index=False).encode()
    src_csv = tmp_path / "in.csv"
    src_csv.write_bytes(with_header)
    src_jsonl = tmp_path / "in.jsonl"
    src_jsonl.write_bytes(frame.to_json(orient="records", lines=True).encode().rstrip(b"\n") + b"\n")

    want_csv = scorer_batch(bundle, src_csv, tmp_path / "out-csv", "csv")
    header, _, want_csv_lines = want_csv.partition(b"\n")
    want_jsonl = scorer_batch(bundle, src_jsonl, tmp_path / "out-jsonl", "jsonl")
    assert want_csv_lines.count(b"\n") == want_jsonl.count(b"\n") == len(frame)

    with run_server(bundle, "--max-body-bytes", str(MIB), log_dir=tmp_path) as server:
        headerless = with_header.partition(b"\n")[2]
        out, sizes = batch_transform(server.url, headerless, "text/csv", "text/csv")
        assert len(sizes) >= 2, sizes  # several mini-batches, each answered line for line
        assert all(lines == answered for lines, answered in sizes), sizes
        assert out == want_csv_lines

        out, sizes = batch_transform(server.url, with_header, "text/csv", "text/csv")
        assert sizes[0][1] == sizes[0][0] - 1  # the header line was read as one, and answered by no line
        assert all(lines == answered for lines, answered in sizes[1:]), sizes
        assert out == want_csv_lines

        out, sizes = batch_transform(server.url, src_jsonl.read_bytes(), "application/jsonlines",
                                     "application/jsonlines")
        assert len(sizes) >= 2 and all(lines == answered for lines, answered in sizes), sizes
        assert out == want_jsonl
        first = json.loads(out.split(b"\n", 1)[0])
        assert list(first) == header.decode().replace("\"", "").split(",")  # one object per line, keyed by output column


@pytest.mark.fast
def test_execution_parameters_follow_workers_and_body_limit() -> None:
    """MaxConcurrentTransforms = processes; MaxPayloadInMB = the body limit in whole MiB, within Batch
    Transform's 100 MB budget for concurrency x payload, never 0."""
    assert execution_parameters(Settings()) == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD",
                                                "MaxPayloadInMB": 64}
    assert execution_parameters(Settings(workers=3, max_body_bytes=10 * MIB + 5))["MaxPayloadInMB"] == 10
    assert execution_parameters(Settings(workers=8)) == {"MaxConcurrentTransforms": 8, "BatchStrategy": "MULTI_RECORD",
                                                         "MaxPayloadInMB": 12}
    assert execution_parameters(Settings(max_body_bytes=1000))["MaxPayloadInMB"] == 1


def test_execution_parameters_route(one_column: Path, tmp_path: Path) -> None:
    """GET /execution-parameters on a server with 2 workers and a 5 MiB body limit; open like /ping even
    with a token configured (SageMaker sends none); in the OpenAPI document."""
    with run_server(one_column, "--workers", "2", "--max-body-bytes", str(5 * MIB), log_dir=tmp_path,
                    env={"SCORER_AUTH_TOKEN": "t0ken"}) as server:
        response = requests.get(server.url + "/execution-parameters", timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 5}
        assert requests.post(server.url + "/execution-parameters", timeout=10).status_code == 405
        document = requests.get(server.url + "/openapi.json", headers={"Authorization": "Bearer t0ken"}, timeout=10)
        assert "get" in document.json()["paths"]["/execution-parameters"]


# --- CSV headers and answers on /predict and /invocations ----------------------------------------------


@pytest.fixture
def served(one_column: Path, bundle_factory: BundleFactory, tmp_path: Path) -> Iterator[Callable[[str], LiveServer]]:
    """One server per bundle: ``served("one_column")`` or ``served("text_only")``."""
    import contextlib

    with contextlib.ExitStack() as stack:
        servers: dict[str, LiveServer] = {}

        def get(name: str) -> LiveServer:
            if name not in servers:
                bundle = one_column if name == "one_column" else bundle_factory("text_only", code=TEXT_ONLY)
                servers[name] = stack.enter_context(run_server(bundle, log_dir=tmp_path))
            return servers[name]

        yield get


def post(server: LiveServer, path: str, body: bytes | str, content_type: str, accept: str = "") -> requests.Response:
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    return requests.post(server.url + path, data=body, headers=headers, timeout=30)


@pytest.mark.parametrize(("body", "totals"), [
    ("a,b\n1,2\n3,4\n", [5, 11]),             # the schema's header
    ("b,a,note\n2,1,x\n4,3,y\n", [5, 11]),    # another order, an extra column: still a header
    ("1,2\n3,4\n", [5, 11]),                  # no header: the schema's order
    ("1,2\n", [5]),
    ("\n1,2\n3,4\n", [5, 11]),                # a blank first line is skipped
])
def test_bare_csv_with_or_without_header(served: Callable[[str], LiveServer], body: str, totals: list[float]) -> None:
    """A bare text/csv body: a first line naming every schema column is the header; one with as many
    fields as the schema and not its names is a row."""
    response = post(served("one_column"), "/invocations", body, "text/csv")
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": totals}


def test_header_parameter_decides(served: Callable[[str], LiveServer]) -> None:
    """An all-text schema: a data row whose values are the column names is read as a header when the
    body is a bare text/csv (the documented ambiguity), and scored with ``header=absent``; ``header=present``
    reads a first line that is not the schema's names as a header (so: missing columns, 422)."""
    server = served("text_only")
    body = "name,city\nann,rome\n"
    assert post(server, "/predict", body, "text/csv").json() == {"predictions": [7]}
    assert post(server, "/predict", body, "text/csv; header=absent").json() == {"predictions": [8, 7]}
    assert post(server, "/predict", "ann,rome\nbo,oslo\n", "text/csv").json() == {"predictions": [7, 6]}
    response = post(server, "/predict", "ann,rome\nbo,oslo\n", "text/csv; header=present")
    assert response.status_code == 422, response.text
    assert response.json()["columns"] == ["name", "city"]


def test_a_header_missing_a_column_is_still_named(served: Callable[[str], LiveServer]) -> None:
    """A header line lacking a schema column (another number of fields than the schema's) stays a header:
    422 naming the missing column, as before."""
    response = post(served("one_column"), "/invocations", "a\n1\n", "text/csv")
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "schema_error"
    assert response.json()["columns"] == ["b"]


def test_csv_answers_with_and_without_header(served: Callable[[str], LiveServer]) -> None:
    """/predict's plain text/csv answer keeps its header line; /invocations' has none (one line per row,
    ``text/csv; header=absent``); ``header=present|absent`` in Accept chooses on either path."""
    server = served("one_column")
    body = "a,b\n1,2\n3,4.5\n"
    cases = [
        ("/predict", "text/csv", "text/csv", "total\n5.0\n12.0\n"),
        ("/predict", "text/csv; header=absent", "text/csv; header=absent", "5\n12\n"),
        ("/invocations", "text/csv", "text/csv; header=absent", "5\n12\n"),
        ("/invocations", "text/*", "text/csv; header=absent", "5\n12\n"),
        ("/invocations", "text/csv; header=present", "text/csv", "total\n5.0\n12.0\n"),
    ]
    for path, accept, content_type, text in cases:
        response = post(server, path, body, "text/csv", accept)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == content_type, (path, accept)
        assert response.text == text, (path, accept)


@pytest.mark.parametrize("media", ["application/jsonlines", "application/jsonl", "application/x-jsonlines"])
def test_json_lines_in_and_out(served: Callable[[str], LiveServer], media: str) -> None:
    """JSON Lines under each of its names: objects or arrays (the schema's order) in, one object per line out."""
    server = served("one_column")
    for body in ('{"a": 1, "b": 2}\n{"b": 4, "a": 3}\n', "[1, 2]\n[3, 4]"):
        response = post(server, "/invocations", body, media, media)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/jsonlines"
        assert response.text == '{"total":5.0}\n{"total":11.0}\n'


@pytest.mark.parametrize(("body", "content_type", "accept", "status", "error", "in_message"), [
    ('{"a": 1, "b": 2}\n{"a": 3, "b": \n', "application/jsonlines", "", 400, "malformed_body", "line 2 is not valid JSON"),
    ('{"a": 1, "b": 2}\n[3, 4]\n', "application/jsonlines", "", 400, "malformed_body", "every line"),
    ('"secret-value"\n', "application/jsonlines", "", 400, "malformed_body", "every line"),
    ("\n\n", "application/jsonlines", "", 400, "malformed_body", "empty"),
    ("[1, 2, 3]\n", "application/jsonlines", "", 400, "malformed_body", "3 values"),
    ("1,2\n3,4,5\n", "text/csv", "", 400, "malformed_body", "CSV"),
    ('{"a": 1, "b": 2}\n{"a": 3, "b": 4}\n', "application/json", "", 400, "malformed_body",
     "one JSON value per line? send Content-Type: application/jsonlines"),
    ("1,2\n", "text/csv; header=maybe", "", 415, "unsupported_media_type", "header"),
    ("1,2\n", "text/csv", "text/csv; header=maybe", 406, "not_acceptable", "header"),
])
def test_bad_input_is_a_clear_4xx(served: Callable[[str], LiveServer], body: str, content_type: str, accept: str,
                                  status: int, error: str, in_message: str) -> None:
    """Bad JSON Lines and headerless CSV bodies, and bad header parameters: the documented 4xx, one line
    naming the cause, no request value echoed."""
    response = post(served("one_column"), "/invocations", body, content_type, accept)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == error
    assert in_message in payload["message"]
    assert "\n" not in payload["message"] and "Traceback" not in response.text
    assert "secret-value" not in response.text
