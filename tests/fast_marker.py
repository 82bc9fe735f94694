"""The `fast` marker: the developer's inner loop (`./scripts/test -m fast`), kept honest.

A test marked fast runs in the test process only: no `scorer` process, no server, no JVM/Spark, no
Docker. Two checks hold every fast test to that: at collection, a fast test may not request a
fixture that starts such a process (directly or through another fixture; this fails the whole run,
before `-m` deselects anything); while it runs (set-up to tear-down), starting a `scorer`, Java,
Spark or Docker process raises in the test. A pytest plugin, loaded by tests/conftest.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

REAL_PROCESS_FIXTURES = frozenset({
    "live_server",  # a `scorer serve` process (tests/conftest.py)
    "spark_cluster",  # a Spark standalone cluster (tests/spark_cluster.py)
    "mlflow_server",  # an MLflow tracking server (tests/mlflow_server.py)
    "image", "spark_image", "public_dir",  # Docker images and containers (tests/container/conftest.py)
    "fuzzed_server", "open_server",  # `scorer serve` processes (tests/security/test_openapi_fuzz.py)
    "local_output", "cluster_runs",  # `scorer batch --engine spark` processes (tests/test_spark_engine.py)
    "spark_scorer", "mojo_scorers",  # a JVM in this process (tests/test_flavors.py)
})
REAL_PROCESS_PROGRAMS = frozenset({"scorer", "java", "docker", "dockerd", "spark-submit", "spark-class"})


def fast_misuse(items: list[pytest.Item]) -> list[str]:
    """The fast tests among ``items`` that request a real-process fixture, with the fixtures."""
    return [f"{item.nodeid} uses {', '.join(sorted(REAL_PROCESS_FIXTURES.intersection(item.fixturenames)))}"
            for item in items
            if item.get_closest_marker("fast") and REAL_PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ()))]


@pytest.hookimpl(tryfirst=True)  # before `-m fast` deselects anything: the check sees every collected test
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misuse = fast_misuse(items)
    if misuse:
        raise pytest.UsageError("tests marked fast start real processes:\n  " + "\n  ".join(misuse))


def real_process_program(argv: object) -> str | None:
    """The `scorer`/Java/Spark/Docker program ``argv`` (a Popen ``args``) starts, if it starts one."""
    words = [os.fsdecode(argv)] if isinstance(argv, (str, bytes, os.PathLike)) else [os.fsdecode(a) for a in argv]
    modules = [module for flag, module in zip(words, words[1:]) if flag == "-m"]
    if any("scorer.cli" in word for word in words) or any(m.split(".")[0] == "scorer" for m in modules):
        return "scorer"
    names = {os.path.basename(word) for word in words[:1]}
    return next(iter(names & REAL_PROCESS_PROGRAMS), None)


_fast_test_running: list[str] = []  # the nodeid of the fast test running now, if one is


def _refuse_real_processes_in_fast_tests(event: str, args: tuple[Any, ...]) -> None:
    if event == "subprocess.Popen" and _fast_test_running:
        program = real_process_program(args[1] if args[1] is not None else args[0])
        if program:
            raise RuntimeError(f"{_fast_test_running[0]} is marked fast but starts a {program} process: {args[1]!r}")


sys.addaudithook(_refuse_real_processes_in_fast_tests)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[bool]:
    """While a fast test runs (its set-up, call and tear-down), the audit hook above is armed."""
    if item.get_closest_marker("fast"):
        _fast_test_running.append(item.nodeid)
    try:
        return (yield)
    finally:
        _fast_test_running.clear()
