"""Protocols benchmark: the same rows through every client protocol of one `scorer serve`, in one run.

    python benchmarks/bench_protocols.py [--duration 8] [--quick]

One server (the tabular bundle, pinned to the server core), ``wrk`` (one thread) pinned to the client core,
the same 1-row table sent as each protocol's client sends it:

- ``/predict``: pandas ``to_json(orient="split")`` (the vendor's snippet);
- ``/invocations`` MLflow: ``{"dataframe_split": ...}`` (MLflow's ``ScoringServerClient``);
- V2 JSON: Open Inference Protocol tensors as JSON, one per column;
- V2 binary: the bytes ``tritonclient`` sends by default (its own request builder: binary tensor data
  extension, binary outputs);
- KServe V1: ``{"instances": [[...]]}``;
- SageMaker CSV: a headerless CSV line to ``/invocations`` with ``Accept: text/csv`` (Batch Transform).

Before timing, every body is sent once and its answer, parsed as that protocol's client parses it
(``tritonclient``'s ``InferResult`` for V2), must equal the in-process predictions of the row; a
mismatch stops the run. Per protocol: 1 connection (p50 latency) and 64 connections (rows/s, p99).
Nothing here asserts on timings; it only reports. Results: ``benchmarks/results/protocols.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from _harness import (  # noqa: E402 - scripts run by path
    BUNDLES_DIR, LUA_TEMPLATE, code_state, cpu_pinning_available, expected_predictions, check_answers, finish_facts,
    free_port, http_request, install_cleanup, is_built, load_build_module, log, make_frame, measure, run_facts,
    write_results, ServerProcess, clean_env,
)

DATA_SEED = 4242
SCENARIOS = ((1, 1), (1, 64))
TYPES = {"float64": "FP64", "int64": "INT64", "bool": "BOOL"}


def _split(frame: pd.DataFrame) -> bytes:
    return frame.to_json(orient="split", index=False).encode()


def _triton(frame: pd.DataFrame, binary: bool) -> tuple[bytes, dict[str, str]]:
    """The request body and headers tritonclient's HTTP client builds for ``frame`` (one tensor per column)."""
    import tritonclient.http as triton
    from tritonclient.http._utils import _get_inference_request

    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        datatype = TYPES.get(str(values.dtype), "BYTES")
        tensor = triton.InferInput(name, [len(frame)], datatype)
        tensor.set_data_from_numpy(values.astype(object) if datatype == "BYTES" else values, binary_data=binary)
        inputs.append(tensor)
    outputs = None if binary else []  # no outputs named: all of them, binary (the client's default)
    body, json_size = _get_inference_request(inputs=inputs, request_id="", outputs=outputs, sequence_id=0,
                                             sequence_start=False, sequence_end=False, priority=0, timeout=None,
                                             custom_parameters=None)
    headers = {} if json_size is None else {"Inference-Header-Content-Length": str(json_size)}
    return body, headers


def _from_v2(body: bytes, headers: dict[str, str]) -> pd.DataFrame:
    import tritonclient.http as triton

    length = headers.get("inference-header-content-length")
    result = triton.InferResult.from_response_body(body, header_length=int(length) if length else None)
    names = [o["name"] for o in result.get_response()["outputs"]]
    return pd.DataFrame({n: [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy(n).tolist()]
                         for n in names})


def _from_predictions(body: bytes, headers: dict[str, str]) -> pd.DataFrame:
    predictions = orjson.loads(body)["predictions"]
    return pd.DataFrame(predictions if isinstance(predictions[0], dict) else {"prediction": predictions})


def protocols(frame: pd.DataFrame, model: str, outputs: list[str]) -> list[dict[str, Any]]:
    """Each protocol's path, body, headers and answer parser for ``frame``."""
    v2_json, _ = _triton(frame, binary=False)
    v2_binary, binary_headers = _triton(frame, binary=True)
    rows = json.loads(frame.to_json(orient="values"))
    csv_line = frame.to_csv(index=False, header=False).encode()

    def csv_answer(body: bytes, headers: dict[str, str]) -> pd.DataFrame:
        return pd.read_csv(io.BytesIO(body), header=None, names=outputs)

    json_type = {"Content-Type": "application/json"}
    return [
        {"name": "/predict (split JSON)", "path": "/predict", "body": _split(frame), "headers": json_type,
         "parse": _from_predictions},
        {"name": "/invocations (MLflow dataframe_split)", "path": "/invocations", "headers": json_type,
         "body": orjson.dumps({"dataframe_split": json.loads(_split(frame))}), "parse": _from_predictions},
        {"name": "V2 infer (JSON tensors)", "path": f"/v2/models/{model}/infer", "body": v2_json,
         "headers": json_type, "parse": _from_v2},
        {"name": "V2 infer (binary tensors, tritonclient's default)", "path": f"/v2/models/{model}/infer",
         "body": v2_binary, "headers": {"Content-Type": "application/octet-stream", **binary_headers},
         "parse": _from_v2},
        {"name": "KServe V1 predict", "path": f"/v1/models/{model}:predict", "headers": json_type,
         "body": orjson.dumps({"instances": rows}), "parse": _from_predictions},
        {"name": "SageMaker CSV (/invocations, headerless)", "path": "/invocations", "body": csv_line,
         "headers": {"Content-Type": "text/csv", "Accept": "text/csv"}, "parse": csv_answer},
    ]


