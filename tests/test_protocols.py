"""The Open Inference Protocol (KServe V2) and KServe V1, proven with the platforms' own clients against
real server processes: Triton's ``tritonclient`` (JSON tensors and the binary tensor data extension) and
KServe's ``InferenceRESTClient`` (run from .venv-kserve: KServe pins pandas below 3). Every answer is
compared with ``/predict``'s for the same rows, value for value. The error matrix of these routes runs
in-process (tests/test_protocol_errors.py)."""

from __future__ import annotations

import json
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import LiveServer

REPO = Path(__file__).resolve().parent.parent
KSERVE_PYTHON = REPO / ".venv-kserve" / "bin" / "python"
TYPES = {"float64": "FP64", "int64": "INT64", "bool": "BOOL"}


def example_frame(name: str, bundle: Path) -> pd.DataFrame:
    if name == "spam":
        return pd.read_csv(bundle / "sample.csv")
    manifest = json.loads((bundle / "manifest.json").read_text())
    sample = manifest["sample_input"]
    return pd.DataFrame(sample["data"], columns=sample["columns"])


def predict_answer(server: LiveServer, frame: pd.DataFrame) -> pd.DataFrame:
    """/predict's answer as columns (what every protocol's answer must equal)."""
    answer = requests.post(server.url + "/predict", data=frame.to_json(orient="split", index=False),
                           headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    if predictions and isinstance(predictions[0], dict):
        return pd.DataFrame(predictions)
    return pd.DataFrame({"prediction": predictions})


def _triton_inputs(frame: pd.DataFrame, binary: bool) -> list[triton.InferInput]:
    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        datatype = TYPES.get(str(values.dtype), "BYTES")
        if datatype == "BYTES":
            values = values.astype(object)
        tensor = triton.InferInput(name, [len(frame)], datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def _as_list(values: np.ndarray) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in values.tolist()]


@pytest.mark.parametrize("example", ["spam", "tabular"])
def test_tritonclient_scores_like_predict(example: str, example_bundles: dict[str, Path],
                                          live_server: Callable[..., Any]) -> None:
    """Triton's HTTP client, with its defaults (binary inputs and outputs) and with JSON tensors: every
    output equals /predict's, the request id is echoed, and the client's health and metadata calls work."""
    bundle = example_bundles[example]
    frame = example_frame(example, bundle)
    with live_server(bundle) as server:
        expected = predict_answer(server, frame)
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready()
        name = client.get_model_metadata(example)["name"]
        assert name == example and client.is_model_ready(example)
        metadata = client.get_model_metadata(example)
        assert [i["name"] for i in metadata["inputs"]] == list(frame.columns)
        assert [o["name"] for o in metadata["outputs"]] == list(expected.columns)
        version = metadata["versions"][0]
        for binary in (True, False):
            outputs = [triton.InferRequestedOutput(c, binary_data=binary) for c in expected.columns]
            result = client.infer(example, _triton_inputs(frame, binary), outputs=outputs, request_id=f"r-{binary}")
            response = result.get_response()
            assert response["id"] == f"r-{binary}" and response["model_name"] == example
            assert response["model_version"] == version
            for column in expected.columns:
                assert _as_list(result.as_numpy(column)) == expected[column].tolist(), (binary, column)
        # No outputs named: all of them, in binary (the client's default), by the versioned path too.
        result = client.infer(example, _triton_inputs(frame, True), model_version=version)
        assert [o["name"] for o in result.get_response()["outputs"]] == list(expected.columns)
        assert _as_list(result.as_numpy(expected.columns[0])) == expected[expected.columns[0]].tolist()
        with pytest.raises(InferenceServerException) as raised:
            client.infer(example, _triton_inputs(frame, True), model_version="not-" + version)
        assert raised.value.status() == "404" and "not served" in raised.value.message()
        with pytest.raises(InferenceServerException) as raised:
            client.infer(example, _triton_inputs(frame.iloc[:, :1], True))
        assert raised.value.status() == "422" and "missing required column" in raised.value.message()
        client.close()


@pytest.mark.parametrize("example", ["spam", "tabular"])
def test_kserve_client_scores_like_predict(example: str, example_bundles: dict[str, Path],
                                           live_server: Callable[..., Any], tmp_path: Path) -> None:
    """KServe's own REST client, V2 (JSON and binary tensors) and V1 (instances), equals /predict."""
    assert KSERVE_PYTHON.exists(), "KServe's client venv is missing: scripts/test makes .venv-kserve"
    bundle = example_bundles[example]
    frame = example_frame(example, bundle)
    rows = tmp_path / "rows.csv"
    frame.to_csv(rows, index=False)
    with live_server(bundle) as server:
        expected = predict_answer(server, frame)
        binary_outputs = [expected.columns[0], expected.columns[-1]]
        run = subprocess.run([str(KSERVE_PYTHON), str(REPO / "tests" / "kserve_client.py"), server.url, example,
                              str(rows), json.dumps(binary_outputs)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        answer = json.loads(run.stdout)
    assert answer["server_live"] and answer["server_ready"] and answer["model_ready_v2"] and answer["model_ready_v1"]
    assert answer["v2_json_id"] == "kserve-json"
    for column in expected.columns:
        assert answer["v2_json"][column] == expected[column].tolist(), column
    assert list(answer["v2_binary"]) == binary_outputs
    for column in answer["v2_binary"]:
        assert answer["v2_binary"][column] == expected[column].tolist(), column
    assert answer["v1"] == expected.to_dict(orient="records")
    assert "not served here" in answer["unknown_model_error"]


def test_v2_and_predict_requests_share_model_calls(sum_bundle: Callable[..., Path],
                                                   live_server: Callable[..., Any]) -> None:
    """Requests of both protocols that arrive while the model is busy join one model call: the model
    answers with the rows its call saw, and each side reads the other's rows in it."""
    with live_server(sum_bundle(delay=0.6)) as server:
        blocker = threading.Thread(target=requests.post, args=(server.url + "/predict",),
                                   kwargs={"json": {"a": [0], "b": [0]}, "timeout": 30})
        blocker.start()
        answers: dict[str, Any] = {}

        def v2() -> None:
            body = {"inputs": [{"name": "a", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]},
                               {"name": "b", "shape": [3], "datatype": "INT64", "data": [10, 20, 30]}]}
            answers["v2"] = requests.post(server.url + "/v2/models/sum/infer", json=body, timeout=30).json()

        def predict() -> None:
            answers["predict"] = requests.post(server.url + "/predict", json={"a": [5, 6], "b": [7, 8]},
                                               timeout=30).json()

        import time
        time.sleep(0.2)  # the blocker's call is running
        threads = [threading.Thread(target=v2), threading.Thread(target=predict)]
        for t in threads:
            t.start()
        for t in [*threads, blocker]:
            t.join()
    outputs = {o["name"]: o["data"] for o in answers["v2"]["outputs"]}
    assert outputs["sum"] == [11, 22, 33]
    assert [p["sum"] for p in answers["predict"]["predictions"]] == [12, 14]
    assert outputs["rows_in_call"] == [5, 5, 5], answers
    assert [p["rows_in_call"] for p in answers["predict"]["predictions"]] == [5, 5]


def test_binary_tensor_extension_by_hand(sum_bundle: Callable[..., Path], live_server: Callable[..., Any]) -> None:
    """The extension's byte layout as the protocol writes it, without a client library in between:
    little-endian INT64 inputs after the JSON header, a binary output whose bytes decode to the sums."""
    with live_server(sum_bundle()) as server:
        head = orjson.dumps({"inputs": [
            {"name": "a", "shape": [2, 1], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
            {"name": "b", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}],
            "outputs": [{"name": "sum", "parameters": {"binary_data": True}}]})
        body = head + struct.pack("<2q", 1, -2) + struct.pack("<2f", 0.5, 0.25)
        answer = requests.post(server.url + "/v2/models/sum/infer", data=body, timeout=30,
                               headers={"Inference-Header-Content-Length": str(len(head))})
        assert answer.status_code == 200, answer.text
        length = int(answer.headers["Inference-Header-Content-Length"])
        header = json.loads(answer.content[:length])
        (output,) = header["outputs"]
        assert output["name"] == "sum" and output["datatype"] == "FP64" and output["shape"] == [2]
        assert output["parameters"]["binary_data_size"] == 16
        assert struct.unpack("<2d", answer.content[length:]) == (1.5, -1.75)
        # The metrics label the route by its template, not by the model's name.
        metrics = requests.get(server.url + "/metrics", timeout=10).text
        assert 'path="/v2/models/{name}/infer"' in metrics
