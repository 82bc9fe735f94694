"""The code base stays free of the mistakes a linter proves: undefined names, unused imports, syntax errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_pyflakes_clean() -> None:
    """ruff's pyflakes rules (F) and syntax errors (E9) report nothing over the package, tests, benchmarks, bundles."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "F,E9", "--no-cache", "scorer", "tests", "benchmarks", "bundles"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
