"""The Open Inference Protocol over gRPC (``--grpc-port``, the ``grpc`` extra), proven against real
``scorer serve`` processes with Triton's own gRPC client (``tritonclient.grpc``: raw tensor contents),
the service stub and messages tritonclient ships (the typed ``contents`` form) and KServe's
``InferenceGRPCClient`` (both forms; run from .venv-kserve). Every answer is compared with ``/predict``'s
for the same rows, value for value."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest
import requests
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.test_protocols import example_frame, predict_answer
from tests.conftest import BundleFactory, free_port

REPO = Path(__file__).resolve().parent.parent
KSERVE_PYTHON = REPO / ".venv-kserve" / "bin" / "python"
TYPES = {"float64": "FP64", "int64": "INT64", "bool": "BOOL"}

# A sum model that also answers whether grpc is loaded in the server process.
PROBE_MODEL = """
    import sys
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "float"}

        def predict(self, df):
            loaded = any(m == "grpc" or m.startswith("grpc.") for m in sys.modules)
            return pd.DataFrame({"sum": df["a"] + df["b"], "grpc_loaded": int(loaded)})
"""

SLOW_LOAD_MODEL = """
    import time
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "float"}

        def load(self, artifacts_dir):
            time.sleep(4)

        def predict(self, df):
            return pd.DataFrame({"sum": df["a"] + df["b"]})
