"""MLflow's own scoring client (``mlflow.pyfunc.scoring_server.client.ScoringServerClient``, what
``mlflow models predict`` and MLflow's tests drive a scoring server with) against a real scorer server:
``/ping``, ``/version``, ``/invocations`` with and without ``params``. Params reach a bundle whose
``predict`` takes them, and requests with different params are never scored in one call; a bundle
without that argument answers as without params, with a ``Warning`` header saying they were ignored."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

from scorer._version import __version__
from tests.conftest import BundleFactory

SCALED_MODEL = """
import time
import pandas as pd
import scorer

class CustomPreprocessor(scorer.CustomPreprocessor):
    input_schema = {"a": "float"}
    output_columns = ["y", "rows_in_call"]

    def predict(self, df, params=None):
        time.sleep(0.3)
        scale = (params or {}).get("scale", 1)
        return pd.DataFrame({"y": df["a"] * scale, "rows_in_call": len(df)})
"""


def _client(url: str) -> ScoringServerClient:
    host, port = url.removeprefix("http://").split(":")
    return ScoringServerClient(host, int(port))


def test_mlflow_scoring_client_on_the_example(example_bundles: dict[str, Path], live_server: Callable[..., Any]) -> None:
    bundle = example_bundles["spam"]
    frame = pd.read_csv(bundle / "sample.csv")
    with live_server(bundle) as server:
        client = _client(server.url)
        client.wait_server_ready(timeout=30)
        assert client.get_version() == __version__
        answer = client.invoke(frame)
        expected = requests.post(server.url + "/predict", data=frame.to_json(orient="split", index=False),
                                 headers={"Content-Type": "application/json"}, timeout=30).json()["predictions"]
        assert answer.get_predictions().to_dict(orient="records") == expected
        # Params to a bundle that takes none: the same answer, and a Warning header naming what happened.
        assert client.invoke(frame, params={"threshold": 0.9}).get_predictions().to_dict(orient="records") == expected
        raw = requests.post(server.url + "/invocations", timeout=30, headers={"Content-Type": "application/json"},
                            json={"dataframe_split": frame.head(2).to_dict(orient="split"), "params": {"t": 1}})
        assert raw.status_code == 200 and raw.headers["Warning"].startswith('299 scorer "params ignored')
        plain = requests.post(server.url + "/invocations", timeout=30, headers={"Content-Type": "application/json"},
                              json={"dataframe_split": frame.head(2).to_dict(orient="split")})
        assert "Warning" not in plain.headers
        bad = requests.post(server.url + "/invocations", timeout=30, headers={"Content-Type": "application/json"},
                            json={"dataframe_split": frame.head(2).to_dict(orient="split"), "params": [1]})
        assert bad.status_code == 400 and bad.json()["error_code"] == "BAD_REQUEST"
        with pytest.raises(Exception, match="error code 422"):  # the client's own error, with our body in it
            client.invoke(frame[["feature1"]])


def test_params_reach_a_model_that_takes_them_and_never_share_a_call(
        bundle_factory: BundleFactory, live_server: Callable[..., Any]) -> None:
    bundle = bundle_factory("scaled", code=SCALED_MODEL)
    with live_server(bundle) as server:
        client = _client(server.url)
        assert client.invoke(pd.DataFrame({"a": [1.0, 2.0]}), params={"scale": 10}).get_predictions()["y"].tolist() \
            == [10.0, 20.0]
        assert "Warning" not in requests.post(server.url + "/invocations", timeout=30, json={
            "dataframe_records": [{"a": 1.0}], "params": {"scale": 3}}).headers
        # Concurrent requests while the model is busy: the two with scale 2 share a call, the one with
        # scale 5 (and the one without params) each get their own, with their own params.
        answers: dict[str, Any] = {}

        def post(key: str, rows: list[float], params: dict[str, Any] | None) -> None:
            body: dict[str, Any] = {"dataframe_records": [{"a": a} for a in rows]}
            if params is not None:
                body["params"] = params
            answers[key] = requests.post(server.url + "/invocations", json=body, timeout=30).json()["predictions"]

        blocker = threading.Thread(target=post, args=("blocker", [0.0], None))
        blocker.start()
        import time
        time.sleep(0.15)
        threads = [threading.Thread(target=post, args=args) for args in
                   [("two_a", [1.0], {"scale": 2}), ("two_b", [2.0, 3.0], {"scale": 2}),
                    ("five", [1.0], {"scale": 5}), ("none", [7.0], None)]]
        for t in threads:
            t.start()
        for t in [*threads, blocker]:
            t.join()
    assert [p["y"] for p in answers["two_a"]] == [2.0] and [p["y"] for p in answers["two_b"]] == [4.0, 6.0]
    assert [p["y"] for p in answers["five"]] == [5.0] and [p["y"] for p in answers["none"]] == [7.0]
    assert answers["two_a"][0]["rows_in_call"] == 3 and answers["two_b"][0]["rows_in_call"] == 3, answers
    assert answers["five"][0]["rows_in_call"] == 1 and answers["none"][0]["rows_in_call"] == 1, answers
