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
from kserve import InferenceGRPCClient, InferRequest

from kserve_client import inputs_of, outputs_of  # this script's folder is on sys.path

async def main(target: str, model: str, path: str) -> None:
    frame = pd.read_csv(path)
    client = InferenceGRPCClient(target, timeout=30, retries=0)
    result: dict[str, object] = {
        "server_live": await client.is_server_live(),
        "server_ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready(model),
    }
    for form in ("typed", "raw"):
        answer = await client.infer(InferRequest(model, inputs_of(frame, binary=form == "raw"), request_id=f"kserve-{form}"))
        result[form] = outputs_of(answer)
        result[f"{form}_id"] = answer.id
    try:
        await client.infer(InferRequest("nope", inputs_of(frame, binary=True)))
    except Exception as exc:  # the client's error for NOT_FOUND: what a user sees
        result["unknown_model_error"] = f"{type(exc).__name__}: {exc}"
    await client.close()
    print(json.dumps(result, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
