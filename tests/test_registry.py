"""Registry and run URIs against a real MLflow tracking server (tests/mlflow_server.py): ``scorer info``,
``scorer serve`` and ``scorer batch`` on ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
``models:/NAME/STAGE`` and ``runs:/RUN_ID/PATH``; what was resolved shown in ``/metadata``, ``scorer
info`` and ``manifest.json``; a batch output written with one version refused to a rerun on another;
bad sources failing fast (compared with a successful ``scorer info`` timed in the same test) with one line.

Registered versions are scorer bundle folders logged as a run's artifacts (MLflow model directories
logged with ``mlflow.sklearn.log_model`` are the last test's). Model names are this module's own: the
tracking server is shared by the session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from conftest import free_port, run_server
from mlflow_server import MlflowServer

from scorer import codecs
from scorer.bundle import open_bundle
from scorer.core import Scorer

MODEL = "registry-tests"
GONE = "registry-tests-gone"
SCALE_MODEL = """
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "float"}

        def load(self, artifacts_dir):
            self.scale = float((artifacts_dir / "scale.txt").read_text())

        def predict(self, df):
            return pd.DataFrame({"y": df["a"] + self.scale * df["b"]})
"""
ROWS = pd.DataFrame({"a": [float(i) for i in range(20)], "b": [0.5 * i for i in range(20)]})


def write_bundle(root: Path, scale: float) -> Path:
    """A bundle whose prediction is a + scale * b: two scales are two versions with different answers."""
    (root / "code").mkdir(parents=True)
    (root / "artifacts").mkdir()
    (root / "code" / "custom_preprocess.py").write_text(textwrap.dedent(SCALE_MODEL))
    (root / "artifacts" / "scale.txt").write_text(str(scale))
    (root / "manifest.json").write_text(json.dumps({
        "name": "scaled", "version": f"scale-{scale}", "sample_input": {"columns": ["a", "b"], "data": [[1, 2]]},
    }))
    return root


class Registry:
    def __init__(self, server: MlflowServer, bundles: dict[str, Path], versions: dict[str, Any]) -> None:
        self.server, self.bundles, self.versions = server, bundles, versions

    def expected(self, version: str) -> Any:
        """The in-process predictions of a registered version's bundle folder, as /predict answers them."""
        return json.loads(codecs.json_predictions(Scorer.load(self.bundles[version]).score(ROWS)))

    def digest(self, version: str) -> str:
        return f"sha256:{open_bundle(self.bundles[version]).digest}"


