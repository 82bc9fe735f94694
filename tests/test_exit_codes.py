"""Exit codes come from one table in scorer.errors, looked up along the MRO like HTTP status."""

from __future__ import annotations

import pytest

from scorer import errors
from scorer.errors import (
    EXIT_FAILED,
    EXIT_LOAD_FAILED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_USAGE,
    BatchError,
    BatchFailed,
    BundleError,
    KeepColumnsError,
    ReadError,
    ScorerError,
    UsageError,
    exit_code,
)

pytestmark = pytest.mark.fast


def test_exit_code_values_are_the_documented_ones() -> None:
    assert (EXIT_OK, EXIT_USAGE, EXIT_LOAD_FAILED, EXIT_REJECTED, EXIT_FAILED) == (0, 2, 3, 4, 5)


@pytest.mark.parametrize("klass", [k for k in vars(errors).values() if isinstance(k, type) and issubclass(k, BundleError)])
def test_a_bundle_that_fails_to_load_exits_3_whatever_the_reason(klass: type[BundleError]) -> None:
    assert exit_code(klass("cannot load")) == EXIT_LOAD_FAILED


@pytest.mark.parametrize(("exc", "code"), [
    (UsageError("--input is required"), EXIT_USAGE),
    (ReadError("a.parquet: cannot be read as parquet"), EXIT_FAILED),
    (KeepColumnsError("--keep-columns names column(s) not in the input: id"), EXIT_FAILED),
    (BatchFailed("a.csv: column 'x': a str value is not a number"), EXIT_FAILED),
    (errors.SchemaError("column 'x': a str value is not a number"), EXIT_FAILED),
    (ValueError("not ours"), EXIT_FAILED),
])
def test_every_other_error_by_the_table(exc: BaseException, code: int) -> None:
    assert exit_code(exc) == code


def test_batch_errors_are_in_the_one_tree() -> None:
    """They carry ``message`` and ``data_detail`` like every other error; a Spark task's failure keeps the
    marker the driver finds it by in Spark's error text."""
    for klass in (UsageError, ReadError, KeepColumnsError, BatchFailed):
        assert issubclass(klass, BatchError) and issubclass(klass, ScorerError)
        exc = klass("a.csv: row 3")
        assert exc.message == "a.csv: row 3" and exc.data_detail is None
    assert str(BatchFailed("a.csv: row 3")) == BatchFailed.MARKER + "a.csv: row 3"
