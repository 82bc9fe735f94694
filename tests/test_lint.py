"""The code base stays free of the mistakes a linter proves: undefined names, unused imports, syntax errors."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.fast
def test_ruff_pyflakes_clean() -> None:
    """ruff's pyflakes rules (F) and syntax errors (E9) report nothing over the package, tests, benchmarks, bundles."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "F,E9", "--no-cache", "scorer", "tests", "benchmarks", "bundles"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# The modules the strict type check covers so far. The rest of the package follows once its
# rewrite lands: then the test checks all of it (`python -m mypy`, the package from pyproject).
TYPED_MODULES = [
    "scorer/__init__.py", "scorer/_columnar_limits.py", "scorer/_cpu.py", "scorer/_ipc_metadata.py",
    "scorer/_loading.py", "scorer/_logging.py", "scorer/_memory.py", "scorer/_parquet_pages.py",
    "scorer/_source_only.py", "scorer/_version.py", "scorer/bundle.py", "scorer/h2o_mojo.py", "scorer/jvm.py",
    "scorer/preprocessor.py", "scorer/private_dir.py", "scorer/record.py", "scorer/requirements.py",
    "scorer/settings.py", "scorer/spark_ml.py",
]


def test_types_check_strictly() -> None:
    """mypy with pyproject's [tool.mypy] (strict) reports nothing in the typed modules (the modules
    they import are read for their types, their own errors not reported here)."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", *TYPED_MODULES],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.fast
def test_package_ships_its_types() -> None:
    """scorer/py.typed is package data: a bundle's type checker reads scorer's annotations (PEP 561)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["scorer"]
    assert (REPO / "scorer" / "py.typed").is_file()
