"""The request coalescer on its own: coalescing, dtype-safe grouping, poison isolation, cancellation."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pandas as pd
import pytest

from scorer.serving.coalescer import Coalescer, CoalescingPolicy
from scorer.table import Table

pytestmark = pytest.mark.fast


class Recorder:
    """A real predict function: doubles column x, records each call's rows and dtype, and can be
    held (to let requests queue up) or poisoned (x == 666 raises)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, table: Table) -> pd.DataFrame:
        self.gate.wait(5)
        x = np.asarray(table.columns["x"])
        self.calls.append((len(table), x.dtype.str))
        if (x == 666).any():
            raise ValueError("poison")
        return pd.DataFrame({"y": x * 2})


def table(*values: object, dtype: str) -> Table:
    return Table({"x": np.asarray(values, dtype=dtype)}, len(values))


async def _submit_while_busy(batcher: Coalescer, model: Recorder, tables: list[Table]) -> list[object]:
    """Hold the model on a first request, queue the others, then release: they form the next batch(es)."""
    model.gate.clear()
    first = asyncio.create_task(batcher.submit(table(0, dtype="int64")))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(batcher.submit(t)) for t in tables]
    await asyncio.sleep(0.05)
    model.gate.set()
    await first
    return await asyncio.gather(*rest, return_exceptions=True)


def run(coro_factory):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        model = Recorder()
        batcher = Coalescer(model, CoalescingPolicy(max_rows=100))
        batcher.start()
        try:
            return model, await coro_factory(batcher, model)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_waiting_requests_form_one_call_and_split_back() -> None:
    """Requests queued while the model is busy are scored in one call; each gets exactly its rows."""
    tables = [table(i, i + 100, dtype="int64") for i in range(1, 6)]
    model, results = run(lambda b, m: _submit_while_busy(b, m, tables))
    assert model.calls == [(1, "<i8"), (10, "<i8")]
    for i, result in enumerate(results, 1):
        assert result["y"].tolist() == [2 * i, 2 * (i + 100)]


def test_requests_with_different_dtypes_are_never_mixed() -> None:
    """An int64 request and a float64 request queued together run in separate calls (batching never
    changes a request's dtypes); the two int64 requests still share one call."""
    tables = [table(1, dtype="int64"), table(1.5, dtype="float64"), table(2, dtype="int64")]
    model, results = run(lambda b, m: _submit_while_busy(b, m, tables))
    assert model.calls[1:] == [(2, "<i8"), (1, "<f8")]
    assert [r["y"].tolist() for r in results] == [[2], [3.0], [4]]


def test_max_rows_bounds_a_batch() -> None:
    """No call takes more than max_rows rows from different requests."""
    tables = [table(*range(40), dtype="int64") for _ in range(4)]
    model, _ = run(lambda b, m: _submit_while_busy(b, m, tables))
    assert [rows for rows, _ in model.calls[1:]] == [80, 80]


def test_poison_request_fails_alone() -> None:
    """If a batch fails, it is bisected down to single requests: only the poison request gets the error."""
    tables = [table(1, dtype="int64"), table(666, dtype="int64"), table(3, dtype="int64")]
    model, results = run(lambda b, m: _submit_while_busy(b, m, tables))
    # the batch, then its halves ([1] and [666, 3]), then the failing half's halves
    assert model.calls[1:] == [(3, "<i8"), (1, "<i8"), (2, "<i8"), (1, "<i8"), (1, "<i8")]
    assert results[0]["y"].tolist() == [2] and results[2]["y"].tolist() == [6]
    assert isinstance(results[1], ValueError)


def test_poison_request_among_64_is_isolated_in_log_calls() -> None:
    """64 queued one-row requests form one batch, one of them poison: the batch is bisected, so
    isolating it costs at most 2*log2(64) = 12 more calls (retrying each alone cost 64). The retry
    observer sees exactly those calls; the 63 others get their own rows, the poison one its error."""
    retries: list[int] = []

    async def main() -> tuple[Recorder, list[object]]:
        model = Recorder()
        batcher = Coalescer(model, CoalescingPolicy(max_rows=4096), observe_retries=retries.append)
        batcher.start()
        try:
            tables = [table(666 if i == 17 else i, dtype="int64") for i in range(64)]
            return model, await _submit_while_busy(batcher, model, tables)
        finally:
            await batcher.stop()

    model, results = asyncio.run(main())
    calls = [rows for rows, _ in model.calls[1:]]  # after the call holding the model
    print(f"model calls for a batch of 64 with one poison request: {len(calls)} (rows per call {calls})")
    assert calls[0] == 64
    assert len(calls) <= 2 * 6 + 1
    assert sum(retries) == len(calls) - 1
    assert isinstance(results[17], ValueError)
    for i, result in enumerate(results):
        if i != 17:
            assert result["y"].tolist() == [2 * i], (i, result)


def test_cancelled_request_is_never_executed() -> None:
    """A request whose caller went away before its batch started never reaches the model."""

    async def scenario(batcher: Coalescer, model: Recorder) -> None:
        model.gate.clear()
        first = asyncio.create_task(batcher.submit(table(0, dtype="int64")))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.submit(table(7, dtype="int64")))
        await asyncio.sleep(0.01)
        gone.cancel()
        model.gate.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await gone

    model, _ = run(scenario)
    assert model.calls == [(1, "<i8")]
