"""Reloads under continuous load: what a swap costs the clients, measured by the reload test itself.

    .venv/bin/python benchmarks/bench_reload.py        # (benchmarks/run reload)

Runs ``tests/reliability/test_reload_under_load.py`` (50 keep-alive clients through a folder swap, a
ConfigMap ``..data`` swap, SIGHUP and registry alias flips with an outage, each with 1 and 2 workers;
every answer checked against the in-process predictions of the version its header names) with
``SCORER_RELOAD_RESULTS`` set, and writes what each scenario measured to benchmarks/results/reload.json:
the time from the swap (or alias flip) to the first answer from the new version, failed requests, p99
latency in the steady window and in the swap window, and the peak summed RSS of the server's process
tree in each (RSS counts pages the workers share once per process). Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402

TEST = "tests/reliability/test_reload_under_load.py"


def figures(scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in scenarios:
        name = s["scenario"]
        out[f"{name}: failed requests"] = s["failed"]
        out[f"{name}: swap to first new answer (s)"] = s["flip_to_first_new_s"]
        out[f"{name}: swap to only new answers (s)"] = s["flip_to_only_new_s"]
        if s["p99_ms_steady"] and s["p99_ms_reload"]:
            out[f"{name}: p99 during swap / steady"] = round(s["p99_ms_reload"] / s["p99_ms_steady"], 2)
        if s["rss_mib_steady_peak"]:
            out[f"{name}: peak RSS during swap / steady"] = round(s["rss_mib_swap_peak"] / s["rss_mib_steady_peak"], 2)
    return out


def main() -> int:
    facts = h.run_facts(False)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "reload.jsonl"
        env = {**os.environ, "SCORER_RELOAD_RESULTS": str(results)}
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST], cwd=h.REPO, env=env)
        scenarios = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    if code != 0:
        h.log(f"the reload test failed (exit {code}): no results written")
        return 1
    facts = h.finish_facts(facts, started)
    facts["mode"] = "full"
    h.write_results("reload", facts, figures(scenarios), {"scenarios": scenarios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
