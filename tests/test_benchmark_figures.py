"""The benchmark figures the READMEs quote come from the committed results files (benchmarks/results/*.json).

Two checks, no benchmark is run: the generated blocks of README.md and benchmarks/README.md are exactly
what benchmarks/render.py makes of the results files, and every number in README.md's "Performance"
section (inside a generated block or not) is one that a results file holds, in its "figures" or "run"
part, rounded as quoted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from conftest import load_file  # type: ignore[import-not-found]

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
COMMIT = re.compile(r"`([0-9a-f]{7,40})`")


def _render() -> Any:
    return load_file("benchmarks_render", REPO / "benchmarks" / "render.py")


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _numbers_held(value: Any, out: list[float]) -> list[float]:
    """Every number in a JSON value: numeric leaves, and numbers written in strings and keys (e.g. "1" for a core)."""
    if isinstance(value, bool) or value is None:
        return out
    if isinstance(value, (int, float)):
        out.append(float(value))
    elif isinstance(value, str):
        out += [float(t.replace(",", "")) for t in NUMBER.findall(value)]
    elif isinstance(value, dict):
        for k, v in value.items():
            _numbers_held(str(k), out)  # figure names may carry numbers too ("1 row", "65,536 rows")
            _numbers_held(v, out)
    elif isinstance(value, list):
        for v in value:
            _numbers_held(v, out)
    return out


def _is_held(token: str, held: set[float]) -> bool:
    value = float(token.replace(",", ""))
    decimals = len(token.split(".", 1)[1]) if "." in token else 0
    return any(round(x, decimals) == value for x in held)


def unheld_numbers(section: str, results: dict[str, dict[str, Any]]) -> list[str]:
    """The numbers (and dates, commits) quoted in ``section`` that no results file holds."""
    held: set[float] = set()
    for data in results.values():
        held.update(_numbers_held({"figures": data["figures"], "run": data["run"]}, []))
    dates = {data["run"]["date"] for data in results.values()}
    commits = {data["run"]["commit"] for data in results.values()}
    bad = [d for d in DATE.findall(section) if d not in dates]
    bad += [c for c in COMMIT.findall(section) if not any(full.startswith(c) for full in commits)]
    rest = COMMIT.sub("", DATE.sub("", section))
    return bad + [t for t in NUMBER.findall(rest) if not _is_held(t, held)]


def test_generated_blocks_are_what_the_results_files_give() -> None:
    """Each block between benchmarks:NAME markers equals benchmarks/render.py's output for the committed files."""
    render = _render()
    results = render.load_results()
    for path, blocks in render.BLOCKS.items():
        text = path.read_text()
        assert render.render_text(text, blocks, results) == text, (
            f"{path.relative_to(REPO)} differs from benchmarks/results/: run benchmarks/render.py")


def test_every_number_in_the_performance_section_is_held_by_a_results_file() -> None:
    """README.md's Performance section quotes no figure, date or commit that benchmarks/results/ does not hold."""
    render = _render()
    results = render.load_results()
    section = _section((REPO / "README.md").read_text(), "## Performance")
    assert not unheld_numbers(section, results), (
        f"README.md, Performance: numbers no results file holds: {unheld_numbers(section, results)}")


def test_every_results_file_names_its_commit_and_machine() -> None:
    """A results file says what was measured and where: commit, tree state, date, cores, pinning, load."""
    results = _render().load_results()
    for name, data in results.items():
        run = data["run"]
        assert re.fullmatch(r"[0-9a-f]{40}", run["commit"]), name
        for key in ("dirty", "date", "cores", "pinning", "load_average_start", "load_average_end", "mode"):
            assert key in run, (name, key)


def test_a_number_without_a_results_file_is_caught() -> None:
    """The check itself: a figure edited in a copy of the section is reported, the section as rendered is not."""
    render = _render()
    results = render.load_results()
    section = _section((REPO / "README.md").read_text(), "## Performance")
    before = unheld_numbers(section, results)
    assert unheld_numbers(section + "\nscorer serves 123,456.7 rows/s\n", results) == [*before, "123,456.7"]