"""


def _inputs(frame: pd.DataFrame) -> list[triton.InferInput]:
    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        datatype = TYPES.get(str(values.dtype), "BYTES")
        tensor = triton.InferInput(name, [len(frame)], datatype)
        tensor.set_data_from_numpy(values.astype(object) if datatype == "BYTES" else values)
        inputs.append(tensor)
    return inputs


def _as_list(values: np.ndarray) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in values.tolist()]


def _grpc_server(live_server: Callable[..., Any], bundle: Path, *args: str, **kwargs: Any) -> tuple[Any, str]:
    port = free_port()
    return live_server(bundle, "--grpc-port", str(port), *args, **kwargs), f"127.0.0.1:{port}"


def _error(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return raised.value.status(), raised.value.message()


@pytest.mark.parametrize("example", ["spam", "tabular"])
def test_tritonclient_grpc_scores_like_predict(example: str, example_bundles: dict[str, Path],
                                               live_server: Callable[..., Any]) -> None:
    """Triton's gRPC client with its defaults (raw tensor contents): health, metadata and every output
    equal to /predict's, the request id echoed; the versioned call; errors as gRPC status codes with our
    message (unknown model or version NOT_FOUND, a missing column INVALID_ARGUMENT, no value echoed)."""
    bundle = example_bundles[example]
    frame = example_frame(example, bundle)
    context, target = _grpc_server(live_server, bundle)
    with context as server:
        expected = predict_answer(server, frame)
        client = triton.InferenceServerClient(target)
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(example)
        metadata = client.get_model_metadata(example, as_json=True)
        assert metadata["name"] == example and metadata["platform"] == "scorer"
        assert [i["name"] for i in metadata["inputs"]] == list(frame.columns)
        assert [o["name"] for o in metadata["outputs"]] == list(expected.columns)
        version = metadata["versions"][0]
        assert client.get_server_metadata(as_json=True)["name"] == "scorer"
        result = client.infer(example, _inputs(frame), request_id="r-1")
        response = result.get_response()
        assert response.id == "r-1" and response.model_name == example and response.model_version == version
        assert [o.name for o in response.outputs] == list(expected.columns)
        for column in expected.columns:
            assert _as_list(result.as_numpy(column)) == expected[column].tolist(), column
        # Outputs asked for, in another order, by the versioned name.
        wanted = list(reversed(expected.columns))
        result = client.infer(example, _inputs(frame), model_version=version,
                              outputs=[triton.InferRequestedOutput(c) for c in wanted])
        assert [o.name for o in result.get_response().outputs] == wanted
        assert _as_list(result.as_numpy(wanted[0])) == expected[wanted[0]].tolist()

        status, message = _error(lambda: client.infer("no-such-model", _inputs(frame)))
        assert status == "StatusCode.NOT_FOUND" and message == (
            f"model 'no-such-model' is not served here; this server serves '{example}'")
        status, message = _error(lambda: client.infer(example, _inputs(frame), model_version="not-" + version))
        assert status == "StatusCode.NOT_FOUND" and "not served" in message
        status, message = _error(lambda: client.is_model_ready("no-such-model"))
        assert status == "StatusCode.NOT_FOUND"
        status, message = _error(lambda: client.infer(example, _inputs(frame.iloc[:, :1])))
        assert status == "StatusCode.INVALID_ARGUMENT" and "missing required column" in message
        client.close()
        # The metrics count gRPC calls by method and by the HTTP status of their answer.
        metrics = requests.get(server.url + "/metrics", timeout=10).text
        assert re.search(r"scorer_requests_total\{[^}]*path=\"/inference.GRPCInferenceService/ModelInfer\"[^}]*"
                         r"status=\"404\"[^}]*\} 2.0", metrics), metrics


def test_typed_contents_and_bad_values(example_bundles: dict[str, Path], live_server: Callable[..., Any]) -> None:
    """The typed ``contents`` form (fp64_contents, bytes_contents), sent with the service stub and messages
    tritonclient ships (Triton's superset of the protocol, wire-compatible): the answer equals /predict's.
    A value that does not fit its column is INVALID_ARGUMENT naming the column, the value not echoed;
    a count that does not match the shape is INVALID_ARGUMENT too."""
    bundle = example_bundles["spam"]
    frame = example_frame("spam", bundle)
    context, target = _grpc_server(live_server, bundle)
    with context as server, grpc.insecure_channel(target) as channel:
        expected = predict_answer(server, frame)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        tensor = service_pb2.ModelInferRequest.InferInputTensor
        texts = [v.encode() for v in frame["feature2"]]

        def request(feature1: Any) -> Any:
            message = service_pb2.ModelInferRequest(model_name="spam", id="typed")
            message.inputs.extend([
                feature1,
                tensor(name="feature2", datatype="BYTES", shape=[len(frame)],
                       contents=service_pb2.InferTensorContents(bytes_contents=texts)),
                tensor(name="feature3", datatype="FP64", shape=[len(frame)],
                       contents=service_pb2.InferTensorContents(fp64_contents=frame["feature3"].tolist())),
            ])
            return message

        good = tensor(name="feature1", datatype="FP64", shape=[len(frame)],
                      contents=service_pb2.InferTensorContents(fp64_contents=frame["feature1"].tolist()))
        answer, call = stub.ModelInfer.with_call(request(good), timeout=30)
        trailing = dict(call.trailing_metadata())
        assert trailing["x-model-version"] == answer.model_version and trailing["x-model-digest"].startswith("sha256:")
        assert trailing["x-request-id"]
        assert answer.id == "typed" and [o.name for o in answer.outputs] == list(expected.columns)
        probabilities = np.frombuffer(answer.raw_output_contents[2], dtype="<f8").tolist()
        assert answer.outputs[2].datatype == "FP64" and probabilities == expected["probability_spam"].tolist()

        secret = tensor(name="feature1", datatype="BYTES", shape=[len(frame)],
                        contents=service_pb2.InferTensorContents(bytes_contents=[b"SECRET-VALUE"] * len(frame)))
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(request(secret), timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "feature1" in raised.value.details() and "SECRET" not in raised.value.details()
        short = tensor(name="feature1", datatype="FP64", shape=[len(frame)],
                       contents=service_pb2.InferTensorContents(fp64_contents=[1.0]))
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(request(short), timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details() == f"input 'feature1' has 1 values for shape [{len(frame)}]"


def test_grpc_and_http_requests_share_model_calls(sum_bundle: Callable[..., Path],
                                                  live_server: Callable[..., Any]) -> None:
    """A gRPC request and an HTTP request that arrive while the model is busy join one model call:
    the model answers with the rows its call saw, and each side reads the other's rows in it."""
    context, target = _grpc_server(live_server, sum_bundle(delay=0.6))
    with context as server:
        client = triton.InferenceServerClient(target)
        blocker = threading.Thread(target=requests.post, args=(server.url + "/predict",),
                                   kwargs={"json": {"a": [0], "b": [0]}, "timeout": 30})
        blocker.start()
        answers: dict[str, Any] = {}

        def over_grpc() -> None:
            a, b = triton.InferInput("a", [3], "INT64"), triton.InferInput("b", [3], "INT64")
            a.set_data_from_numpy(np.array([1, 2, 3], dtype=np.int64))
            b.set_data_from_numpy(np.array([10, 20, 30], dtype=np.int64))
            answers["grpc"] = client.infer("sum", [a, b])

        def over_http() -> None:
            answers["http"] = requests.post(server.url + "/predict", json={"a": [5, 6], "b": [7, 8]}, timeout=30).json()

        time.sleep(0.2)  # the blocker's call is running
        threads = [threading.Thread(target=over_grpc), threading.Thread(target=over_http)]
        for t in threads:
            t.start()
        for t in [*threads, blocker]:
            t.join()
        client.close()
    assert answers["grpc"].as_numpy("sum").tolist() == [11, 22, 33]
    assert [p["sum"] for p in answers["http"]["predictions"]] == [12, 14]
    assert answers["grpc"].as_numpy("rows_in_call").tolist() == [5, 5, 5]
    assert [p["rows_in_call"] for p in answers["http"]["predictions"]] == [5, 5]


def test_auth_token(sum_bundle: Callable[..., Path], live_server: Callable[..., Any]) -> None:
    """With a token, ModelMetadata and ModelInfer need ``authorization: Bearer <token>`` metadata
    (UNAUTHENTICATED without it, or with a wrong one); health calls stay open, as over HTTP."""
    context, target = _grpc_server(live_server, sum_bundle(), "--auth-token", "s3cret")
    with context:
        client = triton.InferenceServerClient(target)
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("sum")
        a, b = triton.InferInput("a", [1], "FP64"), triton.InferInput("b", [1], "FP64")
        a.set_data_from_numpy(np.array([1.5]))
        b.set_data_from_numpy(np.array([2.0]))
        for headers in (None, {"authorization": "Bearer NOT-IT"}):
            status, message = _error(lambda: client.infer("sum", [a, b], headers=headers))
            assert status == "StatusCode.UNAUTHENTICATED" and "token" in message and "NOT-IT" not in message
            status, _ = _error(lambda: client.get_model_metadata("sum", headers=headers))
            assert status == "StatusCode.UNAUTHENTICATED"
        good = {"authorization": "Bearer s3cret"}
        assert client.infer("sum", [a, b], headers=good).as_numpy("sum").tolist() == [3.5]
        assert client.get_model_metadata("sum", headers=good).name == "sum"
        client.close()


def test_readiness_follows_http_and_sigterm_lets_in_flight_requests_finish(
        bundle_factory: BundleFactory, sum_bundle: Callable[..., Path], live_server: Callable[..., Any]) -> None:
    """While the bundle loads, ServerReady and ModelReady are false (ServerLive true), as /ready is 503;
    then true. After SIGTERM a request in flight is answered before the server exits 0."""
    context, target = _grpc_server(live_server, bundle_factory("slow", code=SLOW_LOAD_MODEL), wait=False)
    with context as server:
        client = triton.InferenceServerClient(target)
        deadline = time.monotonic() + 30
        while True:
            try:
                live = client.is_server_live()
                break
            except InferenceServerException:  # the port is not open yet
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
        assert live and requests.get(server.url + "/ready", timeout=10).status_code == 503
        assert not client.is_server_ready() and not client.is_model_ready("slow")
        server.wait_ready()
        assert client.is_server_ready() and client.is_model_ready("slow")
        client.close()

    context, target = _grpc_server(live_server, sum_bundle(delay=1.5))
    with context as server:
        client = triton.InferenceServerClient(target)
        a, b = triton.InferInput("a", [1], "FP64"), triton.InferInput("b", [1], "FP64")
        a.set_data_from_numpy(np.array([1.0]))
        b.set_data_from_numpy(np.array([2.0]))
        answers: list[Any] = []
        thread = threading.Thread(target=lambda: answers.append(client.infer("sum", [a, b])))
        thread.start()
        time.sleep(0.5)  # the request is in the model call
        server.proc.send_signal(signal.SIGTERM)
        thread.join()
        assert server.proc.wait(timeout=30) == 0, server.log()
        assert answers[0].as_numpy("sum").tolist() == [3.0]
        client.close()


def test_grpc_is_not_imported_unless_turned_on(bundle_factory: BundleFactory, live_server: Callable[..., Any]) -> None:
    """Without --grpc-port the server never imports grpc (the model, in the server process, looks at
    ``sys.modules``; with gRPC on, the same look finds it); neither does importing the package and its
    command line."""
    bundle = bundle_factory("probe", code=PROBE_MODEL)
    with live_server(bundle) as off:
        answer = requests.post(off.url + "/predict", json=[{"a": 1, "b": 2}], timeout=30)
    assert answer.json()["predictions"] == [{"sum": 3, "grpc_loaded": 0}]
    context, _ = _grpc_server(live_server, bundle)
    with context as on:
        answer = requests.post(on.url + "/predict", json=[{"a": 1, "b": 2}], timeout=30)
    assert answer.json()["predictions"] == [{"sum": 3, "grpc_loaded": 1}]
    code = ("import sys, scorer, scorer.cli, scorer.serving.app, scorer.serving.process, scorer.serving.predict, "
            "scorer.serving.inference; print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"


def test_usage_errors_exit_2(tmp_path: Path, bundle_factory: BundleFactory) -> None:
    """--grpc-port without the extra (a bare ``grpc`` package shadows the installed one), with
    --workers 2, or on a port already taken: exit 2 at once with one line, no traceback."""
    bundle = bundle_factory("probe", code=PROBE_MODEL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}

    def serve(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "scorer.cli", "serve", str(bundle), "--port", str(free_port()),
                               *args], capture_output=True, text=True, env={**env, **(extra_env or {})}, timeout=60)

    shadow = tmp_path / "shadow" / "grpc"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    result = serve("--grpc-port", str(free_port()), extra_env={"PYTHONPATH": str(shadow.parent)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "scorer: --grpc-port needs the grpc extra (pip install 'scorer[grpc]'); missing: grpc.aio"]
    result = serve("--grpc-port", str(free_port()), "--workers", "2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "scorer: --grpc-port serves gRPC from one process: it cannot be combined with --workers 2 "
        "(run one worker per replica, or turn gRPC off)"]
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = serve("--grpc-port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"scorer: --grpc-port {port}: cannot listen on 127.0.0.1: Address already in use"]


def test_kserve_grpc_client_scores_like_predict(example_bundles: dict[str, Path],
                                                live_server: Callable[..., Any]) -> None:
    """KServe's own gRPC client (``InferenceGRPCClient``, run from .venv-kserve), with typed ``contents``
    (its default) and with ``raw_input_contents``: health calls, every output equal to /predict's, the
    request id echoed, an unknown model NOT_FOUND with our message."""
    assert KSERVE_PYTHON.exists(), "KServe's client venv is missing: scripts/test makes .venv-kserve"
    bundle = example_bundles["spam"]
    frame = example_frame("spam", bundle)
    context, target = _grpc_server(live_server, bundle)
    with context as server:
        expected = predict_answer(server, frame)
        run = subprocess.run([str(KSERVE_PYTHON), str(REPO / "tests" / "kserve_grpc_client.py"), target, "spam",
                              str(bundle / "sample.csv")], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        answer = json.loads(run.stdout)
    assert answer["server_live"] and answer["server_ready"] and answer["model_ready"]
    for form in ("typed", "raw"):
        assert answer[f"{form}_id"] == f"kserve-{form}"
        assert list(answer[form]) == list(expected.columns)
        for column in expected.columns:
            assert answer[form][column] == expected[column].tolist(), (form, column)
    assert "NOT_FOUND" in answer["unknown_model_error"]
    assert "model 'nope' is not served here; this server serves 'spam'" in answer["unknown_model_error"]


def test_big_requests_and_the_body_limit(sum_bundle: Callable[..., Path], live_server: Callable[..., Any]) -> None:
    """A request of 40,000 rows (640 KB of raw data: decoded, and its answer encoded, in the model thread)
    is answered right; a message over --max-body-bytes is RESOURCE_EXHAUSTED (413's code), and the server
    goes on serving."""
    context, target = _grpc_server(live_server, sum_bundle(), "--max-body-bytes", "1000000")
    with context:
        client = triton.InferenceServerClient(target)
        rows = 40_000
        a, b = triton.InferInput("a", [rows], "FP64"), triton.InferInput("b", [rows], "FP64")
        a.set_data_from_numpy(np.arange(1000, 1000 + rows, dtype=np.float64))  # no 666: the model raises on it
        b.set_data_from_numpy(np.full(rows, 0.5))
        sums = client.infer("sum", [a, b]).as_numpy("sum")
        assert sums.shape == (rows,) and sums.tolist() == (np.arange(1000, 1000 + rows) + 0.5).tolist()
        big = rows * 2
        a, b = triton.InferInput("a", [big], "FP64"), triton.InferInput("b", [big], "FP64")
        a.set_data_from_numpy(np.zeros(big))
        b.set_data_from_numpy(np.zeros(big))
        status, _ = _error(lambda: client.infer("sum", [a, b]))
        assert status == "StatusCode.RESOURCE_EXHAUSTED"
        assert client.is_server_ready()
        client.close()
