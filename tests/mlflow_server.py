"""A real MLflow tracking server for the tests, and helpers that log and register models on it.

``mlflow server`` with a sqlite backend store and a local artifacts destination (artifacts served
through the server, as the ``mlflow-artifacts`` proxy), on 127.0.0.1 at a free port, one worker.
The ``mlflow_server`` fixture is session-scoped (starting it takes seconds): tests sharing it use
model names of their own. A test that needs to stop a server (a registry outage) starts its own with
:func:`start_mlflow_server`.

MLflow is imported inside the functions only: collecting the other tests never imports it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import free_port
from proc_tree import stop_group


#: The tracking server runs from a venv of its own (scripts/test makes it from tests/mlflow-server.txt): full
#: MLflow caps pyarrow below the version scorer uses; the tests' own process has MLflow's client (mlflow-skinny).
SERVER_PYTHON = Path(__file__).resolve().parent.parent / ".venv-mlflow" / "bin" / "python"


class MlflowServer:
    """A running ``mlflow server``: its URL, where it keeps artifacts, and helpers that register models."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, root: Path) -> None:
        self.proc = proc
        self.url = url
        self.root = root
        self.artifacts = root / "artifacts"  # --artifacts-destination: <experiment id>/<run id>/artifacts/...
        self.log_path = root / "server.log"

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment without SCORER_* and MLFLOW_* variables, pointing MLflow here."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCORER_", "MLFLOW_"))}
        env["MLFLOW_TRACKING_URI"] = self.url
        env.update(extra)
        return env

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    def _experiment(self) -> str:
        client = self.client()
        found = client.get_experiment_by_name("scorer-tests")
        return str(found.experiment_id if found is not None else client.create_experiment("scorer-tests"))

    def log_bundle_version(self, name: str, bundle_dir: Path) -> Any:
        """Log the folder ``bundle_dir`` as the artifact ``bundle`` of a new run and register it as a new
        version of ``name`` (created if missing). Returns MLflow's ``ModelVersion``."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        run = client.create_run(self._experiment())
        run_id = run.info.run_id
        client.log_artifacts(run_id, str(bundle_dir), artifact_path="bundle")
        client.set_terminated(run_id)
        with contextlib.suppress(MlflowException):  # already registered
            client.create_registered_model(name)
        return client.create_model_version(name, source=f"runs:/{run_id}/bundle", run_id=run_id)

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        self.client().set_registered_model_alias(name, alias, str(version))

    def set_stage(self, name: str, version: str | int, stage: str) -> None:
        """``transition_model_version_stage`` (deprecated by MLflow, still served by it)."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.client().transition_model_version_stage(name, str(version), stage)

    def log_sklearn_version(self, name: str, estimator: Any, X: Any) -> Any:
        """``mlflow.sklearn.log_model`` (cloudpickle, signature and input example from ``X``) registered as
        a new version of ``name``. Returns MLflow's ``ModelVersion``."""
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        try:
            mlflow.set_tracking_uri(self.url)  # MLflow also sets these variables in os.environ: restored below
            mlflow.set_registry_uri(self.url)
            mlflow.set_experiment(experiment_id=self._experiment())
            with mlflow.start_run():
                info = mlflow.sklearn.log_model(estimator, name="model", serialization_format="cloudpickle",
                                                signature=infer_signature(X, estimator.predict(X)),
                                                input_example=X[:3], registered_model_name=name)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        versions = self.client().search_model_versions(f"name='{name}'")
        return next(v for v in versions if v.run_id == info.run_id)

    def artifact_dir(self, version: Any) -> Path:
        """The folder under the server's artifacts destination holding a version's files (logged by
        :meth:`log_bundle_version`): delete it to make that version's artifacts go missing."""
        run = self.client().get_run(version.run_id)
        return self.artifacts / run.info.experiment_id / version.run_id / "artifacts" / "bundle"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_group(proc, grace=20)  # its own group: the server and the workers it started


@contextlib.contextmanager
def start_mlflow_server(root: Path, timeout: float = 90) -> Iterator[MlflowServer]:
    """``mlflow server`` on 127.0.0.1 at a free port with its store under ``root``; stopped afterwards.
    Call :meth:`stop` early (an outage) with ``server.proc``: ``stop_mlflow_server(server)``."""
    if not SERVER_PYTHON.exists():
        raise AssertionError(f"no MLflow tracking server to start: {SERVER_PYTHON} is missing; ./scripts/test installs "
                             "it (python3 -m venv .venv-mlflow && .venv-mlflow/bin/pip install -r tests/mlflow-server.txt)")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(SERVER_PYTHON), "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True,
    )
    server = MlflowServer(proc, f"http://127.0.0.1:{port}", root)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited with {proc.returncode}:\n{server.log_path.read_text()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(server.url + "/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"mlflow server not up after {timeout}s:\n{server.log_path.read_text()}")
            time.sleep(0.2)
        yield server
    finally:
        _stop(proc)
        log.close()


def stop_mlflow_server(server: MlflowServer) -> None:
    """Stop the server now (a registry outage); the fixture's teardown then has nothing left to do."""
    _stop(server.proc)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real MLflow tracking server for the session (sqlite store, local artifacts, 127.0.0.1)."""
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow")) as server:
        yield server
