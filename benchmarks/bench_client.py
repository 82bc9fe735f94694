"""Python client benchmark: ``scorer.Client`` (Arrow, JSON) against the vendor's ``requests`` snippet.

    python benchmarks/bench_client.py [--quick]

One ``scorer serve`` of the tabular bundle (default settings, single worker, pinned to core 1); this
process, the client, pinned to core 0. For 1, 1,000 and 100,000 rows of the tabular bundle's request
frame (``_harness.make_frame``), three ways to get a DataFrame of predictions from a DataFrame of rows:

* ``scorer.Client`` (``format="arrow"``): an Arrow IPC stream both ways, one keep-alive connection.
* ``scorer.Client(format="json")``: MLflow's ``dataframe_split`` JSON written by orjson, JSON back.
* the vendor snippet: ``requests.post(url, data=df.to_json(orient="split"), headers={"Content-Type":
  "application/json"})`` then ``pd.DataFrame(response.json()["predictions"])``; ``requests.post``
  opens a new connection per call, as the snippet does.

Each call is the whole round trip: encode the frame, the request, the model call, decode the answer to
a DataFrame. Before timing, each way's answer is checked against in-process predictions of the same
rows (``_harness.check_answers``; the vendor's ``to_json`` writes 10 significant digits, so its
probabilities differ slightly: the largest difference is recorded). Timing: the shared repeat policy
(``_harness.repeat_policy``: 3 untimed calls, then the median of at least 200 calls over 4 s per way, 15
over 8 s for 100,000 rows), the three ways' calls taken in turn (``time_interleaved``: on a shared
machine each way meets the same load). Reported: median ms per call, rows/s from it, and the Arrow client's speedup over
the JSON client and over the vendor snippet at each size. The in-process limit of each size is measured
too (``_harness.run_baseline``), for scale. Nothing here asserts on timings.
Results: ``benchmarks/results/client.json`` (and ``client.md``, not committed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _harness as h  # noqa: E402 - scripts run by path
from _harness import CLIENT_CPUS, SERVER_CPUS, code_state, load_build_module  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
ROWS = (1, 1_000, 100_000)
DATA_SEED = 20_251_127  # not the training seed
BUNDLE = "tabular"
WAYS = ("client arrow", "client json", "vendor requests + to_json")


def callers(url: str) -> dict[str, Callable[[Any], Any]]:
    import pandas as pd
    import requests

    import scorer

    arrow = scorer.Client(url, timeout=300)
    plain = scorer.Client(url, timeout=300, format="json")

    def vendor(df: Any) -> Any:
        response = requests.post(url + "/predict", data=df.to_json(orient="split"),
                                 headers={"Content-Type": "application/json"}, timeout=300)
        response.raise_for_status()
        return pd.DataFrame(response.json()["predictions"])

    return {"client arrow": arrow.predict, "client json": plain.predict, "vendor requests + to_json": vendor}


def time_interleaved(calls: dict[str, Callable[[], Any]], min_repeats: int, budget_s: float) -> dict[str, Any]:
    """``_harness.time_call``'s policy (warm-up calls, then at least ``min_repeats`` timed calls and until
    ``budget_s`` per way is spent), with the ways' calls taken in turn: on a shared machine whose load
    comes and goes, each way meets the same load, so their ratio holds even when the absolute times move."""
    import statistics

    for fn in calls.values():
        for _ in range(h.WARMUP_CALLS):
            fn()
    times: dict[str, list[float]] = {way: [] for way in calls}
    watch = h.CpuWatch()
    deadline = time.perf_counter() + budget_s * len(calls)
    while min(map(len, times.values())) < min_repeats or time.perf_counter() < deadline:
        for way, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[way].append(time.perf_counter() - t0)
    cpu = watch.stop()
    out = {}
    for way, ts in times.items():
        ts.sort()
        out[way] = {"median_ms": statistics.median(ts) * 1e3, "min_ms": ts[0] * 1e3,
                    "p90_ms": ts[int(0.9 * (len(ts) - 1))] * 1e3, "repeats": len(ts),
                    "warmup_calls": h.WARMUP_CALLS, "interleaved": True, "cpu": cpu}
    return out


def run(args: argparse.Namespace, bundle: Path, pin: bool, work: Path) -> dict[str, Any]:
    build = load_build_module()
    big = h.make_frame(build, BUNDLE, max(ROWS), DATA_SEED)
    frames = {n: big.head(n).reset_index(drop=True) for n in ROWS}
    h.log("in-process limit and predictions (child pinned to core %s) ..." % SERVER_CPUS)
    base = h.run_baseline(bundle, frames, work, pin=pin, quick=args.quick)
    port = h.free_port()
    server = h.ServerProcess("scorer", [sys.executable, "-m", "scorer", "serve", str(bundle), "--host", h.HOST,
                                        "--port", str(port), "--log-format", "text"],
                             port, "/ready", work / "logs", pin=pin)
    server.wait_ready()
    url = f"http://{h.HOST}:{port}"
    ways = callers(url)
    out: dict[str, Any] = {"limit": {}, "ways": {w: {} for w in WAYS}, "max_abs_diff": {w: {} for w in WAYS}}
    try:
        for n in ROWS:
            frame = frames[n]
            expected = base["expected"][str(n)]
            out["limit"][str(n)] = base["by_rows"][str(n)]
            for way in WAYS:
                got = ways[way](frame)
                rtol = 1e-8 if way.startswith("vendor") else 1e-12
                out["max_abs_diff"][way][str(n)] = h.check_answers(got, expected, f"{way}, {n} rows", rtol=rtol,
                                                                  atol=1e-9 if way.startswith("vendor") else 0)
            reps, budget = h.repeat_policy(n, args.quick)
            server.wait_idle()
            timed = time_interleaved({way: (lambda call=ways[way]: call(frame)) for way in WAYS}, reps, budget)
            for way, t in timed.items():
                t["rows"], t["rows_s"] = n, n / (t["median_ms"] / 1e3)
                out["ways"][way][str(n)] = t
                h.log(f"{n:>7,} rows  {way:<26} median {t['median_ms']:9.2f} ms  {t['rows_s']:>12,.0f} rows/s "
                      f"({t['repeats']} calls; others used {t['cpu'].get('foreign_cpu_pct', 0):.0f}% of a core)")
    finally:
        server.stop()
    return out


def figures(raw: dict[str, Any]) -> dict[str, Any]:
    ways = raw["ways"]
    sizes = []
    for n in ROWS:
        k = str(n)
        row: dict[str, Any] = {"rows": n, "limit_rows_s": round(raw["limit"][k]["rows_s"])}
        for way in WAYS:
            row[way] = {"median_ms": round(ways[way][k]["median_ms"], 3), "rows_s": round(ways[way][k]["rows_s"])}
        row["arrow_over_json"] = round(ways["client json"][k]["median_ms"] / ways["client arrow"][k]["median_ms"], 2)
        row["arrow_over_vendor"] = round(ways["vendor requests + to_json"][k]["median_ms"]
                                         / ways["client arrow"][k]["median_ms"], 2)
        sizes.append(row)
    top = sizes[-1]
    return {"bundle": BUNDLE, "sizes": sizes, "arrow_over_json_at_100000": top["arrow_over_json"],
            "arrow_over_vendor_at_100000": top["arrow_over_vendor"]}


def report(fig: dict[str, Any]) -> str:
    lines = ["| rows per call | " + " | ".join(f"{w}: ms (rows/s)" for w in WAYS) + " | Arrow ÷ JSON client | Arrow ÷ vendor |",
             "|---:|" + "---:|" * (len(WAYS) + 2)]
    for s in fig["sizes"]:
        cells = [f"{h.f_ms(s[w]['median_ms'])} ({s[w]['rows_s']:,})" for w in WAYS]
        lines.append(f"| {s['rows']:,} | " + " | ".join(cells) + f" | {s['arrow_over_json']:.2f}× | {s['arrow_over_vendor']:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: fewer calls, noisy numbers")
    args = parser.parse_args(argv)
    pin = h.cpu_pinning_available()
    if pin:
        os.sched_setaffinity(0, {int(CLIENT_CPUS)})  # the client: off the server's core
    else:
        h.log("WARNING: cannot pin to cores 0/1 (need taskset and >= 2 cores): results are not comparable")
    h.install_cleanup()
    started = time.perf_counter()
    facts = h.run_facts(pin)
    before = code_state()
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        work = Path(tmp)
        bundle = REPO / "bundles" / BUNDLE
        if not h.is_built(BUNDLE, REPO / "bundles"):
            load_build_module().build(BUNDLE, work / "bundles")
            bundle = work / "bundles" / BUNDLE
        try:
            raw = run(args, bundle, pin, work)
        finally:
            h.cleanup()
    fig = figures(raw)
    text = report(fig)
    print("\n" + text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "client.md").write_text(text)
    facts = h.finish_facts(facts, started)
    facts["mode"] = "quick" if args.quick else "full"
    facts["code_changed_during_run"] = before != code_state()
    foreign = [t["cpu"].get("foreign_cpu_pct", 0) for way in raw["ways"].values() for t in way.values()]
    facts["notes"] = (f"other processes used up to {max(foreign, default=0):.0f}% of a core during a timing "
                      "(each timing's cpu.foreign_cpu_pct); the client is this process, pinned to core 0, the server "
                      "to core 1")
    h.write_results("client", facts, fig, {"config": {"rows": list(ROWS), "data_seed": DATA_SEED, "bundle": BUNDLE,
                                                     "server": "scorer serve, default settings, one worker"},
                                          **raw})
    return 0


if __name__ == "__main__":
    sys.exit(main())
