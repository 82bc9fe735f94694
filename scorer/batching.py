"""Coalescing concurrent requests into one model call, off the event loop.

Requests are queued; one model thread takes *everything already waiting* (up to
``max_rows``) as one batch. With ``max_wait=0`` (the default) an idle server calls the model
at once, so a lone request pays nothing for batching; under load, requests that arrive while
the model is busy form the next batch by themselves. ``max_wait>0`` additionally holds a
batch open that long for more requests.

Results are split back per request. If a batch fails, each member is retried alone, so a
poison request fails only itself. A request whose caller has gone away (its future was
cancelled) before its batch starts is never executed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd

from scorer.errors import NotReady
from scorer.table import Table

log = logging.getLogger("scorer.batching")

# Batch formation after a call (see Batcher._await_returning): stop waiting for returning clients
# when no request has arrived for this long, and never wait longer than this in total.
_ARRIVAL_GAP = 0.001
_MAX_RETURN_WAIT = 0.02

Predict = Callable[[Table], "Table | pd.DataFrame"]
Observer = Callable[[int, int, float], None]


@dataclass(frozen=True, kw_only=True)
class BatchPolicy:
    max_rows: int = 4096
    max_wait: float = 0.0  # seconds


@dataclass
class _Item:
    table: Table
    future: asyncio.Future[Table]
    signature: tuple[tuple[str, ...], tuple[object, ...]]


class Batcher:
    """``await batcher.submit(table)`` returns the model's output rows for ``table`` (as a Table: a
    batch's output is converted once, in the model thread, and sliced per request)."""

    def __init__(self, predict: Predict, policy: BatchPolicy, observe: Observer | None = None) -> None:
        self._predict = predict
        self._policy = policy
        self._observe = observe or (lambda rows, requests, seconds: None)
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer-model")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scorer-batcher")

    async def stop(self) -> None:
        """Finish everything already queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, table: Table) -> Table:
        if self._closing or self._task is None:
            raise NotReady("the model is not accepting requests (starting or shutting down)")
        future: asyncio.Future[Table] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(table, future, table.signature()))
        self._wakeup.set()
        return await future

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _take(self) -> tuple[list[_Item], int]:
        """The oldest request plus every queued request with the same column types, up to max_rows.

        Requests with other column types stay queued, in order, for the next call: batching
        never changes the dtypes a request's rows are scored with.
        """
        items: list[_Item] = []
        skipped: list[_Item] = []
        rows = 0
        while self._queue:
            head = self._queue.popleft()
            if head.future.cancelled():
                continue
            if items and rows + len(head.table) > self._policy.max_rows:
                skipped.append(head)
                break
            if items and head.signature != items[0].signature:
                skipped.append(head)
                continue
            items.append(head)
            rows += len(head.table)
        self._queue.extendleft(reversed(skipped))
        return items, rows

    async def _await_returning(self, loop: asyncio.AbstractEventLoop, expected: int, call_seconds: float) -> None:
        """After a call answered ``expected`` requests, give their clients the chance to send the next
        ones before taking a batch: closed-loop clients (a pool of connections, each waiting for its
        answer) then form one batch per cycle instead of two half-size ones that each pay the model's
        fixed cost. Stops as soon as that many are queued, when arrivals pause for ``_ARRIVAL_GAP``,
        or after one model call's time. An idle server never waits: this only runs with a non-empty
        queue right after a call."""
        deadline = loop.time() + min(max(call_seconds, _ARRIVAL_GAP), _MAX_RETURN_WAIT)
        while len(self._queue) < expected and not self._closing:
            remaining = min(deadline - loop.time(), _ARRIVAL_GAP)
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return
            if sum(len(i.table) for i in self._queue) >= self._policy.max_rows:
                return

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        expected, call_seconds = 0, 0.0
        while True:
            if not self._queue:
                if self._closing:
                    return
                expected = 0
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._policy.max_wait > 0:
                deadline = loop.time() + self._policy.max_wait
                while sum(len(i.table) for i in self._queue) < self._policy.max_rows and not self._closing:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except TimeoutError:
                        break
            elif expected > len(self._queue):
                await self._await_returning(loop, expected, call_seconds)
            items, rows = self._take()
            if not items:
                expected = 0
                continue
            started = time.perf_counter()
            results = await loop.run_in_executor(self._executor, self._score, [i.table for i in items])
            call_seconds = time.perf_counter() - started
            expected = len(items)
            self._observe(rows, len(items), call_seconds)
            for item, result in zip(items, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)

    def _score(self, tables: list[Table]) -> list[Table | BaseException]:
        """Runs in the model thread: one call for all tables, or each alone if that fails."""
        if len(tables) == 1:
            return [self._call(tables[0])]
        try:
            out = self._run_model(Table.concat(tables))
        except Exception as exc:
            log.info("batch of %d requests failed (%s); retrying each alone", len(tables), type(exc).__name__)
            return [self._call(t) for t in tables]
        results: list[Table | BaseException] = []
        start = 0
        for t in tables:
            results.append(out.slice(start, start + len(t)))
            start += len(t)
        return results

    def _run_model(self, table: Table) -> Table:
        out = self._predict(table)
        return Table.from_output(out) if isinstance(out, pd.DataFrame) else out

    def _call(self, table: Table) -> Table | BaseException:
        try:
            return self._run_model(table)
        except Exception as exc:
            return exc
