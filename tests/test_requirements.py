"""Installing a bundle's missing requirements at start (opt-in), from a local wheelhouse with no
network, into a cache directory; and the failures: unreachable index, unresolvable pins, and pins
on packages the scorer has already imported."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EXTRA_CODE = """
    import scorer
    import scorer_test_extra

    class CustomPreprocessor(scorer.CustomPreprocessor):
        def predict(self, df):
            return (df["a"] + scorer_test_extra.VALUE).rename("prediction")
"""


def pip_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCORER_", "PIP_"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # the host's pip configuration does not leak into the test
    return {**env, **extra}


def batch(bundle: Path, tmp_path: Path, env: dict[str, str], *flags: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    inp = tmp_path / "in.csv"
    inp.write_text("a\n1\n2\n")
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    proc = subprocess.run(
        [sys.executable, "-m", "scorer.cli", "batch", str(bundle), "--input", str(inp), "--output", str(out),
         "--workers", "1", "--log-format", "text", *flags],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    return proc, out / "in.csv"


def test_install_missing_requirements_into_cache(bundle_factory, wheelhouse: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With install_requirements, a missing pin and its missing dependency are installed into the
    cache before the bundle's code is imported; the copy of a package the environment already has
    is removed again; a second start reuses the cache without running pip."""
    bundle = bundle_factory("needs-extra", code=EXTRA_CODE, requirements="scorer-test-extra==1.0\n",
                            manifest={"input_schema": {"a": "float"}})
    cache = tmp_path / "cache"
    env = pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))

    proc, out = batch(bundle, tmp_path, env)
    assert proc.returncode == 3 and "scorer-test-extra==1.0 (not installed)" in proc.stderr  # default: fail fast

    proc, out = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(cache))
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(out)["prediction"].tolist() == [1043, 1044]
    assert "installing 1 missing requirement(s)" in proc.stderr
    [target] = [p for p in cache.iterdir() if not p.name.startswith(".")]
    names = sorted(p.name for p in target.iterdir())
    assert "scorer_test_extra" in names and "scorer_test_dep" in names
    assert not [n for n in names if n.startswith("packaging")], names  # the environment's own stays in use

    proc, out = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(cache))
    assert proc.returncode == 0, proc.stderr
    assert "installing" not in proc.stderr and pd.read_csv(out)["prediction"].tolist() == [1043, 1044]


def test_install_with_unreachable_index_fails_clearly(bundle_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An index nobody answers on: exit 3 with pip's error and a hint about the index; no partial cache."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: connections are refused
    bundle = bundle_factory("needs-extra", code=EXTRA_CODE, requirements="scorer-test-extra==1.0\n",
                            manifest={"input_schema": {"a": "float"}})
    cache = tmp_path / "cache"
    env = pip_env(PIP_INDEX_URL=f"http://127.0.0.1:{dead}/simple", PIP_RETRIES="0", PIP_TIMEOUT="5")
    proc, _ = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(cache))
    assert proc.returncode == 3, proc.stderr
    assert "could not install the missing requirement(s) scorer-test-extra==1.0" in proc.stderr
    assert "package index reachable" in proc.stderr
    assert [p.name for p in cache.iterdir()] == [".lock"]


def test_install_that_would_change_the_environment_fails(bundle_factory, wheelhouse: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A pin whose dependencies conflict with what the scorer runs on is refused by pip's resolver
    (the environment's versions are constraints), and the message says so."""
    bundle = bundle_factory("greedy", code=EXTRA_CODE, requirements="scorer-test-greedy==1.0\n")
    env = pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    proc, _ = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(tmp_path / "c"))
    assert proc.returncode == 3, proc.stderr
    assert "could not install" in proc.stderr and "depends on packaging>=999" in proc.stderr


@pytest.mark.parametrize("pin", ["numpy==0.0.1", "pandas<1"])
def test_install_refuses_to_swap_an_imported_package(bundle_factory, tmp_path: Path, pin: str) -> None:  # type: ignore[no-untyped-def]
    """A pin on another version of a package the scorer has already imported fails at once, without pip."""
    bundle = bundle_factory("old", code=EXTRA_CODE, requirements=pin + "\n")
    env = pip_env(PIP_INDEX_URL="http://127.0.0.1:9/simple")
    proc, _ = batch(bundle, tmp_path, env, "--install-requirements", "--requirements-cache", str(tmp_path / "c"))
    assert proc.returncode == 3, proc.stderr
    assert "cannot change packages the scorer itself runs on" in proc.stderr and pin in proc.stderr
    assert "installing" not in proc.stderr
