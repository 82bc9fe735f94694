"""``scorer.Client`` against real servers: ``scorer serve`` processes on the example and test bundles,
and MLflow's own scoring server (``mlflow models serve``, which refuses Arrow) for the JSON fallback.

Not marked fast: they start server processes (the import check a Python process of its own)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

import scorer
from conftest import REPO, BundleFactory, LiveServer, free_port, load_build_module
from mlflow_server import SERVER_PYTHON
from proc_tree import stop_group
from scorer.core import Scorer
from scorer.errors import ClientTimeout, ScorerClientError

Serve = Callable[..., AbstractContextManager[LiveServer]]

BUILD = load_build_module()


def frame(bundle: str, rows: int, seed: int = 11) -> pd.DataFrame:
    """Request rows of an example bundle (features only), as the benchmarks make them."""
    make, features = {"tabular": (BUILD.make_tabular_frame, BUILD.TABULAR_FEATURES),
                      "spam": (BUILD.make_spam_frame, BUILD.SPAM_FEATURES)}[bundle]
    return make(rows, seed=seed)[list(features)].reset_index(drop=True)


def in_process(bundle: Path, df: pd.DataFrame) -> pd.DataFrame:
    return Scorer.load(bundle).score(df).reset_index(drop=True)


def served_json(url: str, df: pd.DataFrame) -> list[Any]:
    """What ``POST /predict`` answers in JSON to the same rows (full-precision floats, as the client sends them)."""
    response = requests.post(url + "/predict", json=df.to_dict(orient="split", index=False), timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def requests_503(url: str, path: str = "/invocations") -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    found = re.search(rf'scorer_requests_total\{{path="{path}",status="503"\}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("bundle", ["tabular", "spam"])
def test_predictions_equal_the_predict_answer_and_in_process_in_both_formats(
        live_server: Serve, example_bundles: dict[str, Path], bundle: str) -> None:
    """Arrow and JSON give identical frames (values and dtypes), which hold the in-process predictions
    of the same rows and what POST /predict answers in JSON."""
    df = frame(bundle, 500)
    with live_server(example_bundles[bundle]) as server:
        with scorer.Client(server.url) as arrow, scorer.Client(server.url, format="json") as plain:
            got_arrow, got_json = arrow.predict(df), plain.predict(df)
            assert arrow.format == "arrow"
            served = served_json(server.url, df)
    pd.testing.assert_frame_equal(got_arrow, got_json)
    want = in_process(example_bundles[bundle], df)
    assert list(got_arrow.columns) == list(want.columns) == ["prediction", *[c for c in want if c != "prediction"]]
    assert got_arrow["prediction"].tolist() == want["prediction"].tolist()
    for column in want.columns[1:]:
        assert np.array_equal(got_arrow[column].to_numpy(), want[column].to_numpy(dtype=float)), column
    assert got_arrow.to_dict(orient="records") == served


SINGLE_OUTPUT = """
    import numpy as np
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "float"}

        def load(self, artifacts_dir):
            self.named = (artifacts_dir / "named").exists()

        def predict(self, df):
            total = (df["a"] * df["b"]).to_numpy()
            return pd.DataFrame({"score": total}) if self.named else total
"""


@pytest.mark.parametrize("named", [False, True], ids=["1-D output", "one named column"])
def test_one_output_column_is_named_alike_in_both_formats(live_server: Serve, bundle_factory: BundleFactory,
                                                          named: bool) -> None:
    """A JSON answer of scalars is the column the Arrow answer names: ``prediction`` for a 1-D output,
    the model's own name for a one-column frame (the output columns /metadata reports: here learned from
    the bundle's sample, scored at load)."""
    sample = {"sample_input": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}
    root = bundle_factory("single", code=SINGLE_OUTPUT, manifest=sample if named else None)
    if named:
        (root / "artifacts" / "named").write_text("")
    df = pd.DataFrame({"a": [1.5, 2.0, -3.25], "b": [2.0, 0.1, 4.0]})
    with live_server(root) as server:
        got_json = scorer.Client(server.url, format="json").predict(df)  # first: before the Arrow call
        got_arrow = scorer.Client(server.url).predict(df)
    assert list(got_arrow.columns) == ["score" if named else "prediction"]
    pd.testing.assert_frame_equal(got_json, got_arrow)
    assert got_arrow.iloc[:, 0].tolist() == (df["a"] * df["b"]).tolist()