@pytest.fixture(scope="module")
def registry(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Versions 1 (alias champion) and 2 (stage Production) of MODEL; version 1 of GONE, whose artifacts
    are deleted from the server's artifact store."""
    root = tmp_path_factory.mktemp("registry-bundles")
    bundles = {"1": write_bundle(root / "v1", 1.0), "2": write_bundle(root / "v2", 2.0)}
    versions = {v: mlflow_server.log_bundle_version(MODEL, bundles[v]) for v in ("1", "2")}
    assert [versions["1"].version, versions["2"].version] == ["1", "2"]
    mlflow_server.set_alias(MODEL, "champion", 1)
    mlflow_server.set_stage(MODEL, 2, "Production")
    gone = mlflow_server.log_bundle_version(GONE, bundles["1"])
    shutil.rmtree(mlflow_server.artifact_dir(gone))
    return Registry(mlflow_server, bundles, versions)


def scorer_cmd(*args: object, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "scorer.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120)
    return proc, time.perf_counter() - started


def info(uri: str, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    proc, seconds = scorer_cmd("info", uri, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), seconds


def test_info_names_what_each_uri_resolved_to(registry: Registry) -> None:
    server, env = registry.server, registry.server.env()
    v1, v2 = registry.versions["1"], registry.versions["2"]
    cases = {
        f"models:/{MODEL}/1": ("1", {}),
        f"models:/{MODEL}@champion": ("1", {"alias": "champion"}),
        f"models:/{MODEL}/production": ("2", {"stage": "Production"}),  # any case, as MLflow takes stages
    }
    for uri, (version, extra) in cases.items():
        meta, _ = info(uri, env)
        mv = registry.versions[version]
        assert meta["source"] == {"uri": uri, "kind": "registry", "name": MODEL, "version": version, **extra,
                                  "run_id": mv.run_id, "source": f"runs:/{mv.run_id}/bundle",
                                  "tracking_uri": server.url}, uri
        assert meta["digest"] == registry.digest(version), uri
        assert meta["model_version"] == version, uri
    meta, _ = info(f"runs:/{v2.run_id}/bundle", env)
    assert meta["source"] == {"uri": f"runs:/{v2.run_id}/bundle", "kind": "run", "run_id": v2.run_id,
                              "path": "bundle", "tracking_uri": server.url}
    assert meta["digest"] == registry.digest("2") != registry.digest("1")
    assert v1.run_id != v2.run_id


def test_serve_alias_scores_with_that_version_and_shows_it(registry: Registry, tmp_path: Path) -> None:
    server = registry.server
    tmp = tmp_path / "tmp"  # the server's TMPDIR: where its private download goes
    tmp.mkdir()
    with run_server(f"models:/{MODEL}@champion", env=server.env(TMPDIR=str(tmp)), log_dir=tmp_path) as live:
        response = requests.post(live.url + "/predict", json=json.loads(ROWS.to_json(orient="split")), timeout=30)
        assert response.status_code == 200, response.text
        assert response.json() == registry.expected("1") != registry.expected("2")
        meta = requests.get(live.url + "/metadata", timeout=10).json()
        [download] = tmp.glob("scorer-mlflow-*")
        assert download.stat().st_mode & 0o777 == 0o700
    assert not download.exists()  # removed when the server stopped
    assert meta["source"]["uri"] == f"models:/{MODEL}@champion"
    assert (meta["source"]["version"], meta["source"]["alias"]) == ("1", "champion")
    assert meta["source"]["run_id"] == registry.versions["1"].run_id
    assert meta["digest"] == registry.digest("1")


def test_batch_pins_the_resolved_version_and_refuses_a_rerun_on_another(registry: Registry, tmp_path: Path) -> None:
    server = registry.server
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = server.env(TMPDIR=str(tmp))
    uri = f"models:/{MODEL}@champion"
    data = tmp_path / "in.csv"
    ROWS.to_csv(data, index=False)
    out = tmp_path / "out"

    def batch(*extra: str) -> subprocess.CompletedProcess[str]:
        # two processes, chunks of 4 rows: the spawned worker scores some chunks from this run's download
        proc, _ = scorer_cmd("batch", uri, "--input", data, "--output", out, "--workers", "2", "--chunk-rows", "4",
                             *extra, env=env)
        return proc

    def predictions() -> list[float]:
        return pd.read_csv(out / "in.csv")["y"].tolist()

    def expected(version: str) -> list[float]:
        return list(Scorer.load(registry.bundles[version]).score(ROWS)["y"])

    try:
        first = batch()
        assert first.returncode == 0, first.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["source"]["version"] == "1" and manifest["source"]["alias"] == "champion"
        assert manifest["source"]["run_id"] == registry.versions["1"].run_id
        assert manifest["bundle"]["digest"] == registry.digest("1")
        assert predictions() == expected("1") != expected("2")

        server.set_alias(MODEL, "champion", 2)  # promoted between the runs
        refused = batch()
        assert refused.returncode == 2, refused.stderr
        [line] = [ln for ln in refused.stderr.splitlines() if ln.startswith("scorer batch:")]  # besides the log
        assert f"models:/{MODEL}/1" in line and f"models:/{MODEL}/2" in line and "--overwrite" in line, line
        assert predictions() == expected("1")  # untouched

        again = batch("--overwrite")
        assert again.returncode == 0, again.stderr
        assert json.loads((out / "manifest.json").read_text())["source"]["version"] == "2"
        assert predictions() == expected("2")
        assert not list(tmp.glob("scorer-mlflow-*"))  # each run removed its download
    finally:
        server.set_alias(MODEL, "champion", 1)


def test_bad_sources_fail_fast_with_one_line(registry: Registry, tmp_path: Path) -> None:
    env = registry.server.env()
    shadow = tmp_path / "no-mlflow"  # mlflow installed but not importable, as without the extra
    (shadow / "mlflow").mkdir(parents=True)
    (shadow / "mlflow" / "__init__.py").write_text('raise ImportError("No module named mlflow (hidden by the test)")\n')
    _, baseline = info(f"models:/{MODEL}/1", env)  # a successful resolve, download and load, timed here
    closed = f"http://127.0.0.1:{free_port()}"
    unset = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"}
    cases = [
        (f"models:/{MODEL}@champion", registry.server.env(MLFLOW_TRACKING_URI=closed), "cannot be reached"),
        (f"models:/{MODEL}@champion", registry.server.env(MLFLOW_TRACKING_URI=closed.replace("//", "//bob:s3cret@")),
         "connection refused"),
        (f"models:/{MODEL}@no-such-alias", env, "no-such-alias"),
        ("models:/no-such-model/1", env, "no-such-model"),
        (f"models:/{MODEL}/Shipping", env, "models:/NAME/STAGE"),
        (f"models:/{GONE}/1", env, "no artifacts"),
        ("foo://x", env, "unsupported source scheme 'foo'"),
        (f"models:/{MODEL}@champion", unset, "MLFLOW_TRACKING_URI is not set"),
        (f"models:/{MODEL}@champion", registry.server.env(PYTHONPATH=str(shadow)), "pip install 'scorer[mlflow]'"),
    ]
    for uri, case_env, cause in cases:
        proc, seconds = scorer_cmd("info", uri, env=case_env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 3, (uri, proc.stderr)
        assert len(lines) == 1 and cause in lines[0], (uri, proc.stderr)
        assert "s3cret" not in proc.stderr and "bob" not in proc.stderr
        assert seconds < 3 * baseline, (uri, seconds, baseline)
    # serve exits the same way at start
    proc, _ = scorer_cmd("serve", f"models:/{MODEL}@no-such-alias", "--port", free_port(), env=env)
    assert proc.returncode == 3, proc.stderr
    assert "no-such-alias" in proc.stderr


def test_sklearn_model_version_by_alias(registry: Registry, tmp_path: Path) -> None:
    """A version logged by ``mlflow.sklearn.log_model`` (an MLflow model directory), served by its alias:
    the predictions are the estimator's, and those of that model directory loaded in-process."""
    import mlflow.artifacts
    from sklearn.linear_model import LogisticRegression

    server = registry.server
    X = ROWS[["a", "b"]]
    estimator = LogisticRegression().fit(X, (ROWS["a"] > 9).astype(int))
    mv = server.log_sklearn_version("registry-tests-sklearn", estimator, X)
    server.set_alias("registry-tests-sklearn", "champion", mv.version)
    meta, _ = info("models:/registry-tests-sklearn@champion", server.env())
    assert (meta["source"]["version"], meta["source"]["run_id"]) == (mv.version, mv.run_id)
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/registry-tests-sklearn/{mv.version}",
                                                dst_path=str(tmp_path / "model"), tracking_uri=server.url)
    expected = json.loads(codecs.json_predictions(Scorer.load(local).score(X)))
    with run_server("models:/registry-tests-sklearn@champion", env=server.env(), log_dir=tmp_path) as live:
        response = requests.post(live.url + "/predict", json=json.loads(X.to_json(orient="split")), timeout=30)
        assert response.status_code == 200, response.text
    assert response.json() == expected
    rows = expected["predictions"]
    assert [row["prediction"] if isinstance(row, dict) else row for row in rows] == estimator.predict(X).tolist()


def test_revision_is_the_version_an_alias_points_to_now(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reload watcher's key: one registry call for an alias or a stage, none for a fixed version or run."""
    from scorer import mlflow_registry, sources
    from scorer.errors import SourceUnavailable

    for name, value in mlflow_registry.CLIENT_DEFAULTS.items():  # restored after the test
        monkeypatch.setenv(name, os.environ.get(name, value))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.server.url)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    server = registry.server
    assert sources.revision(f"models:/{MODEL}@champion") == f"models:/{MODEL}/1"
    assert sources.revision(f"models:/{MODEL}/PRODUCTION") == f"models:/{MODEL}/2"
    try:
        server.set_alias(MODEL, "champion", 2)
        assert sources.revision(f"models:/{MODEL}@champion") == f"models:/{MODEL}/2"
    finally:
        server.set_alias(MODEL, "champion", 1)
    run_uri = f"runs:/{registry.versions['1'].run_id}/bundle"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nobody listens
    assert sources.revision(f"models:/{MODEL}/1") == f"models:/{MODEL}/1"  # no call: the URI itself
    assert sources.revision(run_uri) == run_uri
    with pytest.raises(SourceUnavailable, match="connection refused"):
        sources.revision(f"models:/{MODEL}@champion")
