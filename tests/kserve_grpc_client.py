"""KServe's own gRPC client against a scorer server's gRPC port: run by tests/test_grpc.py with the venv that
has KServe (``.venv-kserve``; see tests/kserve_client.py for why it is apart).

``python tests/kserve_grpc_client.py HOST:PORT MODEL CSV`` scores the CSV's rows with
``kserve.InferenceGRPCClient`` twice: ``typed`` (the tensors' typed ``contents``, the client's default) and
``raw`` (``raw_input_contents``), and prints one JSON object: each the outputs by name as lists, plus the
client's health calls and the error it raises for an unknown model.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
import pandas as pd
from kserve import InferenceGRPCClient, InferInput, InferRequest

TYPES = {"float64": "FP64", "int64": "INT64", "bool": "BOOL"}


def _inputs(frame: pd.DataFrame, raw: bool) -> list[InferInput]:
    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        datatype = TYPES.get(str(values.dtype), "BYTES")
        if datatype == "BYTES":
            values = values.astype(object)
        tensor = InferInput(name, [len(frame)], datatype)
        tensor.set_data_from_numpy(values, binary_data=raw)
        inputs.append(tensor)
    return inputs


def _outputs(response: object) -> dict[str, list[object]]:
    out = {}
    for tensor in response.outputs:  # type: ignore[attr-defined]
        values = tensor.as_numpy()
        out[tensor.name] = [v.decode() if isinstance(v, bytes) else v for v in values.tolist()]
    return out


async def main(target: str, model: str, path: str) -> None:
    frame = pd.read_csv(path)
    client = InferenceGRPCClient(target, timeout=30, retries=0)
    result: dict[str, object] = {
        "server_live": await client.is_server_live(),
        "server_ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready(model),
    }
    for form in ("typed", "raw"):
        answer = await client.infer(InferRequest(model, _inputs(frame, raw=form == "raw"), request_id=f"kserve-{form}"))
        result[form] = _outputs(answer)
        result[f"{form}_id"] = answer.id
    try:
        await client.infer(InferRequest("nope", _inputs(frame, raw=True)))
    except Exception as exc:  # the client's error for NOT_FOUND: what a user sees
        result["unknown_model_error"] = f"{type(exc).__name__}: {exc}"
    await client.close()
    print(json.dumps(result, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