def test_token_auth_and_metadata(live_server: Serve, sum_bundle: Callable[..., Path]) -> None:
    """Without the token: 401 with the server's code, message and request id; with it: predictions and metadata."""
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [10.0, 20.0]})
    with live_server(sum_bundle(), env={"SCORER_AUTH_TOKEN": "s3cret"}) as server:
        for call in (lambda c: c.predict(df), lambda c: c.metadata()):
            with pytest.raises(ScorerClientError) as caught:
                call(scorer.Client(server.url))
            err = caught.value
            assert (err.status, err.code, err.attempts) == (401, "unauthorized", 1)
            assert "token" in err.message and err.request_id
            assert json.loads(err.body)["request_id"] == err.request_id
            assert str(err).startswith("HTTP 401 unauthorized: missing or wrong token")
            with pytest.raises(ScorerClientError, match="401"):
                call(scorer.Client(server.url, token="wrong"))
        client = scorer.Client(server.url, token="s3cret")
        assert client.predict(df)["sum"].tolist() == [11.0, 22.0]
        meta = client.metadata()
        assert meta["input_schema"] == [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}]
        assert meta["digest"].startswith("sha256:")


@pytest.mark.parametrize("fmt", ["arrow", "json"])
def test_a_bad_input_raises_the_servers_4xx_at_once(live_server: Serve, sum_bundle: Callable[..., Path],
                                                    fmt: str) -> None:
    df = pd.DataFrame({"a": [1.0, 2.0]})  # no column b
    with live_server(sum_bundle()) as server:
        client = scorer.Client(server.url, format=fmt, retries=5)  # type: ignore[arg-type]
        with pytest.raises(ScorerClientError) as caught:
            client.predict(df)
        err = caught.value
        assert (err.status, err.code, err.attempts) == (422, "schema_error", 1)
        assert "missing required column(s): b" in err.message
        assert json.loads(err.body)["columns"] == ["b"]
        assert client.format == fmt  # a 422 is no reason to change formats
        assert client.predict(df.assign(b=[1.0, 1.0]))["sum"].tolist() == [2.0, 3.0]  # the connection serves on


SLOW_LOAD = """
    import time
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float"}

        def load(self, artifacts_dir):
            time.sleep(float((artifacts_dir / "load_s.txt").read_text()))

        def predict(self, df):
            return pd.DataFrame({"double": df["a"] * 2})
"""


def slow_loading(bundle_factory: BundleFactory, seconds: float) -> Path:
    root = bundle_factory("slow_load", code=SLOW_LOAD)
    (root / "artifacts" / "load_s.txt").write_text(str(seconds))
    return root


def test_503_while_loading_is_retried_after_retry_after_until_ready(live_server: Serve,
                                                                   bundle_factory: BundleFactory) -> None:
    """Called as the server process starts: refused connections, then 503 Not Ready (Retry-After: 1)
    while the bundle loads, are retried; the answer is the loaded model's."""
    df = pd.DataFrame({"a": [1.0, 2.5]})
    with live_server(slow_loading(bundle_factory, 4), wait=False) as server:
        client = scorer.Client(server.url, retries=scorer.RetryPolicy(retries=100, deadline_s=90))
        assert client.predict(df)["double"].tolist() == [2.0, 5.0]
        assert requests_503(server.url) >= 2  # the 503s the client was answered and retried past


