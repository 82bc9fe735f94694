"""The request coalescer: concurrent HTTP requests coalesced into one model call, off the event loop.

(Named for what it does online; the offline ``scorer batch`` command is a different thing. Here a
"batch" is the requests that share one model call.)

Requests are queued; one model thread takes *everything already waiting* (up to
``max_rows``) as one batch. With ``max_wait=0`` (the default) an idle server calls the model
at once, so a lone request pays nothing for batching; under load, requests that arrive while
the model is busy form the next batch by themselves. ``max_wait>0`` additionally holds a
batch open that long for more requests.

Results are split back per request. If a batch fails, it is split in halves (by request) and each
half retried, down to single requests: a poison request fails only itself, with its own error, and
isolating one among N costs at most ``2 * ceil(log2 N)`` extra model calls (retrying each member
alone cost N). Every request's rows come from exactly one successful call. A request whose caller
has gone away (its future was cancelled) before its batch starts is never executed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from scorer.errors import NotReady, Overloaded
from scorer.table import Table

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# Batch formation after a call (see Coalescer._await_returning): stop waiting for returning clients
# when no request has arrived for this long, and never wait longer than this in total.
_ARRIVAL_GAP = 0.001
_MAX_RETURN_WAIT = 0.02

T = TypeVar("T")
Predict = Callable[[Table], "Table | pd.DataFrame"]
Observer = Callable[[int, int, float], None]
RetryObserver = Callable[[int], None]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclass(frozen=True, kw_only=True)
class CoalescingPolicy:
    max_rows: int = 4096
    max_wait: float = 0.0  # seconds
    max_queue_rows: int = 1 << 62  # beyond this, new requests are refused (Overloaded) instead of queued


class CallTrace(Protocol):
    """A queued request's trace (:class:`scorer.serving.tracing.RequestTrace`), told of each model call
    its rows were in."""

    def model_call(self, members: Sequence[Any], started_ns: int, rows: int, error: BaseException | None) -> None:
        """In the model thread, after the call: ``members`` are the traces of every request in it."""


@dataclass
class _Item:
    table: Table
    future: asyncio.Future[Table]
    signature: tuple[object, ...]
    trace: CallTrace | None = None


class Coalescer:
    """``await coalescer.submit(table)`` returns the model's output rows for ``table`` (as a Table: a
    batch's output is converted once, in the model thread, and sliced per request)."""

    def __init__(self, predict: Predict, policy: CoalescingPolicy, observe: Observer | None = None,
                 observe_retries: RetryObserver | None = None) -> None:
        """``observe(rows, requests, seconds)`` after each batch; ``observe_retries(calls)`` after a
        batch that failed, with the number of model calls made to isolate the failing request(s)."""
        self._predict = predict
        self._policy = policy
        self._observe = observe or (lambda rows, requests, seconds: None)
        self._observe_retries = observe_retries or (lambda calls: None)
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup = asyncio.Event()
        # A daemon thread (not a ThreadPoolExecutor, whose threads are joined at exit): a model call
        # that hangs past the shutdown grace period must not keep the process alive.
        # Jobs for the model thread: a function and the future its result goes to. Model calls, and the
        # decoding/encoding of large bodies (offload), all run here, one at a time: CPU-bound work in two
        # threads at once only fights over the GIL (measured: a 10,000-row JSON request decoded in a
        # second thread made the concurrent model call ~1.5x slower).
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._model_thread, name="scorer-model", daemon=True)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._queued_rows = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        self._task = self._loop.create_task(self._run(), name="scorer-coalescer")

    async def stop(self, timeout: float | None = None) -> bool:
        """Finish everything already queued, then stop. False if that took longer than ``timeout``
        (a model call hung): the call is abandoned in its daemon thread and its requests fail."""
        self._closing = True
        self._wakeup.set()
        finished = True
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                finished = False
                self._task.cancel()
                for item in self._queue:
                    item.future.cancel()
        self._calls.put(None)
        return finished

    def enqueue(self, table: Table, trace: CallTrace | None = None) -> asyncio.Future[Table]:
        """Queue ``table``; the future resolves to its output rows. Cancelling the future before its
        batch starts means it is never scored. ``trace`` (tracing on) is told of its model calls."""
        if self._closing or self._task is None:
            raise NotReady("the model is not accepting requests (starting or shutting down)")
        rows = len(table)
        if self._queued_rows + rows > self._policy.max_queue_rows and self._queue:
            raise Overloaded(
                f"{self._queued_rows} rows are already waiting for the model (limit {self._policy.max_queue_rows}); "
                "retry later"
            )
        future: asyncio.Future[Table] = self._loop.create_future()
        self._queue.append(_Item(table, future, table.signature(), trace))
        self._queued_rows += rows
        self._wakeup.set()
        return future

    async def submit(self, table: Table) -> Table:
        return await self.enqueue(table)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the model thread, in turn with model calls."""
        done: asyncio.Future[T] = self._loop.create_future()
        self._calls.put((lambda: fn(*args), done))
        return await done

    def _model_thread(self) -> None:
        while True:
            job = self._calls.get()
            if job is None:
                return
            fn, done = job
            try:
                result, error = fn(), None
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                result, error = None, exc
            try:
                self._loop.call_soon_threadsafe(_settle, done, result, error)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                return

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
            self._queued_rows -= len(head.table)
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
        self._queued_rows += sum(len(i.table) for i in skipped)
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
            if remaining <= 0 or not await self._arrival(remaining) or self._queued_rows >= self._policy.max_rows:
                return

    async def _arrival(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for another request to be queued; False if none was."""
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            return False
        return True

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
                while self._queued_rows < self._policy.max_rows and not self._closing:
                    remaining = deadline - loop.time()
                    if remaining <= 0 or not await self._arrival(remaining):
                        break
            elif expected > len(self._queue):
                await self._await_returning(loop, expected, call_seconds)
            items, rows = self._take()
            if not items:
                expected = 0
                continue
            started = time.perf_counter()
            done: asyncio.Future[tuple[list[Table | BaseException], int]] = loop.create_future()
            tables = [i.table for i in items]
            traces = [i.trace for i in items] if items[0].trace is not None else None  # tracing on: all have one
            self._calls.put((lambda: self._score(tables, traces), done))
            results, retry_calls = await done
            call_seconds = time.perf_counter() - started
            expected = len(items)
            self._observe(rows, len(items), call_seconds)
            if retry_calls:
                self._observe_retries(retry_calls)
            for item, result in zip(items, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)

    def _score(self, tables: list[Table], traces: list[CallTrace | None] | None = None,
               ) -> tuple[list[Table | BaseException], int]:
        """Runs in the model thread: one call for all tables; if it fails, the failing request(s) are
        isolated by bisection. Returns one result per table and the number of calls made after the
        first (0 when it succeeded). ``traces``: the requests' traces (tracing on), one per table."""
        results: list[Table | BaseException] = []
        calls = self._bisect(tables, results, traces)
        if calls > 1:
            log.info("batch of %d requests failed; %d more model calls isolated %d failing request(s)",
                     len(tables), calls - 1, sum(isinstance(r, BaseException) for r in results))
        return results, calls - 1

    def _bisect(self, tables: list[Table], results: list[Table | BaseException],
                traces: list[CallTrace | None] | None = None) -> int:
        """Score ``tables`` in one call and append one result per table to ``results``; if the call
        fails, score each half the same way (a single table keeps its own error). Returns the number
        of model calls made. Each call is told to ``traces`` (one per table), if given."""
        started = time.time_ns() if traces else 0
        try:
            out = self._run_model(tables[0] if len(tables) == 1 else Table.concat(tables))
        except Exception as exc:  # noqa: BLE001 - the model's error goes to its own request once isolated
            if traces:
                _tell(traces, started, sum(len(t) for t in tables), exc)
            if len(tables) == 1:
                results.append(exc)
                return 1
            mid = len(tables) // 2
            halves = (traces[:mid], traces[mid:]) if traces else (None, None)
            return 1 + self._bisect(tables[:mid], results, halves[0]) + self._bisect(tables[mid:], results, halves[1])
        if traces:
            _tell(traces, started, sum(len(t) for t in tables), None)
        start = 0
        for t in tables:
            results.append(out.slice(start, start + len(t)) if len(tables) > 1 else out)
            start += len(t)
        return 1

    def _run_model(self, table: Table) -> Table:
        out = self._predict(table)
        return out if isinstance(out, Table) else Table.from_output(out)


def _tell(traces: list[CallTrace | None], started_ns: int, rows: int, error: BaseException | None) -> None:
    """Tell the traces of one model call's requests about it (tracing must never fail a call)."""
    first = next((t for t in traces if t is not None), None)
    if first is None:
        return
    try:
        first.model_call(traces, started_ns, rows, error)
    except Exception:  # noqa: BLE001
        log.warning("recording a model call's spans failed", exc_info=True)
