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


def test_types_check_strictly() -> None:
    """mypy with pyproject's [tool.mypy] (strict, the whole scorer package) reports nothing."""
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.fast
def test_package_ships_its_types() -> None:
    """scorer/py.typed is package data: a bundle's type checker reads scorer's annotations (PEP 561)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["scorer"]
    assert (REPO / "scorer" / "py.typed").is_file()