def test_retries_stop_at_the_limit_and_the_deadline(live_server: Serve, bundle_factory: BundleFactory) -> None:
    """Never more than ``retries`` retries, each after the server's Retry-After, and none past the deadline."""
    df = pd.DataFrame({"a": [1.0]})
    with live_server(slow_loading(bundle_factory, 300), wait=False) as server:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(server.url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        for retries, expected in ((0, 1), (2, 3)):
            before = requests_503(server.url)
            started = time.monotonic()
            with pytest.raises(ScorerClientError) as caught:
                scorer.Client(server.url, retries=retries).predict(df)
            elapsed = time.monotonic() - started
            err = caught.value
            assert (err.status, err.code, err.attempts) == (503, "not_ready", expected)
            assert requests_503(server.url) - before == expected
            assert elapsed >= retries * 1.0  # each retry waited out Retry-After: 1
        policy = scorer.RetryPolicy(retries=50, deadline_s=2.5)
        with pytest.raises(ScorerClientError) as caught:
            scorer.Client(server.url, retries=policy).predict(df)
        assert 2 <= caught.value.attempts <= 3  # at 0 s, 1 s and 2 s; a fourth would end past 2.5 s


def test_refused_connections_are_retried_then_reported() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(ScorerClientError) as caught:
        scorer.Client(f"http://127.0.0.1:{port}", retries=scorer.RetryPolicy(retries=2, backoff_s=0.05)).predict(
            pd.DataFrame({"a": [1.0]}))
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (None, "connection_refused", 3)


def test_timeout(live_server: Serve, sum_bundle: Callable[..., Path]) -> None:
    """A model call longer than the client's timeout raises ClientTimeout; a longer timeout gets the answer."""
    df = pd.DataFrame({"a": [1.0], "b": [2.0]})
    with live_server(sum_bundle(delay=1.5)) as server:
        with pytest.raises(ClientTimeout) as caught:
            scorer.Client(server.url, timeout=0.5).predict(df)
        assert (caught.value.status, caught.value.code) == (None, "timeout")
        assert scorer.Client(server.url, timeout=30).predict(df)["sum"].tolist() == [3.0]


def test_an_idle_connection_the_server_closed_is_reopened(live_server: Serve, sum_bundle: Callable[..., Path]) -> None:
    """uvicorn closes keep-alive connections idle for 5 s: the next call opens a new one, transparently."""
    df = pd.DataFrame({"a": [1.0], "b": [2.0]})
    with live_server(sum_bundle()) as server:
        client = scorer.Client(server.url, retries=0)
        assert client.predict(df)["sum"].tolist() == [3.0]
        time.sleep(6)
        assert client.predict(df)["sum"].tolist() == [3.0]


# --- the JSON fallback, against MLflow's scoring server ---------------------------------------------

MLFLOW_MODEL = """
    import json, sys
    import numpy as np
    import pandas as pd
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    out, rows = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(3)
    train = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    model = LogisticRegression().fit(train, (train["a"] + 0.5 * train["b"] > 0).astype(int))
    mlflow.sklearn.save_model(model, out + "/model", serialization_format="pickle")
    test = pd.read_json(rows, orient="split")
    json.dump(model.predict(test).tolist(), open(out + "/expected.json", "w"))
"""


@pytest.fixture
def mlflow_scoring_server(tmp_path: Path) -> Iterator[tuple[str, pd.DataFrame, list[Any]]]:
    """``mlflow models serve`` of a scikit-learn model (MLflow's own venv), the rows and MLflow's in-process predictions."""
    if not SERVER_PYTHON.exists():
        pytest.skip(f"{SERVER_PYTHON} is missing: scripts/test creates it from tests/mlflow-server.txt")
    df = pd.DataFrame({"a": np.linspace(-2, 2, 41), "b": np.linspace(1, -1, 41)})
    rows = tmp_path / "rows.json"
    rows.write_text(df.to_json(orient="split", double_precision=15))
    script = tmp_path / "make_model.py"
    script.write_text(textwrap.dedent(MLFLOW_MODEL))
    subprocess.run([str(SERVER_PYTHON), str(script), str(tmp_path), str(rows)], check=True, timeout=300)
    port = free_port()
    log = open(tmp_path / "mlflow-serve.log", "wb")
    proc = subprocess.Popen([str(SERVER_PYTHON), "-m", "mlflow", "models", "serve", "-m", str(tmp_path / "model"),
                             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
                            env={**os.environ, "PATH": f"{SERVER_PYTHON.parent}{os.pathsep}{os.environ['PATH']}"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "mlflow-serve.log").read_text()
            try:
                if requests.get(url + "/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "mlflow-serve.log").read_text()
            time.sleep(0.2)
        yield url, pd.read_json(rows, orient="split"), json.loads((tmp_path / "expected.json").read_text())
    finally:
        stop_group(proc, grace=10)
        log.close()


def test_a_server_refusing_arrow_gets_json(mlflow_scoring_server: tuple[str, pd.DataFrame, list[Any]]) -> None:
    """MLflow's scoring server answers 415 to an Arrow body: the client sends the frame again as JSON
    (MLflow's dataframe_split), and speaks JSON to it from then on."""
    url, df, expected = mlflow_scoring_server
    refused = requests.post(url + "/invocations", data=b"\xff\xff\xff\xff", timeout=30,
                            headers={"Content-Type": "application/vnd.apache.arrow.stream"})
    assert refused.status_code == 415  # the premise: this server does not take Arrow
    client = scorer.Client(url)
    got = client.predict(df)
    assert client.format == "json"
    assert list(got.columns) == ["prediction"] and got["prediction"].tolist() == expected
    assert client.predict(df.iloc[:3])["prediction"].tolist() == expected[:3]


def test_import_scorer_does_not_import_the_client() -> None:
    """``scorer.Client`` is imported on first use: ``import scorer`` (bundles' code does it) stays as it was."""
    code = "import sys, scorer; assert 'scorer.client' not in sys.modules; scorer.Client; assert 'scorer.client' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