def write_script(path: Path, body_file: Path, headers: dict[str, str]) -> Path:
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script = LUA_TEMPLATE.replace('wrk.headers["Content-Type"] = "@CONTENT_TYPE@"', lines)
    path.write_text(script.replace("@BODY@", str(body_file)))
    return path


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 s runs: a smoke test, noisy numbers")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 2, 1
    install_cleanup()
    started = time.perf_counter()
    pin = cpu_pinning_available()
    facts = run_facts(pin)
    facts["mode"] = "quick" if args.quick else "full"
    facts["code"] = code_state()
    build = load_build_module()
    with tempfile.TemporaryDirectory(prefix="bench-protocols-") as tmp:
        work = Path(tmp)
        if is_built("tabular", BUNDLES_DIR):
            bundle = BUNDLES_DIR / "tabular"
        else:
            build.build("tabular", work)
            bundle = work / "tabular"
        frame = make_frame(build, "tabular", 1, DATA_SEED)
        from scorer.core import Scorer

        expected = expected_predictions(Scorer.load(bundle), frame)
        port = free_port()
        scorer_bin = Path(sys.executable).with_name("scorer")
        server = ServerProcess("scorer", [str(scorer_bin), "serve", str(bundle), "--host", "127.0.0.1", "--port",
                                          str(port), "--log-level", "warning"], port, "/ready", work / "logs",
                               pin=pin, env=clean_env())
        try:
            server.wait_ready()
            status, listing = http_request(port, "GET", "/v1/models")
            model = json.loads(listing)["models"][0]
            results = []
            for spec in protocols(frame, model, expected["columns"]):
                status, body, headers = post(port, spec["path"], spec["body"], spec["headers"])
                if status != 200:
                    raise SystemExit(f"{spec['name']}: {status} {body[:300]!r}")
                diff = check_answers(spec["parse"](body, headers), expected, spec["name"])
                body_file = work / f"body-{len(results)}.bin"
                body_file.write_bytes(spec["body"])
                lua = write_script(work / f"script-{len(results)}.lua", body_file, spec["headers"])
                runs = {}
                for rows, conns in SCENARIOS:
                    log(f"{spec['name']}: {rows} row x {conns} connections ...")
                    runs[f"{rows}x{conns}"] = measure(server, spec["path"], lua, rows, conns, args.duration,
                                                      args.warmup, pin)
                results.append({"name": spec["name"], "path": spec["path"], "request_bytes": len(spec["body"]),
                                "max_abs_diff": diff, "runs": runs})
        finally:
            server.stop()
    base = results[0]["runs"]
    figures = {"protocols": [{
        "name": r["name"],
        "p50_ms_1": round(r["runs"]["1x1"]["p50_ms"], 3),
        "rows_s_64": round(r["runs"]["1x64"]["ok_rows_s"]),
        "p99_ms_64": round(r["runs"]["1x64"]["p99_ms"], 2),
        "rows_s_vs_predict": round(r["runs"]["1x64"]["ok_rows_s"] / base["1x64"]["ok_rows_s"], 3),
        "errors": sum(run["non_2xx"] + run["socket_errors"] for run in r["runs"].values()),
    } for r in results], "duration_s": args.duration}
    for f in figures["protocols"]:
        log(f"{f['name']}: p50 {f['p50_ms_1']} ms (1 conn); {f['rows_s_64']:,} rows/s at 64 "
            f"({f['rows_s_vs_predict']:.2f}x /predict), p99 {f['p99_ms_64']} ms; errors {f['errors']}")
    write_results("protocols", finish_facts(facts, started), figures, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
