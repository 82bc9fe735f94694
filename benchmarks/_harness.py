"""Helpers shared by the benchmark scripts (run them from the repository root or anywhere)."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUNDLES_DIR = REPO / "bundles"


def load_build_module() -> Any:
    """bundles/build.py (the example bundles and their data generators), imported by path."""
    path = BUNDLES_DIR / "build.py"
    if not path.is_file():
        raise SystemExit(f"{path} not found: it provides the example bundles and their data generators")
    spec = importlib.util.spec_from_file_location("bundles_build", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bundles_build"] = module  # dataclasses/pickle look modules up by name
    spec.loader.exec_module(module)
    return module


def code_state() -> dict[str, Any]:
    """What was measured: git HEAD, uncommitted changes under scorer/ and bundles/, a digest of scorer/*.py.

    The package is installed editable, so every run uses scorer/ as it is at that moment."""
    h = hashlib.sha256()
    for f in sorted((REPO / "scorer").rglob("*.py")):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "git_head": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git("status", "--porcelain", "--", "scorer", "bundles").splitlines(),
        "scorer_py_sha256": h.hexdigest()[:16],
    }
