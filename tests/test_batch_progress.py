"""scorer batch progress reporting: a live line on a terminal, log lines otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd


def _inputs(root: Path) -> Path:
    inp = root / "in"
    inp.mkdir()
    for i in range(3):
        pd.DataFrame({"a": [float(j) for j in range(50)], "b": [1.0] * 50}).to_csv(inp / f"f{i}.csv", index=False)
    return inp


def test_progress_line_on_a_terminal(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """Under a real pseudo-terminal, stderr carries a carriage-return progress line with files, rows and rows/s."""
    inp = _inputs(tmp_path)
    cmd = f"{sys.executable} -m scorer.cli batch {sum_bundle()} --input {inp} --output {tmp_path / 'out'} --workers 1"
    # bytes, not text=True: universal newlines would turn the carriage returns into newlines
    result = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, timeout=120)
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, out
    assert "\r3/3 files, 150 rows" in out and "rows/s" in out, out


def test_progress_is_logged_when_not_a_terminal(tmp_path: Path, sum_bundle) -> None:  # type: ignore[no-untyped-def]
    """Without a terminal there is no carriage-return line; the run logs its outcome as plain lines."""
    inp = _inputs(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "scorer.cli", "batch", str(sum_bundle()), "--input", str(inp), "--output",
         str(tmp_path / "out"), "--workers", "1", "--log-format", "text"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    assert "all 3 files committed: 150 rows scored" in result.stderr
