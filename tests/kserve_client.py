"""KServe's own Python client against a scorer server: run by tests/test_protocols.py with the venv that
has KServe (``.venv-kserve``: KServe pins pandas below 3, so it cannot join scorer's test environment).

``python tests/kserve_client.py URL MODEL CSV`` scores the CSV's rows three ways with
``kserve.InferenceRESTClient`` and prints one JSON object: ``v2_json`` (Open Inference Protocol, JSON
tensors), ``v2_binary`` (the binary tensor data extension: binary inputs and outputs), ``v1`` (KServe V1
``instances``), each the outputs by name as lists; plus the client's readiness calls.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
import pandas as pd
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

TYPES = {"float64": "FP64", "int64": "INT64", "bool": "BOOL"}


def inputs_of(frame: pd.DataFrame, binary: bool) -> list[InferInput]:
    """One tensor per column (tests/kserve_grpc_client.py uses it too); ``binary``: raw bytes, not typed data."""
    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        datatype = TYPES.get(str(values.dtype), "BYTES")
        if datatype == "BYTES":
            values = values.astype(object)
        tensor = InferInput(name, [len(frame)], datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def outputs_of(response: object) -> dict[str, list[object]]:
    out = {}
    for tensor in response.outputs:  # type: ignore[attr-defined]
        values = tensor.as_numpy()
        out[tensor.name] = [v.decode() if isinstance(v, bytes) else v for v in values.tolist()]
    return out


async def main(url: str, model: str, path: str) -> None:
    frame = pd.read_csv(path)
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
    result: dict[str, object] = {
        "server_live": await v2.is_server_live(url),
        "server_ready": await v2.is_server_ready(url),
        "model_ready_v2": await v2.is_model_ready(url, model),
        "model_ready_v1": await v1.is_model_ready(url, model),
    }
    plain = InferRequest(model, inputs_of(frame, binary=False), request_id="kserve-json")
    answer = await v2.infer(url, plain, model_name=model)
    result["v2_json"] = outputs_of(answer)
    result["v2_json_id"] = answer.id
    names = json.loads(sys.argv[4]) if len(sys.argv) > 4 else []
    binary = InferRequest(model, inputs_of(frame, binary=True), request_id="kserve-binary",
                          request_outputs=[RequestedOutput(n, parameters={"binary_data": True}) for n in names])
    result["v2_binary"] = outputs_of(await v2.infer(url, binary, model_name=model))
    rows = json.loads(frame.to_json(orient="values"))
    answer_v1 = await v1.infer(url, {"instances": rows}, model_name=model)
    result["v1"] = answer_v1["predictions"]
    try:
        await v2.infer(url, InferRequest("nope", inputs_of(frame, binary=False)), model_name="nope")
    except Exception as exc:  # the client's error for a 404: what a user sees
        result["unknown_model_error"] = f"{type(exc).__name__}: {exc}"
    await v2.close()
    await v1.close()
    print(json.dumps(result, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
