"""The `fast` marker stays honest (tests/fast_marker.py): a test marked fast that requests a
real-process fixture stops the run at collection, and one that starts a `scorer`, Java, Spark or
Docker process fails. Each check runs pytest, with the plugin and this suite's pytest settings, on
a test module of its own."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from fast_marker import REAL_PROCESS_FIXTURES, real_process_program  # type: ignore[import-not-found]

pytestmark = pytest.mark.fast

TESTS = Path(__file__).resolve().parent
PYPROJECT = (TESTS.parent / "pyproject.toml").read_text()


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytest's own, whose runs load only the plugins named (installed ones take seconds to import)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return pytester


def suite_like(pytester: pytest.Pytester, source: str) -> None:
    """A project with the fast_marker plugin and this suite's pytest settings, and one test module ``source``."""
    pytester.makepyfile(fast_marker=(TESTS / "fast_marker.py").read_text())
    pytester.makeconftest('pytest_plugins = ("fast_marker",)\n')
    settings = PYPROJECT[PYPROJECT.index("[tool.pytest.ini_options]"):].split("\n[tool.", 1)[0]
    pytester.makepyprojecttoml(settings.replace('testpaths = ["tests"]', ""))
    pytester.makepyfile(test_mod=textwrap.dedent(source))


def test_a_fast_test_requesting_a_real_process_fixture_stops_the_run(pytester: pytest.Pytester) -> None:
    """The check goes by fixture name (stand-ins here), through other fixtures, before `-m` deselects."""
    suite_like(pytester, """
        import pytest

        @pytest.fixture
        def live_server():
            pass

        @pytest.fixture
        def through(live_server):
            pass

        @pytest.mark.fast
        def test_direct(live_server):
            pass

        @pytest.mark.fast
        def test_indirect(through):
            pass

        def test_not_fast(live_server):
            pass

        @pytest.mark.fast
        def test_plain(tmp_path):
            pass
    """)
    result = pytester.runpytest_subprocess("--collect-only", "-q", "-p", "no:cacheprovider", "-m", "not fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, (result.outlines, result.errlines)
    errors = "\n".join(result.errlines)
    assert "test_mod.py::test_direct uses live_server" in errors, errors
    assert "test_mod.py::test_indirect uses live_server" in errors, errors
    assert "test_not_fast" not in errors and "test_plain" not in errors, errors


def test_a_fast_test_starting_a_scorer_process_fails(pytester: pytest.Pytester) -> None:
    # `python -c pass -m scorer.cli serve` names scorer's CLI but runs nothing: the check reads the arguments
    suite_like(pytester, """
        import subprocess
        import sys

        import pytest

        LOOKS_LIKE_SCORER = [sys.executable, "-c", "pass", "-m", "scorer.cli", "serve"]

        @pytest.mark.fast
        def test_fast_starts_scorer():
            subprocess.run(LOOKS_LIKE_SCORER, check=True)

        @pytest.fixture
        def started():
            subprocess.run(LOOKS_LIKE_SCORER, check=True)

        @pytest.mark.fast
        def test_fast_fixture_starts_scorer(started):
            pass

        @pytest.mark.fast
        def test_fast_starts_another_program():
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        def test_not_fast_starts_scorer():
            subprocess.run(LOOKS_LIKE_SCORER, check=True)
    """)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-rfE")
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines([
        "FAILED test_mod.py::test_fast_starts_scorer - RuntimeError*",
        "ERROR test_mod.py::test_fast_fixture_starts_scorer - RuntimeError*",
    ], consecutive=False)
    text = "\n".join(result.outlines)
    for test in ("test_fast_starts_scorer", "test_fast_fixture_starts_scorer"):
        assert f"RuntimeError: test_mod.py::{test} is marked fast but starts a scorer process" in text, text


@pytest.mark.parametrize(("argv", "program"), [
    (["/venv/bin/python", "-m", "scorer.cli", "batch"], "scorer"),
    (["python", "-m", "scorer", "serve"], "scorer"),
    (["/venv/bin/scorer", "serve"], "scorer"),
    ("script -qec '/venv/bin/python -m scorer.cli batch x' /dev/null", "scorer"),
    (["/usr/bin/docker", "build", "."], "docker"),
    ([Path("/opt/spark/bin/spark-submit"), "--master", "local[2]"], "spark-submit"),
    ([b"/usr/bin/java", b"-version"], "java"),
    (["/venv/bin/python", "-m", "ruff", "check"], None),
    (["sh", "-c", "true"], None),
    (["/venv/bin/python", "bundles/build.py", "--out", "/tmp/x"], None),
])
def test_what_counts_as_a_real_process(argv: object, program: str | None) -> None:
    assert real_process_program(argv) == program


def test_every_real_process_fixture_still_exists() -> None:
    """A renamed fixture would silently leave the collection check: each name is still defined."""
    sources = "\n".join(path.read_text() for path in TESTS.rglob("*.py"))
    missing = [name for name in sorted(REAL_PROCESS_FIXTURES) if not re.search(rf"^def {name}\(", sources, re.M)]
    assert not missing, missing
