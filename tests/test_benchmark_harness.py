"""The benchmarks' answer check (benchmarks/_harness.py check_answers) stops on any difference from in-process predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import load_file  # type: ignore[import-not-found]

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parent.parent
EXPECTED = {"columns": ["prediction", "probability_ham", "probability_spam"],
            "data": [["ham", 0.9, 0.1], ["spam", 0.25, 0.75]]}


def _harness() -> Any:
    return load_file("benchmarks_harness", REPO / "benchmarks" / "_harness.py")


def _answers(*rows: dict[str, Any]) -> list[dict[str, Any]]:
    return list(rows)


def test_the_same_answers_pass() -> None:
    """Served answers as JSON records, with float noise far below rtol 1e-6, pass; the max difference is returned."""
    h = _harness()
    got = _answers({"prediction": "ham", "probability_ham": 0.9, "probability_spam": 0.1},
                   {"prediction": "spam", "probability_ham": 0.25 + 1e-12, "probability_spam": 0.75})
    assert h.check_answers(got, EXPECTED, "same") == pytest.approx(1e-12, abs=1e-13)


@pytest.mark.parametrize("got", [
    _answers({"prediction": "ham", "probability_ham": 0.9, "probability_spam": 0.1},
             {"prediction": "ham", "probability_ham": 0.25, "probability_spam": 0.75}),
    _answers({"prediction": "ham", "probability_ham": 0.9, "probability_spam": 0.1},
             {"prediction": "spam", "probability_ham": 0.2501, "probability_spam": 0.75}),
    _answers({"prediction": "ham", "probability_ham": 0.9, "probability_spam": 0.1}),
    _answers({"prediction": "ham", "probability_ham": 0.9}, {"prediction": "spam", "probability_ham": 0.25}),
], ids=["label", "probability", "missing row", "missing column"])
def test_any_difference_stops_the_benchmark(got: list[dict[str, Any]]) -> None:
    h = _harness()
    with pytest.raises(h.AnswerMismatch):
        h.check_answers(got, EXPECTED, "changed")
