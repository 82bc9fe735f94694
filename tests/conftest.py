"""Shared fixtures: real bundles written to disk, the example bundles built by the repo script,
and a real ``scorer serve`` process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ("fast_marker", "pytester", "mlflow_server")  # `fast` checks; pytest on its own tests; MLflow server


def load_file(name: str, path: Path) -> Any:
    """A script of the repository (not a package module) imported from its file, as ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_build_module() -> Any:
    return load_file("scorer_example_bundles", REPO / "bundles" / "build.py")


try:  # property-based tests: the same examples on every CI run (no flakiness), fresh ones locally
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        _hypothesis_settings.load_profile("ci")
except ImportError:  # pragma: no cover - hypothesis is a test extra
    pass

@pytest.fixture(scope="session")
def build_module() -> Any:
    return load_build_module()


@pytest.fixture(scope="session")
def example_bundles(tmp_path_factory: pytest.TempPathFactory, build_module: Any) -> dict[str, Path]:
    """The shipped example bundles, rebuilt by bundles/build.py into a temp dir (once per run)."""
    out = tmp_path_factory.mktemp("examples")
    subprocess.run([sys.executable, str(REPO / "bundles" / "build.py"), "--out", str(out)], check=True)
    return {"tabular": out / "tabular", "spam": out / "spam"}


# --- bundle factory --------------------------------------------------------------------------

BundleFactory = Callable[..., Path]


@pytest.fixture
def bundle_factory(tmp_path: Path) -> BundleFactory:
    """Write a real bundle: ``make(name, code=..., artifacts={name: obj}, manifest=..., requirements=..., files=...)``.

    ``code`` is the source of code/custom_preprocess.py (dedented); artifacts are pickled.
    """

    def make(
        name: str = "bundle",
        *,
        code: str | None = None,
        artifacts: dict[str, Any] | None = None,
        manifest: dict[str, Any] | None = None,
        requirements: str | None = None,
        files: dict[str, str] | None = None,
    ) -> Path:
        root = tmp_path / name
        (root / "artifacts").mkdir(parents=True)
        (root / "code").mkdir()
        if code is not None:
            (root / "code" / "custom_preprocess.py").write_text(textwrap.dedent(code))
        for fname, obj in (artifacts or {}).items():
            with open(root / "artifacts" / fname, "wb") as fh:
                pickle.dump(obj, fh)
        if manifest is not None:
            (root / "manifest.json").write_text(json.dumps(manifest))
        if requirements is not None:
            (root / "requirements.txt").write_text(requirements)
        for rel, text in (files or {}).items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return root

    return make


SUM_MODEL = """
    import time
    import pandas as pd
    import scorer

    class CustomPreprocessor(scorer.CustomPreprocessor):
        input_schema = {"a": "float", "b": "float"}

        def load(self, artifacts_dir):
            self.delay = float((artifacts_dir / "delay.txt").read_text()) if (artifacts_dir / "delay.txt").exists() else 0.0

        def predict(self, df):
            if self.delay:
                time.sleep(self.delay)
            if (df["a"] == 666).any():
                raise ValueError("poison row")
            return pd.DataFrame({"sum": df["a"] + df["b"], "rows_in_call": len(df)})
"""


@pytest.fixture
def sum_bundle(bundle_factory: BundleFactory) -> Callable[..., Path]:
    """A model whose output is a + b (and how many rows its call saw); a == 666 raises."""

    def make(delay: float = 0.0, name: str = "sum") -> Path:
        root = bundle_factory(name, code=SUM_MODEL)
        if delay:
            (root / "artifacts" / "delay.txt").write_text(str(delay))
        return root

    return make


# --- a real server process ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(requests.ConnectionError, requests.Timeout):  # a slow answer while loading: not ready yet
                if requests.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log()}")


@contextlib.contextmanager
def run_server(bundle: Path | str, *args: str, env: dict[str, str] | None = None, wait: bool = True,
               log_dir: Path | None = None) -> Iterator[LiveServer]:
    """``scorer serve BUNDLE --port <free>`` as a real process; stopped with SIGTERM afterwards.

    Without a drain window of the test's own (``--drain-s`` or ``SCORER_DRAIN_S``) it runs with
    ``--drain-s 0``: every teardown's SIGTERM would otherwise wait out the default 5 s window."""
    port = free_port()
    log_path = (log_dir or Path(os.environ.get("TMPDIR", "/tmp"))) / f"scorer-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")}
    full_env.update(env or {})
    if "--drain-s" not in args and "SCORER_DRAIN_S" not in full_env:
        args = ("--drain-s", "0", *args)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scorer.cli", "serve", str(bundle), "--port", str(port), "--log-format", "text", *args],
            stdout=log_file, stderr=subprocess.STDOUT, env=full_env,
        )
    server = LiveServer(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        if wait:
            server.wait_ready()
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def live_server(tmp_path: Path) -> Callable[..., contextlib.AbstractContextManager[LiveServer]]:
    def start(bundle: Path | str, *args: str, **kwargs: Any) -> contextlib.AbstractContextManager[LiveServer]:
        return run_server(bundle, *args, log_dir=tmp_path, **kwargs)

    return start


def write_wheel(directory: Path, name: str, version: str, *, code: str = "", requires: tuple[str, ...] = (),
                extra_files: dict[str, str] | None = None) -> Path:
    """A real, installable pure-Python wheel (``import <name with _>`` runs ``code``; ``extra_files``
    are more archive members, e.g. ``<dist>-<version>.dist-info/entry_points.txt``), made without
    network or build backend: pip's offline tests need packages that exist nowhere else."""
    import base64
    import hashlib
    import zipfile

    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": textwrap.dedent(code),
        f"{info}/METADATA": "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
                            + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: scorer-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        **(extra_files or {}),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


@pytest.fixture
def make_wheel() -> Callable[..., Path]:
    """:func:`write_wheel` for tests in other directories."""
    return write_wheel


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    """A local package index (pip --find-links) holding packages this environment does not have:
    scorer-test-extra 1.0 (needs scorer-test-dep and packaging), scorer-test-dep 1.0, a copy of the
    installed packaging, and scorer-test-greedy 1.0 (needs a packaging that does not exist)."""
    from importlib import metadata

    house = tmp_path / "wheelhouse"
    write_wheel(house, "scorer-test-extra", "1.0", code="from scorer_test_dep import BASE\nVALUE = BASE + 42\n",
                requires=("scorer-test-dep>=1", "packaging"))
    write_wheel(house, "scorer-test-dep", "1.0", code="BASE = 1000\n")
    write_wheel(house, "packaging", metadata.version("packaging"), code="")
    write_wheel(house, "scorer-test-greedy", "1.0", requires=("packaging>=999",))
    return house

